//! The filters a chain is made of: today the adapter that makes a Proxy-Wasm
//! filter instance an [`HttpFilter`](crate::lifecycle::HttpFilter). Native
//! filters (access log, metrics, tracing) join it here.
//!
//! Sits above both `lifecycle` (the trait) and `wasm` (the runtime), so that
//! neither knows the other.

mod proxy_wasm;

pub use proxy_wasm::ProxyWasmFilter;
