//! Keep-alive HTTP/1.1 connections to one target, over TCP or TLS.
//!
//! Each connection is a hyper `SendRequest` whose connection task runs on the
//! worker that opened it. A request takes the most recently used idle
//! connection (or opens one) and gives it back when its response body ends, so
//! a request costs no extra task or channel beyond hyper's own. A connection
//! whose response body is dropped early is closed rather than reused, and idle
//! connections are closed after the group's idle timeout.
//!
//! Each worker keeps its own idle list (`crate::worker`), so a worker only
//! ever reuses connections whose tasks run on its own runtime, and no two
//! workers lock the same list. Off a worker one shared list serves.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connector::Sending;
use super::tls::{Alpn, UpstreamConnector};
use crate::body::Body;

/// Idle connections kept per target; more are closed when their response ends.
const MAX_IDLE: usize = 512;

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened; the request was not sent, so it may go elsewhere.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The target.
        target: Authority,
        /// What failed.
        source: io::Error,
    },
    /// The exchange failed after the request was handed to a connection.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
    /// The group already has as many connections open as its circuit
    /// breaker allows; the request was not sent.
    #[error("the upstream's {limit} connections are all open")]
    TooManyConnections {
        /// The group's connection limit.
        limit: usize,
    },
}

/// An idle connection and since when it has been idle.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Idle {
    /// Still open, and idle for less than `timeout`.
    fn usable(&self, timeout: Duration) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < timeout
    }
}

/// One worker's idle connections, and whether its reaper runs.
#[derive(Default)]
struct IdleList {
    /// Most recently used last. Locked only by its own worker (and that
    /// worker's reaper), so the lock is never contended.
    idle: Mutex<Vec<Idle>>,
    reaper_started: AtomicBool,
}

impl IdleList {
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        // The list stays consistent even if a holder panicked.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The keep-alive connections to one target.
pub struct ConnectionPool {
    target: Authority,
    /// TLS to the target, when its group has it.
    tls: Option<Arc<UpstreamConnector>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// One list per worker, sized by the first worker that uses the pool.
    per_worker: OnceLock<Box<[IdleList]>>,
    /// The list used off a worker.
    shared: IdleList,
    /// The group's connection slots, one held by each open connection.
    connections: Option<(Arc<Semaphore>, usize)>,
}

impl ConnectionPool {
    /// A pool for `target` (`host:port`), over `tls` when given.
    pub fn new(
        target: Authority,
        tls: Option<Arc<UpstreamConnector>>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            target,
            tls,
            connect_timeout,
            idle_timeout,
            per_worker: OnceLock::new(),
            shared: IdleList::default(),
            connections: None,
        }
    }

    /// Holds each connection to a slot of `slots` (`limit` of them, shared
    /// by the group's pools): with none free, no connection is opened.
    pub fn with_connection_limit(mut self, slots: Arc<Semaphore>, limit: usize) -> Self {
        self.connections = Some((slots, limit));
        self
    }

    /// The current worker's idle list (the shared one off a worker).
    fn list(&self) -> &IdleList {
        let (Some(index), Some(count)) = (crate::worker::current(), crate::worker::count()) else {
            return &self.shared;
        };
        let lists = self
            .per_worker
            .get_or_init(|| (0..count).map(|_| IdleList::default()).collect());
        lists.get(index).unwrap_or(&self.shared)
    }

    /// Sends `request` (origin-form URI) and returns the response; its body gives
    /// the connection back to the pool when it ends.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        if !request.headers().contains_key(header::HOST)
            && let Ok(host) = http::HeaderValue::from_str(self.target.as_str())
        {
            request.headers_mut().insert(header::HOST, host);
        }
        // A pooled connection the upstream closed while it sat idle hands the
        // request back unsent; it then goes on the next connection.
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.pooled_response(response, sender)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Exchange(error.into_error())),
                },
            }
        }
        let mut sender = self.connect_boxed().await?;
        let response = sender.send_request(request).await?;
        Ok(self.pooled_response(response, sender))
    }

    /// [`connect`](Self::connect) on the heap: most requests find an idle
    /// connection, and inline the connect's state (a TLS handshake's among
    /// it) would be carried and copied by every one of them.
    fn connect_boxed(self: &Arc<Self>) -> Sending<'_, SendRequest<Body>> {
        Box::pin(self.connect())
    }

    /// Sends `request` on a connection of its own, closed after the answer's
    /// head: for health probes, which must not borrow or warm the pool.
    pub async fn probe(&self, request: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let mut sender = self.open().await?;
        Ok(sender.send_request(request).await?)
    }

    /// Opens a connection (with its TLS handshake, within the connect
    /// timeout too) and spawns its task on the current worker.
    async fn connect(self: &Arc<Self>) -> Result<SendRequest<Body>, SendError> {
        let sender = self.open().await?;
        self.start_reaper(self.list());
        Ok(sender)
    }

    /// The TLS handshake on `stream`, within the connect timeout.
    async fn secure(
        &self,
        tls: &UpstreamConnector,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SendError> {
        let handshake = tls.connect(&self.target, stream, Alpn::Http1);
        tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no TLS handshake within the connect timeout",
                ))
            })
            .map(|(secured, _)| secured)
            .map_err(|source| SendError::Connect {
                target: self.target.clone(),
                source,
            })
    }

    /// Opens a connection and spawns its task on the current runtime.
    async fn open(&self) -> Result<SendRequest<Body>, SendError> {
        let slot = self.connection_slot()?;
        let stream = connect_tcp(&self.target, self.connect_timeout).await?;
        let sender = match &self.tls {
            None => self.handshake(stream, slot).await?,
            Some(tls) => {
                self.handshake(self.secure(tls, stream).await?, slot)
                    .await?
            }
        };
        Ok(sender)
    }

    /// Sends `request` on a new connection over `io` (a TLS stream whose
    /// handshake picked HTTP/1.1), which joins the pool once its response ends.
    pub(super) async fn send_on<I>(
        self: &Arc<Self>,
        io: I,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, SendError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        if !request.headers().contains_key(header::HOST)
            && let Ok(host) = http::HeaderValue::from_str(self.target.as_str())
        {
            request.headers_mut().insert(header::HOST, host);
        }
        let mut sender = self.handshake(io, self.connection_slot()?).await?;
        self.start_reaper(self.list());
        let response = sender.send_request(request).await?;
        Ok(self.pooled_response(response, sender))
    }

    /// A slot for one more connection under the group's limit, if it has one.
    fn connection_slot(&self) -> Result<Option<OwnedSemaphorePermit>, SendError> {
        let Some((slots, limit)) = &self.connections else {
            return Ok(None);
        };
        Arc::clone(slots)
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| SendError::TooManyConnections { limit: *limit })
    }

    /// Sends an upgrade request (origin-form URI) on a connection of its own
    /// that never joins the pool: after a `101` it carries the tunnel
    /// (`hyper::upgrade::on` the response); after any other answer it closes
    /// once the response body has been read.
    pub async fn send_upgrade(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        if !request.headers().contains_key(header::HOST)
            && let Ok(host) = http::HeaderValue::from_str(self.target.as_str())
        {
            request.headers_mut().insert(header::HOST, host);
        }
        let stream = connect_tcp(&self.target, self.connect_timeout).await?;
        let mut sender = match &self.tls {
            None => upgradable(stream, &self.target).await?,
            Some(tls) => upgradable(self.secure(tls, stream).await?, &self.target).await?,
        };
        Ok(sender.send_request(request).await?)
    }

    /// HTTP/1.1 on `io`, its connection task spawned.
    async fn handshake<I>(
        &self,
        io: I,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<SendRequest<Body>, SendError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
        let target = self.target.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!(%target, %error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn pooled_response(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<Body>,
    ) -> Response<Body> {
        let (parts, incoming) = response.into_parts();
        let mut body = PooledBody {
            inner: incoming,
            home: Some((sender, Arc::downgrade(self))),
        };
        if body.inner.is_end_stream() {
            body.give_back();
        }
        Response::from_parts(parts, crate::body::boxed(body))
    }

    /// The current worker's most recently used idle connection that is still open and fresh.
    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.list().lock();
        while let Some(entry) = idle.pop() {
            if entry.usable(self.idle_timeout) {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.list().lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes the current worker's connections idle past the timeout, and forgets closed ones.
    fn reap(&self) {
        self.list().lock().retain(|e| e.usable(self.idle_timeout));
    }

    /// Starts the task that closes `list`'s idle connections, on the current
    /// worker (the one `list` belongs to); it ends with the pool or the worker.
    fn start_reaper(self: &Arc<Self>, list: &IdleList) {
        if list.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        let period = (self.idle_timeout / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                match pool.upgrade() {
                    Some(pool) => pool.reap(),
                    None => return,
                }
            }
        });
    }
}

/// HTTP/1.1 on `io` with upgrades allowed, its connection task spawned.
async fn upgradable<I>(io: I, target: &Authority) -> Result<SendRequest<Body>, SendError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
    let target = target.clone();
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%target, %error, "upstream upgrade connection ended with an error");
        }
    });
    Ok(sender)
}

/// Opens a TCP connection to `target` within `timeout`, with `TCP_NODELAY` set.
pub(super) async fn connect_tcp(
    target: &Authority,
    timeout: Duration,
) -> Result<TcpStream, SendError> {
    let connect_error = |source| SendError::Connect {
        target: target.clone(),
        source,
    };
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(target.as_str())).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(connect_error(error)),
        Err(_) => {
            return Err(connect_error(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {}ms", timeout.as_millis()),
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A response body that returns its connection to the pool once it has been read to the end.
struct PooledBody {
    inner: Incoming,
    home: Option<(SendRequest<Body>, Weak<ConnectionPool>)>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((sender, pool)) = self.home.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.put_idle(sender);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            // A broken body leaves the connection unusable: it closes when dropped.
            Poll::Ready(Some(Err(_))) => self.home = None,
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
