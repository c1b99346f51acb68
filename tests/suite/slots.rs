//! Connection slots: the first-byte timeout, the per-client cap, and a full
//! listener evicting its oldest silent connection for a new one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use weir_tests::{
    EchoUpstream, TestGateway, TestPki, eventually, read_response, read_until_closed,
};

async fn gateway(up: &EchoUpstream, limits: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0, limits: {limits} }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
routes: [{{ name: all, upstream: echo }}]
"#,
        up.addr
    ))
    .await
}

/// Sends a keep-alive `GET path` on `stream` and returns the response's status line.
async fn get(stream: &mut TcpStream, path: &str) -> anyhow::Result<String> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await?;
    let response = read_response(stream, Duration::from_secs(10)).await?;
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

/// A connection to `to` from the loopback address `from` (Linux routes all of
/// 127/8 to the loopback interface).
async fn connect_from(from: &str, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse()?)?;
    Ok(socket.connect(to).await?)
}

/// How long until the gateway closes a connection that sends nothing (`None`:
/// still open after `limit`).
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let (received, closed) = read_until_closed(stream, limit).await;
    assert!(received.is_empty(), "nothing is sent to a silent client");
    closed.then(|| started.elapsed())
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_first_byte_timeout() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway(
        &up,
        "{ first_byte_timeout: 300ms, header_read_timeout: 20s, idle_timeout: 60s }",
    )
    .await?;
    let mut silent = TcpStream::connect(gw.addr("main")).await?;
    let closed = closed_after(&mut silent, Duration::from_secs(10)).await;
    let Some(closed) = closed else {
        panic!("a silent connection is still open after 10s");
    };
    assert!(
        closed >= Duration::from_millis(250) && closed < Duration::from_secs(3),
        "closed after {closed:?}: the first-byte timeout is 300ms, the header read timeout 20s"
    );
    Ok(())
}

#[tokio::test]
async fn the_rest_of_the_head_has_the_header_read_timeout() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway(
        &up,
        "{ first_byte_timeout: 200ms, header_read_timeout: 20s, idle_timeout: 60s }",
    )
    .await?;
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream.write_all(b"G").await?;
    // Three first-byte timeouts between the first byte and the rest: only the
    // header read timeout bounds a head that has begun.
    let (_, closed) = read_until_closed(&mut stream, Duration::from_millis(600)).await;
    assert!(
        !closed,
        "a connection that has sent a byte is not cut by the first-byte timeout"
    );
    stream
        .write_all(b"ET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let response = read_response(&mut stream, Duration::from_secs(10)).await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("/slow"), "{response}");
    Ok(())
}

#[tokio::test]
async fn a_silent_tls_connection_is_closed_after_the_first_byte_timeout() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let pki = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    pki.leaf(dir.path(), "site", &["site.example.test"])?;
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners:
  - name: secure
    address: 127.0.0.1:0
    tls: {{ certificates: [{{ cert: site.crt, key: site.key }}] }}
    limits: {{ first_byte_timeout: 300ms, header_read_timeout: 20s, idle_timeout: 60s }}
upstreams: [{{ name: echo, targets: ["{}"] }}]
routes: [{{ name: all, upstream: echo }}]
"#,
        up.addr
    );
    let gw = TestGateway::from_yaml_in(&yaml, dir).await?;
    let mut silent = TcpStream::connect(gw.addr("secure")).await?;
    let closed = closed_after(&mut silent, Duration::from_secs(10)).await;
    let Some(closed) = closed else {
        panic!("a TLS connection that sends no ClientHello is still open after 10s");
    };
    assert!(
        closed >= Duration::from_millis(250) && closed < Duration::from_secs(3),
        "closed after {closed:?}: the first-byte timeout is 300ms, the handshake's 20s"
    );
    // A client that does speak is served.
    let client = weir_tests::tls_client(&pki.ca_pem, "site.example.test", gw.addr("secure"))?;
    let url = format!("https://site.example.test:{}/", gw.addr("secure").port());
    assert_eq!(client.get(url).send().await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn a_client_over_its_cap_is_closed_while_another_address_is_served() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway(&up, "{ max_connections_per_client: 3, idle_timeout: 60s }").await?;
    let addr = gw.addr("main");
    let mut held = Vec::new();
    for i in 0..3 {
        let mut stream = connect_from("127.0.0.1", addr).await?;
        assert_eq!(
            get(&mut stream, &format!("/held/{i}")).await?,
            "HTTP/1.1 200 OK"
        );
        held.push(stream);
    }
    let mut fourth = connect_from("127.0.0.1", addr).await?;
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let (received, closed) = read_until_closed(&mut fourth, Duration::from_secs(5)).await;
    assert!(
        closed && received.is_empty(),
        "the fourth connection from 127.0.0.1 is closed unanswered"
    );
    let mut other = connect_from("127.0.0.2", addr).await?;
    assert_eq!(get(&mut other, "/other").await?, "HTTP/1.1 200 OK");
    // The held connections are untouched, and closing one frees a place.
    assert_eq!(get(&mut held[0], "/again").await?, "HTTP/1.1 200 OK");
    held.pop();
    let served = eventually(Duration::from_secs(5), async || {
        let Ok(mut stream) = connect_from("127.0.0.1", addr).await else {
            return false;
        };
        get(&mut stream, "/freed")
            .await
            .is_ok_and(|status| status == "HTTP/1.1 200 OK")
    })
    .await;
    assert!(
        served,
        "a place freed by a closed connection is given again"
    );
    Ok(())
}

#[tokio::test]
async fn a_full_listener_evicts_silent_connections_never_ones_that_spoke() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway(
        &up,
        "{ max_connections: 3, first_byte_timeout: 30s, header_read_timeout: 30s, idle_timeout: 60s }",
    )
    .await?;
    let addr = gw.addr("main");
    // One slot: a keep-alive connection that has been served.
    let mut kept = TcpStream::connect(addr).await?;
    assert_eq!(get(&mut kept, "/first").await?, "HTTP/1.1 200 OK");
    // One slot: a connection that has sent the first byte of its head only.
    let mut begun = TcpStream::connect(addr).await?;
    begun.write_all(b"G").await?;
    // The last slot, over and over: each silent connection evicts the one before.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await?);
    }
    let mut fresh = TcpStream::connect(addr).await?;
    assert_eq!(get(&mut fresh, "/fresh").await?, "HTTP/1.1 200 OK");
    for (i, stream) in silent.iter_mut().enumerate() {
        assert!(
            closed_after(stream, Duration::from_secs(5)).await.is_some(),
            "silent connection {i} was evicted"
        );
    }
    assert_eq!(get(&mut kept, "/second").await?, "HTTP/1.1 200 OK");
    begun
        .write_all(b"ET /finished HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let response = read_response(&mut begun, Duration::from_secs(10)).await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Now every slot is held by a connection that spoke: a new one is refused.
    let mut refused = TcpStream::connect(addr).await?;
    let (received, closed) = read_until_closed(&mut refused, Duration::from_secs(5)).await;
    assert!(
        closed && received.is_empty(),
        "a full listener with no silent connection refuses"
    );
    Ok(())
}

#[tokio::test]
async fn a_flood_of_silent_sockets_does_not_starve_new_clients() -> anyhow::Result<()> {
    const SLOTS: usize = 200;
    const SILENT: usize = 1500;
    const REQUESTS: usize = 30;
    let up = EchoUpstream::start("echo").await?;
    // Timeouts far longer than the test: only eviction can free a silent socket's slot.
    let gw = gateway(
        &up,
        &format!(
            "{{ max_connections: {SLOTS}, max_connections_per_client: 100000, first_byte_timeout: 60s, header_read_timeout: 60s, idle_timeout: 120s }}"
        ),
    )
    .await?;
    let addr = gw.addr("main");
    let mut kept = TcpStream::connect(addr).await?;
    assert_eq!(get(&mut kept, "/before").await?, "HTTP/1.1 200 OK");

    let opened = Arc::new(AtomicUsize::new(0));
    let counter = opened.clone();
    let started = Instant::now();
    let flood = tokio::spawn(async move {
        let mut held = Vec::with_capacity(SILENT);
        for _ in 0..SILENT {
            held.push(TcpStream::connect(addr).await?);
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, std::io::Error>((held, started.elapsed()))
    });
    // The listener is full of silent sockets before the first request.
    let full = eventually(Duration::from_secs(30), async || {
        opened.load(Ordering::Relaxed) >= 2 * SLOTS
    })
    .await;
    assert!(
        full,
        "the flood opened {} sockets",
        opened.load(Ordering::Relaxed)
    );

    let first_request = (started.elapsed(), opened.load(Ordering::Relaxed));
    for i in 0..REQUESTS {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /new/{i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let response = read_response(&mut stream, Duration::from_secs(10))
            .await
            .with_context(|| {
                format!(
                    "request {i} on a new connection, after {} silent sockets",
                    opened.load(Ordering::Relaxed)
                )
            })?;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "request {i}: {response}"
        );
    }
    let last_request = (started.elapsed(), opened.load(Ordering::Relaxed));
    let (mut held, flood_took) = flood.await??;
    eprintln!(
        "flood: {SILENT} silent sockets against {SLOTS} slots in {flood_took:?}; \
         {REQUESTS} requests on new connections from {:?} ({} sockets open) to {:?} ({} open)",
        first_request.0, first_request.1, last_request.0, last_request.1
    );
    assert_eq!(get(&mut kept, "/after").await?, "HTTP/1.1 200 OK");
    assert!(
        closed_after(&mut held[0], Duration::from_secs(5))
            .await
            .is_some(),
        "the oldest silent socket was evicted"
    );
    Ok(())
}
