//! gRPC-Web's bodies as gRPC's: a `grpc-web-text` request body decoded from
//! base64 as it streams ([`decode_text`]), and a response body with its
//! trailers written at its end as gRPC-Web's trailer frame (flag `0x80`),
//! base64-encoded for `-text` ([`encode_response`]). Nothing is buffered
//! beyond the few bytes of an unfinished base64 quantum.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};

use crate::body::{self, Body, BoxError, ClientBodyError};

/// The flag byte of gRPC-Web's trailer frame.
const TRAILER_FLAG: u8 = 0x80;

/// A `grpc-web-text` request body that is not base64.
#[derive(Debug, thiserror::Error)]
#[error("the grpc-web-text body is not base64: {0}")]
struct NotBase64(String);

/// `body` decoded from base64 as it arrives (each 4-character quantum on its
/// own terms, so padding between messages is fine).
pub(super) fn decode_text(body: Body) -> Body {
    body::boxed(TextDecoder {
        inner: body,
        carry: BytesMut::new(),
    })
}

struct TextDecoder {
    inner: Body,
    /// Characters of an unfinished quantum.
    carry: BytesMut,
}

impl TextDecoder {
    /// Decodes the whole quanta of `carry` + `chunk`, keeping the rest.
    fn decode(&mut self, chunk: &[u8]) -> Result<Bytes, BoxError> {
        self.carry
            .extend(chunk.iter().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.carry.len() / 4 * 4;
        let text = self.carry.split_to(whole);
        let mut out = Vec::with_capacity(whole / 4 * 3);
        // A quantum with padding ends a base64 run: decode run by run.
        let mut start = 0;
        for end in (4..=text.len()).step_by(4) {
            if text[end - 1] == b'=' || end == text.len() {
                STANDARD
                    .decode_vec(&text[start..end], &mut out)
                    .map_err(|e| not_base64(e.to_string()))?;
                start = end;
            }
        }
        Ok(Bytes::from(out))
    }
}

fn not_base64(reason: String) -> BoxError {
    Box::new(ClientBodyError(Box::new(NotBase64(reason))))
}

impl HttpBody for TextDecoder {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            return match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) if self.carry.is_empty() => Poll::Ready(None),
                Poll::Ready(None) => {
                    self.carry.clear();
                    Poll::Ready(Some(Err(not_base64("it ends mid-quantum".into()))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match self.decode(&data) {
                        Ok(decoded) if decoded.is_empty() => continue,
                        Ok(decoded) => Poll::Ready(Some(Ok(Frame::data(decoded)))),
                        Err(e) => Poll::Ready(Some(Err(e))),
                    },
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                },
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.carry.is_empty() && self.inner.is_end_stream()
    }
}

/// `body` as gRPC-Web: data as it comes (base64 when `text`), and the
/// trailers, if any, as the trailer frame at the end.
pub(super) fn encode_response(body: Body, text: bool) -> Body {
    body::boxed(WebEncoder {
        inner: body,
        text,
        carry: BytesMut::new(),
        ended: false,
    })
}

struct WebEncoder {
    inner: Body,
    text: bool,
    /// For `text`: bytes not yet encoded (fewer than three).
    carry: BytesMut,
    ended: bool,
}

impl WebEncoder {
    /// `bytes` as they go out; for text, base64 of whole triplets (all of it
    /// when `last`).
    fn out(&mut self, bytes: &[u8], last: bool) -> Bytes {
        if !self.text {
            return Bytes::copy_from_slice(bytes);
        }
        self.carry.extend_from_slice(bytes);
        let take = if last {
            self.carry.len()
        } else {
            self.carry.len() / 3 * 3
        };
        let raw = self.carry.split_to(take);
        Bytes::from(STANDARD.encode(&raw))
    }
}

/// gRPC-Web's trailer frame: the flag, a big-endian length and the trailers
/// as an HTTP/1 header block (`name:value\r\n`, names lower case).
pub(super) fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut block = BytesMut::new();
    for (name, value) in trailers {
        block.put_slice(name.as_str().as_bytes());
        block.put_u8(b':');
        block.put_slice(value.as_bytes());
        block.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + block.len());
    frame.put_u8(TRAILER_FLAG);
    frame.put_u32(u32::try_from(block.len()).unwrap_or(u32::MAX));
    frame.put_slice(&block);
    frame.freeze()
}

impl HttpBody for WebEncoder {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let (bytes, last) = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => (Bytes::new(), true),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => (data, false),
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => (trailer_frame(&trailers), true),
                        Err(_) => continue,
                    },
                },
            };
            self.ended = last;
            let out = self.out(&bytes, last);
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        body::boxed(StreamBody::new(tokio_stream::iter(frames)))
    }

    async fn all(body: Body) -> Result<Bytes, BoxError> {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn decodes_base64_split_anywhere_and_padded_between_messages() {
        // "hi" and "there", each encoded on its own: "aGk=" "dGhlcmU=".
        let body = chunks(&[b"aG", b"k=dG", b"hlc", b"mU="]);
        assert_eq!(all(decode_text(body)).await.expect("decodes"), "hithere");
    }

    #[tokio::test]
    async fn refuses_a_body_that_is_not_base64() {
        let error = all(decode_text(chunks(&[b"a*bc"]))).await.expect_err("bad");
        assert!(error.is::<ClientBodyError>(), "{error}");
        let error = all(decode_text(chunks(&[b"aGk"])))
            .await
            .expect_err("short");
        assert!(error.is::<ClientBodyError>(), "{error}");
    }

    #[tokio::test]
    async fn writes_trailers_as_the_last_frame_in_base64_for_text() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let source = || {
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
                Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01a"))),
                Ok(Frame::trailers(trailers.clone())),
            ];
            body::boxed(StreamBody::new(tokio_stream::iter(frames)))
        };
        let binary = all(encode_response(source(), false)).await.expect("body");
        let expected = [&b"\0\0\0\0\x01a"[..], &trailer_frame(&trailers)].concat();
        assert_eq!(binary, expected);
        assert_eq!(
            &trailer_frame(&trailers)[..],
            b"\x80\0\0\0\x0fgrpc-status:0\r\n"
        );
        let text = all(encode_response(source(), true)).await.expect("body");
        assert_eq!(STANDARD.decode(&text).expect("base64"), expected);
    }
}
