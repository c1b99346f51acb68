//! The request path of a route with filters: the pipeline's request phases,
//! then the upstream (or the route's fixed response), then the response phases.
//!
//! Bodies stream through untouched while every filter continues. When a filter
//! pauses on a body callback, the body is buffered (bounded by the listener's
//! `max_body_bytes`) until the filter releases it; if that happens at the end
//! of the body, the whole rewritten body goes on with an exact content-length.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{Connection, Proxy, fixed_response, prepare_upstream, send_upstream};
use crate::body::{self, Body, BoxError};
use crate::config::model::{Route, RouteAction};
use crate::error::GatewayError;
use crate::pipeline::{self, BodyStep, Direction, Pipeline, SharedRun};
use crate::wasm::{LocalReply, RequestHead, ResponseHead, StreamInfo};

/// How long a paused filter may hold a stream when the route sets no timeout.
const DEFAULT_PAUSE_LIMIT: Duration = Duration::from_secs(30);

/// Serves a request whose route has filters.
pub(super) async fn serve(
    proxy: &Proxy,
    request: Request<Incoming>,
    route: &Route,
    pipeline: &Pipeline,
    conn: &Connection,
    request_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let limit = conn.limits.max_body_bytes;
    if super::declared_length(request.headers()).is_some_and(|len| len > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let upstream = match &route.action {
        RouteAction::Forward(id) => Some(&proxy.upstreams[id.0]),
        RouteAction::Respond(_) => None,
    };
    let pause_limit = route
        .timeout
        .or(upstream.map(|u| u.request_timeout()))
        .unwrap_or(DEFAULT_PAUSE_LIMIT);
    let (mut parts, incoming) = request.into_parts();
    let info = Arc::new(StreamInfo {
        route_name: route.name.clone(),
        upstream_name: upstream.map(|u| u.name().to_owned()),
        request_id: request_id.to_owned(),
        source: conn.remote,
        destination: conn.local,
        tls: conn.tls,
        sni: conn.sni.clone(),
        protocol: protocol(parts.version),
        start_unix_nanos: crate::wasm::unix_nanos(),
    });
    let run: SharedRun = Arc::new(Mutex::new(
        pipeline.start(info, request_head(&mut parts, conn))?,
    ));

    let end_of_stream = incoming.is_end_stream();
    if let Some(reply) =
        pipeline::headers(&run, Direction::Request, end_of_stream, pause_limit).await?
    {
        return Ok(local_response(reply));
    }
    apply_request_head(&run, &mut parts)?;

    let body = body::limited(incoming, limit);
    let outgoing = if end_of_stream {
        body::empty()
    } else {
        match lead_body(&run, Direction::Request, body, limit).await? {
            Lead::Reply(reply) => return Ok(local_response(reply)),
            Lead::Complete(bytes) => {
                set_content_length(&mut parts.headers, bytes.len());
                body::full(bytes)
            }
            Lead::Streaming { prefix, rest } => body::boxed(Filtered::new(
                rest,
                run.clone(),
                Direction::Request,
                limit,
                prefix,
            )),
        }
    };
    if let Some(data) = pipeline::lock(&run).data_mut() {
        data.request_sent = true;
    }

    let response = match &route.action {
        RouteAction::Forward(id) => {
            prepare_upstream(&mut parts, route, conn)?;
            send_upstream(parts, outgoing, route, &proxy.upstreams[id.0], limit).await?
        }
        RouteAction::Respond(fixed) => fixed_response(fixed),
    };

    let (mut parts, incoming) = response.into_parts();
    let end_of_stream = incoming.is_end_stream();
    pipeline::lock(&run).set_response(ResponseHead {
        status: parts.status.as_u16(),
        headers: std::mem::take(&mut parts.headers),
    });
    if let Some(reply) =
        pipeline::headers(&run, Direction::Response, end_of_stream, pause_limit).await?
    {
        return Ok(local_response(reply));
    }
    let body = if end_of_stream {
        apply_response_head(&run, &mut parts);
        body::boxed(Finishing {
            inner: incoming,
            _run: run.clone(),
        })
    } else {
        match lead_body(&run, Direction::Response, incoming, limit).await? {
            Lead::Reply(reply) => return Ok(local_response(reply)),
            Lead::Complete(bytes) => {
                apply_response_head(&run, &mut parts);
                set_content_length(&mut parts.headers, bytes.len());
                body::boxed(Finishing {
                    inner: http_body_util::Full::new(bytes),
                    _run: run.clone(),
                })
            }
            Lead::Streaming { prefix, rest } => {
                apply_response_head(&run, &mut parts);
                body::boxed(Filtered::new(
                    rest,
                    run.clone(),
                    Direction::Response,
                    limit,
                    prefix,
                ))
            }
        }
    };
    Ok(Response::from_parts(parts, body))
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// The request head as filters see it (the headers move into it; what the
/// filters make of them is copied back by `apply_request_head`).
fn request_head(parts: &mut http::request::Parts, conn: &Connection) -> RequestHead {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    RequestHead {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        authority,
        scheme: if conn.tls { "https" } else { "http" }.to_owned(),
        headers: std::mem::take(&mut parts.headers),
    }
}

/// Copies what filters made of the request head back into `parts`.
fn apply_request_head(
    run: &SharedRun,
    parts: &mut http::request::Parts,
) -> Result<(), GatewayError> {
    let guard = pipeline::lock(run);
    let Some(data) = guard.data() else {
        return Ok(());
    };
    let head = &data.request;
    let bad = |what: &str| GatewayError::BadRequest {
        reason: format!("a filter set an invalid {what}"),
    };
    // Most filters leave the pseudo-headers alone: parse only what changed.
    if head.method != parts.method.as_str() {
        parts.method =
            http::Method::from_bytes(head.method.as_bytes()).map_err(|_| bad(":method"))?;
    }
    if parts.uri.path_and_query().map(|pq| pq.as_str()) != Some(head.path.as_str()) {
        parts.uri = http::Uri::try_from(head.path.as_str()).map_err(|_| bad(":path"))?;
    }
    parts.headers = head.headers.clone();
    let host_unchanged = parts
        .headers
        .get(header::HOST)
        .is_some_and(|h| h.as_bytes() == head.authority.as_bytes());
    if !head.authority.is_empty() && !host_unchanged {
        let host = HeaderValue::from_str(&head.authority).map_err(|_| bad(":authority"))?;
        parts.headers.insert(header::HOST, host);
    }
    Ok(())
}

/// Copies what filters made of the response head back into `parts`; no more edits after this.
fn apply_response_head(run: &SharedRun, parts: &mut http::response::Parts) {
    let mut guard = pipeline::lock(run);
    let Some(data) = guard.data_mut() else {
        return;
    };
    data.response_sent = true;
    if let Some(head) = &data.response {
        parts.status = StatusCode::from_u16(head.status).unwrap_or(parts.status);
        parts.headers = head.headers.clone();
    }
}

fn set_content_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    if super::declared_length(headers) != u64::try_from(len).ok() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
}

/// A filter's local reply as a response.
fn local_response(reply: LocalReply) -> Response<Body> {
    let mut response = Response::new(body::full(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::FORBIDDEN);
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}

/// How a body starts out after its first pass through the filters.
enum Lead {
    /// The filters buffered it to the end: here it is, whole.
    Complete(Bytes),
    /// Data went on before the end: send `prefix`, then stream `rest` through the filters.
    Streaming { prefix: Bytes, rest: Body },
    /// A filter answered locally.
    Reply(LocalReply),
}

/// Reads `body` until the filters release data (or it ends).
async fn lead_body<B>(
    run: &SharedRun,
    direction: Direction,
    mut body: B,
    limit: u64,
) -> Result<Lead, GatewayError>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    loop {
        let (chunk, end) = match body.frame().await {
            None => (Bytes::new(), true),
            Some(Err(e)) => return Err(body_error(e.into(), limit)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => (data, body.is_end_stream()),
                // Trailers: run them, and end the body (they are dropped for a buffered body).
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        pipeline::lock(run).trailers(direction, trailers)?;
                    }
                    (Bytes::new(), true)
                }
            },
        };
        let step = pipeline::lock(run).body(direction, chunk, end, limit)?;
        match step {
            BodyStep::Reply(reply) => return Ok(Lead::Reply(reply)),
            BodyStep::Emit(bytes) if end => return Ok(Lead::Complete(bytes)),
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

/// Maps a body read error: past the limit it is the client's 413.
fn body_error(error: BoxError, limit: u64) -> GatewayError {
    if error.is::<body::BodyLimitExceeded>() {
        GatewayError::BodyTooLarge { limit }
    } else {
        GatewayError::BadRequest {
            reason: format!("the body could not be read: {error}"),
        }
    }
}

/// A filter answered locally after the head had gone on; the stream is aborted.
#[derive(Debug, thiserror::Error)]
#[error("a filter answered locally after the stream had started")]
struct LateReply;

/// Streams a body through the pipeline chunk by chunk.
struct Filtered {
    inner: Body,
    run: SharedRun,
    direction: Direction,
    limit: u64,
    prefix: Option<Bytes>,
    ended: bool,
}

impl Filtered {
    fn new(inner: Body, run: SharedRun, direction: Direction, limit: u64, prefix: Bytes) -> Self {
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
        let step = pipeline::lock(&self.run).body(self.direction, chunk, end, self.limit);
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
                        let result = pipeline::lock(&self.run).trailers(self.direction, trailers);
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

/// A body that keeps the pipeline run alive until the body is done, so
/// `on_log`/`on_done`/`on_delete` run after the response has been sent.
struct Finishing<B> {
    inner: B,
    _run: SharedRun,
}

impl<B> HttpBody for Finishing<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
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

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
