//! The Proxy-Wasm runtime: engine and compiled plugins (`plugin`), VMs (`vm`),
//! filter instances with their VM pools (`filter`, `slot`), the header maps filters
//! see (`headers`), the host functions (`abi`), and the recording of what a
//! filter asks of them for `weir plugin test` (`trace`).
//!
//! Knows wasmtime, the `http` types and the stream data of `crate::exchange`;
//! knows nothing of hyper, sockets, routes or the request lifecycle. The
//! Proxy-Wasm adapter in `crate::filters` drives it through this module's API,
//! which exposes no wasmtime types.

pub(crate) mod abi;
mod filter;
mod grpc;
mod headers;
mod plugin;
mod slot;
mod trace;
mod vm;

/// The stream data lives below this module (`crate::exchange`), so the
/// lifecycle owns it without importing the runtime.
use crate::exchange as stream;

pub use abi::pairs::{decode as decode_pairs, encode as encode_pairs};
pub use abi::unix_nanos;
pub use filter::{FilterError, FilterInstance, FilterSettings, FilterStream, VmUsage};
pub use headers::MapType;
pub use plugin::{LoadError, Plugin, PluginLimits, Runtime};
pub use trace::{Event, Trace, describe_in_full};
pub use vm::{Callback, Delivery, StartError};
