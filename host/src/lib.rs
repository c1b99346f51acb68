//! Weir: an API gateway in which every policy is a sandboxed WebAssembly filter.
//!
//! Module layering (lower never imports higher):
//! `config` ← `router` / `upstream` ← `proxy` ← `server` ← `gateway`.
//! See `ARCHITECTURE.md` for the request path.

pub mod body;
pub mod config;
pub mod error;
pub mod gateway;
pub mod pipeline;
pub mod proxy;
pub mod router;
pub mod server;
pub mod services;
pub mod upstream;
pub mod wasm;
pub mod worker;

pub use config::Manifest;
pub use gateway::{Gateway, StartError};
