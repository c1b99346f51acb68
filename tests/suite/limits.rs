//! Listener limits: body and header size, slow and idle clients, connection count.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_tests::{EchoUpstream, TestGateway, http1_client, json, read_response, read_until_closed};

#[tokio::test]
async fn declared_body_over_the_limit_is_a_json_413() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "{ max_body_bytes: 1KiB }").await?;
    let response = http1_client()
        .post(gw.url("main", "/"))
        .body("x".repeat(2048))
        .send()
        .await?;
    assert_eq!(response.status(), 413);
    let body = json(response).await?;
    assert_eq!(body["error"]["code"], "body_too_large");
    assert_eq!(up.hits(), 0, "refused before reaching the upstream");
    let small = http1_client()
        .post(gw.url("main", "/"))
        .body("x".repeat(1024))
        .send()
        .await?;
    assert_eq!(small.status(), 200);
    Ok(())
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_a_json_413() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "{ max_body_bytes: 1KiB }").await?;
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    let chunk = "a".repeat(800);
    let request = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(closed);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"code\":\"body_too_large\""), "{text}");
    Ok(())
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "{ max_header_bytes: 8KiB }").await?;
    // A head that reaches the limit unfinished. hyper answers 431 once its read
    // buffer holds `max_header_bytes` without a complete head. Exactly that many
    // bytes are sent, so the server has read them all when it closes, and the
    // close cannot turn into a reset that would race the answer.
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    let mut head = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    head.resize(8 * 1024, b'b');
    stream.write_all(&head).await?;
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{text}"
    );
    assert!(closed, "the connection is closed after the 431");
    assert_eq!(up.hits(), 0);
    let fine = http1_client()
        .get(gw.url("main", "/"))
        .header("x-small", "s")
        .send()
        .await?;
    assert_eq!(fine.status(), 200);
    Ok(())
}

#[tokio::test]
async fn slow_header_senders_are_disconnected() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw =
        TestGateway::proxying(&up, "{ header_read_timeout: 300ms, idle_timeout: 30s }").await?;
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await?;
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        closed,
        "a client that never finishes its headers is cut off"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(up.hits(), 0);
    Ok(())
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "{ idle_timeout: 300ms }").await?;
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    assert!(closed, "the idle keep-alive connection was closed");
    // A connection that never sends anything is closed too.
    let mut silent = TcpStream::connect(gw.addr("main")).await?;
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed);
    Ok(())
}

#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_read_timeout() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw =
        TestGateway::proxying(&up, "{ header_read_timeout: 300ms, idle_timeout: 30s }").await?;
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let first = read_response(&mut stream, Duration::from_secs(5)).await?;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Idle for three header read timeouts: only `idle_timeout` may close it.
    tokio::time::sleep(Duration::from_millis(900)).await;
    stream
        .write_all(b"GET /two HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let second = read_response(&mut stream, Duration::from_secs(5)).await?;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains("/two"), "{second}");
    Ok(())
}

#[tokio::test]
async fn a_pipelined_request_sent_in_two_parts_is_served_after_a_pause() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "{ idle_timeout: 30s }").await?;
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\nGET /two HTTP/1.1\r\nho")
        .await?;
    let first = read_response(&mut stream, Duration::from_secs(5)).await?;
    assert!(first.contains("/one"), "{first}");
    // Long enough for an idle connection to be parked with the partial head read.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stream.write_all(b"st: x\r\n\r\n").await?;
    let second = read_response(&mut stream, Duration::from_secs(5)).await?;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains("/two"), "{second}");
    Ok(())
}

#[tokio::test]
async fn a_slow_head_after_a_kept_alive_request_is_cut_off() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw =
        TestGateway::proxying(&up, "{ header_read_timeout: 300ms, idle_timeout: 30s }").await?;
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    read_response(&mut stream, Duration::from_secs(5)).await?;
    stream.write_all(b"GET / HTTP/1.1\r\nx-slow: ").await?;
    // One more byte every 200 ms: each pause is longer than it takes to park
    // an idle connection, and none of them may restart the head's clock.
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(_)) => {}
            Err(_) if started.elapsed() > Duration::from_secs(5) => break false,
            Err(_) => {
                let _ = stream.write_all(b"x").await;
            }
        }
    };
    assert!(closed, "a client that never finishes its head is cut off");
    assert_eq!(up.hits(), 1);
    Ok(())
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "{ max_connections: 2 }").await?;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.addr("main")).await?;
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut third = TcpStream::connect(gw.addr("main")).await?;
    let _ = third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let (received, closed) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(
        closed && received.is_empty(),
        "the third connection is refused"
    );
    drop(held);
    // Capacity comes back once the held connections close.
    let ok = weir_tests::eventually(Duration::from_secs(5), async || {
        http1_client()
            .get(gw.url("main", "/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ok);
    Ok(())
}

#[tokio::test]
async fn a_burst_of_new_connections_is_queued_not_dropped() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "{ max_connections: 10000 }").await?;
    let addr = gw.addr("main");
    // Blocking connects on the test's only thread: the gateway cannot accept
    // meanwhile, so every handshake must wait in the kernel's listen queue.
    // The usual backlog of 128 would drop the rest until clients retry.
    let mut held = Vec::new();
    for i in 0..600 {
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map_err(|e| anyhow::anyhow!("connection {i} was not queued: {e}"))?;
        held.push(stream);
    }
    drop(held);
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200);
    Ok(())
}
