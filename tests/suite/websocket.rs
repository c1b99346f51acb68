//! WebSocket upgrades through the real gateway to a real WebSocket echo
//! server (tokio-tungstenite): both directions, large messages, ping and
//! close passthrough, the idle timeout and the message limit, refusals by
//! the route, by a filter and by the upstream, and RFC 8441 over HTTP/2.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use weir_tests::websocket::WsEchoUpstream;
use weir_tests::{TestGateway, dead_address, eventually};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous: the suite runs in parallel on two cores.
const WAIT: Duration = Duration::from_secs(10);

/// A gateway with one listener, `main`, and a route `ws` to `upstream`
/// with `websocket` settings (YAML flow, or empty for none) and `extra`
/// route fields.
async fn gateway(upstream: &str, websocket: &str, extra: &str) -> anyhow::Result<TestGateway> {
    let websocket = if websocket.is_empty() {
        String::new()
    } else {
        format!("\n    websocket: {websocket}")
    };
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: chat, targets: ["{upstream}"] }}]
consumers: [{{ name: ada, api_keys: ["{ada_key}"] }}]
plugins: [{{ name: keys, builtin: key-auth, vms: 1 }}]
routes:
  - name: ws
    upstream: chat{websocket}{extra}
"#,
        ada_key = key_digest("k-ada"),
    ))
    .await
}

fn key_digest(key: &str) -> String {
    format!("sha256:{}", weir_tests::sha256_hex(key))
}

async fn connect(gw: &TestGateway, path: &str) -> anyhow::Result<Client> {
    let (ws, response) = connect_with(gw, path, &[]).await?;
    anyhow::ensure!(response.status() == 101, "no switch: {response:?}");
    Ok(ws)
}

async fn connect_with(
    gw: &TestGateway,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}{path}", gw.addr("main")).into_client_request()?;
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("a header value"));
    }
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap_or_else(|_| Err(tungstenite::Error::ConnectionClosed))
}

/// The next message, within [`WAIT`].
async fn next<S>(ws: &mut WebSocketStream<S>) -> anyhow::Result<Message>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(message)) => Ok(message?),
        Ok(None) => anyhow::bail!("the WebSocket ended"),
        Err(_) => anyhow::bail!("no message within {WAIT:?}"),
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// The status and JSON body of a refused handshake.
fn refusal(
    result: Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    match result {
        Err(tungstenite::Error::Http(response)) => Ok((
            response.status().as_u16(),
            response.body().clone().unwrap_or_default(),
        )),
        Ok((_, response)) => anyhow::bail!("the handshake passed: {response:?}"),
        Err(other) => anyhow::bail!("the handshake failed otherwise: {other}"),
    }
}

#[tokio::test]
async fn echoes_text_and_binary_both_ways_including_1_mib_messages() -> anyhow::Result<()> {
    let upstream = WsEchoUpstream::start().await?;
    let gw = gateway(&upstream.addr.to_string(), "{ enabled: true }", "").await?;
    let mut ws = connect(&gw, "/chat?room=1").await?;

    ws.send(Message::text("hello")).await?;
    assert_eq!(next(&mut ws).await?, Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).await?;
    assert_eq!(next(&mut ws).await?, Message::binary(vec![0u8, 1, 2, 255]));

    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await?;
    assert_eq!(next(&mut ws).await?, Message::binary(big));
    let text = "weir ".repeat((1 << 20) / 5);
    ws.send(Message::text(text.clone())).await?;
    assert_eq!(next(&mut ws).await?, Message::text(text));

    // The upstream got the handshake with Weir's forwarding headers.
    let handshakes = upstream.handshakes();
    assert_eq!(handshakes.len(), 1);
    let header = |name: &str| {
        handshakes[0]
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(header("connection").as_deref(), Some("upgrade"));
    assert_eq!(header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(header("via").as_deref(), Some("1.1 weir"));
    Ok(())
}

#[tokio::test]
async fn a_ping_gets_the_upstreams_pong() -> anyhow::Result<()> {
    let upstream = WsEchoUpstream::start().await?;
    let gw = gateway(&upstream.addr.to_string(), "{ enabled: true }", "").await?;
    let mut ws = connect(&gw, "/").await?;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await?;
    assert_eq!(
        next(&mut ws).await?,
        Message::Pong(b"are you there".to_vec().into())
    );
    Ok(())
}

#[tokio::test]
async fn close_codes_pass_both_ways() -> anyhow::Result<()> {
    let upstream = WsEchoUpstream::start().await?;
    let gw = gateway(&upstream.addr.to_string(), "{ enabled: true }", "").await?;

    // The client closes: the upstream sees its code and reason, and its answer comes back.
    let mut ws = connect(&gw, "/").await?;
    ws.send(close(4000, "client done")).await?;
    assert_eq!(next(&mut ws).await?, close(4000, "client done"));
    let closes = async || upstream.closes() == [Some((4000, "client done".to_owned()))];
    assert!(eventually(WAIT, closes).await, "{:?}", upstream.closes());

    // The upstream closes: the client sees its code and reason.
    let mut ws = connect(&gw, "/").await?;
    ws.send(Message::text("close:4001:server done")).await?;
    assert_eq!(next(&mut ws).await?, close(4001, "server done"));
    Ok(())
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_the_idle_timeout() -> anyhow::Result<()> {
    let upstream = WsEchoUpstream::start().await?;
    let gw = gateway(
        &upstream.addr.to_string(),
        "{ enabled: true, idle_timeout: 400ms }",
        "",
    )
    .await?;
    let mut ws = connect(&gw, "/").await?;
    ws.send(Message::text("one")).await?;
    assert_eq!(next(&mut ws).await?, Message::text("one"));
    let quiet_since = Instant::now();
    assert_eq!(next(&mut ws).await?, close(1001, "idle timeout"));
    assert!(
        quiet_since.elapsed() >= Duration::from_millis(350),
        "closed after {:?}",
        quiet_since.elapsed()
    );
    let closes = async || upstream.closes() == [Some((1001, "idle timeout".to_owned()))];
    assert!(eventually(WAIT, closes).await, "{:?}", upstream.closes());
    Ok(())
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009() -> anyhow::Result<()> {
    let upstream = WsEchoUpstream::start().await?;
    let gw = gateway(
        &upstream.addr.to_string(),
        "{ enabled: true, max_message_bytes: 64KiB }",
        "",
    )
    .await?;
    let mut ws = connect(&gw, "/").await?;
    // Exactly the limit passes.
    ws.send(Message::binary(vec![7u8; 64 << 10])).await?;
    assert_eq!(next(&mut ws).await?, Message::binary(vec![7u8; 64 << 10]));
    // One byte more does not, and none of it reaches the upstream.
    ws.send(Message::binary(vec![8u8; (64 << 10) + 1])).await?;
    assert_eq!(next(&mut ws).await?, close(1009, "message too big"));
    let closes = async || upstream.closes() == [Some((1001, "message too big".to_owned()))];
    assert!(eventually(WAIT, closes).await, "{:?}", upstream.closes());
    Ok(())
}

#[tokio::test]
async fn a_route_that_does_not_allow_websockets_refuses_the_handshake() -> anyhow::Result<()> {
    let upstream = WsEchoUpstream::start().await?;
    let gw = gateway(&upstream.addr.to_string(), "", "").await?;
    let (status, body) = refusal(connect_with(&gw, "/", &[]).await)?;
    assert_eq!(status, 403);
    let body: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(body["error"]["code"], "websocket_not_allowed");
    assert_eq!(
        body["error"]["message"],
        "route `ws` does not allow WebSocket upgrades"
    );
    assert!(upstream.handshakes().is_empty());
    Ok(())
}

#[tokio::test]
async fn filters_see_the_handshake_and_may_refuse_it() -> anyhow::Result<()> {
    let upstream = WsEchoUpstream::start().await?;
    let gw = gateway(
        &upstream.addr.to_string(),
        "{ enabled: true }",
        "\n    filters: [{ plugin: keys, config: { sources: [{ header: x-api-key }] } }]",
    )
    .await?;
    let (status, body) = refusal(connect_with(&gw, "/", &[]).await)?;
    assert_eq!(status, 401);
    let body: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(body["error"]["message"], "missing API key");
    assert!(upstream.handshakes().is_empty());

    let (mut ws, response) = connect_with(&gw, "/", &[("x-api-key", "k-ada")]).await?;
    assert_eq!(response.status(), 101);
    ws.send(Message::text("let in")).await?;
    assert_eq!(next(&mut ws).await?, Message::text("let in"));
    let handshakes = upstream.handshakes();
    let consumer = handshakes[0].iter().find(|(n, _)| n == "x-consumer-name");
    assert_eq!(consumer.map(|(_, v)| v.as_str()), Some("ada"));
    Ok(())
}

#[tokio::test]
async fn an_upstream_that_answers_200_is_answered_as_a_normal_response() -> anyhow::Result<()> {
    let upstream = WsEchoUpstream::start().await?;
    let gw = gateway(&upstream.addr.to_string(), "{ enabled: true }", "").await?;
    let (status, body) = refusal(connect_with(&gw, "/refuse", &[]).await)?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"not a websocket");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() -> anyhow::Result<()> {
    let dead = dead_address().await?;
    let gw = gateway(&dead.to_string(), "{ enabled: true }", "").await?;
    let (status, body) = refusal(connect_with(&gw, "/", &[]).await)?;
    assert_eq!(status, 502);
    let body: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    Ok(())
}

#[tokio::test]
async fn extended_connect_over_h2_reaches_an_http1_upstream() -> anyhow::Result<()> {
    let upstream = WsEchoUpstream::start().await?;
    let gw = gateway(&upstream.addr.to_string(), "{ enabled: true }", "").await?;
    let stream = TcpStream::connect(gw.addr("main")).await?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    // One exchange first, so the server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) are in.
    let warm = http::Request::get(format!("http://{}/refuse", gw.addr("main")))
        .body(Empty::<bytes::Bytes>::new())?;
    let warmed = sender.send_request(warm).await?;
    warmed.into_body().collect().await?;

    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{}/chat", gw.addr("main")))
        .header("sec-websocket-version", "13")
        .body(Empty::<bytes::Bytes>::new())?;
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = sender.send_request(request).await?;
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("sec-websocket-accept"));
    let upgraded = hyper::upgrade::on(&mut response).await?;
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;

    ws.send(Message::text("over h2")).await?;
    assert_eq!(next(&mut ws).await?, Message::text("over h2"));
    let big = vec![3u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await?;
    assert_eq!(next(&mut ws).await?, Message::binary(big));
    ws.send(close(4000, "h2 done")).await?;
    assert_eq!(next(&mut ws).await?, close(4000, "h2 done"));

    // The upstream got an HTTP/1.1 handshake with a key Weir made.
    let handshakes = upstream.handshakes();
    let handshake = handshakes.last().expect("a handshake");
    let header = |name: &str| handshake.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    assert_eq!(header("upgrade").map(String::as_str), Some("websocket"));
    assert_eq!(header("sec-websocket-key").map(String::len), Some(24));
    let closes = async || upstream.closes() == [Some((4000, "h2 done".to_owned()))];
    assert!(eventually(WAIT, closes).await, "{:?}", upstream.closes());
    Ok(())
}
