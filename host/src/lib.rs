//! Weir: an API gateway in which every policy is a sandboxed WebAssembly filter.
//!
//! Module layering (lower never imports higher):
//! `config` ← `router` / `upstream` ← `proxy` ← `server` ← `gateway`.
//! See `ARCHITECTURE.md` for the request path.

pub mod config;
pub mod router;
pub mod body;
pub mod error;
pub mod proxy;
pub mod upstream;
pub mod gateway;
pub mod server;

pub use config::Manifest;
pub use gateway::{Gateway, StartError};
