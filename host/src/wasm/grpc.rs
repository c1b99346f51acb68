//! A VM's gRPC callouts: the calls and streams its filter opened and has not
//! seen end, and how each event the server sends becomes the callback Envoy
//! would run for it.
//!
//! A unary call gets one callback, as from Envoy's gRPC client:
//! `proxy_on_grpc_receive` with the message on success, else
//! `proxy_on_grpc_close` with the status. A stream gets every event:
//! initial metadata, each message, trailing metadata, then close. Knows no
//! wasmtime or hyper types.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::services::GrpcEvent;
use crate::services::grpc_call::UnaryOutcome;

/// One open gRPC callout of a VM. Dropping it (cancel, or the VM going away)
/// stops its task, so no callback follows.
pub struct GrpcCallout {
    /// A stream's sender of messages; `None` for a call, or once the filter
    /// closed its side (dropping the sender half-closes the stream).
    pub outgoing: Option<mpsc::Sender<Bytes>>,
    /// The task that runs the exchange and delivers its events.
    pub task: tokio::task::AbortHandle,
    /// For a unary call: what it has received so far.
    pub unary: Option<UnaryOutcome>,
    /// The server closed the stream (it stays until the filter closes its side too).
    pub remote_closed: bool,
}

impl Drop for GrpcCallout {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a gRPC callback can read: map 4 or 5, or buffer 5.
#[derive(Debug)]
pub enum Received {
    /// `GRPC_RECEIVE_INITIAL_METADATA` (map 4).
    InitialMetadata(Vec<(Vec<u8>, Vec<u8>)>),
    /// `GRPC_RECEIVE_TRAILING_METADATA` (map 5).
    TrailingMetadata(Vec<(Vec<u8>, Vec<u8>)>),
    /// `GRPC_RECEIVE_BUFFER` (buffer 5): a message, or a close's status message.
    Buffer(Bytes),
}

impl Received {
    /// The pairs of ABI map `map` (4 or 5), when this is that map.
    pub fn map(&self, map: i32) -> Option<&Vec<(Vec<u8>, Vec<u8>)>> {
        match (self, map) {
            (Self::InitialMetadata(pairs), 4) | (Self::TrailingMetadata(pairs), 5) => Some(pairs),
            _ => None,
        }
    }
}

/// The guest callback an event calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCallback {
    /// `proxy_on_grpc_receive_initial_metadata(root, token, headers)`.
    InitialMetadata,
    /// `proxy_on_grpc_receive(root, token, size)`.
    Receive,
    /// `proxy_on_grpc_receive_trailing_metadata(root, token, trailers)`.
    TrailingMetadata,
    /// `proxy_on_grpc_close(root, token, status)`.
    Close,
}

/// What delivering one event does: the callback, its last argument, what
/// the guest can read meanwhile, and the `proxy_get_status` answer for a close.
pub struct Step {
    /// The callback to run.
    pub callback: GrpcCallback,
    /// Its third argument: a count, a size or a status.
    pub argument: usize,
    /// Readable during the callback.
    pub received: Received,
    /// The status and message of a close.
    pub status: Option<(u32, String)>,
}

impl GrpcCallout {
    /// Turns `event` into the callback to run, if any. `done` is set when the
    /// callout is over for the filter (a call's result, or a close after the
    /// filter closed its side): the VM then forgets it.
    pub fn step(&mut self, event: GrpcEvent, done: &mut bool) -> Option<Step> {
        if let Some(outcome) = self.unary.as_mut() {
            let result = outcome.push(event)?;
            *done = true;
            return Some(match result {
                Ok(message) => Step {
                    callback: GrpcCallback::Receive,
                    argument: message.len(),
                    received: Received::Buffer(message),
                    status: None,
                },
                Err((status, message)) => close(status, message),
            });
        }
        Some(match event {
            GrpcEvent::InitialMetadata(pairs) => Step {
                callback: GrpcCallback::InitialMetadata,
                argument: pairs.len(),
                received: Received::InitialMetadata(pairs),
                status: None,
            },
            GrpcEvent::Message(message) => Step {
                callback: GrpcCallback::Receive,
                argument: message.len(),
                received: Received::Buffer(message),
                status: None,
            },
            GrpcEvent::TrailingMetadata(pairs) => Step {
                callback: GrpcCallback::TrailingMetadata,
                argument: pairs.len(),
                received: Received::TrailingMetadata(pairs),
                status: None,
            },
            GrpcEvent::Close { status, message } => {
                self.remote_closed = true;
                *done = self.outgoing.is_none();
                close(status, message)
            }
        })
    }
}

fn close(status: u32, message: String) -> Step {
    Step {
        callback: GrpcCallback::Close,
        argument: status as usize,
        received: Received::Buffer(Bytes::from(message.clone().into_bytes())),
        status: Some((status, message)),
    }
}
