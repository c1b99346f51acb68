//! Weir: an API gateway in which every policy is a sandboxed WebAssembly filter.
//!
//! Layers, lowest first; a module imports only modules on its left or its own
//! level's helpers (see `ARCHITECTURE.md` for the request path):
//! `worker`, `body`, `request_id`, `normalize`, `grpc` (its wire facts), `builtins` (the plugins compiled in) ← `config` ← `error`, `exchange`, `services`
//! ← `router`, `upstream`, `wasm`
//! ← `lifecycle` (the `HttpFilter` trait, chains, the snapshot type, the one request path)
//! ← `filters` (the Proxy-Wasm adapter) ← `snapshot` (manifest → snapshot)
//! ← `server` ← `gateway` ← `control` (reloads from outside), `tool` (`weir plugin test`)
//! ← the `weir` binary.

mod body;
pub mod builtins;
pub mod config;
pub mod control;
mod error;
pub mod exchange;
mod file_watch;
pub mod filters;
pub mod gateway;
mod grpc;
pub mod lifecycle;
pub mod normalize;
pub mod observe;
mod pem;
mod request_id;
pub mod router;
mod server;
pub mod services;
mod snapshot;
pub mod tool;
mod tunnel;
mod upstream;
pub mod wasm;
pub mod worker;

pub use config::Manifest;
pub use gateway::{Gateway, StartError};
