//! The one body type that flows through Weir in both directions.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// A boxed error from any body or I/O layer.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body of bytes, boxed so requests and responses of any origin share one type.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A request body grew past the listener's `max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("the request body exceeds the limit of {0} bytes")]
pub struct BodyLimitExceeded(pub u64);

/// Wraps `body` so that reading more than `limit` bytes fails with [`BodyLimitExceeded`].
pub fn limited<B>(body: B, limit: u64) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    http_body_util::Limited::new(body, cap)
        .map_err(move |e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Box::new(BodyLimitExceeded(limit)) as BoxError
            } else {
                e
            }
        })
        .boxed_unsync()
}

/// A body that passes `inner` through unchanged and keeps `kept` alive until
/// the body is dropped: written out, or abandoned. What it keeps decides what
/// happens then (a filter chain's run finishes; a request stops counting as
/// open on its connection).
pub struct Retaining<B, T> {
    inner: B,
    _kept: T,
}

impl<B, T> Retaining<B, T> {
    /// `inner`, keeping `kept` until it is dropped.
    pub fn new(inner: B, kept: T) -> Self {
        Self { inner, _kept: kept }
    }
}

impl<B, T> http_body::Body for Retaining<B, T>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    T: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
