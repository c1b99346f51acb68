// The Proxy-Wasm ABI 0.2.1, as far as the hello filter needs it: the host
// functions it calls (@external imports from module "env"), the allocator the
// host calls to hand bytes over, and small wrappers that move bytes across.
// Every host function returns a status; 0 is OK.

export const STATUS_OK: u32 = 0;

export const LOG_INFO: u32 = 2;
export const LOG_ERROR: u32 = 4;

export const MAP_REQUEST_HEADERS: u32 = 0;
export const MAP_RESPONSE_HEADERS: u32 = 2;
export const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

export const ACTION_CONTINUE: u32 = 0;
export const ACTION_PAUSE: u32 = 1;

@external("env", "proxy_log")
declare function proxy_log(level: u32, message: usize, messageLen: usize): u32;

@external("env", "proxy_get_buffer_bytes")
declare function proxy_get_buffer_bytes(
  buffer: u32, start: u32, maxSize: u32, retData: usize, retLen: usize,
): u32;

@external("env", "proxy_get_header_map_value")
declare function proxy_get_header_map_value(
  map: u32, key: usize, keyLen: usize, retData: usize, retLen: usize,
): u32;

@external("env", "proxy_replace_header_map_value")
declare function proxy_replace_header_map_value(
  map: u32, key: usize, keyLen: usize, value: usize, valueLen: usize,
): u32;

@external("env", "proxy_send_local_response")
declare function proxy_send_local_response(
  status: u32, details: usize, detailsLen: usize, body: usize, bodyLen: usize,
  headers: usize, headersLen: usize, grpcStatus: i32,
): u32;

/** The host calls this for every block of bytes it hands to the filter. */
export function proxy_on_memory_allocate(size: usize): usize {
  return heap.alloc(size);
}

// Where the host writes a returned block's address and length.
const retData = memory.data(4);
const retLen = memory.data(4);

/** Copies the block the host just returned into an ArrayBuffer and frees it. */
function takeReturned(): ArrayBuffer {
  const data = load<usize>(retData);
  const len = load<u32>(retLen);
  const bytes = new ArrayBuffer(len);
  if (data != 0) {
    memory.copy(changetype<usize>(bytes), data, len);
    heap.free(data);
  }
  return bytes;
}

function utf8(text: string): ArrayBuffer {
  return String.UTF8.encode(text);
}

function ptr(bytes: ArrayBuffer): usize {
  return changetype<usize>(bytes);
}

export function log(level: u32, message: ArrayBuffer): void {
  proxy_log(level, ptr(message), message.byteLength);
}

export function logText(level: u32, message: string): void {
  log(level, utf8(message));
}

/** The first value of header `key` in `map`, or null when absent. */
export function getHeader(map: u32, key: string): ArrayBuffer | null {
  const name = utf8(key);
  if (proxy_get_header_map_value(map, ptr(name), name.byteLength, retData, retLen) != STATUS_OK) {
    return null;
  }
  return takeReturned();
}

export function replaceHeader(map: u32, key: string, value: ArrayBuffer): u32 {
  const name = utf8(key);
  return proxy_replace_header_map_value(map, ptr(name), name.byteLength, ptr(value), value.byteLength);
}

/** The plugin configuration (`size` bytes), or an empty buffer when there is none. */
export function pluginConfiguration(size: u32): ArrayBuffer {
  if (proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, size, retData, retLen) != STATUS_OK) {
    return new ArrayBuffer(0);
  }
  return takeReturned();
}

/**
 * Answers the request from the filter with `status`, `body` and `headers`
 * (name, value, name, value, ...).
 */
export function sendLocalResponse(
  status: u32, details: string, body: ArrayBuffer, headers: string[],
): u32 {
  const pairs = serializePairs(headers);
  const why = utf8(details);
  return proxy_send_local_response(
    status, ptr(why), why.byteLength, ptr(body), body.byteLength,
    ptr(pairs), pairs.byteLength, -1, // -1: no gRPC status
  );
}

/**
 * Encodes a header list the way Proxy-Wasm passes maps: a little-endian u32
 * count, each key and value length as u32, then each key and value followed
 * by a NUL byte.
 */
function serializePairs(flat: string[]): ArrayBuffer {
  const parts = flat.map<ArrayBuffer>((s: string) => String.UTF8.encode(s));
  let size = 4 + 4 * parts.length;
  for (let i = 0; i < parts.length; i++) size += parts[i].byteLength + 1;
  const out = new ArrayBuffer(size);
  const base = changetype<usize>(out);
  store<u32>(base, parts.length / 2);
  let at = base + 4;
  for (let i = 0; i < parts.length; i++) {
    store<u32>(at, parts[i].byteLength);
    at += 4;
  }
  for (let i = 0; i < parts.length; i++) {
    memory.copy(at, changetype<usize>(parts[i]), parts[i].byteLength);
    at += parts[i].byteLength;
    store<u8>(at, 0);
    at += 1;
  }
  return out;
}

/**
 * Replaces AssemblyScript's default `abort` (an import Proxy-Wasm hosts do
 * not provide): logs the failure, then traps.
 */
export function abortFilter(message: string | null, file: string | null, line: u32, column: u32): void {
  logText(LOG_ERROR, "abort: " + (message ? message : "") + " at " +
    (file ? file : "?") + ":" + line.toString() + ":" + column.toString());
  unreachable();
}
