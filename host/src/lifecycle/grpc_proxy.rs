//! gRPC on the upstream leg: what a gRPC or gRPC-Web request needs beyond
//! plain forwarding, and what its answer needs on the way back.
//!
//! - `te: trailers` goes upstream (the client's was dropped with the other
//!   hop-by-hop headers on receipt; gRPC requires it end to end).
//! - The client's `grpc-timeout` bounds the exchange: the upstream timeout is
//!   the smaller of it and the route's (or upstream's) timeout, the upstream
//!   is told the smaller one, and a response still streaming when it passes
//!   ends with `grpc-status: 4` (DEADLINE_EXCEEDED) in its trailers.
//! - gRPC-Web is translated to gRPC, unless the upstream speaks only
//!   HTTP/1.1 (`protocol: http1`): then it is assumed to serve gRPC-Web
//!   itself and the request goes on as it came.
//! - A filter's local reply to a gRPC client that names no `grpc-status`
//!   becomes a gRPC status ([`local_reply`]), as Envoy does.
//!
//! Bodies stream in both directions; nothing here holds a message.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body as HttpBody, Frame};
use tokio::time::{Instant, Sleep};

use super::grpc_web;
use crate::body::{self, Body, BoxError};
use crate::config::model::UpstreamProtocol;
use crate::grpc::{self, Kind, code};

/// One gRPC call on its way upstream.
pub(super) struct Call {
    kind: Kind,
    /// When the client's deadline passes, and how long it was.
    deadline: Option<(Instant, Duration)>,
}

impl Call {
    /// Readies the head of a gRPC request (`te`, `grpc-timeout`, gRPC-Web's
    /// content type) for an upstream spoken to in `protocol` whose timeout
    /// is `timeout`; `None` when the request is not gRPC, or gRPC-Web that
    /// goes on untranslated.
    pub(super) fn prepare(
        headers: &mut HeaderMap,
        protocol: UpstreamProtocol,
        timeout: Duration,
    ) -> Option<Self> {
        let kind = Kind::of(headers)?;
        if matches!(kind, Kind::Web { .. }) {
            if protocol == UpstreamProtocol::Http1 {
                return None;
            }
            to_grpc_content_type(headers);
            // The body's length changes when it is decoded from text.
            headers.remove(header::CONTENT_LENGTH);
        }
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        let deadline = (headers.get(grpc::GRPC_TIMEOUT))
            .and_then(grpc::parse_timeout)
            .map(|asked| {
                let bounded = asked.min(timeout);
                if bounded < asked {
                    headers.insert(grpc::GRPC_TIMEOUT, grpc::timeout_value(bounded));
                }
                (Instant::now() + bounded, bounded)
            });
        Some(Self { kind, deadline })
    }

    /// The upstream timeout: the client's deadline when it set one.
    pub(super) fn timeout(&self) -> Option<Duration> {
        self.deadline.map(|(_, length)| length)
    }

    /// The request body as gRPC (decoded from base64 for `grpc-web-text`).
    pub(super) fn request_body(&self, body: Body) -> Body {
        match self.kind {
            Kind::Web { text: true } => grpc_web::decode_text(body),
            _ => body,
        }
    }

    /// The upstream's answer as the client expects it: bounded by the
    /// deadline, and translated back to gRPC-Web for a gRPC-Web client.
    pub(super) fn response(&self, response: Response<Body>) -> Response<Body> {
        let (mut parts, mut body) = response.into_parts();
        if let Some((at, length)) = self.deadline
            && !body.is_end_stream()
        {
            body = body::boxed(Deadline {
                inner: body,
                sleep: Box::pin(tokio::time::sleep_until(at)),
                length,
                ended: false,
            });
        }
        if let Kind::Web { text } = self.kind {
            if Kind::of(&parts.headers) == Some(Kind::Grpc) {
                to_web_content_type(&mut parts.headers, text);
            }
            parts.headers.remove(header::CONTENT_LENGTH);
            body = grpc_web::encode_response(body, text);
        }
        Response::from_parts(parts, body)
    }
}

/// `application/grpc-web[-text][+suffix]` → `application/grpc[+suffix]`.
fn to_grpc_content_type(headers: &mut HeaderMap) {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return;
    };
    let bytes = value.as_bytes();
    let web = "application/grpc-web".len();
    let text = "application/grpc-web-text".len();
    let rest = match bytes.get(web..text) {
        Some(suffix) if suffix.eq_ignore_ascii_case(b"-text") => &bytes[text..],
        _ => bytes.get(web..).unwrap_or_default(),
    };
    let translated = [&b"application/grpc"[..], rest].concat();
    if let Ok(value) = HeaderValue::from_bytes(&translated) {
        headers.insert(header::CONTENT_TYPE, value);
    }
}

/// `application/grpc[+suffix]` → `application/grpc-web[-text][+suffix]`.
fn to_web_content_type(headers: &mut HeaderMap, text: bool) {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return;
    };
    let rest = value
        .as_bytes()
        .get("application/grpc".len()..)
        .unwrap_or_default();
    let web: &[u8] = if text {
        b"application/grpc-web-text"
    } else {
        b"application/grpc-web"
    };
    if let Ok(value) = HeaderValue::from_bytes(&[web, rest].concat()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
}

/// A gRPC response body that ends with `DEADLINE_EXCEEDED` when the
/// client's deadline passes first (dropping the upstream's stream, which
/// resets it).
struct Deadline {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    length: Duration,
    ended: bool,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.ended = true;
        self.inner = body::empty();
        let mut trailers = HeaderMap::new();
        let message = format!(
            "the call's deadline of {}ms passed",
            self.length.as_millis()
        );
        trailers.insert(
            grpc::GRPC_STATUS,
            HeaderValue::from(code::DEADLINE_EXCEEDED),
        );
        trailers.insert(grpc::GRPC_MESSAGE, grpc::message_value(&message));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }
}

/// A filter's local reply to a gRPC client as a gRPC status, as Envoy sends
/// it: unless the filter gave a `grpc-status` itself (or answered with a
/// success, such as a cached response), the answer becomes
/// `200` with `grpc-status` mapped from the reply's status and the body's
/// text as `grpc-message`; the filter's other headers stay.
pub(super) fn local_reply(response: Response<Body>, kind: Kind, body: &[u8]) -> Response<Body> {
    if response.headers().contains_key(grpc::GRPC_STATUS) || response.status().is_success() {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let status = grpc::status_for(parts.status);
    let message = String::from_utf8_lossy(body);
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    grpc::set_status(&mut parts.headers, kind, status, message.trim_end());
    Response::from_parts(parts, body::empty())
}
