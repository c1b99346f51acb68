//! A route's `websocket:` settings: whether it lets a WebSocket handshake
//! through, and the limits on the tunnel that follows.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::decode::{ByteSize, Decode, Diagnostics, Fields};
use super::node::Node;
use super::raw::TIMEOUT;

/// A message's size limit: at least one control frame's payload (125
/// bytes), at most 1TiB (frames are streamed, never held whole).
pub const MESSAGE_BYTES: RangeInclusive<ByteSize> = ByteSize(125)..=ByteSize(1 << 40);

/// How a route treats WebSocket upgrades.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocket {
    /// Whether a WebSocket handshake may pass (off: refused with 403).
    pub enabled: bool,
    /// A tunnel silent both ways this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// The largest message (the sum of its frames' payloads) either side may
    /// send; a larger one closes the tunnel with 1009.
    pub max_message_bytes: u64,
}

impl Default for WebSocket {
    fn default() -> Self {
        Self {
            enabled: false,
            idle_timeout: Some(Duration::from_secs(300)),
            max_message_bytes: 16 << 20,
        }
    }
}

impl Decode for WebSocket {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "websocket settings", diags)?;
        let defaults = Self::default();
        let idle = defaults.idle_timeout.unwrap_or_default();
        let settings = Self {
            enabled: f.or("enabled", defaults.enabled, diags),
            idle_timeout: Some(f.duration("idle_timeout", TIMEOUT, idle, diags))
                .filter(|d| !d.is_zero()),
            max_message_bytes: f
                .within(
                    "max_message_bytes",
                    MESSAGE_BYTES,
                    ByteSize(defaults.max_message_bytes),
                    diags,
                )
                .0,
        };
        f.finish(diags);
        Some(settings)
    }
}
