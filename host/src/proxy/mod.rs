//! The request path: route, answer locally or forward, and shape the response.
//!
//! One [`Proxy`] is an immutable snapshot built from a [`Manifest`]: routers per
//! listener, routes and upstream groups. It knows HTTP and the layers below it
//! (`router`, `upstream`, `config`); it knows nothing of sockets or TLS.
//!
//! The per-route filter pipeline slots in between routing and forwarding
//! (request phases) and after the upstream answers (response phases).

mod filtered;
mod headers;
mod rewrite;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

pub use headers::{ClientSide, ip_header_value, strip_hop_by_hop};

use crate::body::{self, Body};
use crate::config::model::{
    FixedResponse, ListenerId, ListenerLimits, Manifest, Route, RouteAction, RouteId,
};
use crate::error::{self, GatewayError};
use crate::pipeline::{Pipeline, Pipelines};
use crate::router::{RequestView, Router};
use crate::upstream::{OutgoingBody, UpstreamGroup};

/// The request-id header, set on every request and response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the server knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Listener it was accepted on.
    pub listener: ListenerId,
    /// The client's address.
    pub remote: SocketAddr,
    /// The client's IP as header text, for `x-forwarded-for`.
    pub client_ip: HeaderValue,
    /// The local address the client connected to.
    pub local: Option<SocketAddr>,
    /// Whether TLS was terminated.
    pub tls: bool,
    /// The server name the client asked for in its TLS handshake (SNI).
    pub sni: Option<String>,
    /// The listener's limits.
    pub limits: Arc<ListenerLimits>,
}

/// An immutable snapshot of everything needed to serve requests.
pub struct Proxy {
    routers: Vec<Router>,
    routes: Vec<Route>,
    upstreams: Vec<Arc<UpstreamGroup>>,
    pipelines: Vec<Pipeline>,
}

impl Proxy {
    /// Builds the snapshot for `manifest` from its upstream groups (in manifest
    /// order) and its pipelines.
    pub fn new(
        manifest: Manifest,
        upstreams: Vec<Arc<UpstreamGroup>>,
        pipelines: Pipelines,
    ) -> Self {
        let routers = (0..manifest.listeners.len())
            .map(|l| {
                Router::new(
                    manifest
                        .routes
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| {
                            r.listeners.is_empty() || r.listeners.contains(&ListenerId(l))
                        })
                        .map(|(i, r)| (RouteId(i), &r.matcher)),
                )
            })
            .collect();
        let mut pipelines = pipelines.routes;
        pipelines.resize_with(manifest.routes.len(), Pipeline::default);
        Self {
            routers,
            routes: manifest.routes,
            upstreams,
            pipelines,
        }
    }

    /// Serves one request end to end; never fails (errors become JSON responses).
    pub async fn handle(
        &self,
        mut request: Request<Incoming>,
        conn: &Connection,
    ) -> Response<Body> {
        let request_id = ensure_request_id(request.headers_mut());
        // What the access log needs of the request, kept only when it is on.
        let logged = tracing::enabled!(target: "weir::access", tracing::Level::INFO).then(|| {
            let (method, uri) = (request.method(), request.uri());
            (Instant::now(), method.clone(), uri.path().to_owned())
        });
        let (route, mut response) = match self.dispatch(request, conn, &request_id).await {
            Ok((route, response)) => (Some(route), response),
            Err((route, error)) => {
                tracing::warn!(
                    request_id = %request_id_text(&request_id),
                    route = route.map_or("-", |r| r.name.as_str()),
                    code = error.code(),
                    fault = ?error.fault(),
                    %error,
                    "request failed"
                );
                (route, error::respond(&error, request_id_text(&request_id)))
            }
        };
        response
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        if let Some((started, method, path)) = logged {
            tracing::info!(
                target: "weir::access",
                request_id = %request_id_text(&request_id),
                client = %conn.remote,
                %method,
                %path,
                route = route.map_or("-", |r| r.name.as_str()),
                status = response.status().as_u16(),
                micros = started.elapsed().as_micros() as u64,
            );
        }
        response
    }

    /// Routes the request and runs its action.
    async fn dispatch<'a>(
        &'a self,
        request: Request<Incoming>,
        conn: &Connection,
        request_id: &HeaderValue,
    ) -> Result<(&'a Route, Response<Body>), (Option<&'a Route>, GatewayError)> {
        let (route, pipeline) = self.route(&request, conn.listener).ok_or_else(|| {
            (
                None,
                GatewayError::NoRoute {
                    method: request.method().clone(),
                    path: request.uri().path().to_owned(),
                },
            )
        })?;
        if !pipeline.is_empty() {
            let id = request_id_text(request_id);
            let result = filtered::serve(self, request, route, pipeline, conn, id).await;
            return result.map(|r| (route, r)).map_err(|e| (Some(route), e));
        }
        let result = match &route.action {
            RouteAction::Respond(fixed) => Ok(fixed_response(fixed)),
            RouteAction::Forward(upstream) => {
                self.forward(request, route, &self.upstreams[upstream.0], conn)
                    .await
            }
        };
        result.map(|r| (route, r)).map_err(|e| (Some(route), e))
    }

    /// The route for `request` on `listener`.
    fn route(
        &self,
        request: &Request<Incoming>,
        listener: ListenerId,
    ) -> Option<(&Route, &Pipeline)> {
        let uri = request.uri();
        let host = uri.authority().map(|a| a.as_str()).or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let view = RequestView {
            host,
            path: uri.path(),
            query: uri.query(),
            method: request.method(),
            headers: request.headers(),
        };
        let id = self.routers.get(listener.0)?.find(&view)?;
        Some((self.routes.get(id.0)?, self.pipelines.get(id.0)?))
    }

    /// Forwards to `group` and returns its response with hygiene applied.
    async fn forward(
        &self,
        request: Request<Incoming>,
        route: &Route,
        group: &Arc<UpstreamGroup>,
        conn: &Connection,
    ) -> Result<Response<Body>, GatewayError> {
        let limit = conn.limits.max_body_bytes;
        if declared_length(request.headers()).is_some_and(|len| len > limit) {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        let (mut parts, incoming) = request.into_parts();
        prepare_upstream(&mut parts, route, conn)?;
        send_upstream(parts, body::limited(incoming, limit), route, group, limit).await
    }
}

/// Header hygiene, forwarding headers and rewrites for the upstream request.
fn prepare_upstream(
    parts: &mut http::request::Parts,
    route: &Route,
    conn: &Connection,
) -> Result<(), GatewayError> {
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(&mut parts.headers);
    headers::add_forwarding(
        &mut parts.headers,
        ClientSide {
            ip: &conn.client_ip,
            scheme: if conn.tls { "https" } else { "http" },
            host: original_host.as_ref(),
        },
    );
    let host = match &route.rewrite.host {
        Some(h) => HeaderValue::from_str(h).ok(),
        None => original_host,
    };
    if let Some(host) = host {
        parts.headers.insert(header::HOST, host);
    }
    parts.uri = forwarded_uri(&parts.uri, route)?;
    parts.version = Version::HTTP_11;
    Ok(())
}

/// Sends to `group` (buffering the body for replay when retries apply) and
/// returns the response with hop-by-hop headers removed and `via` added.
async fn send_upstream(
    parts: http::request::Parts,
    body: Body,
    route: &Route,
    group: &Arc<UpstreamGroup>,
    limit: u64,
) -> Result<Response<Body>, GatewayError> {
    let outgoing = if group.retries() > 0 && is_idempotent(&parts.method) {
        OutgoingBody::Replayable(read_bounded(body, limit).await?)
    } else {
        OutgoingBody::Streaming(body)
    };
    let response = group
        .send(Request::from_parts(parts, outgoing), route.timeout)
        .await?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    headers::append_via(&mut parts.headers);
    Ok(Response::from_parts(parts, body))
}

/// Keeps the client's `x-request-id` or generates one; returns its value.
fn ensure_request_id(headers: &mut http::HeaderMap) -> HeaderValue {
    if let Some(id) = headers
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 200)
    {
        return id.clone();
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    let id = HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"));
    headers.insert(REQUEST_ID, id.clone());
    id
}

/// The request id as text (ids that are not visible ASCII show as `-`).
fn request_id_text(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

/// The `content-length` the client declared, if any.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Methods whose requests may be sent twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The origin-form URI sent upstream, with the route's path rewrite applied.
fn forwarded_uri(uri: &http::Uri, route: &Route) -> Result<http::Uri, GatewayError> {
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
    let pq = PathAndQuery::try_from(path_and_query).map_err(|e| GatewayError::BadRequest {
        reason: format!("the rewritten path is invalid: {e}"),
    })?;
    Ok(http::Uri::from(pq))
}

/// Reads a whole body, failing with 413 past `limit`.
async fn read_bounded(body: Body, limit: u64) -> Result<bytes::Bytes, GatewayError> {
    use http_body_util::BodyExt;
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<body::BodyLimitExceeded>() => Err(GatewayError::BodyTooLarge { limit }),
        Err(e) => Err(GatewayError::BadRequest {
            reason: format!("the request body could not be read: {e}"),
        }),
    }
}

/// The response of a `respond:` route.
fn fixed_response(fixed: &FixedResponse) -> Response<Body> {
    let mut response = Response::new(body::full(fixed.body.clone()));
    *response.status_mut() = fixed.status;
    let headers = response.headers_mut();
    for (name, value) in &fixed.headers {
        headers.append(name.clone(), value.clone());
    }
    response
}
