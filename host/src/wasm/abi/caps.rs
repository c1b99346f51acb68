//! The most bytes one host call accepts from (or writes into) the guest, per
//! argument. Every span a host call reads is checked against guest memory and
//! against one of these caps before the host allocates anything, so a guest
//! cannot make the host allocate more than a cap by passing a huge length.
//!
//! A span over its cap answers `BAD_ARGUMENT` (WASI: `EINVAL`); a span outside
//! guest memory answers `INVALID_MEMORY_ACCESS` (WASI: `EFAULT`).

/// A `proxy_log` message; longer messages are cut to this length.
pub const LOG_MESSAGE: usize = 64 << 10;
/// Bytes one `fd_write` takes; it reports a short write beyond this.
pub const FD_WRITE_BYTES: usize = 64 << 10;
/// iovecs one `fd_write` accepts (POSIX `IOV_MAX`).
pub const FD_WRITE_IOVECS: usize = 1024;
/// Subscriptions one `poll_oneoff` accepts.
pub const POLL_SUBSCRIPTIONS: usize = 1024;
/// Bytes one `random_get` fills.
pub const RANDOM_BYTES: usize = 1 << 20;
/// `random_get` fills guest memory this many bytes at a time, checking the
/// callback's deadline between chunks.
pub const RANDOM_CHUNK: usize = 64 << 10;
/// A header (or trailer) name.
pub const HEADER_NAME: usize = 8 << 10;
/// A header (or trailer) value.
pub const HEADER_VALUE: usize = 64 << 10;
/// Entries one header or trailer map may hold after guest edits.
pub const MAP_ENTRIES: usize = 1024;
/// An encoded header map (`proxy_set_header_map_pairs`, callout and local-reply headers).
pub const MAP_BYTES: usize = 1 << 20;
/// A body buffer after `proxy_set_buffer_bytes`.
pub const BODY_BYTES: usize = 64 << 20;
/// A local reply's body.
pub const LOCAL_REPLY_BODY: usize = 4 << 20;
/// A local reply's details string.
pub const LOCAL_REPLY_DETAILS: usize = 4 << 10;
/// A property path.
pub const PROPERTY_PATH: usize = 4 << 10;
/// A property value set by the guest.
pub const PROPERTY_VALUE: usize = 64 << 10;
/// Properties one stream may hold.
pub const PROPERTIES: usize = 256;
/// Names: upstream, queue, metric, Redis service, foreign function, vm_id.
pub const NAME: usize = 1 << 10;
/// A shared-data key.
pub const SHARED_DATA_KEY: usize = 4 << 10;
/// A shared-data value.
pub const SHARED_DATA_VALUE: usize = 1 << 20;
/// A shared-queue item.
pub const QUEUE_ITEM: usize = 1 << 20;
/// An HTTP callout's body.
pub const HTTP_CALL_BODY: usize = 4 << 20;
/// A Redis query.
pub const REDIS_QUERY: usize = 1 << 20;
/// A foreign function's arguments.
pub const FOREIGN_ARGS: usize = 64 << 10;
/// Callouts (HTTP, gRPC and Redis) one VM may have outstanding.
pub const CALLOUTS_IN_FLIGHT: usize = 256;
