//! The errors of the request lifecycle: its own (no route, a body over the
//! limit, a request it cannot forward) and those of the layers it drives.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::chain::ChainError;
use super::target::TargetError;
use crate::body::{self, BoxError};
use crate::error::{Fault, HttpError};
use crate::observe::Flag;
use crate::upstream::UpstreamError;

/// Why a request got an error response.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No route matched.
    #[error("no route matches {method} {path}")]
    NoRoute {
        /// Request method.
        method: http::Method,
        /// Request path.
        path: String,
    },
    /// A route matches the path but not the method.
    #[error("{method} is not allowed on {path}; allowed: {}", list(allowed))]
    MethodNotAllowed {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// The methods the matching routes allow.
        allowed: Vec<Method>,
    },
    /// The path or host is malformed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The request body exceeds the listener's limit.
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request could not be forwarded as received.
    #[error("bad request: {reason}")]
    BadRequest {
        /// Why.
        reason: String,
    },
    /// A WebSocket handshake on a route that does not allow upgrades.
    #[error("route `{route}` does not allow WebSocket upgrades")]
    WebSocketNotAllowed {
        /// The route's name.
        route: String,
    },
    /// The upstream exchange failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The route's filter chain stopped the request.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl HttpError for RequestError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Target(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::WebSocketNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::Upstream(e) => e.status(),
            Self::Chain(e) => e.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no_route",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Target(TargetError::Path(_)) => "invalid_path",
            Self::Target(_) => "invalid_host",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BadRequest { .. } => "bad_request",
            Self::WebSocketNotAllowed { .. } => "websocket_not_allowed",
            Self::Upstream(e) => e.code(),
            Self::Chain(e) => e.code(),
        }
    }

    fn fault(&self) -> Fault {
        match self {
            Self::NoRoute { .. }
            | Self::MethodNotAllowed { .. }
            | Self::Target(_)
            | Self::BodyTooLarge { .. }
            | Self::BadRequest { .. }
            | Self::WebSocketNotAllowed { .. } => Fault::Downstream,
            Self::Upstream(e) => e.fault(),
            Self::Chain(e) => e.fault(),
        }
    }

    fn add_headers(&self, headers: &mut HeaderMap) {
        match self {
            Self::MethodNotAllowed { allowed, .. } => {
                if let Ok(value) = HeaderValue::from_str(&list(allowed)) {
                    headers.insert(header::ALLOW, value);
                }
            }
            Self::Upstream(e) => e.add_headers(headers),
            Self::Chain(e) => e.add_headers(headers),
            _ => {}
        }
    }
}

impl RequestError {
    /// The access log's flag for this failure, if it has one.
    pub fn flag(&self) -> Option<Flag> {
        match self {
            Self::NoRoute { .. } | Self::MethodNotAllowed { .. } => Some(Flag::NoRoute),
            Self::Upstream(UpstreamError::Timeout { .. }) => Some(Flag::UpstreamTimeout),
            Self::Upstream(UpstreamError::Unavailable { .. } | UpstreamError::Failed { .. }) => {
                Some(Flag::UpstreamFailed)
            }
            Self::Upstream(UpstreamError::CircuitOpen { .. }) => Some(Flag::CircuitOpen),
            Self::Upstream(UpstreamError::NoHealthyTarget { .. }) => Some(Flag::NoHealthyUpstream),
            Self::Chain(ChainError::Filter(_)) => Some(Flag::PluginFailed),
            _ => None,
        }
    }
}

/// `GET, HEAD`.
fn list(methods: &[Method]) -> String {
    let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    names.join(", ")
}

/// Maps a request body read error: past the limit it is the client's 413,
/// anything else a bad request.
pub(super) fn body_error(error: BoxError, limit: u64) -> RequestError {
    if error.is::<body::BodyLimitExceeded>() {
        RequestError::BodyTooLarge { limit }
    } else if error.is::<body::ClientBodyError>() {
        RequestError::BadRequest {
            reason: error.to_string(),
        }
    } else {
        RequestError::BadRequest {
            reason: format!("the body could not be read: {error}"),
        }
    }
}
