//! gRPC callouts from filters (`proxy_grpc_call`, `proxy_grpc_stream`),
//! described without hyper types: the host moves opaque message bytes and
//! never parses protobuf.
//!
//! A callout is one exchange: the filter's messages go out through
//! [`GrpcExchange::outgoing`], and what the server answers comes back, in
//! order, as [`GrpcEvent`]s through [`GrpcExchange::events`], once the
//! [`GrpcExchange::driver`] runs. Every exchange ends with exactly one
//! [`GrpcEvent::Close`], as Envoy's gRPC client ends every stream with a
//! status.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// The largest message a callout sends or receives (gRPC's default limit).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Messages a filter may queue on one stream before the server has taken them.
pub const OUTGOING_MESSAGES: usize = 64;

/// gRPC status codes the host produces itself.
pub mod status {
    /// 0: the call succeeded.
    pub const OK: u32 = 0;
    /// 2: the stream ended without a status.
    pub const UNKNOWN: u32 = 2;
    /// 4: the call did not finish within its timeout.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// 8: a message exceeded [`super::MAX_MESSAGE_BYTES`].
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// 13: the server broke the protocol (or a unary call got no message).
    pub const INTERNAL: u32 = 13;
    /// 14: the upstream could not be reached or the connection failed.
    pub const UNAVAILABLE: u32 = 14;

    /// The status for an HTTP answer without `grpc-status`, by gRPC's
    /// HTTP-to-gRPC table (as Envoy's `httpToGrpcStatus`).
    pub fn from_http(http_status: u16) -> u32 {
        match http_status {
            400 => INTERNAL,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502..=504 => UNAVAILABLE,
            _ => UNKNOWN,
        }
    }
}

/// The headers of a trailers-only gRPC answer with `status` and `message`:
/// `content-type`, `grpc-status`, and `grpc-message` (percent-encoded as
/// gRPC's spec asks) unless the message is empty.
pub fn trailers_only(status: u32, message: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    /// Bytes outside printable ASCII, and `%`, are percent-encoded.
    const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let mut headers = vec![
        (b"content-type".to_vec(), b"application/grpc".to_vec()),
        (b"grpc-status".to_vec(), status.to_string().into_bytes()),
    ];
    if !message.is_empty() {
        let encoded = percent_encoding::percent_encode(message, GRPC_MESSAGE).to_string();
        headers.push((b"grpc-message".to_vec(), encoded.into_bytes()));
    }
    headers
}

/// A gRPC call or stream a filter asked for.
#[derive(Debug, Clone)]
pub struct GrpcRequest {
    /// The upstream group, by manifest name.
    pub upstream: String,
    /// The fully qualified service, e.g. `grpc.health.v1.Health`.
    pub service: String,
    /// The method, e.g. `Check`.
    pub method: String,
    /// Initial metadata, sent as request headers (keys lower-cased).
    pub metadata: Vec<(String, Vec<u8>)>,
    /// How long the whole exchange may take. `None`: a unary call gets the
    /// upstream group's request timeout (no call can hang), a stream none.
    pub timeout: Option<Duration>,
    /// A unary call (one message each way) rather than a stream.
    pub unary: bool,
}

/// Something the server sent, in the order it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcEvent {
    /// The response headers (`:status` first); empty when the exchange
    /// failed before the server answered, or for a trailers-only answer.
    InitialMetadata(Vec<(Vec<u8>, Vec<u8>)>),
    /// One message, without its 5-byte gRPC frame header.
    Message(Bytes),
    /// The trailers (with `grpc-status`); empty when the exchange failed.
    TrailingMetadata(Vec<(Vec<u8>, Vec<u8>)>),
    /// The exchange is over: its gRPC status and message.
    Close {
        /// The gRPC status code.
        status: u32,
        /// `grpc-message` (percent-decoded), or why the host ended it.
        message: String,
    },
}

/// A future that runs an exchange to its end.
pub type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An opened exchange: run `driver`, feed `outgoing`, read `events`.
pub struct GrpcExchange {
    /// Messages to send; dropping the sender half-closes the stream.
    pub outgoing: mpsc::Sender<Bytes>,
    /// What the server sent, ending with one [`GrpcEvent::Close`].
    pub events: mpsc::Receiver<GrpcEvent>,
    /// Sends and receives until the exchange ends; dropping it resets the stream.
    pub driver: Driver,
}

/// Why a gRPC callout could not even be started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GrpcRejected {
    /// No upstream group has that name.
    #[error("unknown upstream `{0}`")]
    UnknownUpstream(String),
    /// The service or method cannot form a request path, or metadata is not a valid header.
    #[error("invalid gRPC callout: {0}")]
    BadRequest(String),
}

/// Opens gRPC exchanges with upstream groups.
pub trait GrpcCaller: Send + Sync {
    /// Opens an exchange; rejects it at once when it cannot be started.
    fn open(&self, request: GrpcRequest) -> Result<GrpcExchange, GrpcRejected>;
}

impl GrpcCaller for super::NoUpstreams {
    fn open(&self, request: GrpcRequest) -> Result<GrpcExchange, GrpcRejected> {
        Err(GrpcRejected::UnknownUpstream(request.upstream))
    }
}

/// What a unary call ends with, from its events, as Envoy's gRPC client
/// reports it: the message on success, else the status and its message. A
/// call that ended OK without a message is `INTERNAL`, as in Envoy.
#[derive(Debug, Default)]
pub struct UnaryOutcome {
    message: Option<Bytes>,
}

impl UnaryOutcome {
    /// Takes in one event; returns the call's result once it is over.
    pub fn push(&mut self, event: GrpcEvent) -> Option<Result<Bytes, (u32, String)>> {
        match event {
            GrpcEvent::Message(message) => {
                self.message = Some(message);
                None
            }
            GrpcEvent::InitialMetadata(_) | GrpcEvent::TrailingMetadata(_) => None,
            GrpcEvent::Close { status, message } if status != status::OK => {
                Some(Err((status, message)))
            }
            GrpcEvent::Close { .. } => {
                Some(self.message.take().ok_or((status::INTERNAL, String::new())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailers_only_answer_percent_encodes_its_message() {
        let headers = trailers_only(10, "100% aborted\n".as_bytes());
        assert_eq!(headers[1], (b"grpc-status".to_vec(), b"10".to_vec()));
        assert_eq!(
            headers[2],
            (b"grpc-message".to_vec(), b"100%25 aborted%0A".to_vec())
        );
        assert_eq!(trailers_only(0, b"").len(), 2);
    }

    fn close(status: u32, message: &str) -> GrpcEvent {
        GrpcEvent::Close {
            status,
            message: message.into(),
        }
    }

    #[test]
    fn a_unary_call_succeeds_with_its_message_and_fails_with_its_status() {
        let mut ok = UnaryOutcome::default();
        assert_eq!(ok.push(GrpcEvent::InitialMetadata(Vec::new())), None);
        assert_eq!(ok.push(GrpcEvent::Message(Bytes::from_static(b"m"))), None);
        assert_eq!(ok.push(GrpcEvent::TrailingMetadata(Vec::new())), None);
        assert_eq!(ok.push(close(0, "")), Some(Ok(Bytes::from_static(b"m"))));

        let mut denied = UnaryOutcome::default();
        assert_eq!(denied.push(close(7, "no")), Some(Err((7, "no".to_owned()))));

        let mut empty = UnaryOutcome::default();
        assert_eq!(
            empty.push(close(0, "")),
            Some(Err((status::INTERNAL, String::new())))
        );
    }
}
