//! One client connection: HTTP/1.1 or HTTP/2 (by preface), bounded by the
//! listener's limits, closed when idle, drained on shutdown.
//!
//! A new connection has `first_byte_timeout` to send its first byte (for TLS,
//! of the ClientHello), and until then the listener may evict it to admit
//! another (`slots`); once it has spoken it keeps its slot.
//!
//! An HTTP/1 connection that has been quiet between requests for a moment is
//! *parked*: hyper's state for it (its read and write buffers, about 25 KiB)
//! is dropped and only the socket is kept, until the client sends again. Idle
//! keep-alive connections then cost little more than their socket, and the
//! header read timeout runs only while a request head is arriving, not
//! between requests.
//!
//! A WebSocket switch (`lifecycle::take_tunnel`) takes the connection over:
//! over HTTP/1 once hyper has written the `101` and handed the socket back
//! (with whatever the client sent after its handshake), in this task; over
//! HTTP/2 as a task of its own on the upgraded stream. Either way it ends on
//! shutdown.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::slots::Slot;

use crate::body::{Body, Retaining};
use crate::config::model::ListenerLimits;
use crate::lifecycle::{Connection, Proxy, Raised, Tunnel, take_tunnel};
use crate::observe::TlsSession;

/// How long an HTTP/1 connection stays quiet between requests before it is parked
/// (at most half the header read timeout, which hyper runs while it waits).
const PARK_AFTER: Duration = Duration::from_millis(100);

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP server settings of a listener.
pub struct Http {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    park_after: Duration,
}

/// Builds the HTTP server settings for `limits`.
pub fn http_builder(limits: &ListenerLimits) -> Http {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // RFC 8441: WebSockets over HTTP/2 as extended CONNECT.
        .enable_connect_protocol();
    Http {
        h1,
        h2,
        park_after: PARK_AFTER.min(limits.header_read_timeout / 2),
    }
}

/// A stream with a TCP socket underneath, which a parked connection waits on.
pub trait Socket {
    /// The TCP socket.
    fn tcp(&self) -> &TcpStream;

    /// Whether the stream holds input already taken off the socket (TLS: a
    /// request sent along with the end of the handshake).
    fn has_buffered_input(&self) -> bool;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }

    fn has_buffered_input(&self) -> bool {
        false
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn has_buffered_input(&self) -> bool {
        // rustls stops wanting to read while it holds plaintext (or a close_notify).
        !self.get_ref().1.wants_read()
    }
}

/// Serves a TLS connection: the first byte of its ClientHello within the
/// first-byte wait, the handshake within `header_read_timeout`, then [`serve`].
pub async fn serve_tls(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    http: Arc<Http>,
    proxy: Arc<Proxy>,
    mut conn: Connection,
    slot: Slot,
    mut shutdown: watch::Receiver<bool>,
) {
    let (limits, remote) = (conn.limits.clone(), conn.remote);
    if !first_byte(&stream, &slot, &limits, &mut shutdown).await {
        return;
    }
    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let session = stream.get_ref().1;
            conn.sni = session.server_name().map(str::to_owned);
            conn.tls_session = Some(TlsSession {
                version: match session.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                    _ => "TLS",
                },
                sni: session.server_name().map(Arc::from),
            });
            serve(stream, http, proxy, conn, slot, shutdown).await;
        }
        Ok(Err(error)) => tracing::debug!(%remote, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
    }
}

/// Serves one connection until the client closes it, it idles out, or
/// shutdown drains it. `slot` is its place in the listener, held until it ends.
pub async fn serve<I>(
    io: I,
    http: Arc<Http>,
    proxy: Arc<Proxy>,
    conn: Connection,
    slot: Slot,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Socket + Unpin + Send + 'static,
{
    let limits = conn.limits.clone();
    let _open = Raised::new(conn.gauges.connections.clone());
    let activity = Arc::new(Activity::new());
    let mut io = Prefixed {
        prefix: Bytes::new(),
        inner: Tracked {
            inner: io,
            activity: activity.clone(),
        },
    };
    let mut handler = Handler {
        proxy,
        conn: Arc::new(conn),
        activity: activity.clone(),
        shutdown: shutdown.clone(),
    };
    if !first_byte(&io.inner.inner, &slot, &limits, &mut shutdown).await {
        return;
    }
    match tokio::time::timeout(limits.header_read_timeout, sniff(&mut io)).await {
        Ok(Ok(true)) => {
            // Boxed here, not in `serve_h2`, so this future is not sized for HTTP/2 state.
            let connection = Box::pin(http.h2.serve_connection(TokioIo::new(io), handler));
            serve_h2(connection, &activity, &limits, shutdown).await;
            return;
        }
        Ok(Ok(false)) => {}
        Ok(Err(error)) => {
            tracing::debug!(%error, "connection ended before its first request");
            return;
        }
        Err(_) => {
            tracing::debug!("no request within the header read timeout");
            return;
        }
    }
    loop {
        let parked;
        // In a block, so that hyper's state is freed before the connection waits.
        (io, handler, parked) = {
            let mut connection = Box::new(http.h1.serve_connection(TokioIo::new(io), handler));
            let parked = serve_h1(&mut connection, &activity, &limits, &http, &mut shutdown).await;
            let (io, handler) = take_back(*connection);
            (io, handler, parked)
        };
        if let Some(tunnel) = activity.take_tunnel() {
            tunnel.run(io, stopped(shutdown)).await;
            return;
        }
        if !parked {
            // Bounded: a client that reads nothing must not hold the task.
            let _ = tokio::time::timeout(limits.idle_timeout, io.shutdown()).await;
            return;
        }
        tracing::trace!(pipelined = io.prefix.len(), "connection parked");
        // Bytes of the next request already read (pipelined) are served at once.
        let idle_deadline = activity.last() + limits.idle_timeout;
        if io.prefix.is_empty()
            && !wait_for_client(&io.inner.inner, idle_deadline, &mut shutdown).await
        {
            return;
        }
    }
}

/// Takes the socket and service back from a stopped HTTP/1 connection.
fn take_back<I>(connection: H1Connection<I>) -> (Prefixed<I>, Handler)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let parts = connection.into_parts();
    let mut io = parts.io.into_inner();
    // Copied: `read_buf` shares hyper's whole read buffer.
    io.prefix = Bytes::copy_from_slice(&parts.read_buf);
    (io, parts.service)
}

/// Waits for a new connection's first byte, for `first_byte_timeout` (or
/// `idle_timeout` when shorter), unless the listener evicts the connection
/// first. When the byte comes, the connection is established: never evicted.
async fn first_byte<I: Socket>(
    io: &I,
    slot: &Slot,
    limits: &ListenerLimits,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let deadline = Instant::now() + limits.first_byte_timeout.min(limits.idle_timeout);
    let wait = slot.unless_evicted(wait_for_client(io, deadline, shutdown), || {
        has_unread_bytes(io.tcp())
    });
    match wait.await {
        Some(true) if slot.establish() => true,
        Some(true) => {
            tracing::debug!("evicted as the first byte came, and no slot was left");
            false
        }
        None => {
            tracing::debug!("evicted: the listener was full and nothing was sent yet");
            false
        }
        Some(false) => {
            tracing::debug!("no first byte within the first-byte timeout");
            false
        }
    }
}

/// Whether bytes wait unread on `tcp`, asked of the kernel (the reactor may
/// not have seen the socket turn readable yet). Costs three system calls (a
/// duplicate of the descriptor, a peek, a close): asked only of a connection
/// picked for eviction.
fn has_unread_bytes(tcp: &TcpStream) -> bool {
    use std::os::fd::AsFd;
    let Ok(fd) = tcp.as_fd().try_clone_to_owned() else {
        return false;
    };
    // The duplicate shares the socket's non-blocking mode, so this never waits.
    let probe = std::net::TcpStream::from(fd);
    let mut byte = [0u8; 1];
    matches!(probe.peek(&mut byte), Ok(n) if n > 0)
}

/// Waits, holding no buffers, until the client sends something (true), or
/// closes, `deadline` passes or the gateway shuts down (false).
async fn wait_for_client<I: Socket>(
    io: &I,
    deadline: Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    if io.has_buffered_input() {
        return true;
    }
    let mut byte = [0u8; 1];
    tokio::select! {
        peeked = io.tcp().peek(&mut byte) => match peeked {
            Ok(n) => n > 0,
            Err(_) => false,
        },
        _ = shutdown.changed() => false,
        () = tokio::time::sleep_until(deadline.into()) => false,
    }
}

/// Reads up to the length of the HTTP/2 preface, keeps what it read for the
/// server to see, and tells whether the client speaks HTTP/2 with prior knowledge.
async fn sniff<I: AsyncRead + Unpin>(io: &mut Prefixed<I>) -> io::Result<bool> {
    let mut head = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    while filled < head.len() && head[..filled] == H2_PREFACE[..filled] {
        let n = io.inner.read(&mut head[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    io.prefix = Bytes::copy_from_slice(&head[..filled]);
    Ok(head[..filled] == H2_PREFACE[..])
}

type H1Connection<I> = http1::Connection<TokioIo<Prefixed<I>>, Handler>;
type H2Connection<I> = http2::Connection<TokioIo<Prefixed<I>>, Handler, TokioExecutor>;

/// Runs HTTP/1 until the connection ends (false) or goes quiet long enough to
/// park (true); either way hyper has stopped and hands the socket back.
async fn serve_h1<I>(
    connection: &mut H1Connection<I>,
    activity: &Activity,
    limits: &ListenerLimits,
    http: &Http,
    shutdown: &mut watch::Receiver<bool>,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut draining = *shutdown.borrow();
    if draining {
        Pin::new(&mut *connection).graceful_shutdown();
    }
    // When to look again whether the connection can be parked.
    let mut check_at = Instant::now() + http.park_after;
    loop {
        let idle_deadline = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return false;
            }
            changed = shutdown.changed(), if !draining => {
                // A closed channel also means shutdown.
                let _ = changed;
                draining = true;
                Pin::new(&mut *connection).graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_deadline.min(check_at).into()), if !draining => {
                let now = Instant::now();
                let parkable = activity.parkable();
                check_at = if parkable { activity.last() } else { now } + http.park_after;
                if activity.last() + limits.idle_timeout <= now {
                    draining = true;
                    Pin::new(&mut *connection).graceful_shutdown();
                } else if parkable && check_at <= now {
                    // Between requests hyper is idle, and stopping it ends the
                    // connection future at once without writing anything. If it
                    // does not end at once, a request was under way after all:
                    // it finishes and the connection closes.
                    Pin::new(&mut *connection).graceful_shutdown();
                    let stopped = poll_fn(|cx| {
                        Poll::Ready(connection.poll_without_shutdown(cx))
                    });
                    match stopped.await {
                        Poll::Ready(Ok(())) => return true,
                        Poll::Ready(Err(error)) => {
                            tracing::debug!(%error, "connection ended with an error");
                            return false;
                        }
                        Poll::Pending => draining = true,
                    }
                }
            }
        }
    }
}

/// Runs HTTP/2 until the connection ends, idles out or is drained.
async fn serve_h2<I>(
    mut connection: Pin<Box<H2Connection<I>>>,
    activity: &Activity,
    limits: &ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut draining = false;
    loop {
        let idle_deadline = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            changed = shutdown.changed(), if !draining => {
                // A closed channel also means shutdown.
                let _ = changed;
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_deadline.into()), if !draining => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The per-connection service: hands each request to the proxy.
struct Handler {
    proxy: Arc<Proxy>,
    conn: Arc<Connection>,
    activity: Arc<Activity>,
    /// Ends the WebSocket tunnels of HTTP/2 streams.
    shutdown: watch::Receiver<bool>,
}

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<Retaining<Body, Open>>;
    type Error = Infallible;
    // Boxed: hyper keeps room for one pending future per connection, and an
    // inline one would keep several KiB per idle connection.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let open = Open::new(self.activity.clone());
        let (proxy, conn) = (self.proxy.clone(), self.conn.clone());
        // An HTTP/2 CONNECT (a WebSocket's extended CONNECT among them)
        // becomes its stream's tunnel through hyper's upgrade.
        let h2_upgrade =
            (request.method() == Method::CONNECT).then(|| hyper::upgrade::on(&mut request));
        let shutdown = self.shutdown.clone();
        Box::pin(async move {
            let mut response = proxy.handle(request, &conn).await;
            if let Some(tunnel) = take_tunnel(&mut response) {
                match h2_upgrade {
                    Some(upgrading) => {
                        tokio::spawn(async move {
                            match upgrading.await {
                                Ok(stream) => {
                                    tunnel.run(TokioIo::new(stream), stopped(shutdown)).await;
                                }
                                Err(error) => tracing::debug!(%error, "HTTP/2 upgrade failed"),
                            }
                        });
                    }
                    None => open.0.hand_over(tunnel),
                }
            }
            Ok(response.map(|body| Retaining::new(body, open)))
        })
    }
}

/// Resolves when the gateway starts shutting down.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    // A closed channel also means shutdown.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One request counted from the moment it reaches the service until its
/// response body is dropped (written out, or abandoned).
struct Open(Arc<Activity>);

impl Open {
    fn new(activity: Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::Relaxed);
        activity.read_between.store(false, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When bytes last moved on a connection, and whether hyper is between requests.
struct Activity {
    origin: Instant,
    last_millis: AtomicU64,
    /// Requests whose response is not yet written out.
    open: AtomicUsize,
    /// Bytes were read since the last request started (part of a request head).
    read_between: AtomicBool,
    /// The tunnel an HTTP/1 `101` switched the connection to.
    tunnel: Mutex<Option<Tunnel>>,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_millis: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            read_between: AtomicBool::new(false),
            tunnel: Mutex::new(None),
        }
    }

    /// Keeps `tunnel` for the connection to run once hyper hands it back.
    fn hand_over(&self, tunnel: Tunnel) {
        *self.tunnel.lock().unwrap_or_else(PoisonError::into_inner) = Some(tunnel);
    }

    fn take_tunnel(&self) -> Option<Tunnel> {
        self.tunnel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn touch(&self) {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_millis.load(Ordering::Relaxed))
    }

    /// No request under way and no request head begun. (hyper turns idle only
    /// once the last response is flushed.)
    fn parkable(&self) -> bool {
        self.open.load(Ordering::Relaxed) == 0 && !self.read_between.load(Ordering::Relaxed)
    }
}

/// An I/O stream that records activity on every read and write.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
            if self.activity.open.load(Ordering::Relaxed) == 0 {
                self.activity.read_between.store(true, Ordering::Relaxed);
            }
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream that first yields bytes already read from it (the sniffed preface,
/// or what hyper had read past the last request when the connection was parked).
struct Prefixed<I> {
    prefix: Bytes,
    inner: Tracked<I>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        // Fill the rest from the socket too, so the request usually arrives in
        // one read; what it cannot give now it gives on the next read.
        if self.prefix.is_empty() && buf.remaining() > 0 {
            let _ = Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
