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

/// A request body could not be read from the client: broken framing (an
/// invalid chunk), or the client went away mid-body. The client's fault.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

/// Wraps a client's request `body` so that reading more than `limit` bytes
/// fails with [`BodyLimitExceeded`] and any other read error is a
/// [`ClientBodyError`]: layers that send the body on can tell the client's
/// failure from their own.
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
                Box::new(ClientBodyError(e)) as BoxError
            }
        })
        .boxed_unsync()
}

/// How much of a request body [`prime`] reads ahead before forwarding.
pub const PRIME_BYTES: usize = 64 * 1024;

/// A body after [`prime`]: whole, or what arrived so far followed by the rest.
pub enum Primed {
    /// It had all arrived: forwarded with an exact length.
    Complete(Bytes),
    /// More is on its way.
    Partial(Body),
}

/// Reads the frames of `body` that have already arrived (up to `budget`
/// bytes) without waiting for more, so that a body that is broken from the
/// start (an invalid chunk in the first packet) fails before anything of it
/// is forwarded, and a small body that arrived whole is sent with a length.
pub async fn prime(mut body: Body, budget: usize) -> Result<Primed, BoxError> {
    let mut head: std::collections::VecDeque<Frame<Bytes>> = std::collections::VecDeque::new();
    let mut read = 0;
    while read < budget {
        let ready =
            std::future::poll_fn(
                |cx| match http_body::Body::poll_frame(Pin::new(&mut body), cx) {
                    Poll::Ready(frame) => Poll::Ready(Some(frame)),
                    Poll::Pending => Poll::Ready(None),
                },
            )
            .await;
        match ready {
            None => break,
            Some(None) => {
                return Ok(match whole(&head) {
                    Some(bytes) => Primed::Complete(bytes),
                    None => Primed::Partial(
                        Resumed {
                            head,
                            rest: empty(),
                        }
                        .boxed_unsync(),
                    ),
                });
            }
            Some(Some(frame)) => {
                let frame = frame?;
                read += frame.data_ref().map_or(0, Bytes::len);
                head.push_back(frame);
            }
        }
    }
    if head.is_empty() {
        return Ok(Primed::Partial(body));
    }
    Ok(Primed::Partial(Resumed { head, rest: body }.boxed_unsync()))
}

/// The data of `frames` in one piece, if they are all data.
fn whole(frames: &std::collections::VecDeque<Frame<Bytes>>) -> Option<Bytes> {
    let mut out = bytes::BytesMut::new();
    for frame in frames {
        out.extend_from_slice(frame.data_ref()?);
    }
    Some(out.freeze())
}

/// Frames already read, then the rest of the body they came from.
struct Resumed {
    head: std::collections::VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl http_body::Body for Resumed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.head.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }
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
