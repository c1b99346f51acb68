//! Upstream keep-alive: connections are reused, stale ones are skipped, idle
//! ones are closed after the group's idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_tests::{TestGateway, eventually, http1_client};

/// A raw HTTP/1.1 upstream that answers every GET with `200 ok` and counts
/// the connections it accepted and the ones the gateway closed.
struct CountingUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed_by_peer: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl CountingUpstream {
    /// `close_after` > 0 closes each connection after that many responses
    /// (without announcing it, as an upstream's own idle timeout would).
    async fn start(close_after: usize) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_peer = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed_by_peer.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut served = 0;
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                c.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(n) => n,
                        };
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(reply).await.is_err() {
                                return;
                            }
                            served += 1;
                            if close_after > 0 && served == close_after {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            accepted,
            closed_by_peer,
            task,
        })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed_by_peer(&self) -> usize {
        self.closed_by_peer.load(Ordering::SeqCst)
    }
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn gateway_to(up: &CountingUpstream, idle: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: up, targets: ["{}"], timeouts: {{ idle: {idle} }} }}]
routes: [{{ name: all, upstream: up }}]
"#,
        up.addr
    ))
    .await
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() -> anyhow::Result<()> {
    let up = CountingUpstream::start(0).await?;
    let gw = gateway_to(&up, "90s").await?;
    let client = http1_client();
    for _ in 0..20 {
        let response = client.get(gw.url("main", "/")).send().await?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await?, "ok");
    }
    assert_eq!(
        up.accepted(),
        1,
        "every request should reuse the first connection"
    );
    Ok(())
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_reused() -> anyhow::Result<()> {
    let up = CountingUpstream::start(1).await?;
    let gw = gateway_to(&up, "90s").await?;
    let client = http1_client();
    for i in 0..5 {
        // Give the gateway time to see the close, as it would between real requests.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let response = client.get(gw.url("main", "/")).send().await?;
        assert_eq!(response.status(), 200, "request {i}");
    }
    assert_eq!(up.accepted(), 5);
    Ok(())
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() -> anyhow::Result<()> {
    let up = CountingUpstream::start(0).await?;
    let gw = gateway_to(&up, "200ms").await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(up.closed_by_peer(), 0);
    let closed = eventually(Duration::from_secs(5), async || up.closed_by_peer() == 1).await;
    assert!(
        closed,
        "the idle upstream connection should have been closed"
    );
    Ok(())
}

#[tokio::test]
async fn each_worker_keeps_its_own_upstream_connections_and_closes_them_when_idle()
-> anyhow::Result<()> {
    let up = CountingUpstream::start(0).await?;
    let gw = TestGateway::with_workers(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: up, targets: ["{}"], timeouts: {{ idle: 1s }} }}]
routes: [{{ name: all, upstream: up }}]
"#,
            up.addr
        ),
        2,
    )
    .await?;
    // One request at a time, each on a new client connection, so the kernel
    // spreads them over both workers. One shared pool would reuse a single
    // upstream connection; per-worker pools open one per worker.
    for _ in 0..24 {
        let response = http1_client().get(gw.url("main", "/")).send().await?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await?, "ok");
    }
    assert_eq!(up.accepted(), 2, "one upstream connection per worker");
    let closed = eventually(Duration::from_secs(5), async || up.closed_by_peer() == 2).await;
    assert!(closed, "every worker closed its idle upstream connection");
    Ok(())
}
