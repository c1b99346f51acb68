//! Tools that run a part of the gateway on its own, for people debugging
//! it: `plugin_test`, one request through one filter (`weir plugin test`).
//!
//! Sits at the top with `control`: it drives the lower layers (the Wasm
//! runtime, the Proxy-Wasm adapter, upstream callouts) without a gateway,
//! and nothing imports it but the `weir` binary.

pub mod plugin_test;
