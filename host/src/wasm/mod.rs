//! The Proxy-Wasm runtime: engine and compiled plugins (`plugin`), VMs (`vm`),
//! filter instances with their VM pools (`filter`), the stream data filters
//! see (`stream`, `headers`), and the host functions (`abi`).
//!
//! Knows wasmtime and the `http` types; knows nothing of hyper, sockets or
//! routes. The `pipeline` drives it through this module's API, which exposes
//! no wasmtime types.

pub(crate) mod abi;
mod filter;
mod headers;
mod plugin;
mod slot;
mod stream;
mod vm;

pub use abi::pairs::{decode as decode_pairs, encode as encode_pairs};
pub use abi::unix_nanos;
pub use filter::{FailMode, FilterError, FilterInstance, FilterStream};
pub use headers::MapType;
pub use plugin::{LoadError, Plugin, PluginLimits, Runtime};
pub use stream::{LocalReply, Phase, RequestHead, ResponseHead, Resume, StreamData, StreamInfo};
pub use vm::{Callback, Delivery, StartError};
