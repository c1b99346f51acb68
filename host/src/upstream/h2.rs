//! Shared HTTP/2 connections to one target, in cleartext (h2c with prior
//! knowledge) or over TLS (`h2` by ALPN), for proxied requests and gRPC
//! callouts alike.
//!
//! HTTP/2 multiplexes, so one connection per worker carries every exchange
//! that worker has with the target: it is opened by the first exchange (the
//! exchanges that arrive meanwhile wait for it rather than open their own)
//! and opened again once the target closed it (a `GOAWAY`, a broken socket).
//! An exchange that a closing connection handed back unsent goes on the new
//! one. The target's `SETTINGS_MAX_CONCURRENT_STREAMS` is honoured by hyper:
//! exchanges past it wait for a stream. Each worker has its own connection so
//! that a connection's task runs on the worker that uses it, as the HTTP/1.1
//! pool's do. Knows no gRPC: it sends a request and returns the response head.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;

use super::SendError;
use super::tls::{Alpn, UpstreamConnector};
use crate::body::Body;

/// One worker's connection to the target.
#[derive(Default)]
struct Slot {
    state: Mutex<State>,
}

/// Where a worker's connection stands.
#[derive(Default)]
enum State {
    /// None yet, or the last one closed.
    #[default]
    Closed,
    /// Open (until hyper says it closed).
    Open(SendRequest<Body>),
    /// The last attempt to open one failed, at `at`: the exchanges that were
    /// waiting for that attempt fail with it rather than each try again.
    Failed {
        at: Instant,
        error: (io::ErrorKind, String),
    },
}

/// The HTTP/2 connections to one target.
pub struct H2Pool {
    target: Authority,
    tls: Option<Arc<UpstreamConnector>>,
    connect_timeout: Duration,
    /// One slot per worker, sized by the first worker that uses the pool.
    per_worker: OnceLock<Box<[Slot]>>,
    /// The slot used off a worker.
    shared: Slot,
}

impl H2Pool {
    /// Connections to `target` (`host:port`), over `tls` when given, opened on first use.
    pub fn new(
        target: Authority,
        tls: Option<Arc<UpstreamConnector>>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            target,
            tls,
            connect_timeout,
            per_worker: OnceLock::new(),
            shared: Slot::default(),
        }
    }

    /// The target's authority.
    pub fn target(&self) -> &Authority {
        &self.target
    }

    /// Sends `request` on the worker's connection (opening it if needed) and
    /// waits for the response head. An origin-form URI gets the scheme and
    /// the `Host` header's authority (else the target's).
    pub async fn send(&self, mut request: Request<Body>) -> Result<Response<Incoming>, SendError> {
        self.to_h2(&mut request);
        let asked = Instant::now();
        // A connection that closed under us hands the request back unsent:
        // it goes once more, on a new connection.
        for _ in 0..2 {
            let mut sender = self.sender(asked).await?;
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Exchange(error.into_error())),
                },
            }
        }
        let mut sender = self.sender(Instant::now()).await?;
        Ok(sender.send_request(request).await?)
    }

    /// Makes `io` (a TLS stream whose handshake picked `h2`) the worker's
    /// connection if it has none open, and sends `request` on it.
    pub async fn adopt<I>(
        &self,
        io: I,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.to_h2(&mut request);
        let mut sender = self.handshake(io).await?;
        {
            let mut state = self.slot().state.lock().await;
            if !matches!(&*state, State::Open(open) if !open.is_closed()) {
                *state = State::Open(sender.clone());
            }
        }
        Ok(sender.send_request(request).await?)
    }

    /// The current worker's slot (the shared one off a worker).
    fn slot(&self) -> &Slot {
        let (Some(index), Some(count)) = (crate::worker::current(), crate::worker::count()) else {
            return &self.shared;
        };
        let slots = self
            .per_worker
            .get_or_init(|| (0..count).map(|_| Slot::default()).collect());
        slots.get(index).unwrap_or(&self.shared)
    }

    /// The worker's open connection, opened now if there is none; an
    /// exchange that started waiting at `asked` fails with a connect failure
    /// that happened since.
    async fn sender(&self, asked: Instant) -> Result<SendRequest<Body>, SendError> {
        let mut state = self.slot().state.lock().await;
        match &*state {
            State::Open(sender) if !sender.is_closed() => return Ok(sender.clone()),
            State::Failed { at, error } if *at >= asked => {
                return Err(SendError::Connect {
                    target: self.target.clone(),
                    source: io::Error::new(error.0, error.1.clone()),
                });
            }
            _ => {}
        }
        // The lock is held while connecting: the exchanges behind it wait for
        // this connection instead of opening their own.
        match self.connect().await {
            Ok(sender) => {
                *state = State::Open(sender.clone());
                Ok(sender)
            }
            Err(error) => {
                if let SendError::Connect { source, .. } = &error {
                    *state = State::Failed {
                        at: Instant::now(),
                        error: (source.kind(), source.to_string()),
                    };
                }
                Err(error)
            }
        }
    }

    /// Opens a connection (TLS within the connect timeout too) and spawns
    /// its task on the current worker.
    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let stream = super::pool::connect_tcp(&self.target, self.connect_timeout).await?;
        let Some(tls) = &self.tls else {
            return self.handshake(stream).await;
        };
        let connect_error = |source| SendError::Connect {
            target: self.target.clone(),
            source,
        };
        let handshake = tls.connect(&self.target, stream, Alpn::H2);
        let (secured, h2) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no TLS handshake within the connect timeout",
                ))
            })
            .map_err(connect_error)?;
        if !h2 {
            return Err(connect_error(io::Error::new(
                io::ErrorKind::Unsupported,
                "the target did not agree to HTTP/2 (ALPN h2)",
            )));
        }
        self.handshake(secured).await
    }

    /// HTTP/2 on `io`, its connection task spawned on the current runtime.
    async fn handshake<I>(&self, io: I) -> Result<SendRequest<Body>, SendError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|error| SendError::Connect {
                target: self.target.clone(),
                source: io::Error::other(error),
            })?;
        let target = self.target.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%target, %error, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Puts `request` in HTTP/2's form: version 2, and the authority in the
    /// URI (`:authority`) rather than in `Host`.
    fn to_h2(&self, request: &mut Request<Body>) {
        *request.version_mut() = Version::HTTP_2;
        let host = request.headers_mut().remove(header::HOST);
        if request.uri().authority().is_some() {
            return;
        }
        let authority = host
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| self.target.clone());
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        parts.authority = Some(authority);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}
