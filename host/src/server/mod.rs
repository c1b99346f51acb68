//! Listeners: accept connections (plain or TLS), enforce the connection limit
//! and hand each connection to `connection::serve`; the worker threads that
//! run the accept loops (`workers`).
//!
//! Knows sockets, TLS and hyper's server side; the request logic lives in `proxy`.

mod connection;
pub mod tls;
pub mod workers;

use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::model::ListenerLimits;
use crate::lifecycle::{Connection, Proxy};

/// Pending connections the kernel queues per socket (capped by
/// `net.core.somaxconn`). The usual 128 drops handshakes in a burst of new
/// clients, which then retry a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds one worker's listening socket with [`LISTEN_BACKLOG`] and
/// `SO_REUSEPORT`, so every worker binds its own socket to the same address and
/// the kernel spreads new connections over them. Call it inside the worker's
/// runtime (the socket registers with the current reactor).
pub fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// One worker's bound socket of a listener, ready to serve.
pub struct Listener {
    /// Its name (routes are found by it).
    pub name: Arc<str>,
    /// The bound socket.
    pub socket: TcpListener,
    /// TLS acceptor when the listener terminates TLS.
    pub tls: Option<TlsAcceptor>,
    /// Its limits.
    pub limits: Arc<ListenerLimits>,
    /// Open connections allowed (`limits.max_connections`), shared by every
    /// worker's socket of this listener.
    pub permits: Arc<Semaphore>,
}

/// Accepts connections until `shutdown` fires; connections are spawned on `tracker`.
pub async fn accept_loop(
    listener: Listener,
    proxy: Arc<Proxy>,
    tracker: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
) {
    let http = Arc::new(connection::http_builder(&listener.limits));
    let permits = listener.permits.clone();
    let local = listener.socket.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.socket.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(listener = %listener.name, %error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                listener = %listener.name,
                %remote,
                limit = listener.limits.max_connections,
                "connection limit reached; closing new connection"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            listener: listener.name.clone(),
            remote,
            client_ip: crate::lifecycle::ip_header_value(remote.ip()),
            local,
            tls: listener.tls.is_some(),
            sni: None,
            limits: listener.limits.clone(),
        };
        let (http, proxy, shutdown) = (http.clone(), proxy.clone(), shutdown.clone());
        // Two spawns, so that a cleartext connection's task is not sized for TLS.
        match listener.tls.clone() {
            None => {
                tracker.spawn(async move {
                    let _permit = permit;
                    connection::serve(stream, http, proxy, conn, shutdown).await;
                });
            }
            Some(acceptor) => {
                let handshake_timeout = listener.limits.header_read_timeout;
                tracker.spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            conn.sni = stream.get_ref().1.server_name().map(str::to_owned);
                            connection::serve(stream, http, proxy, conn, shutdown).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%remote, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}
