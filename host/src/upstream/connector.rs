//! The connections to one target, whatever HTTP version it speaks: the
//! HTTP/1.1 pool (`pool`) and the shared HTTP/2 connections (`h2`), and the
//! choice between them that the upstream's `protocol` makes.
//!
//! - `http1`: the HTTP/1.1 pool (ALPN `http/1.1` over TLS).
//! - `http2`: HTTP/2 (h2c with prior knowledge, or ALPN `h2` over TLS).
//! - `auto` over TLS: the first connection offers `h2` and `http/1.1`; what
//!   the target picks is remembered, and later exchanges go straight to that
//!   version's connections (a worker's first connection included).
//! - `auto` in cleartext: HTTP/1.1, except gRPC requests, which need
//!   HTTP/2's trailers and go over h2c.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use super::SendError;
use super::h2::H2Pool;
use super::pool::{ConnectionPool, connect_tcp};
use super::tls::{Alpn, UpstreamConnector};
use crate::body::{self, Body};
use crate::config::model::UpstreamProtocol;
use crate::grpc;

/// What `auto` over TLS has learnt of a target: not yet asked.
const UNKNOWN: u8 = 0;
/// The target picked `http/1.1` (or nothing) by ALPN.
const SPEAKS_H1: u8 = 1;
/// The target picked `h2` by ALPN.
const SPEAKS_H2: u8 = 2;

/// The way one exchange goes.
enum Via {
    Http1,
    Http2,
    /// A TLS connection that offers both and goes with the target's pick.
    Negotiate,
}

/// Timeouts and TLS for a target's connections.
pub struct ConnectSettings {
    /// TLS to the target, when its group has it.
    pub tls: Option<Arc<UpstreamConnector>>,
    /// The HTTP version spoken.
    pub protocol: UpstreamProtocol,
    /// Time to open a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// How long an idle HTTP/1.1 connection is kept.
    pub idle_timeout: Duration,
    /// The group's HTTP/1.1 connection slots and their number (circuit breaking).
    pub connection_slots: (Arc<Semaphore>, usize),
}

/// The connections to one target.
pub struct TargetConnections {
    protocol: UpstreamProtocol,
    tls: Option<Arc<UpstreamConnector>>,
    connect_timeout: Duration,
    http1: Arc<ConnectionPool>,
    http2: H2Pool,
    /// For `auto` over TLS: [`UNKNOWN`], [`SPEAKS_H1`] or [`SPEAKS_H2`].
    learned: AtomicU8,
}

impl TargetConnections {
    /// The connections to `target`, none open yet.
    pub fn new(target: Authority, settings: &ConnectSettings) -> Self {
        Self {
            protocol: settings.protocol,
            tls: settings.tls.clone(),
            connect_timeout: settings.connect_timeout,
            http1: Arc::new(
                ConnectionPool::new(
                    target.clone(),
                    settings.tls.clone(),
                    settings.connect_timeout,
                    settings.idle_timeout,
                )
                .with_connection_limit(
                    Arc::clone(&settings.connection_slots.0),
                    settings.connection_slots.1,
                ),
            ),
            http2: H2Pool::new(target, settings.tls.clone(), settings.connect_timeout),
            learned: AtomicU8::new(UNKNOWN),
        }
    }

    /// The target's authority.
    pub fn target(&self) -> &Authority {
        self.http2.target()
    }

    /// Sends `request` (origin-form URI) in the HTTP version the upstream's
    /// `protocol` picks, and returns the response.
    ///
    /// The HTTP/2 and negotiating ways are boxed, and only when taken: their
    /// states (an h2 handshake, a TLS one) run to kilobytes, and inline they
    /// would be carried, and copied by every timeout and attempt wrapped
    /// around this future, on each plain HTTP/1.1 exchange too.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, SendError> {
        match self.via(&request) {
            Via::Http1 => self.http1.send(request).await,
            Via::Http2 => self.send_http2(request).await,
            Via::Negotiate => self.negotiate_boxed(request).await,
        }
    }

    /// The HTTP/2 way of [`send`](Self::send), on the heap.
    fn send_http2(&self, request: Request<Body>) -> Sending<'_, Response<Body>> {
        Box::pin(async move { Ok(boxed(self.http2.send(request).await?)) })
    }

    /// [`negotiate`](Self::negotiate), on the heap.
    fn negotiate_boxed(&self, request: Request<Body>) -> Sending<'_, Response<Body>> {
        Box::pin(self.negotiate(request))
    }

    /// Sends a health probe on a connection of its own (HTTP/1.1), or on
    /// the shared HTTP/2 connection of a target that speaks only HTTP/2.
    pub async fn probe(&self, request: Request<Body>) -> Result<http::StatusCode, SendError> {
        match self.via(&request) {
            Via::Http2 => Ok(self.http2.send(request).await?.status()),
            Via::Http1 | Via::Negotiate => Ok(self.http1.probe(request).await?.status()),
        }
    }

    /// Sends an upgrade request (HTTP/1.1 only) on a connection of its own.
    pub async fn send_upgrade(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        self.http1.send_upgrade(request).await
    }

    /// Sends `request` over HTTP/2 whatever the `protocol` (gRPC callouts).
    pub async fn send_h2(&self, request: Request<Body>) -> Result<Response<Incoming>, SendError> {
        self.http2.send(request).await
    }

    fn via<B>(&self, request: &Request<B>) -> Via {
        match (self.protocol, &self.tls) {
            (UpstreamProtocol::Http1, _) => Via::Http1,
            (UpstreamProtocol::Http2, _) => Via::Http2,
            (UpstreamProtocol::Auto, None) => match grpc::Kind::of(request.headers()) {
                Some(grpc::Kind::Grpc) => Via::Http2,
                _ => Via::Http1,
            },
            (UpstreamProtocol::Auto, Some(_)) => match self.learned.load(Ordering::Relaxed) {
                SPEAKS_H1 => Via::Http1,
                SPEAKS_H2 => Via::Http2,
                _ => Via::Negotiate,
            },
        }
    }

    /// Opens a TLS connection offering both versions, sends `request` on it
    /// in the one the target picked, and remembers the pick.
    async fn negotiate(&self, request: Request<Body>) -> Result<Response<Body>, SendError> {
        let Some(tls) = &self.tls else {
            return self.http1.send(request).await;
        };
        let target = self.target();
        let stream = connect_tcp(target, self.connect_timeout).await?;
        let handshake = tls.connect(target, stream, Alpn::Both);
        let (secured, h2) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no TLS handshake within the connect timeout",
                ))
            })
            .map_err(|source| SendError::Connect {
                target: target.clone(),
                source,
            })?;
        let learned = if h2 { SPEAKS_H2 } else { SPEAKS_H1 };
        self.learned.store(learned, Ordering::Relaxed);
        tracing::debug!(%target, h2, "the target picked its HTTP version by ALPN");
        if h2 {
            Ok(boxed(self.http2.adopt(secured, request).await?))
        } else {
            self.http1.send_on(secured, request).await
        }
    }
}

/// A send on the heap (see [`TargetConnections::send`]).
pub(super) type Sending<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, SendError>> + Send + 'a>>;

fn boxed(response: Response<Incoming>) -> Response<Body> {
    response.map(body::boxed)
}
