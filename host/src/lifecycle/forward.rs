//! The upstream leg of a request: forwarding hygiene and rewrites, the send
//! (buffered for replay when retries apply), and the response's hygiene; or
//! the route's fixed response.

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Version};
use http_body::Body as _;

use super::Connection;
use super::error::{RequestError, body_error};
use super::grpc_proxy;
use super::headers::{self, ClientSide, strip_hop_by_hop};
use super::rewrite;
use super::snapshot::{Destination, RouteEntry};
use crate::body::{self, Body, Primed};
use crate::config::model::{FixedResponse, Route};
use crate::upstream::OutgoingBody;

/// Sends the request where its route goes (to target `prefer` of its group
/// when a filter chose one) and returns the response with hop-by-hop headers
/// removed and `via` added. `client_host` is the host the client asked for
/// (`x-forwarded-host`), whatever filters made of it.
pub(super) async fn exchange(
    entry: &RouteEntry,
    destination: Destination<'_>,
    mut parts: http::request::Parts,
    body: Body,
    prefer: Option<&str>,
    conn: &Connection,
    client_host: Option<HeaderValue>,
) -> Result<Response<Body>, RequestError> {
    let group = match destination {
        Destination::Respond(fixed) => return Ok(fixed_response(fixed)),
        Destination::Upstream(group) => group,
    };
    // Hop-by-hop headers left on receipt; only filters can have added some since.
    let filtered = !entry.chain.is_empty();
    prepare_upstream(&mut parts, &entry.route, conn, client_host, filtered)?;
    let timeout = entry.route.timeout.unwrap_or(group.request_timeout());
    let grpc = grpc_proxy::Call::prepare(&mut parts.headers, group.config().protocol, timeout);
    let body = match &grpc {
        Some(call) => call.request_body(body),
        None => body,
    };
    let limit = conn.limits.max_body_bytes;
    let retry = entry.route.retry.as_ref();
    // A gRPC stream is never held for a replay.
    let replay = group.retries_under(retry) && parts.method.is_idempotent() && grpc.is_none();
    let shadow = entry.mirror.as_ref().and_then(|m| m.sample(&parts));
    let primed = if body.is_end_stream() {
        Primed::Partial(body)
    } else {
        body::prime(body, body::PRIME_BYTES)
            .await
            .map_err(|e| body_error(e, limit))?
    };
    let outgoing = match primed {
        Primed::Complete(bytes) => {
            if let Some(shadow) = shadow {
                shadow.send(bytes.clone());
            }
            if replay {
                OutgoingBody::Replayable(bytes)
            } else {
                OutgoingBody::Streaming(body::full(bytes))
            }
        }
        Primed::Partial(body) if replay => {
            let bytes = read_bounded(body, limit).await?;
            if let Some(shadow) = shadow {
                shadow.send(bytes.clone());
            }
            OutgoingBody::Replayable(bytes)
        }
        Primed::Partial(body) => {
            let body = match shadow {
                Some(shadow) => shadow.tee(body),
                None => body,
            };
            let unknown_length = !parts.headers.contains_key(header::CONTENT_LENGTH);
            if !body.is_end_stream()
                && unknown_length
                && matches!(parts.method, Method::GET | Method::HEAD)
            {
                // Without this hyper sends a GET or HEAD body of unknown length
                // as no body at all; a content-length body goes on as sent.
                parts.headers.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            }
            OutgoingBody::Streaming(body)
        }
    };
    let affinity = group.affinity(&parts, conn.client_ip.to_str().unwrap_or_default(), prefer);
    let sent = group
        .send_to(
            Request::from_parts(parts, outgoing),
            grpc.as_ref()
                .and_then(grpc_proxy::Call::timeout)
                .or(entry.route.timeout),
            affinity,
            retry,
        )
        .await;
    let response = match (sent, &entry.route.fallback) {
        (Err(error), Some(fallback)) if error.is_unavailable() => {
            tracing::debug!(route = %entry.route.name, %error, "answering with the route's fallback");
            return Ok(fixed_response(fallback));
        }
        (sent, _) => sent?,
    };
    let response = match &grpc {
        Some(call) => call.response(response),
        None => response,
    };
    let (mut parts, body) = response.into_parts();
    // Weir speaks HTTP/1.1 to its clients whatever the upstream spoke (an
    // HTTP/1.0 answer would otherwise downgrade and close the client's connection).
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    headers::append_via(&mut parts.headers);
    Ok(Response::from_parts(parts, body))
}

/// Header hygiene, forwarding headers and rewrites for the upstream request.
pub(super) fn prepare_upstream(
    parts: &mut http::request::Parts,
    route: &Route,
    conn: &Connection,
    client_host: Option<HeaderValue>,
    filtered: bool,
) -> Result<(), RequestError> {
    if filtered {
        strip_hop_by_hop(&mut parts.headers);
    }
    headers::add_forwarding(
        &mut parts.headers,
        ClientSide {
            ip: &conn.client_ip,
            scheme: if conn.tls { "https" } else { "http" },
            host: client_host.as_ref(),
        },
    );
    // The target is canonical: the authority, if any, is in `Host` (as the
    // filters left it); a route's host rewrite has the last word.
    if let Some(host) = route.rewrite.host.as_deref()
        && let Ok(host) = HeaderValue::from_str(host)
    {
        parts.headers.insert(header::HOST, host);
    }
    parts.uri = forwarded_uri(&parts.uri, route)?;
    parts.version = Version::HTTP_11;
    Ok(())
}

/// The origin-form URI sent upstream, with the route's path rewrite applied.
fn forwarded_uri(uri: &http::Uri, route: &Route) -> Result<http::Uri, RequestError> {
    let Some(rule) = &route.rewrite.path else {
        let path_and_query = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        return Ok(http::Uri::from(path_and_query));
    };
    let path = rewrite::rewrite_path(uri.path(), rule, &route.matcher.path);
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let pq = PathAndQuery::try_from(path_and_query).map_err(|e| RequestError::BadRequest {
        reason: format!("the rewritten path is invalid: {e}"),
    })?;
    Ok(http::Uri::from(pq))
}

/// Reads a whole request body, failing with 413 past `limit`.
async fn read_bounded(body: Body, limit: u64) -> Result<bytes::Bytes, RequestError> {
    use http_body_util::BodyExt;
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(body_error(e, limit)),
    }
}

/// The response of a `respond:` route.
pub(super) fn fixed_response(fixed: &FixedResponse) -> Response<Body> {
    let mut response = Response::new(body::full(fixed.body.clone()));
    *response.status_mut() = fixed.status;
    let headers = response.headers_mut();
    for (name, value) in &fixed.headers {
        headers.append(name.clone(), value.clone());
    }
    response
}
