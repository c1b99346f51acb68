//! Listeners: accept connections (plain or TLS), admit them to a slot of the
//! listener (`slots`: the connection limits and eviction of silent
//! connections) and hand each to `connection::serve`; the worker threads that
//! run the accept loops (`workers`).
//!
//! Knows sockets, TLS and hyper's server side; the request logic lives in `proxy`.

pub mod certs;
mod connection;
pub mod slots;
pub mod tls;
pub mod workers;

use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::model::ListenerLimits;
use crate::lifecycle::{Connection, ListenerGauges, Proxy};
use slots::{Event, Refused, Slots};

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
    /// Its connection slots, shared by every worker's socket of this listener.
    pub slots: Arc<Slots>,
    /// Its gauges of open connections and requests in flight.
    pub gauges: ListenerGauges,
}

/// Accepts connections until `shutdown` fires; connections are spawned on `tracker`.
pub async fn accept_loop(
    listener: Listener,
    proxy: Arc<Proxy>,
    tracker: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
) {
    let http = Arc::new(connection::http_builder(&listener.limits));
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
        let Some(slot) = admit(&listener, remote) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            listener: listener.name.clone(),
            remote,
            client_ip: crate::lifecycle::ip_header_value(remote.ip()),
            local,
            tls: listener.tls.is_some(),
            sni: None,
            tls_session: None,
            limits: listener.limits.clone(),
            gauges: listener.gauges.clone(),
        };
        let (http, proxy, shutdown) = (http.clone(), proxy.clone(), shutdown.clone());
        // Two spawns, so that a cleartext connection's task is not sized for TLS.
        match listener.tls.clone() {
            None => tracker.spawn(connection::serve(stream, http, proxy, conn, slot, shutdown)),
            Some(acceptor) => tracker.spawn(connection::serve_tls(
                stream, acceptor, http, proxy, conn, slot, shutdown,
            )),
        };
    }
}

/// Admits a connection from `remote` to a slot of `listener`, or says no
/// (`None`: close it). Both evicting and refusing warn, at most once per
/// [`slots::WARN_INTERVAL`] each, with how many happened since the last warning.
fn admit(listener: &Listener, remote: std::net::SocketAddr) -> Option<slots::Slot> {
    let (name, limits) = (&listener.name, &listener.limits);
    let refused = match listener.slots.admit(remote.ip()) {
        Ok(admitted) => {
            if admitted.evicted
                && let Some(count) = listener.slots.warning_due(Event::Evicted)
            {
                tracing::warn!(
                    listener = %name,
                    limit = limits.max_connections,
                    evicted_since_last_warning = count,
                    "connection limit reached; new connections evict the oldest that have sent nothing"
                );
            }
            return Some(admitted.slot);
        }
        Err(refused) => refused,
    };
    if let Some(count) = listener.slots.warning_due(Event::Refused(refused)) {
        match refused {
            Refused::ClientCap => tracing::warn!(
                listener = %name,
                client = %remote.ip(),
                limit = limits.max_connections_per_client,
                refused_since_last_warning = count,
                "client over max_connections_per_client; its new connections are closed"
            ),
            Refused::Full => tracing::warn!(
                listener = %name,
                limit = limits.max_connections,
                refused_since_last_warning = count,
                "connection limit reached and every connection has sent bytes; new connections are closed"
            ),
        }
    }
    None
}
