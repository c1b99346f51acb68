//! Every error the gateway itself answers with, and the one function that turns
//! it into a response.
//!
//! Errors record whose fault they are ([`Fault`]) so logs and metrics can tell a
//! bad client from a bad upstream from a bug in Weir.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body, BoxError};
use crate::pipeline::PipelineError;
use crate::wasm::FilterError;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream failed or was unreachable.
    Upstream,
    /// Weir itself failed.
    Internal,
}

/// An error Weir answers a request with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
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
    /// Every attempt to connect to the upstream failed.
    #[error("upstream `{upstream}` is unavailable: {source}")]
    UpstreamUnavailable {
        /// Upstream group name.
        upstream: String,
        /// The last connection error.
        source: BoxError,
    },
    /// The upstream did not answer in time.
    #[error("upstream `{upstream}` did not answer within {}ms", timeout.as_millis())]
    UpstreamTimeout {
        /// Upstream group name.
        upstream: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// A filter of the route's pipeline failed or misbehaved.
    #[error(transparent)]
    Plugin(#[from] crate::pipeline::PipelineError),
    /// The upstream connection failed after the request was sent.
    #[error("upstream `{upstream}` failed: {source}")]
    UpstreamFailed {
        /// Upstream group name.
        upstream: String,
        /// The error.
        source: BoxError,
    },
}

impl GatewayError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::UpstreamUnavailable { .. } | Self::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Plugin(e) => match e {
                PipelineError::Filter(_) | PipelineError::Closed { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                PipelineError::PauseTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                PipelineError::BufferLimit { request: true, .. } => StatusCode::PAYLOAD_TOO_LARGE,
                PipelineError::BufferLimit { request: false, .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    /// A stable machine-readable code (part of the public error format).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no_route",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BadRequest { .. } => "bad_request",
            Self::UpstreamUnavailable { .. } => "upstream_unavailable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamFailed { .. } => "upstream_failed",
            Self::Plugin(e) => match e {
                PipelineError::Filter(FilterError::Failed { .. }) => "plugin_failed",
                PipelineError::Filter(FilterError::Unavailable { .. }) => "plugin_unavailable",
                PipelineError::Closed { .. } => "plugin_closed_stream",
                PipelineError::PauseTimeout { .. } => "plugin_timeout",
                PipelineError::BufferLimit { request: true, .. } => "body_too_large",
                PipelineError::BufferLimit { request: false, .. } => "response_too_large",
            },
        }
    }

    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::NoRoute { .. } | Self::BodyTooLarge { .. } | Self::BadRequest { .. } => {
                Fault::Downstream
            }
            Self::UpstreamUnavailable { .. }
            | Self::UpstreamTimeout { .. }
            | Self::UpstreamFailed { .. } => Fault::Upstream,
            Self::Plugin(PipelineError::BufferLimit { request: true, .. }) => Fault::Downstream,
            Self::Plugin(_) => Fault::Internal,
        }
    }
}

/// Turns an error into the JSON response every gateway error uses:
/// `{"error": {"status", "code", "message", "request_id"}}`.
pub fn respond(error: &GatewayError, request_id: &str) -> Response<Body> {
    let status = error.status();
    let payload = serde_json::json!({
        "error": {
            "status": status.as_u16(),
            "code": error.code(),
            "message": error.to_string(),
            "request_id": request_id,
        }
    });
    let mut response = Response::new(body::full(payload.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(crate::proxy::REQUEST_ID, id);
    }
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn renders_the_json_error_body() {
        let error = GatewayError::BodyTooLarge { limit: 10 };
        let response = respond(&error, "req-1");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("full body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(json["error"]["status"], 413);
        assert_eq!(json["error"]["code"], "body_too_large");
        assert_eq!(json["error"]["request_id"], "req-1");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("10 bytes"))
        );
    }
}
