// The hello filter, in AssemblyScript, speaking the Proxy-Wasm ABI directly
// (abi.ts):
//
//   - proxy_on_configure reads {"greeting": "..."} (default "hello") and logs it;
//   - every response gets x-hello: <greeting>;
//   - a request for /forbidden (with or without a query) is answered here with
//     403 and Weir's JSON error body, carrying the request's x-request-id.

import {
  ACTION_CONTINUE, ACTION_PAUSE, LOG_ERROR, LOG_INFO, MAP_REQUEST_HEADERS,
  MAP_RESPONSE_HEADERS, getHeader, log, logText, pluginConfiguration,
  replaceHeader, sendLocalResponse,
} from "./abi";
import { quote, readGreeting } from "./json";

// The allocator the host hands bytes over with.
export { proxy_on_memory_allocate } from "./abi";

/** The ABI version this module speaks: the host looks for this export. */
export function proxy_abi_version_0_2_1(): void {}

/** The greeting when the configuration names none. */
const DEFAULT_GREETING = "hello";

// The configured greeting, as the bytes of the header value. Weir gives each
// filter VMs of its own with one root context each, so one global is enough.
let greeting: ArrayBuffer = String.UTF8.encode(DEFAULT_GREETING);

export function proxy_on_context_create(context: u32, parent: u32): void {}

export function proxy_on_vm_start(root: u32, vmConfigSize: u32): u32 {
  return 1;
}

/**
 * Reads the plugin configuration. Refuses (returns 0) anything that is not a
 * JSON object, a greeting that is not a string, and a greeting holding a
 * control character (a header value cannot hold one).
 */
export function proxy_on_configure(root: u32, configSize: u32): u32 {
  let configured = Uint8Array.wrap(String.UTF8.encode(DEFAULT_GREETING));
  const raw = Uint8Array.wrap(pluginConfiguration(configSize));
  if (raw.length > 0) {
    const read = readGreeting(raw);
    if (!read.ok) {
      logText(LOG_ERROR, "configuration refused: not a JSON object with a string greeting");
      return 0;
    }
    if (read.value !== null) configured = read.value!;
  }
  for (let i = 0; i < configured.length; i++) {
    if (configured[i] < 0x20 || configured[i] == 0x7f) {
      logText(LOG_ERROR, "configuration refused: the greeting holds a control character");
      return 0;
    }
  }
  greeting = configured.slice().buffer;
  log(LOG_INFO, concat(String.UTF8.encode("configured greeting: "), greeting));
  return 1;
}

export function proxy_on_request_headers(context: u32, headers: u32, endOfStream: u32): u32 {
  const path = getHeader(MAP_REQUEST_HEADERS, ":path");
  if (path === null || !isForbidden(Uint8Array.wrap(path))) return ACTION_CONTINUE;
  // Weir sets x-request-id before any filter runs.
  const id = getHeader(MAP_REQUEST_HEADERS, "x-request-id");
  const body = new Array<u8>();
  append(body, '{"error":{"status":403,"code":"forbidden","message":"this path is forbidden","request_id":');
  const quoted = quote(Uint8Array.wrap(id !== null ? id : new ArrayBuffer(0)));
  for (let i = 0; i < quoted.length; i++) body.push(quoted[i]);
  append(body, "}}");
  sendLocalResponse(403, "forbidden", bytesOf(body), ["content-type", "application/json"]);
  return ACTION_PAUSE;
}

export function proxy_on_response_headers(context: u32, headers: u32, endOfStream: u32): u32 {
  replaceHeader(MAP_RESPONSE_HEADERS, "x-hello", greeting);
  return ACTION_CONTINUE;
}

/** Whether `path` (with its query) is /forbidden. */
function isForbidden(path: Uint8Array): bool {
  const target = "/forbidden";
  if (path.length < target.length) return false;
  for (let i = 0; i < target.length; i++) {
    if (<i32>path[i] != target.charCodeAt(i)) return false;
  }
  return path.length == target.length || path[target.length] == 0x3f; // '?'
}

function append(out: Array<u8>, text: string): void {
  const bytes = Uint8Array.wrap(String.UTF8.encode(text));
  for (let i = 0; i < bytes.length; i++) out.push(bytes[i]);
}

function bytesOf(list: Array<u8>): ArrayBuffer {
  const bytes = new Uint8Array(list.length);
  for (let i = 0; i < list.length; i++) bytes[i] = list[i];
  return bytes.buffer;
}

function concat(a: ArrayBuffer, b: ArrayBuffer): ArrayBuffer {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(Uint8Array.wrap(a), 0);
  out.set(Uint8Array.wrap(b), a.byteLength);
  return out.buffer;
}
