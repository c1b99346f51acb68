//! Bodies through a filter chain: the first pass that decides whether a body
//! streams or is held whole ([`lead_body`]), the stream that runs each later
//! chunk through the chain ([`Filtered`]). A run is kept alive until its
//! response body is done by [`crate::body::Retaining`].

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;

use super::chain::{self, BodyStep, Direction, SharedRun};
use super::error::{RequestError, body_error};
use crate::body::{self, Body, BoxError};
use crate::exchange::LocalReply;

/// How a body starts out after its first pass through the filters.
pub(super) enum Lead {
    /// The filters buffered it to the end: here it is, whole, with its
    /// trailers (as the filters left them) if it had any (gRPC's status).
    Complete(Bytes, Option<HeaderMap>),
    /// Data went on before the end: send `prefix`, then stream `rest` through the filters.
    Streaming { prefix: Bytes, rest: Body },
    /// A filter answered locally.
    Reply(LocalReply),
}

/// Reads `body` until the filters release data (or it ends).
pub(super) async fn lead_body<B>(
    run: &SharedRun,
    direction: Direction,
    mut body: B,
    limit: u64,
) -> Result<Lead, RequestError>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut kept_trailers = None;
    loop {
        let (chunk, end) = match body.frame().await {
            None => (Bytes::new(), true),
            Some(Err(e)) => return Err(body_error(e.into(), limit)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => (data, body.is_end_stream()),
                // Trailers: run them, and end the body; they go on after it.
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let (trailers, _) = chain::lock(run).trailers(direction, trailers)?;
                        kept_trailers = Some(trailers);
                    }
                    (Bytes::new(), true)
                }
            },
        };
        let step = chain::lock(run).body(direction, chunk, end, limit)?;
        match step {
            BodyStep::Reply(reply) => return Ok(Lead::Reply(reply)),
            BodyStep::Emit(bytes) if end => return Ok(Lead::Complete(bytes, kept_trailers)),
            BodyStep::Emit(prefix) if !prefix.is_empty() => {
                return Ok(Lead::Streaming {
                    prefix,
                    rest: body::boxed(body),
                });
            }
            BodyStep::Emit(_) | BodyStep::Buffering => {}
        }
    }
}

/// `bytes`, then `trailers` when there are some.
pub(super) fn whole(bytes: Bytes, trailers: Option<HeaderMap>) -> Body {
    let Some(trailers) = trailers else {
        return body::full(bytes);
    };
    let trailers = std::future::ready(Some(Ok(trailers)));
    body::boxed(http_body_util::Full::new(bytes).with_trailers(trailers))
}

/// A filter answered locally after the head had gone on; the stream is aborted.
#[derive(Debug, thiserror::Error)]
#[error("a filter answered locally after the stream had started")]
struct LateReply;

/// Streams a body through the chain chunk by chunk.
pub(super) struct Filtered {
    inner: Body,
    run: SharedRun,
    direction: Direction,
    limit: u64,
    prefix: Option<Bytes>,
    ended: bool,
}

impl Filtered {
    pub(super) fn new(
        inner: Body,
        run: SharedRun,
        direction: Direction,
        limit: u64,
        prefix: Bytes,
    ) -> Self {
        Self {
            inner,
            run,
            direction,
            limit,
            prefix: Some(prefix),
            ended: false,
        }
    }

    fn step(&mut self, chunk: Bytes, end: bool) -> Option<Result<Frame<Bytes>, BoxError>> {
        let step = chain::lock(&self.run).body(self.direction, chunk, end, self.limit);
        match step {
            Ok(BodyStep::Emit(bytes)) if !bytes.is_empty() => Some(Ok(Frame::data(bytes))),
            Ok(BodyStep::Emit(_)) | Ok(BodyStep::Buffering) => None,
            Ok(BodyStep::Reply(_)) => Some(Err(Box::new(LateReply))),
            Err(e) => Some(Err(Box::new(e))),
        }
    }
}

impl HttpBody for Filtered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    self.ended = true;
                    if let Some(frame) = self.step(Bytes::new(), true) {
                        return Poll::Ready(Some(frame));
                    }
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let end = self.inner.is_end_stream();
                        self.ended = end;
                        if let Some(frame) = self.step(data, end) {
                            return Poll::Ready(Some(frame));
                        }
                    }
                    Err(frame) => {
                        let Ok(trailers) = frame.into_trailers() else {
                            continue;
                        };
                        self.ended = true;
                        let flushed = self.step(Bytes::new(), true);
                        let result = chain::lock(&self.run).trailers(self.direction, trailers);
                        return Poll::Ready(Some(match (flushed, result) {
                            (_, Err(e)) => Err(Box::new(e)),
                            (Some(Err(e)), _) => Err(e),
                            (_, Ok((_, Some(_)))) => Err(Box::new(LateReply)),
                            (_, Ok((trailers, None))) => Ok(Frame::trailers(trailers)),
                        }));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.prefix.is_none()
    }
}
