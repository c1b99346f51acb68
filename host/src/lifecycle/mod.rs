//! The one request lifecycle: every request, with filters or without, goes
//! through [`Proxy::handle`]:
//!
//! ```text
//! route (snapshot) → request phases → upstream or fixed response → response phases
//!                  → finish (when the response body is done) → access log
//! ```
//!
//! A WebSocket handshake takes the same path; its upstream leg is
//! `upgrade::exchange`, and a switch hands the server a [`Tunnel`].
//!
//! A route's filters are [`HttpFilter`]s in a [`Chain`]; a route with none
//! skips the phases and pays nothing for them. The config comes from the
//! [`Snapshot`] the [`Proxy`] holds behind an `ArcSwap`, read once per
//! request; a request finishes on the snapshot it started with.
//!
//! Knows HTTP and the layers below it (`router`, `upstream`, `exchange`,
//! `config`); knows nothing of sockets, TLS or wasmtime.

mod body;
mod chain;
mod error;
mod filter;
mod forward;
mod grpc_proxy;
mod grpc_web;
mod headers;
mod mirror;
mod observed;
mod phases;
mod rewrite;
mod snapshot;
mod split;
mod target;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;

pub use chain::{BodyStep, Chain, ChainError, Direction, Run, SharedRun, Step};
pub use error::RequestError;
pub use filter::{FailMode, FilterFailure, FilterRun, Flow, HttpFilter, Lent};
pub use headers::{ClientSide, ip_header_value, strip_hop_by_hop};
pub use mirror::{Mirror, MirrorCounts};
pub use observed::Raised;
pub use snapshot::{Destination, ListenerRoutes, RouteEntry, Snapshot, Target};
pub use split::Split;
pub use target::TargetError;
pub use upgrade::{Tunnel, take_tunnel};

use observed::{Pending, Settling};

use crate::body::Body;
use crate::config::model::ListenerLimits;
use crate::error::{self as respond_error, Fault, HttpError};
use crate::grpc;
use crate::observe::{Metrics, Observer, Record, TlsSession};
use crate::request_id::{self, REQUEST_ID};
use crate::router::RequestView;

/// What the server knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The name of the listener it was accepted on.
    pub listener: Arc<str>,
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
    /// The TLS version and server name, for the access log.
    pub tls_session: Option<TlsSession>,
    /// The listener's limits.
    pub limits: Arc<ListenerLimits>,
    /// The listener's gauges.
    pub gauges: ListenerGauges,
}

/// A listener's gauges, looked up once when it starts.
#[derive(Debug, Clone)]
pub struct ListenerGauges {
    /// Client connections open now.
    pub connections: Gauge,
    /// Requests being served now.
    pub requests: Gauge,
}

impl ListenerGauges {
    /// The gauges of `listener` in `metrics`.
    pub fn new(metrics: &Metrics, listener: &Arc<str>) -> Self {
        Self {
            connections: metrics.active_connections(listener),
            requests: metrics.active_requests(listener),
        }
    }
}

/// Serves requests with whatever config snapshot is current.
pub struct Proxy {
    snapshot: ArcSwap<Snapshot>,
    observer: Arc<Observer>,
}

impl Proxy {
    /// A proxy serving `snapshot`, settling every request into `observer`.
    pub fn new(snapshot: Snapshot, observer: Arc<Observer>) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            observer,
        }
    }

    /// Where requests are counted and logged.
    pub fn observer(&self) -> &Arc<Observer> {
        &self.observer
    }

    /// The snapshot requests start with now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Makes `snapshot` the one new requests start with; requests in flight
    /// finish on the one they started with.
    pub fn swap(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        self.snapshot.swap(Arc::new(snapshot))
    }

    /// Serves one request end to end; never fails (errors become JSON
    /// responses). Its record is settled when the response body is done.
    pub async fn handle(
        &self,
        mut request: Request<Incoming>,
        conn: &Connection,
    ) -> Response<Body> {
        let request_id = request_id::ensure(request.headers_mut());
        let active = Raised::new(conn.gauges.requests.clone());
        let mut record = Record::new(
            request_id.clone(),
            request.method().clone(),
            request.uri().clone(),
            conn.remote,
            conn.listener.clone(),
            conn.tls_session.clone(),
        );
        if let Some(tracer) = self.observer.tracer() {
            record = record.with_trace(observed::start_trace(tracer, &mut request, conn));
        }
        let record = Arc::new(record);
        request.extensions_mut().insert(record.clone());
        let pending = Pending::new(record.clone(), self.observer.clone(), active);
        let head_only = request.method() == http::Method::HEAD;
        let grpc = grpc::Kind::of(request.headers());
        let snapshot = self.snapshot.load_full();
        let mut response = match serve(&snapshot, request, conn, &record).await {
            Ok(response) => response,
            Err((route, error)) => failed(route, &error, &record, grpc),
        };
        response
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        let status = response.status();
        record.update(|details| details.status = status.as_u16());
        let bodiless = head_only
            || status.is_informational()
            || status == http::StatusCode::NO_CONTENT
            || status == http::StatusCode::NOT_MODIFIED;
        response.map(|body| crate::body::boxed(Settling::new(body, pending, bodiless)))
    }
}

/// Logs a request's failure and answers it with Weir's JSON error (a gRPC
/// status for a gRPC client).
fn failed(
    route: Option<&RouteEntry>,
    error: &RequestError,
    record: &Record,
    grpc: Option<grpc::Kind>,
) -> Response<Body> {
    if let Some(flag) = error.flag() {
        record.flag(flag);
    }
    let request_id = &record.request_id;
    let response = respond_error::respond(error, request_id, grpc);
    // A client's own mistake (no route, a bad request) is for the access
    // log only; the gateway's and the upstream's failures are warnings.
    if error.fault() == Fault::Downstream {
        tracing::debug!(
            request_id = %request_id::text(request_id),
            route = route.map_or("-", |r| r.route.name.as_str()),
            code = error.code(),
            %error,
            "request refused"
        );
    } else {
        tracing::warn!(
            request_id = %request_id::text(request_id),
            route = route.map_or("-", |r| r.route.name.as_str()),
            code = error.code(),
            fault = ?error.fault(),
            grpc_status = grpc_status(&response),
            %error,
            "request failed"
        );
    }
    response
}

/// The `grpc-status` a response carries in its head (a trailers-only
/// answer, such as Weir's own gRPC errors), for logs; `-` when none.
fn grpc_status(response: &Response<Body>) -> &str {
    (response.headers().get(grpc::GRPC_STATUS))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// A request's failure, with the route it had matched (if any).
type Failure<'a> = (Option<&'a RouteEntry>, RequestError);

/// Makes the target canonical, routes the request and runs its lifecycle.
async fn serve<'a>(
    snapshot: &'a Snapshot,
    mut request: Request<Incoming>,
    conn: &Connection,
    record: &Arc<Record>,
) -> Result<Response<Body>, Failure<'a>> {
    let no_route = |request: &Request<Incoming>| RequestError::NoRoute {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
    };
    let Some(served) = snapshot.listener(&conn.listener) else {
        return Err((None, no_route(&request)));
    };
    // Before the hop-by-hop headers that announce it go.
    let upgrade = upgrade::detect(&mut request);
    target::canonicalize(&mut request, &served.paths).map_err(|e| (None, e.into()))?;
    let view = view(&request);
    let Some(entry) = snapshot.route(served, &view) else {
        let allowed = served.allowed_methods(&view);
        if allowed.is_empty() {
            return Err((None, no_route(&request)));
        }
        let error = RequestError::MethodNotAllowed {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            allowed,
        };
        return Err((None, error));
    };
    record.update(|details| {
        details.route = Some(entry.name.clone());
        details.route_stats = Some(entry.stats.clone());
    });
    phases::run(entry, request, upgrade, conn, record)
        .await
        .map_err(|error| (Some(entry), error))
}

/// What the router looks at in a canonical request (its host is in `Host`).
fn view<B>(request: &Request<B>) -> RequestView<'_> {
    let uri = request.uri();
    RequestView {
        host: request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
        path: uri.path(),
        query: uri.query(),
        method: request.method(),
        headers: request.headers(),
    }
}

/// The `content-length` a message declares, if any.
pub(crate) fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
