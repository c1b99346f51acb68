//! Graceful shutdown: stop accepting, finish what is in flight.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use weir_tests::{
    EchoUpstream, TestGateway, eventually, http1_client, json, read_response, read_until_closed,
};

/// The manifest of a gateway to `up` that waits up to 5 s for in-flight requests at shutdown.
fn draining_manifest(up: &EchoUpstream) -> String {
    format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
routes: [{{ name: all, upstream: echo }}]
shutdown_timeout: 5s
"#,
        up.addr
    )
}

/// A draining gateway to `up` (one worker per core).
async fn draining_gateway(up: &EchoUpstream) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&draining_manifest(up)).await
}

/// A request the upstream holds for 700 ms, on a connection of its own: its
/// status and JSON body.
async fn slow_request(url: String) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
    let response = http1_client()
        .get(url)
        .header("x-echo-delay-ms", "700")
        .send()
        .await?;
    let status = response.status();
    Ok((status, json(response).await?))
}

#[tokio::test]
async fn finishes_in_flight_requests_then_stops_accepting() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let mut gw = draining_gateway(&up).await?;
    let url = gw.url("main", "/slow");
    let in_flight = tokio::spawn(slow_request(url));
    assert!(eventually(Duration::from_secs(5), async || up.hits() == 1).await);
    let addr = gw.addr("main");
    assert!(gw.shutdown().await, "drained within the deadline");
    let (status, body) = in_flight.await??;
    assert_eq!(status, 200);
    assert_eq!(body["path"], "/slow");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    Ok(())
}

#[tokio::test]
async fn idle_keep_alive_connections_close_at_shutdown() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let mut gw = draining_gateway(&up).await?;
    let mut stream = tokio::net::TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    read_response(&mut stream, Duration::from_secs(5)).await?;
    // Idle long enough to be parked (no HTTP state left to drain).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gw.shutdown().await, "drained within the deadline");
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed && received.is_empty());
    Ok(())
}

#[tokio::test]
async fn every_worker_finishes_its_in_flight_requests() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let mut gw = TestGateway::with_workers(&draining_manifest(&up), 2).await?;
    // One request per connection (separate clients), so both workers get some.
    let in_flight: Vec<_> = (0..8)
        .map(|i| {
            let url = gw.url("main", &format!("/slow/{i}"));
            tokio::spawn(slow_request(url))
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), async || up.hits() == 8).await);
    let addr = gw.addr("main");
    assert!(gw.shutdown().await, "drained within the deadline");
    for (i, request) in in_flight.into_iter().enumerate() {
        let (status, body) = request.await??;
        assert_eq!(status, 200);
        assert_eq!(body["path"], format!("/slow/{i}"));
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no worker accepts any more"
    );
    Ok(())
}
