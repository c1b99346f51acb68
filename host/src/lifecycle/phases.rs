//! The phases of one routed request, in order: the body limit, the chain's
//! request phases, the upstream leg, the chain's response phases. A route
//! with an empty chain skips every phase: no exchange data, no run.
//!
//! Bodies stream through untouched while every filter continues. When a
//! filter buffers a body, it is held (bounded by the listener's
//! `max_body_bytes`) until the filter releases it; if that happens at the end
//! of the body, the whole rewritten body goes on with an exact content-length.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as HttpBody;
use hyper::body::Incoming;

use super::body::{Filtered, Lead, lead_body, whole};
use super::chain::{self, Direction, SharedRun};
use super::error::RequestError;
use super::observed::CountedIn;
use super::snapshot::{Destination, RouteEntry};
use super::upgrade::{self, Upgrade};
use super::{Connection, declared_length};
use super::{forward, grpc_proxy};
use crate::body::{self, Body, Retaining};
use crate::error::HttpError;
use crate::exchange::{LocalReply, RequestHead, ResponseHead, StreamInfo};
use crate::observe::{Flag, Record};

/// The header the auth built-ins name the caller's consumer in (their
/// default `consumer_header`), read into the access log.
const CONSUMER_HEADER: &str = "x-consumer-name";

/// How long a paused filter may hold a stream when the route sets no timeout.
const DEFAULT_PAUSE_LIMIT: Duration = Duration::from_secs(30);

/// Runs a routed request to its response.
///
/// Once the filters have started, every answer goes back through their
/// response phases, as in Envoy: the upstream's, a filter's local reply, and
/// Weir's own error (upstream down, a filter failing closed), so filters can
/// add their headers (CORS, tracing) to every answer. An error in the
/// response phases themselves is answered directly.
pub(super) async fn run(
    entry: &RouteEntry,
    request: Request<Incoming>,
    upgrade: Option<Upgrade>,
    conn: &Connection,
    record: &Arc<Record>,
) -> Result<Response<Body>, RequestError> {
    let request_id = &record.request_id;
    let limit = conn.limits.max_body_bytes;
    if declared_length(request.headers()).is_some_and(|len| len > limit) {
        return Err(RequestError::BodyTooLarge { limit });
    }
    // A split picks its group here, so filters see the one chosen.
    let client_ip = conn.client_ip.to_str().unwrap_or_default();
    let destination = (entry.target).destination(request.headers(), request.uri(), client_ip);
    if upgrade.is_some() {
        upgrade::admit(entry, !request.body().is_end_stream())?;
    }
    if entry.chain.is_empty() {
        let (parts, incoming) = request.into_parts();
        let client_host = parts.headers.get(header::HOST).cloned();
        if let Some(kind) = upgrade {
            return upgrade::exchange(entry, destination, parts, kind, None, conn, client_host)
                .await;
        }
        let body = body::limited(CountedIn::new(incoming, record.clone()), limit);
        return forward::exchange(entry, destination, parts, body, None, conn, client_host).await;
    }
    let grpc = crate::grpc::Kind::of(request.headers());
    let (mut parts, incoming) = request.into_parts();
    if upgrade.is_some() {
        upgrade::restore_headers(&mut parts.headers);
    }
    // Filters see the host as `:authority` only; it goes back into `Host` on the way out.
    let client_host = parts.headers.remove(header::HOST);
    let info = Arc::new(stream_info(entry, destination, &parts, conn, request_id));
    let head = request_head(&mut parts, conn, client_host.as_ref());
    let mut run = entry.chain.start(info, head)?;
    run.observe(record.clone());
    let run: SharedRun = Arc::new(Mutex::new(run));
    let pause_limit = entry
        .route
        .timeout
        .or(destination.group().map(|group| group.request_timeout()))
        .unwrap_or(DEFAULT_PAUSE_LIMIT);

    let phases = request_phases(
        &run,
        &mut parts,
        CountedIn::new(incoming, record.clone()),
        client_host.as_ref(),
        limit,
        pause_limit,
    );
    let answer = match phases.await {
        Ok(Ok((body, target))) => {
            // Auth filters name the caller's consumer to the upstream in this header.
            if let Some(consumer) = parts.headers.get(CONSUMER_HEADER)
                && let Ok(consumer) = consumer.to_str()
            {
                record.update(|details| details.consumer = Some(consumer.to_owned()));
            }
            let details = match destination {
                Destination::Upstream(_) => "via_upstream",
                Destination::Respond(_) => "direct_response",
            };
            let prefer = target.as_deref();
            let response = match upgrade {
                Some(kind) => {
                    upgrade::exchange(entry, destination, parts, kind, prefer, conn, client_host)
                        .await
                }
                None => {
                    forward::exchange(entry, destination, parts, body, prefer, conn, client_host)
                        .await
                }
            };
            response.map(|response| (response, Cow::Borrowed(details)))
        }
        Ok(Err(mut reply)) => {
            if reply.status == StatusCode::TOO_MANY_REQUESTS.as_u16() {
                record.flag(Flag::RateLimited);
            }
            let details = Cow::Owned(std::mem::take(&mut reply.details));
            Ok((local_response(reply, grpc), details))
        }
        Err(error) => Err(error),
    };
    let (response, details) = answer.unwrap_or_else(|error| {
        let response = super::failed(Some(entry), &error, record, grpc);
        (response, Cow::Borrowed(error.code()))
    });
    response_phases(&run, response, details, limit, pause_limit, grpc).await
}

/// The chain's request phases; the body to send on (with the target a filter
/// chose, if one did), or a filter's local reply.
async fn request_phases(
    run: &SharedRun,
    parts: &mut http::request::Parts,
    incoming: CountedIn<Incoming>,
    client_host: Option<&HeaderValue>,
    limit: u64,
    pause_limit: Duration,
) -> Result<Result<(Body, Option<String>), LocalReply>, RequestError> {
    let end_of_stream = incoming.is_end_stream();
    if let Some(reply) = chain::headers(run, Direction::Request, end_of_stream, pause_limit).await?
    {
        return Ok(Err(reply));
    }
    let body = body::limited(incoming, limit);
    let (outgoing, complete) = if end_of_stream {
        (body::empty(), None)
    } else {
        match lead_body(run, Direction::Request, body, limit).await? {
            Lead::Reply(reply) => return Ok(Err(reply)),
            Lead::Complete(bytes, trailers) => {
                let len = bytes.len();
                (whole(bytes, trailers), Some(len))
            }
            Lead::Streaming { prefix, rest } => (
                body::boxed(Filtered::new(
                    rest,
                    run.clone(),
                    Direction::Request,
                    limit,
                    prefix,
                )),
                None,
            ),
        }
    };
    // The head is copied after the body's lead, since the request is not
    // sent before it: filters that paused for the body may still edit it.
    apply_request_head(run, parts, client_host)?;
    if let Some(len) = complete {
        set_content_length(&mut parts.headers, len);
    }
    let target = chain::lock(run).data_mut().and_then(|data| {
        data.request_sent = true;
        data.upstream_override.take()
    });
    Ok(Ok((outgoing, target)))
}

/// The chain's response phases over `response` (from where `details` says);
/// the response that goes to the client. The run lives until its body is
/// done, then the filters finish.
async fn response_phases(
    run: &SharedRun,
    response: Response<Body>,
    details: Cow<'static, str>,
    limit: u64,
    pause_limit: Duration,
    grpc: Option<crate::grpc::Kind>,
) -> Result<Response<Body>, RequestError> {
    let (mut parts, incoming) = response.into_parts();
    let end_of_stream = incoming.is_end_stream();
    chain::lock(run).set_response(ResponseHead {
        status: parts.status.as_u16(),
        headers: std::mem::take(&mut parts.headers),
        details,
    });
    if let Some(reply) =
        chain::headers(run, Direction::Response, end_of_stream, pause_limit).await?
    {
        return Ok(local_response(reply, grpc));
    }
    let body = if end_of_stream {
        apply_response_head(run, &mut parts);
        // The run lives until the body is done: its filters finish then.
        body::boxed(Retaining::new(incoming, run.clone()))
    } else {
        match lead_body(run, Direction::Response, incoming, limit).await? {
            Lead::Reply(reply) => return Ok(local_response(reply, grpc)),
            Lead::Complete(bytes, trailers) => {
                apply_response_head(run, &mut parts);
                set_content_length(&mut parts.headers, bytes.len());
                body::boxed(Retaining::new(whole(bytes, trailers), run.clone()))
            }
            Lead::Streaming { prefix, rest } => {
                apply_response_head(run, &mut parts);
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

/// Facts filters may read about the request (properties).
fn stream_info(
    entry: &RouteEntry,
    destination: Destination<'_>,
    parts: &http::request::Parts,
    conn: &Connection,
    request_id: &HeaderValue,
) -> StreamInfo {
    let group = destination.group();
    StreamInfo {
        route_name: entry.route.name.clone(),
        upstream_name: group.map(|g| g.name().to_owned()),
        route_metadata: entry.route.metadata.clone(),
        cluster_metadata: group.map(|g| g.config().metadata.clone()),
        upstream_hosts: group.map_or_else(|| Arc::from([]), |g| g.addresses()),
        request_id: crate::request_id::text(request_id).to_owned(),
        source: conn.remote,
        destination: conn.local,
        tls: conn.tls,
        sni: conn.sni.clone(),
        protocol: protocol(parts.version),
        start_unix_nanos: crate::exchange::unix_nanos(),
    }
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// The request head as filters see it (the headers move into it; what the
/// filters make of them is copied back by `apply_request_head`). The host is
/// its `:authority`, as in Envoy: the header map has no `host`.
fn request_head(
    parts: &mut http::request::Parts,
    conn: &Connection,
    host: Option<&HeaderValue>,
) -> RequestHead {
    // The target is canonical: the authority, if any, was in `Host`.
    let authority = host
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
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
    client_host: Option<&HeaderValue>,
) -> Result<(), RequestError> {
    let guard = chain::lock(run);
    let Some(data) = guard.data() else {
        return Ok(());
    };
    let head = &data.request;
    let bad = |what: &str| RequestError::BadRequest {
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
    // `:authority` goes back into `Host` (the client's value when unchanged).
    let host = match client_host {
        Some(host) if host.as_bytes() == head.authority.as_bytes() => host.clone(),
        _ if head.authority.is_empty() => return Ok(()),
        _ => HeaderValue::from_str(&head.authority).map_err(|_| bad(":authority"))?,
    };
    parts.headers.insert(header::HOST, host);
    Ok(())
}

/// Copies what filters made of the response head back into `parts`; no more edits after this.
fn apply_response_head(run: &SharedRun, parts: &mut http::response::Parts) {
    let mut guard = chain::lock(run);
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
    if declared_length(headers) != u64::try_from(len).ok() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
}

/// A filter's local reply as a response, with the headers it is sent with
/// (`LocalReply::response_headers`), so the response phases see them; to a
/// gRPC client, as a gRPC status (`grpc_proxy::local_reply`).
fn local_response(reply: LocalReply, grpc: Option<crate::grpc::Kind>) -> Response<Body> {
    let headers = reply.response_headers();
    let mut response = Response::new(body::full(reply.body.clone()));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::FORBIDDEN);
    *response.headers_mut() = headers;
    match grpc {
        Some(kind) => grpc_proxy::local_reply(response, kind, &reply.body),
        None => response,
    }
}
