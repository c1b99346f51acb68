//! HTTP callouts from filters (`proxy_http_call`), described without hyper types.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

/// A callout a filter asked for.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// The upstream group, by manifest name.
    pub upstream: String,
    /// Headers including `:method`, `:path` and `:authority`.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Bytes,
    /// Timeout (`None` = the upstream group's own).
    pub timeout: Option<Duration>,
}

/// The answer to a callout.
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    /// Headers, `:status` first.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Body.
    pub body: Bytes,
    /// Trailers.
    pub trailers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why a callout could not even be sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallRejected {
    /// No upstream group has that name.
    #[error("unknown upstream `{0}`")]
    UnknownUpstream(String),
    /// A required pseudo-header is missing or invalid.
    #[error("invalid callout request: {0}")]
    BadRequest(String),
}

/// A callout in flight: resolves to the response or the reason it failed.
pub type PendingCall = Pin<Box<dyn Future<Output = Result<CallResponse, String>> + Send>>;

/// Sends callouts to upstream groups.
pub trait HttpCaller: Send + Sync {
    /// Starts a callout; rejects it at once when it cannot be sent.
    fn call(&self, request: CallRequest) -> Result<PendingCall, CallRejected>;
}

/// A caller with no upstreams (every callout names an unknown upstream).
pub struct NoUpstreams;

impl HttpCaller for NoUpstreams {
    fn call(&self, request: CallRequest) -> Result<PendingCall, CallRejected> {
        Err(CallRejected::UnknownUpstream(request.upstream))
    }
}
