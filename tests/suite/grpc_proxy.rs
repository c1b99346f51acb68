//! gRPC proxied to HTTP/2 upstreams: a real tonic service with all four
//! kinds of call and a custom trailer, reached through the gateway in h2c and
//! over TLS (ALPN), its messages, statuses and trailers arriving exactly;
//! requests that stream without being held; `grpc-timeout`; Weir's own
//! errors as gRPC statuses; gRPC-Web translated both ways; and
//! `protocol: auto` taking HTTP/2 by ALPN for a plain request.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::uri::PathAndQuery;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};
use tonic_prost::ProstCodec;
use weir_tests::{TestGateway, TestPki, dead_address, h2c_client, http1_client};

use client::{Grpc, connect};
use upstream::{StreamsServer, Text};

/// The gateway's manifest: one listener, the `streams` upstream at `target`
/// (with `extra` settings, YAML flow entries), and a route to it for the
/// test service's path.
fn manifest(target: &str, extra: &str, route_extra: &str) -> String {
    format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: streams, targets: ["{target}"]{extra} }}]
routes:
  - {{ name: grpc, match: {{ path: {{ prefix: /weir.test.Streams }} }}, upstream: streams{route_extra} }}
  - {{ name: plain, match: {{ path: {{ prefix: /plain }} }}, upstream: streams }}
"#
    )
}

/// A gateway in front of a cleartext [`StreamsServer`] (h2c by `protocol: auto`).
async fn h2c_setup() -> anyhow::Result<(StreamsServer, TestGateway)> {
    let server = StreamsServer::start(None).await?;
    let gw = TestGateway::from_yaml(&manifest(&server.addr.to_string(), "", "")).await?;
    Ok((server, gw))
}

/// A gateway in front of a [`StreamsServer`] over TLS (offering `h2` and
/// `http/1.1`), verified with the test's CA, `protocol` as given (empty:
/// the default).
async fn tls_setup(alpn: &[&[u8]], protocol: &str) -> anyhow::Result<(StreamsServer, TestGateway)> {
    let pki = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    let leaf = pki.leaf(dir.path(), "upstream", &["localhost"])?;
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem)?;
    let server = StreamsServer::start(Some(upstream::tls_config(&leaf, alpn)?)).await?;
    let mut extra = ", tls: { ca: ca.pem }".to_owned();
    if !protocol.is_empty() {
        extra.push_str(&format!(", protocol: {protocol}"));
    }
    let target = format!("localhost:{}", server.addr.port());
    // One worker: the connections the upstream counts are that worker's.
    let gw = TestGateway::with_workers_in(&manifest(&target, &extra, ""), dir, 1).await?;
    Ok((server, gw))
}

fn path(method: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(match method {
        "Unary" => "/weir.test.Streams/Unary",
        "ServerStream" => "/weir.test.Streams/ServerStream",
        "ClientStream" => "/weir.test.Streams/ClientStream",
        _ => "/weir.test.Streams/Bidi",
    })
}

fn text(s: &str) -> Text {
    Text { text: s.to_owned() }
}

fn codec() -> ProstCodec<Text, Text> {
    ProstCodec::default()
}

/// A metadata value as text ("" when absent).
fn meta<'a>(map: &'a tonic::metadata::MetadataMap, key: &str) -> &'a str {
    map.get(key).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Runs every kind of call through `grpc` and checks messages and trailers.
async fn all_four_kinds(grpc: &mut Grpc) -> anyhow::Result<()> {
    // Unary: the reply, the server's header and its custom trailer.
    grpc.ready().await?;
    let response = grpc
        .unary(Request::new(text("weir")), path("Unary"), codec())
        .await?;
    assert_eq!(meta(response.metadata(), "x-served-by"), "tonic");
    assert_eq!(meta(response.metadata(), "x-echo-trailer"), "Unary");
    assert_eq!(response.into_inner(), text("hello weir"));

    // Server streaming: three messages, then the trailers.
    grpc.ready().await?;
    let response = grpc
        .server_streaming(Request::new(text("s")), path("ServerStream"), codec())
        .await?;
    let mut stream = response.into_inner();
    let mut got = Vec::new();
    while let Some(message) = stream.message().await? {
        got.push(message.text);
    }
    assert_eq!(got, ["s-0", "s-1", "s-2"]);
    let trailers = stream.trailers().await?.unwrap_or_default();
    assert_eq!(meta(&trailers, "x-echo-trailer"), "ServerStream");

    // Client streaming: every message reaches the server, one reply.
    grpc.ready().await?;
    let messages = tokio_stream::iter(vec![text("a"), text("b"), text("c")]);
    let response = grpc
        .client_streaming(Request::new(messages), path("ClientStream"), codec())
        .await?;
    assert_eq!(meta(response.metadata(), "x-echo-trailer"), "ClientStream");
    assert_eq!(response.into_inner(), text("a,b,c"));

    // Bidirectional, in lock step: each message is sent only once the reply
    // to the one before has come back, so a request or a response held
    // anywhere on the way would stall the call.
    grpc.ready().await?;
    let (outgoing, requests) = mpsc::channel(1);
    let response = grpc
        .streaming(
            Request::new(ReceiverStream::new(requests)),
            path("Bidi"),
            codec(),
        )
        .await?;
    let mut replies = response.into_inner();
    for word in ["one", "two", "three"] {
        outgoing.send(text(word)).await?;
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.message())
            .await
            .map_err(|_| anyhow::anyhow!("no reply to {word}: something held the stream"))??;
        assert_eq!(reply.map(|r| r.text), Some(format!("echo {word}")));
    }
    drop(outgoing);
    assert_eq!(replies.message().await?, None);
    let trailers = replies.trailers().await?.unwrap_or_default();
    assert_eq!(meta(&trailers, "x-echo-trailer"), "Bidi");
    Ok(())
}

#[tokio::test]
async fn every_kind_of_call_passes_to_an_h2c_upstream_with_its_trailers() -> anyhow::Result<()> {
    let (server, gw) = h2c_setup().await?;
    let mut grpc = connect(gw.addr("main")).await?;
    all_four_kinds(&mut grpc).await?;
    let seen = server.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.te.as_deref(), Some("trailers"));
    assert_eq!(seen.content_type.as_deref(), Some("application/grpc"));
    Ok(())
}

#[tokio::test]
async fn every_kind_of_call_passes_to_a_tls_upstream_that_picks_h2() -> anyhow::Result<()> {
    let (server, gw) = tls_setup(&[b"h2", b"http/1.1"], "").await?;
    let mut grpc = connect(gw.addr("main")).await?;
    all_four_kinds(&mut grpc).await?;
    assert_eq!(server.last().version, http::Version::HTTP_2);
    assert_eq!(
        server.connections(),
        1,
        "every call of the worker shares one connection"
    );
    Ok(())
}

#[tokio::test]
async fn the_exact_trailers_of_the_upstream_reach_the_client() -> anyhow::Result<()> {
    let (_server, gw) = h2c_setup().await?;
    let answer = client::raw(
        gw.addr("main"),
        "/weir.test.Streams/Unary",
        "application/grpc",
        client::frame(&text("raw").encode_to_vec()),
        &[],
    )
    .await?;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), "application/grpc");
    assert_eq!(answer.header("x-served-by"), "tonic");
    assert_eq!(
        answer.body,
        client::frame(&text("hello raw").encode_to_vec())
    );
    assert_eq!(
        answer.trailers,
        BTreeMap::from([
            ("grpc-status".to_owned(), "0".to_owned()),
            ("x-echo-trailer".to_owned(), "Unary".to_owned()),
        ])
    );
    Ok(())
}

#[tokio::test]
async fn trailers_follow_a_response_body_a_filter_held_whole() -> anyhow::Result<()> {
    let server = StreamsServer::start(None).await?;
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: streams, targets: ["{}"] }}]
plugins: [{{ name: rewriter, file: {} }}]
routes:
  - name: grpc
    upstream: streams
    filters: [{{ plugin: rewriter, config: {{ rewrite_response_body: [hello, HELLO] }} }}]
"#,
        server.addr,
        weir_tests::test_filter_wasm()
    );
    let gw = TestGateway::from_yaml(&yaml).await?;
    let answer = client::raw(
        gw.addr("main"),
        "/weir.test.Streams/Unary",
        "application/grpc",
        client::frame(&text("held").encode_to_vec()),
        &[],
    )
    .await?;
    assert_eq!(
        answer.body,
        client::frame(&text("HELLO held").encode_to_vec())
    );
    assert_eq!(answer.trailers["grpc-status"], "0");
    assert_eq!(answer.trailers["x-echo-trailer"], "Unary");
    Ok(())
}

#[tokio::test]
async fn an_upstreams_error_status_and_message_pass_through() -> anyhow::Result<()> {
    let (_server, gw) = h2c_setup().await?;
    let mut grpc = connect(gw.addr("main")).await?;
    grpc.ready().await?;
    let status = grpc
        .unary::<Text, Text, _>(Request::new(text("fail")), path("Unary"), codec())
        .await
        .expect_err("the service refuses `fail`");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), upstream::REFUSAL);
    assert_eq!(meta(status.metadata(), "x-error-detail"), "from-upstream");

    // A stream that fails after a message: the status comes in its trailers.
    grpc.ready().await?;
    let response = grpc
        .server_streaming(Request::new(text("fail")), path("ServerStream"), codec())
        .await?;
    let mut stream = response.into_inner();
    assert_eq!(stream.message().await?, Some(text("fail-0")));
    let status = stream.message().await.expect_err("the stream breaks");
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "stream broke");
    Ok(())
}

#[tokio::test]
async fn a_passed_grpc_timeout_is_deadline_exceeded() -> anyhow::Result<()> {
    let (server, gw) = h2c_setup().await?;
    let mut grpc = connect(gw.addr("main")).await?;

    // No answer head within the deadline: Weir's own error, as a status.
    grpc.ready().await?;
    let mut request = Request::new(text("slow"));
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = grpc
        .unary::<Text, Text, _>(request, path("Unary"), codec())
        .await
        .expect_err("too slow");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(
        status.message(),
        "upstream `streams` did not answer within 300ms"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A stream still going when the deadline passes ends with the status.
    grpc.ready().await?;
    let mut request = Request::new(text("slow"));
    request.set_timeout(Duration::from_millis(500));
    let response = grpc
        .server_streaming(request, path("ServerStream"), codec())
        .await?;
    let mut stream = response.into_inner();
    assert_eq!(stream.message().await?, Some(text("first")));
    let status = stream.message().await.expect_err("cut at the deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(status.message(), "the call's deadline of 500ms passed");
    assert!(server.last().grpc_timeout.is_some());
    Ok(())
}

#[tokio::test]
async fn the_route_timeout_bounds_the_deadline_the_upstream_is_told() -> anyhow::Result<()> {
    let server = StreamsServer::start(None).await?;
    let yaml = manifest(&server.addr.to_string(), "", ", timeout: 200ms");
    let gw = TestGateway::from_yaml(&yaml).await?;
    let mut grpc = connect(gw.addr("main")).await?;
    grpc.ready().await?;
    let mut request = Request::new(text("slow"));
    request.set_timeout(Duration::from_secs(20));
    let status = grpc
        .unary::<Text, Text, _>(request, path("Unary"), codec())
        .await
        .expect_err("the route's 200ms is shorter");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(server.last().grpc_timeout.as_deref(), Some("200000u"));
    Ok(())
}

#[tokio::test]
async fn no_route_and_a_dead_upstream_answer_as_grpc_statuses() -> anyhow::Result<()> {
    let dead = dead_address().await?;
    let gw = TestGateway::from_yaml(&manifest(&dead.to_string(), "", "")).await?;
    let call = |path: &'static str| {
        h2c_client()
            .post(gw.url("main", path))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(client::frame(&text("x").encode_to_vec()))
            .send()
    };

    let response = call("/other.Service/Method").await?;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "12", "UNIMPLEMENTED");
    assert_eq!(
        headers["grpc-message"],
        "no route matches POST /other.Service/Method"
    );
    assert!(headers.contains_key("x-request-id"));
    assert!(response.bytes().await?.is_empty(), "trailers-only");

    let response = call("/weir.test.Streams/Unary").await?;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["grpc-status"], "14", "UNAVAILABLE");
    let message = headers["grpc-message"].to_str()?;
    assert!(
        message.starts_with(&format!(
            "upstream `streams` is unavailable: cannot connect to {dead}"
        )),
        "{message}"
    );

    // A client that is not gRPC still gets the JSON error.
    let response = http1_client()
        .get(gw.url("main", "/nowhere"))
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    Ok(())
}

#[tokio::test]
async fn a_filters_refusal_reaches_a_grpc_client_as_a_status() -> anyhow::Result<()> {
    let server = StreamsServer::start(None).await?;
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: streams, targets: ["{}"] }}]
plugins: [{{ name: keys, builtin: key-auth }}]
consumers: [{{ name: alice, api_keys: ["sha256:{digest}"] }}]
routes:
  - {{ name: grpc, upstream: streams, filters: [{{ plugin: keys }}] }}
"#,
        server.addr,
        digest = weir_tests::sha256_hex("secret-key"),
    );
    let gw = TestGateway::from_yaml(&yaml).await?;
    let mut grpc = connect(gw.addr("main")).await?;
    grpc.ready().await?;
    let status = grpc
        .unary::<Text, Text, _>(Request::new(text("x")), path("Unary"), codec())
        .await
        .expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(server.calls(), 0);

    grpc.ready().await?;
    let mut request = Request::new(text("key"));
    request
        .metadata_mut()
        .insert("x-api-key", "secret-key".parse()?);
    let response = grpc.unary(request, path("Unary"), codec()).await?;
    assert_eq!(response.into_inner(), text("hello key"));
    Ok(())
}

/// gRPC-Web frames: messages (flag 0) and the trailer frame (flag 0x80).
fn web_frames(mut body: &[u8]) -> anyhow::Result<(Vec<String>, BTreeMap<String, String>)> {
    let mut messages = Vec::new();
    let mut trailers = BTreeMap::new();
    while !body.is_empty() {
        anyhow::ensure!(body.len() >= 5, "a cut frame header");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        anyhow::ensure!(body.len() >= 5 + len, "a cut frame");
        let payload = &body[5..5 + len];
        match body[0] {
            0 => messages.push(Text::decode(payload)?.text),
            0x80 => {
                for line in std::str::from_utf8(payload)?.split("\r\n") {
                    if let Some((name, value)) = line.split_once(':') {
                        trailers.insert(name.to_owned(), value.trim().to_owned());
                    }
                }
            }
            flag => anyhow::bail!("unknown frame flag {flag}"),
        }
        body = &body[5 + len..];
    }
    Ok((messages, trailers))
}

#[tokio::test]
async fn grpc_web_unary_over_http1_is_translated_both_ways() -> anyhow::Result<()> {
    let (server, gw) = h2c_setup().await?;
    let response = http1_client()
        .post(gw.url("main", "/weir.test.Streams/Unary"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(client::frame(&text("web").encode_to_vec()))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    // The upstream's `application/grpc`, translated back.
    assert_eq!(response.headers()["content-type"], "application/grpc-web");
    assert_eq!(response.headers()["x-served-by"], "tonic");
    let (messages, trailers) = web_frames(&response.bytes().await?)?;
    assert_eq!(messages, ["hello web"]);
    assert_eq!(
        trailers,
        BTreeMap::from([
            ("grpc-status".to_owned(), "0".to_owned()),
            ("x-echo-trailer".to_owned(), "Unary".to_owned()),
        ])
    );
    let seen = server.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.content_type.as_deref(), Some("application/grpc+proto"));
    assert_eq!(seen.te.as_deref(), Some("trailers"));
    Ok(())
}

#[tokio::test]
async fn grpc_web_text_server_streaming_is_decoded_and_encoded_in_base64() -> anyhow::Result<()> {
    let (server, gw) = h2c_setup().await?;
    let body = STANDARD.encode(client::frame(&text("t").encode_to_vec()));
    let response = h2c_client()
        .post(gw.url("main", "/weir.test.Streams/ServerStream"))
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .body(body)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web-text"
    );
    let decoded = STANDARD.decode(response.bytes().await?)?;
    let (messages, trailers) = web_frames(&decoded)?;
    assert_eq!(messages, ["t-0", "t-1", "t-2"]);
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-echo-trailer"], "ServerStream");
    assert_eq!(
        server.last().content_type.as_deref(),
        Some("application/grpc")
    );
    Ok(())
}

#[tokio::test]
async fn auto_takes_http2_over_tls_for_plain_requests_when_the_target_picks_it()
-> anyhow::Result<()> {
    let (server, gw) = tls_setup(&[b"h2", b"http/1.1"], "").await?;
    for _ in 0..3 {
        let response = http1_client().get(gw.url("main", "/plain")).send().await?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await?, "HTTP/2.0");
    }
    assert_eq!(server.connections(), 1, "one shared HTTP/2 connection");

    // A target that speaks only HTTP/1.1 gets HTTP/1.1 from `auto`…
    let (_server, gw) = tls_setup(&[b"http/1.1"], "").await?;
    let response = http1_client().get(gw.url("main", "/plain")).send().await?;
    assert_eq!(response.text().await?, "HTTP/1.1");
    // …and is a failed connection for `http2`.
    let (_server, gw) = tls_setup(&[b"http/1.1"], "http2").await?;
    let response = http1_client().get(gw.url("main", "/plain")).send().await?;
    assert_eq!(response.status(), 502);
    let error: serde_json::Value = response.json().await?;
    assert_eq!(error["error"]["code"], "upstream_unavailable");
    Ok(())
}

#[tokio::test]
async fn http2_in_cleartext_is_h2c_for_plain_requests_too() -> anyhow::Result<()> {
    let server = StreamsServer::start(None).await?;
    let gw = TestGateway::from_yaml(&manifest(&server.addr.to_string(), ", protocol: http2", ""))
        .await?;
    let response = http1_client().get(gw.url("main", "/plain")).send().await?;
    assert_eq!(response.text().await?, "HTTP/2.0");
    // `auto` (the default) sends a plain request over HTTP/1.1.
    let gw = TestGateway::from_yaml(&manifest(&server.addr.to_string(), "", "")).await?;
    let response = http1_client().get(gw.url("main", "/plain")).send().await?;
    assert_eq!(response.text().await?, "HTTP/1.1");
    Ok(())
}

/// A gRPC client over one HTTP/2 connection (hyper's), for tonic's generic client.
mod client {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::client::conn::http2::SendRequest;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tonic::codegen::{BoxFuture, Service};

    /// tonic's client over [`Channel`].
    pub type Grpc = tonic::client::Grpc<Channel>;

    /// One h2c connection as a tower service.
    #[derive(Clone)]
    pub struct Channel(SendRequest<tonic::body::Body>);

    impl Service<http::Request<tonic::body::Body>> for Channel {
        type Response = http::Response<hyper::body::Incoming>;
        type Error = hyper::Error;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            let mut sender = self.0.clone();
            Box::pin(async move { sender.send_request(request).await })
        }
    }

    /// A gRPC client of the gateway at `addr`, over h2c.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Grpc> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        Ok(tonic::client::Grpc::with_origin(
            Channel(sender),
            format!("http://{addr}").parse()?,
        ))
    }

    /// `message` in gRPC's length-prefixed frame.
    pub fn frame(message: &[u8]) -> Bytes {
        let mut frame = vec![0];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        Bytes::from(frame)
    }

    /// An answer as it came: status, head, body bytes and trailers.
    pub struct Answer {
        pub status: u16,
        pub headers: http::HeaderMap,
        pub body: Bytes,
        pub trailers: BTreeMap<String, String>,
    }

    impl Answer {
        pub fn header(&self, name: &str) -> &str {
            (self.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        }
    }

    /// One POST of `body` over h2c, read whole with its trailers.
    pub async fn raw(
        addr: SocketAddr,
        path: &str,
        content_type: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let mut request = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", content_type)
            .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender.send_request(request.body(Full::new(body))?).await?;
        let (parts, body) = response.into_parts();
        let collected = body.collect().await?;
        let trailers = collected
            .trailers()
            .map(|t| {
                t.iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            v.to_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }
}

/// The test's gRPC service, `weir.test.Streams`, served by tonic's server
/// side over hyper (HTTP/1.1 and HTTP/2, cleartext or TLS with ALPN). Every
/// answer's trailers get `x-echo-trailer: <method>`; a plain request gets its
/// HTTP version as text.
mod upstream {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::Bytes;
    use hyper::body::Frame;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::codegen::BoxFuture;
    use tonic::metadata::{MetadataMap, MetadataValue};
    use tonic::server::{
        ClientStreamingService, Grpc, ServerStreamingService, StreamingService, UnaryService,
    };
    use tonic::{Code, Request, Response, Status, Streaming};
    use tonic_prost::ProstCodec;

    /// The message `Unary` refuses `fail` with (tonic percent-encodes it).
    pub const REFUSAL: &str = "bad input: 100% wrong";

    /// `message Text { string text = 1; }`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Text {
        #[prost(string, tag = "1")]
        pub text: String,
    }

    /// What the server saw of a request.
    #[derive(Debug, Clone, Default)]
    pub struct Seen {
        pub version: http::Version,
        pub te: Option<String>,
        pub grpc_timeout: Option<String>,
        pub content_type: Option<String>,
    }

    #[derive(Default)]
    struct State {
        seen: Mutex<Vec<Seen>>,
        connections: AtomicUsize,
    }

    pub struct StreamsServer {
        pub addr: SocketAddr,
        state: Arc<State>,
        task: tokio::task::JoinHandle<()>,
    }

    /// A TLS server config for `leaf` offering `alpn`.
    pub fn tls_config(
        leaf: &weir_tests::Leaf,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = CertificateDer::pem_file_iter(&leaf.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&leaf.key)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    impl StreamsServer {
        /// Serves on a free loopback port, over TLS with `tls`.
        pub async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<Self> {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let state = Arc::new(State::default());
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            let served = state.clone();
            let task = tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    served.connections.fetch_add(1, Ordering::SeqCst);
                    let state = served.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(answer(&state, request).await) }
                        });
                        let builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let _ = match acceptor {
                            None => builder.serve_connection(TokioIo::new(tcp), service).await,
                            Some(acceptor) => match acceptor.accept(tcp).await {
                                Ok(tls) => {
                                    builder.serve_connection(TokioIo::new(tls), service).await
                                }
                                Err(_) => return,
                            },
                        };
                    });
                }
            });
            Ok(Self { addr, state, task })
        }

        /// What the server saw of the last request.
        pub fn last(&self) -> Seen {
            self.lock().last().cloned().unwrap_or_default()
        }

        /// Requests served.
        pub fn calls(&self) -> usize {
            self.lock().len()
        }

        /// Connections accepted.
        pub fn connections(&self) -> usize {
            self.state.connections.load(Ordering::SeqCst)
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
            self.state
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    impl Drop for StreamsServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn answer(
        state: &State,
        request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<tonic::body::Body> {
        let header = |name: &str| {
            (request.headers().get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let seen = Seen {
            version: request.version(),
            te: header("te"),
            grpc_timeout: header("grpc-timeout"),
            content_type: header("content-type"),
        };
        if let Ok(mut all) = state.seen.lock() {
            all.push(seen);
        }
        let request = request.map(tonic::body::Body::new);
        let mut grpc = Grpc::new(ProstCodec::<Text, Text>::default());
        let (method, response) = match request.uri().path() {
            "/weir.test.Streams/Unary" => ("Unary", grpc.unary(Unary, request).await),
            "/weir.test.Streams/ServerStream" => (
                "ServerStream",
                grpc.server_streaming(ServerStream, request).await,
            ),
            "/weir.test.Streams/ClientStream" => (
                "ClientStream",
                grpc.client_streaming(ClientStream, request).await,
            ),
            "/weir.test.Streams/Bidi" => ("Bidi", grpc.streaming(Bidi, request).await),
            _ => {
                let version = format!("{:?}", request.version());
                return http::Response::new(tonic::body::Body::new(http_body_util::Full::new(
                    Bytes::from(version),
                )));
            }
        };
        response.map(|body| {
            tonic::body::Body::new(WithTrailer {
                inner: body,
                method,
            })
        })
    }

    /// A response body whose trailers get `x-echo-trailer: <method>`.
    struct WithTrailer {
        inner: tonic::body::Body,
        method: &'static str,
    }

    impl hyper::body::Body for WithTrailer {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            let method = self.method;
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    Poll::Ready(Some(Ok(match frame.into_trailers() {
                        Ok(mut trailers) => {
                            trailers
                                .insert("x-echo-trailer", http::HeaderValue::from_static(method));
                            Frame::trailers(trailers)
                        }
                        Err(frame) => frame,
                    })))
                }
                other => other,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }
    }

    fn served_by(metadata: &mut MetadataMap) {
        metadata.insert("x-served-by", MetadataValue::from_static("tonic"));
    }

    /// `hello <text>`; `fail` is refused with metadata, `slow` answers after 3 s.
    struct Unary;

    impl UnaryService<Text> for Unary {
        type Response = Text;
        type Future = BoxFuture<Response<Text>, Status>;

        fn call(&mut self, request: Request<Text>) -> Self::Future {
            Box::pin(async move {
                let text = request.into_inner().text;
                if text == "fail" {
                    let mut metadata = MetadataMap::new();
                    metadata.insert(
                        "x-error-detail",
                        MetadataValue::from_static("from-upstream"),
                    );
                    return Err(Status::with_metadata(
                        Code::InvalidArgument,
                        REFUSAL,
                        metadata,
                    ));
                }
                if text == "slow" {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                let mut response = Response::new(Text {
                    text: format!("hello {text}"),
                });
                served_by(response.metadata_mut());
                Ok(response)
            })
        }
    }

    type Replies = ReceiverStream<Result<Text, Status>>;

    /// `<text>-0`, `<text>-1`, `<text>-2`; `fail` breaks after the first,
    /// `slow` sends `first` and then nothing for 5 s.
    struct ServerStream;

    impl ServerStreamingService<Text> for ServerStream {
        type Response = Text;
        type ResponseStream = Replies;
        type Future = BoxFuture<Response<Replies>, Status>;

        fn call(&mut self, request: Request<Text>) -> Self::Future {
            Box::pin(async move {
                let text = request.into_inner().text;
                let (replies, stream) = mpsc::channel(4);
                tokio::spawn(async move {
                    let reply = |t: String| Ok(Text { text: t });
                    match text.as_str() {
                        "slow" => {
                            let _ = replies.send(reply("first".into())).await;
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            let _ = replies.send(reply("late".into())).await;
                        }
                        "fail" => {
                            let _ = replies.send(reply(format!("{text}-0"))).await;
                            let _ = replies.send(Err(Status::aborted("stream broke"))).await;
                        }
                        _ => {
                            for i in 0..3 {
                                let _ = replies.send(reply(format!("{text}-{i}"))).await;
                            }
                        }
                    }
                });
                Ok(Response::new(ReceiverStream::new(stream)))
            })
        }
    }

    /// The texts of every message, joined with commas.
    struct ClientStream;

    impl ClientStreamingService<Text> for ClientStream {
        type Response = Text;
        type Future = BoxFuture<Response<Text>, Status>;

        fn call(&mut self, request: Request<Streaming<Text>>) -> Self::Future {
            Box::pin(async move {
                let mut inbound = request.into_inner();
                let mut texts = Vec::new();
                while let Some(message) = inbound.message().await? {
                    texts.push(message.text);
                }
                Ok(Response::new(Text {
                    text: texts.join(","),
                }))
            })
        }
    }

    /// `echo <text>` for each message as it comes.
    struct Bidi;

    impl StreamingService<Text> for Bidi {
        type Response = Text;
        type ResponseStream = Replies;
        type Future = BoxFuture<Response<Replies>, Status>;

        fn call(&mut self, request: Request<Streaming<Text>>) -> Self::Future {
            Box::pin(async move {
                let mut inbound = request.into_inner();
                let (replies, stream) = mpsc::channel(4);
                tokio::spawn(async move {
                    while let Ok(Some(message)) = inbound.message().await {
                        let reply = Text {
                            text: format!("echo {}", message.text),
                        };
                        if replies.send(Ok(reply)).await.is_err() {
                            return;
                        }
                    }
                });
                Ok(Response::new(ReceiverStream::new(stream)))
            })
        }
    }
}
