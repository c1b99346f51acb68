//! The error vocabulary every layer shares, and the one function that turns an
//! error into a response.
//!
//! Each layer owns its error type (`upstream::UpstreamError`,
//! `wasm::FilterError`, the lifecycle's `RequestError`, …) and implements
//! [`HttpError`]: which status it answers with, a stable code, and whose fault
//! it is ([`Fault`]), so logs and metrics can tell a bad client from a bad
//! upstream from a bug in Weir. [`respond`] is the only place an error becomes
//! a response: Weir's JSON error, or for a gRPC client a trailers-only gRPC
//! answer. This module sits at the bottom: it imports no other layer.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};
use crate::grpc;
use crate::request_id::REQUEST_ID;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream failed or was unreachable.
    Upstream,
    /// Weir itself (or one of its filters) failed.
    Internal,
}

/// An error a request can be answered with.
pub trait HttpError: std::error::Error + Send + Sync + 'static {
    /// The HTTP status this error answers with.
    fn status(&self) -> StatusCode;
    /// A stable machine-readable code (part of the public error format).
    fn code(&self) -> &'static str;
    /// Whose fault it is.
    fn fault(&self) -> Fault;
    /// Headers the status calls for (`Allow` on a 405, `Retry-After`, …);
    /// none by default.
    fn add_headers(&self, _headers: &mut HeaderMap) {}
}

/// Turns an error into the JSON response every gateway error uses:
/// `{"error": {"status", "code", "message", "request_id"}}`; or, when the
/// request is gRPC (`grpc`), into gRPC's own form of an error: `200`, no
/// body, `grpc-status` mapped from the HTTP status ([`grpc::status_for`]) and
/// `grpc-message` with the error's message, in the head (trailers-only).
pub fn respond(
    error: &dyn HttpError,
    request_id: &HeaderValue,
    grpc: Option<grpc::Kind>,
) -> Response<Body> {
    let status = error.status();
    if let Some(kind) = grpc {
        let mut response = Response::new(body::empty());
        let headers = response.headers_mut();
        grpc::set_status(headers, kind, grpc::status_for(status), &error.to_string());
        headers.insert(REQUEST_ID, request_id.clone());
        return response;
    }
    let payload = serde_json::json!({
        "error": {
            "status": status.as_u16(),
            "code": error.code(),
            "message": error.to_string(),
            "request_id": request_id.to_str().unwrap_or("-"),
        }
    });
    let mut response = Response::new(body::full(payload.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REQUEST_ID, request_id.clone());
    error.add_headers(headers);
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the request body exceeds the limit of 10 bytes")]
    struct TooLarge;

    impl HttpError for TooLarge {
        fn status(&self) -> StatusCode {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        fn code(&self) -> &'static str {
            "body_too_large"
        }
        fn fault(&self) -> Fault {
            Fault::Downstream
        }
    }

    #[tokio::test]
    async fn renders_the_json_error_body() {
        let response = respond(&TooLarge, &HeaderValue::from_static("req-1"), None);
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[REQUEST_ID], "req-1");
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

    #[tokio::test]
    async fn answers_a_grpc_client_with_a_trailers_only_status() {
        let id = HeaderValue::from_static("req-2");
        let response = respond(&TooLarge, &id, Some(grpc::Kind::Web { text: false }));
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "application/grpc-web");
        assert_eq!(headers["grpc-status"], "8");
        assert_eq!(
            headers["grpc-message"],
            "the request body exceeds the limit of 10 bytes"
        );
        assert_eq!(headers[REQUEST_ID], "req-2");
        assert!(http_body::Body::is_end_stream(response.body()));
    }
}
