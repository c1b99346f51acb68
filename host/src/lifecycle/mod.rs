//! The one request lifecycle: every request, with filters or without, goes
//! through [`Proxy::handle`]:
//!
//! ```text
//! route (snapshot) → request phases → upstream or fixed response → response phases
//!                  → finish (when the response body is done) → access log
//! ```
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
mod headers;
mod phases;
mod rewrite;
mod snapshot;
mod target;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

pub use chain::{BodyStep, Chain, ChainError, Direction, Run, SharedRun, Step};
pub use error::RequestError;
pub use filter::{FailMode, FilterFailure, FilterRun, Flow, HttpFilter, Lent};
pub use headers::{ClientSide, ip_header_value, strip_hop_by_hop};
pub use snapshot::{ListenerRoutes, RouteEntry, Snapshot, Target};
pub use target::TargetError;

use crate::body::Body;
use crate::config::model::ListenerLimits;
use crate::error::{self as respond_error, HttpError};
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
    /// The listener's limits.
    pub limits: Arc<ListenerLimits>,
}

/// Serves requests with whatever config snapshot is current.
pub struct Proxy {
    snapshot: ArcSwap<Snapshot>,
}

impl Proxy {
    /// A proxy serving `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
        }
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

    /// Serves one request end to end; never fails (errors become JSON responses).
    pub async fn handle(
        &self,
        mut request: Request<Incoming>,
        conn: &Connection,
    ) -> Response<Body> {
        let request_id = request_id::ensure(request.headers_mut());
        // What the access log needs of the request, kept only when it is on.
        let logged = tracing::enabled!(target: "weir::access", tracing::Level::INFO).then(|| {
            let (method, uri) = (request.method(), request.uri());
            (Instant::now(), method.clone(), uri.path().to_owned())
        });
        let snapshot = self.snapshot.load_full();
        let (route, mut response) = match serve(&snapshot, request, conn, &request_id).await {
            Ok((route, response)) => (Some(route), response),
            Err((route, error)) => (route, failed(route, &error, &request_id)),
        };
        response
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        if let Some((started, method, path)) = logged {
            tracing::info!(
                target: "weir::access",
                request_id = %request_id::text(&request_id),
                client = %conn.remote,
                %method,
                %path,
                route = route.map_or("-", |r| r.route.name.as_str()),
                status = response.status().as_u16(),
                micros = started.elapsed().as_micros() as u64,
            );
        }
        response
    }
}

/// Logs a request's failure and answers it with Weir's JSON error.
fn failed(
    route: Option<&RouteEntry>,
    error: &RequestError,
    request_id: &HeaderValue,
) -> Response<Body> {
    tracing::warn!(
        request_id = %request_id::text(request_id),
        route = route.map_or("-", |r| r.route.name.as_str()),
        code = error.code(),
        fault = ?error.fault(),
        %error,
        "request failed"
    );
    respond_error::respond(error, request_id)
}

/// A request's failure, with the route it had matched (if any).
type Failure<'a> = (Option<&'a RouteEntry>, RequestError);

/// Makes the target canonical, routes the request and runs its lifecycle.
async fn serve<'a>(
    snapshot: &'a Snapshot,
    mut request: Request<Incoming>,
    conn: &Connection,
    request_id: &HeaderValue,
) -> Result<(&'a RouteEntry, Response<Body>), Failure<'a>> {
    let no_route = |request: &Request<Incoming>| RequestError::NoRoute {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
    };
    let Some(served) = snapshot.listener(&conn.listener) else {
        return Err((None, no_route(&request)));
    };
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
    phases::run(entry, request, conn, request_id)
        .await
        .map(|response| (entry, response))
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
