//! The hello filter, in Zig, speaking the Proxy-Wasm ABI directly (the
//! `abi` namespace below), with the standard library's JSON:
//!
//! - `proxy_on_configure` reads `{"greeting": "..."}` (default `hello`) and logs it;
//! - every response gets `x-hello: <greeting>`;
//! - a request for `/forbidden` (with or without a query) is answered here with
//!   403 and Weir's JSON error body, carrying the request's `x-request-id`.

const std = @import("std");

/// The Proxy-Wasm ABI 0.2.1, as far as this filter needs it: host functions
/// imported from module "env" and the constants they take. Every host
/// function returns a status; 0 is OK.
const abi = struct {
    const Status = enum(u32) { ok = 0, not_found = 1, _ };
    const LogLevel = enum(u32) { info = 2, err = 4 };
    const MapType = enum(u32) { request_headers = 0, response_headers = 2 };
    const BufferType = enum(u32) { plugin_configuration = 7 };
    const Action = enum(u32) { @"continue" = 0, pause = 1 };
    const no_grpc_status: i32 = -1;

    extern "env" fn proxy_log(level: LogLevel, message: [*]const u8, size: usize) Status;
    extern "env" fn proxy_get_buffer_bytes(buffer: BufferType, start: u32, max_size: u32, ret_data: *?[*]u8, ret_size: *usize) Status;
    extern "env" fn proxy_get_header_map_value(map: MapType, key: [*]const u8, key_size: usize, ret_value: *?[*]u8, ret_size: *usize) Status;
    extern "env" fn proxy_replace_header_map_value(map: MapType, key: [*]const u8, key_size: usize, value: [*]const u8, value_size: usize) Status;
    extern "env" fn proxy_send_local_response(status: u32, details: [*]const u8, details_size: usize, body: [*]const u8, body_size: usize, headers: [*]const u8, headers_size: usize, grpc_status: i32) Status;
};

/// Blocks the host hands over (header values, configuration) come from here,
/// and so does everything else the filter allocates.
const allocator = std.heap.wasm_allocator;

/// The host calls this for every block of bytes it hands to the filter.
export fn proxy_on_memory_allocate(size: usize) ?[*]u8 {
    const block = allocator.alloc(u8, size) catch return null;
    return block.ptr;
}

/// Takes ownership of a block the host returned (free it with `allocator.free`).
fn returned(data: ?[*]u8, size: usize) []u8 {
    return if (data) |ptr| ptr[0..size] else &.{};
}

fn log(level: abi.LogLevel, message: []const u8) void {
    _ = abi.proxy_log(level, message.ptr, message.len);
}

/// The first value of header `key`, or null when absent (free it with `allocator.free`).
fn getHeader(map: abi.MapType, key: []const u8) ?[]u8 {
    var data: ?[*]u8 = null;
    var size: usize = 0;
    if (abi.proxy_get_header_map_value(map, key.ptr, key.len, &data, &size) != .ok) return null;
    return returned(data, size);
}

/// The ABI version this module speaks: the host looks for this export.
export fn proxy_abi_version_0_2_1() void {}

/// The greeting when the configuration names none.
const default_greeting = "hello";

/// The configured greeting. Weir gives each filter VMs of its own with one
/// root context each, so one global is enough.
var greeting: []const u8 = default_greeting;

/// The plugin configuration. Members other than `greeting` are ignored;
/// anything that is not a JSON object, or a greeting that is not a string,
/// fails to parse and the filter refuses the configuration.
const Config = struct { greeting: []const u8 = default_greeting };

export fn proxy_on_context_create(context_id: u32, parent_id: u32) void {
    _ = context_id;
    _ = parent_id;
}

export fn proxy_on_vm_start(root_id: u32, vm_configuration_size: u32) u32 {
    _ = root_id;
    _ = vm_configuration_size;
    return 1;
}

export fn proxy_on_configure(root_id: u32, configuration_size: u32) u32 {
    _ = root_id;
    return if (configure(configuration_size)) 1 else |err| refuse: {
        var buf: [128]u8 = undefined;
        log(.err, std.fmt.bufPrint(&buf, "configuration refused: {t}", .{err}) catch "configuration refused");
        break :refuse 0;
    };
}

fn configure(configuration_size: u32) !void {
    var data: ?[*]u8 = null;
    var size: usize = 0;
    var configured: []const u8 = default_greeting;
    if (abi.proxy_get_buffer_bytes(.plugin_configuration, 0, configuration_size, &data, &size) == .ok and size > 0) {
        const raw = returned(data, size);
        defer allocator.free(raw);
        const options: std.json.ParseOptions = .{ .ignore_unknown_fields = true, .duplicate_field_behavior = .use_last };
        const parsed = try std.json.parseFromSlice(Config, allocator, raw, options);
        defer parsed.deinit();
        configured = try allocator.dupe(u8, parsed.value.greeting);
    }
    // A header value cannot hold control characters: refuse them here
    // rather than fail on every response.
    for (configured) |c| {
        if (c < 0x20 or c == 0x7f) return error.ControlCharacterInGreeting;
    }
    if (greeting.ptr != default_greeting.ptr) allocator.free(greeting);
    greeting = configured;
    const message = try std.mem.concat(allocator, u8, &.{ "configured greeting: ", greeting });
    defer allocator.free(message);
    log(.info, message);
}

export fn proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: u32) abi.Action {
    _ = .{ context_id, headers, end_of_stream };
    const path = getHeader(.request_headers, ":path") orelse return .@"continue";
    defer allocator.free(path);
    const without_query = if (std.mem.indexOfScalar(u8, path, '?')) |q| path[0..q] else path;
    if (!std.mem.eql(u8, without_query, "/forbidden")) return .@"continue";

    // Weir sets x-request-id before any filter runs.
    const request_id = getHeader(.request_headers, "x-request-id") orelse &.{};
    defer allocator.free(request_id);
    // Weir's JSON error body; Zig writes the fields in the order given.
    const body = std.json.Stringify.valueAlloc(allocator, .{ .@"error" = .{
        .status = 403,
        .code = "forbidden",
        .message = "this path is forbidden",
        .request_id = request_id,
    } }, .{}) catch return .pause; // out of memory: the host answers 500 for a pause without a reply
    defer allocator.free(body);
    // The reply's headers as a serialized map: a little-endian u32 count,
    // each key and value length as u32, then each key and value with a NUL.
    const pairs = comptime serializePairs(&.{.{ "content-type", "application/json" }});
    _ = abi.proxy_send_local_response(403, "forbidden", "forbidden".len, body.ptr, body.len, pairs.ptr, pairs.len, abi.no_grpc_status);
    return .pause;
}

export fn proxy_on_response_headers(context_id: u32, headers: u32, end_of_stream: u32) abi.Action {
    _ = .{ context_id, headers, end_of_stream };
    _ = abi.proxy_replace_header_map_value(.response_headers, "x-hello", "x-hello".len, greeting.ptr, greeting.len);
    return .@"continue";
}

/// Proxy-Wasm's map encoding of `headers`, computed at compile time.
fn serializePairs(comptime headers: []const [2][]const u8) []const u8 {
    var out: []const u8 = &std.mem.toBytes(std.mem.nativeToLittle(u32, headers.len));
    for (headers) |h| {
        out = out ++ std.mem.toBytes(std.mem.nativeToLittle(u32, h[0].len)) ++ std.mem.toBytes(std.mem.nativeToLittle(u32, h[1].len));
    }
    for (headers) |h| out = out ++ h[0] ++ "\x00" ++ h[1] ++ "\x00";
    return out;
}
