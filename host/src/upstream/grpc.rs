//! gRPC callouts (`proxy_grpc_call`, `proxy_grpc_stream`) sent to the
//! manifest's upstream groups over HTTP/2 with prior knowledge.
//!
//! The request is `POST /{service}/{method}` with `content-type:
//! application/grpc`, `te: trailers`, a `grpc-timeout` when the call has one,
//! and the filter's initial metadata as headers. Messages go out and come back
//! in gRPC's length-prefixed frames; the bytes inside are the filter's
//! business. Everything the server sends becomes a [`GrpcEvent`], and each
//! exchange ends with one `Close`: the server's `grpc-status`, or the status
//! Weir gives a failure (unreachable: `UNAVAILABLE`, too slow:
//! `DEADLINE_EXCEEDED`, a broken answer: `INTERNAL`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::{UpstreamCaller, UpstreamError, UpstreamGroup};
use crate::services::grpc_call::{
    GrpcCaller, GrpcEvent, GrpcExchange, GrpcRejected, GrpcRequest, MAX_MESSAGE_BYTES,
    OUTGOING_MESSAGES, status,
};

/// Events buffered between the exchange and the VM that reads them.
const EVENTS: usize = 16;

/// The gRPC frame header: a compression flag and a big-endian length.
const FRAME_HEADER: usize = 5;

impl GrpcCaller for UpstreamCaller {
    fn open(&self, call: GrpcRequest) -> Result<GrpcExchange, GrpcRejected> {
        let group = self
            .directory
            .get(&call.upstream)
            .ok_or_else(|| GrpcRejected::UnknownUpstream(call.upstream.clone()))?;
        let (outgoing, messages) = mpsc::channel(OUTGOING_MESSAGES);
        let timeout = call
            .timeout
            .or_else(|| call.unary.then(|| group.request_timeout()));
        let mut request = build_request(&call, timeout, messages)?;
        let mut span = super::caller::callout_span(&mut request, &call.upstream);
        if let Some(span) = &mut span {
            span.set("rpc.system", || "grpc");
            span.set("rpc.service", || call.service.as_str());
            span.set("rpc.method", || call.method.as_str());
        }
        let (events, receiver) = mpsc::channel(EVENTS);
        let driver = Box::pin(async move {
            let mut sink = EventSink {
                events,
                head_seen: false,
            };
            let exchange = exchange(&group, request, &mut sink);
            let close = match timeout {
                Some(timeout) => match tokio::time::timeout(timeout, exchange).await {
                    Ok(close) => close,
                    Err(_) => Close::new(
                        status::DEADLINE_EXCEEDED,
                        UpstreamError::Timeout {
                            upstream: call.upstream.clone(),
                            timeout,
                        }
                        .to_string(),
                    ),
                },
                None => exchange.await,
            };
            if let Some(mut span) = span.take() {
                span.set("rpc.grpc.status_code", || i64::from(close.status));
                if close.status != status::OK {
                    span.fail(&close.status.to_string(), || close.message.clone());
                }
                span.end();
            }
            sink.close(close).await;
        });
        Ok(GrpcExchange {
            outgoing,
            events: receiver,
            driver,
        })
    }
}

/// A status that ends an exchange.
struct Close {
    status: u32,
    message: String,
    trailers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Close {
    fn new(status: u32, message: String) -> Self {
        Self {
            status,
            message,
            trailers: Vec::new(),
        }
    }
}

/// Hands events to the VM's side, in Envoy's order: initial metadata (empty
/// if the server never answered), messages, trailing metadata, close.
struct EventSink {
    events: mpsc::Sender<GrpcEvent>,
    head_seen: bool,
}

impl EventSink {
    /// Sends one event; false once nobody listens (the call was cancelled).
    async fn send(&mut self, event: GrpcEvent) -> bool {
        if matches!(event, GrpcEvent::InitialMetadata(_)) {
            self.head_seen = true;
        }
        self.events.send(event).await.is_ok()
    }

    async fn close(mut self, close: Close) {
        if !self.head_seen && !self.send(GrpcEvent::InitialMetadata(Vec::new())).await {
            return;
        }
        if !self.send(GrpcEvent::TrailingMetadata(close.trailers)).await {
            return;
        }
        let _ = self
            .send(GrpcEvent::Close {
                status: close.status,
                message: close.message,
            })
            .await;
    }
}

/// Runs one exchange until the server's status (or a failure) ends it.
async fn exchange(
    group: &Arc<UpstreamGroup>,
    request: Request<crate::body::Body>,
    sink: &mut EventSink,
) -> Close {
    let response = match group.send_h2(request).await {
        Ok(response) => response,
        Err(error) => return Close::new(status::UNAVAILABLE, error.to_string()),
    };
    let (parts, mut body) = response.into_parts();
    let end_of_stream = http_body::Body::is_end_stream(&body);
    if end_of_stream {
        // Trailers-only: the head carries the status.
        return from_trailers(parts.status, &parts.headers);
    }
    let mut head = vec![(
        b":status".to_vec(),
        parts.status.as_str().as_bytes().to_vec(),
    )];
    head.extend(pairs(&parts.headers));
    if !sink.send(GrpcEvent::InitialMetadata(head)).await {
        return Close::new(status::OK, String::new());
    }
    if parts.status != http::StatusCode::OK {
        return from_trailers(parts.status, &parts.headers);
    }
    let mut decoder = Decoder::default();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => return Close::new(status::INTERNAL, error.to_string()),
        };
        let frame = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => return from_trailers(http::StatusCode::OK, &trailers),
                Err(_) => continue,
            },
        };
        decoder.buffer.extend_from_slice(&frame);
        loop {
            match decoder.next() {
                Ok(Some(message)) => {
                    if !sink.send(GrpcEvent::Message(message)).await {
                        return Close::new(status::OK, String::new());
                    }
                }
                Ok(None) => break,
                Err(close) => return close,
            }
        }
    }
    Close::new(
        status::UNKNOWN,
        "the upstream ended the stream without a gRPC status".into(),
    )
}

/// The close a trailer block (or a trailers-only head) gives: its
/// `grpc-status` and percent-decoded `grpc-message`; without a status, the
/// HTTP status mapped as gRPC's spec maps it.
fn from_trailers(http_status: http::StatusCode, trailers: &HeaderMap) -> Close {
    let grpc_status = trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    let message = trailers
        .get("grpc-message")
        .map(|v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let status = grpc_status.unwrap_or_else(|| status::from_http(http_status.as_u16()));
    Close {
        status,
        message,
        trailers: pairs(trailers),
    }
}

fn pairs(headers: &HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// Splits received bytes into gRPC messages.
#[derive(Default)]
struct Decoder {
    buffer: BytesMut,
}

impl Decoder {
    /// The next whole message, if the buffer holds one.
    fn next(&mut self) -> Result<Option<Bytes>, Close> {
        if self.buffer.len() < FRAME_HEADER {
            return Ok(None);
        }
        let compressed = self.buffer[0];
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if compressed != 0 {
            return Err(Close::new(
                status::INTERNAL,
                "the upstream sent a compressed message, which was not asked for".into(),
            ));
        }
        if len > MAX_MESSAGE_BYTES {
            return Err(Close::new(
                status::RESOURCE_EXHAUSTED,
                format!("a received message exceeds {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        if self.buffer.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        self.buffer.advance(FRAME_HEADER);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }
}

/// The request for `call` (bounded by `timeout`), whose body frames each message from `messages`.
fn build_request(
    call: &GrpcRequest,
    timeout: Option<Duration>,
    messages: mpsc::Receiver<Bytes>,
) -> Result<Request<crate::body::Body>, GrpcRejected> {
    let path = format!("/{}/{}", call.service, call.method);
    let uri = Uri::try_from(path.as_str())
        .map_err(|_| GrpcRejected::BadRequest(format!("invalid path `{path}`")))?;
    let mut request = Request::new(crate::body::boxed(MessageBody { messages }));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    let headers = request.headers_mut();
    for (name, value) in &call.metadata {
        if name.starts_with(':') || RESERVED.contains(&name.as_str()) {
            continue;
        }
        let bad = || GrpcRejected::BadRequest(format!("invalid metadata `{name}`"));
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_bytes(value).map_err(|_| bad())?;
        headers.append(name, value);
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    if let Some(timeout) = timeout
        && let Ok(value) = HeaderValue::try_from(grpc_timeout(timeout))
    {
        headers.insert("grpc-timeout", value);
    }
    Ok(request)
}

/// Headers the host sets itself; the filter's metadata cannot override them.
const RESERVED: [&str; 4] = ["content-type", "te", "grpc-timeout", "host"];

/// A `grpc-timeout` value: milliseconds, at most 8 digits (gRPC's limit),
/// in seconds beyond that.
fn grpc_timeout(timeout: Duration) -> String {
    let ms = timeout.as_millis();
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    }
}

/// A request body of gRPC frames, one per message the filter sends; it ends
/// (half-closes the stream) when the filter's sender is dropped.
struct MessageBody {
    messages: mpsc::Receiver<Bytes>,
}

impl http_body::Body for MessageBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.messages.poll_recv(cx).map(|message| {
            message.map(|message| {
                let mut frame = BytesMut::with_capacity(FRAME_HEADER + message.len());
                frame.put_u8(0);
                frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
                frame.extend_from_slice(&message);
                Ok(Frame::data(frame.freeze()))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_split_from_frames_that_arrive_in_pieces() {
        let mut decoder = Decoder::default();
        decoder.buffer.extend_from_slice(&[0, 0, 0, 0, 2, b'h']);
        assert!(matches!(decoder.next(), Ok(None)));
        decoder.buffer.extend_from_slice(&[b'i', 0, 0, 0, 0, 0]);
        assert!(matches!(decoder.next(), Ok(Some(m)) if m == "hi"));
        assert!(matches!(decoder.next(), Ok(Some(m)) if m.is_empty()));
        assert!(matches!(decoder.next(), Ok(None)));
    }

    #[test]
    fn oversized_and_compressed_messages_end_the_call() {
        let mut decoder = Decoder::default();
        decoder
            .buffer
            .extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(decoder.next(), Err(c) if c.status == status::RESOURCE_EXHAUSTED));
        let mut decoder = Decoder::default();
        decoder.buffer.extend_from_slice(&[1, 0, 0, 0, 0]);
        assert!(matches!(decoder.next(), Err(c) if c.status == status::INTERNAL));
    }

    #[test]
    fn the_status_comes_from_grpc_status_else_from_the_http_status() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("7"));
        trailers.insert("grpc-message", HeaderValue::from_static("not%20you"));
        let close = from_trailers(http::StatusCode::OK, &trailers);
        assert_eq!((close.status, close.message.as_str()), (7, "not you"));
        let close = from_trailers(http::StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new());
        assert_eq!(close.status, status::UNAVAILABLE);
    }

    #[test]
    fn grpc_timeouts_fit_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_millis(250)), "250m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }
}
