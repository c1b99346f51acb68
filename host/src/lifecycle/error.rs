//! The errors of the request lifecycle: its own (no route, a body over the
//! limit, a request it cannot forward) and those of the layers it drives.

use http::StatusCode;

use super::chain::ChainError;
use crate::body::{self, BoxError};
use crate::error::{Fault, HttpError};
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
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Upstream(e) => e.status(),
            Self::Chain(e) => e.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no_route",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BadRequest { .. } => "bad_request",
            Self::Upstream(e) => e.code(),
            Self::Chain(e) => e.code(),
        }
    }

    fn fault(&self) -> Fault {
        match self {
            Self::NoRoute { .. } | Self::BodyTooLarge { .. } | Self::BadRequest { .. } => {
                Fault::Downstream
            }
            Self::Upstream(e) => e.fault(),
            Self::Chain(e) => e.fault(),
        }
    }
}

/// Maps a request body read error: past the limit it is the client's 413,
/// anything else a bad request.
pub(super) fn body_error(error: BoxError, limit: u64) -> RequestError {
    if error.is::<body::BodyLimitExceeded>() {
        RequestError::BodyTooLarge { limit }
    } else {
        RequestError::BadRequest {
            reason: format!("the body could not be read: {error}"),
        }
    }
}
