//! The one body type that flows through Weir in both directions.

use bytes::Bytes;
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
