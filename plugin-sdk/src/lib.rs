//! **weir-sdk**: write Weir filters in Rust.
//!
//! A filter is two types: a [`Plugin`], made once per VM from its typed
//! configuration, and a [`Filter`], made by the plugin for each request.
//! `export!` makes a `cdylib` crate built for `wasm32-wasip1` a Proxy-Wasm
//! module:
//!
//! ```ignore
//! use std::rc::Rc;
//! use weir_sdk::{ConfigError, Filter, Flow, Http, Outcome, Plugin};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { greeting: String }
//!
//! struct Hello { greeting: String }
//!
//! impl Plugin for Hello {
//!     const NAME: &'static str = "hello";
//!     type Config = Config;
//!     type Filter = HelloFilter;
//!     fn configure(config: Config) -> Result<Self, ConfigError> {
//!         Ok(Self { greeting: config.greeting })
//!     }
//!     fn filter(self: &Rc<Self>) -> HelloFilter { HelloFilter(self.clone()) }
//! }
//!
//! struct HelloFilter(Rc<Hello>);
//!
//! impl Filter for HelloFilter {
//!     fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
//!         if http.path()?.as_deref() == Some("/forbidden") {
//!             return Ok(http.deny(403, "forbidden", "this path is forbidden"));
//!         }
//!         Ok(Flow::Continue)
//!     }
//!     fn on_response_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
//!         http.set_response_header("x-hello", &self.0.greeting)?;
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! weir_sdk::export!(Hello);
//! ```
//!
//! What the SDK does for every filter:
//! - reads the configuration into `Plugin::Config` with serde and reports a
//!   bad one with the JSON pointer of the offending field ([`ConfigError`]);
//! - answers errors in Weir's JSON shape with the request id ([`Http::deny`]);
//! - turns callouts (upstream calls, Redis) into continuations: start one,
//!   return [`Flow::Pause`], and the closure runs with the answer and
//!   resumes the request when it returns [`Flow::Continue`];
//! - lets a plugin work outside its requests ([`background`]): ticks,
//!   upstream calls of its own, and requests parked on an event
//!   ([`Http::wait`]) until plugin code wakes it;
//! - keeps whole responses in the host's response cache ([`cache`]) and
//!   answers hits without their bodies entering the filter;
//! - returns a `Result` from every host call; a callback that fails with an
//!   [`Error`] is logged with the request id and answered with a JSON 500
//!   (`plugin_error`) instead of trapping the VM.
//!
//! Weir-only services ([`Http::redis`], [`shared::set_ttl`],
//! [`shared::delete`], [`cache`]) are linked into a module only when it calls them, so
//! a filter that does not still loads in any Proxy-Wasm host (Envoy).
//!
//! Compiled natively, the host functions act on the test kit's fake host
//! ([`testing`]), so a filter's callbacks run under `cargo test`.

pub mod background;
pub mod cache;
mod config;
pub mod consumers;
pub mod duration;
mod error;
pub mod headers;
mod host;
mod http;
pub mod log;
pub mod media;
pub mod metrics;
pub mod net;
pub mod params;
pub mod redis;
mod runtime;
pub mod shared;
mod status;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod exports;

use std::rc::Rc;

pub use config::{ConfigError, parse as parse_config};
pub use error::Error;
pub use host::LogLevel;
pub use http::{Body, CallRequest, CallResponse, Http};
pub use redis::RedisValue;
pub use status::{HostError, HostResult};

/// A plugin: one per VM and configuration, shared by its requests' filters.
pub trait Plugin: Sized + 'static {
    /// The plugin's name, in its log lines.
    const NAME: &'static str;
    /// Its configuration, read with serde from the plugin's JSON.
    type Config: serde::de::DeserializeOwned;
    /// The filter it makes for each request.
    type Filter: Filter;

    /// Checks `config` and makes the plugin; an error rejects the
    /// configuration (and, in Weir, the whole manifest change).
    fn configure(config: Self::Config) -> Result<Self, ConfigError>;

    /// The filter of one request.
    fn filter(self: &Rc<Self>) -> Self::Filter;

    /// The tick period asked with [`background::set_tick_period`] elapsed
    /// (on this VM's root context, outside any request).
    fn on_tick(self: &Rc<Self>) {}
}

/// What a filter callback returns: how the request goes on, or a failure
/// that the SDK logs and answers with a JSON 500.
pub type Outcome = Result<Flow, Error>;

/// How a request goes on after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on to the next filter.
    Continue,
    /// Stop here: after a local reply ([`Http::deny`]), while a callout is
    /// in flight, or (in a body callback) to buffer the whole body.
    Pause,
}

/// The filter of one request: its callbacks, each optional.
pub trait Filter: Sized + 'static {
    /// The request's headers arrived.
    fn on_request_headers(&mut self, _http: &mut Http<'_, Self>) -> Outcome {
        Ok(Flow::Continue)
    }

    /// Part of the request body arrived (`body.size` bytes buffered so far).
    fn on_request_body(&mut self, _http: &mut Http<'_, Self>, _body: Body) -> Outcome {
        Ok(Flow::Continue)
    }

    /// The response's headers arrived.
    fn on_response_headers(&mut self, _http: &mut Http<'_, Self>) -> Outcome {
        Ok(Flow::Continue)
    }

    /// Part of the response body arrived.
    fn on_response_body(&mut self, _http: &mut Http<'_, Self>, _body: Body) -> Outcome {
        Ok(Flow::Continue)
    }

    /// The exchange is over (for access logs and counters).
    fn on_log(&mut self, _http: &mut Http<'_, Self>) {}
}

/// Makes a `cdylib` crate a Proxy-Wasm module running plugin type `$plugin`.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn _initialize() {
            #[cfg(target_os = "wasi")]
            unsafe extern "C" {
                fn __wasm_call_ctors();
            }
            #[cfg(target_os = "wasi")]
            // SAFETY: runs the module's static constructors once, before any callback.
            unsafe {
                __wasm_call_ctors();
            }
            $crate::exports::install::<$plugin>();
        }

        // Natively (tests on the test kit) nothing is exported; this keeps
        // the plugin type in use, as the export does in a wasm build.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() -> bool = || $crate::is_plugin::<$plugin>();
    };
}

/// Whether `P` is a plugin (always): lets `export!` name the plugin type
/// in a native build, where nothing is exported.
#[doc(hidden)]
pub fn is_plugin<P: Plugin>() -> bool {
    true
}
