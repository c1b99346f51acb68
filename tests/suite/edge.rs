//! Edge hardening, tried as an attacker would: spellings of a protected path,
//! host confusion, lenient HTTP/1 framing, method and version handling. Every
//! request goes over a raw socket, so nothing on the client side cleans it up.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use weir_tests::{EchoUpstream, TestGateway, read_response, read_until_closed, test_filter_wasm};

/// A route `prefix: /admin` (case-insensitive) whose filter marks what it saw,
/// next to an open catch-all route whose filter records the path too.
async fn admin_gateway(up: &EchoUpstream, listener_extra: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0{listener_extra} }}]
upstreams: [{{ name: echo, targets: ["{addr}"] }}]
plugins: [{{ name: t, file: {wasm} }}]
routes:
  - name: admin
    match: {{ path: {{ prefix: /admin, case_sensitive: false }} }}
    upstream: echo
    filters:
      - plugin: t
        config: {{ add_request_headers: [[x-route, admin]], properties_to_request_headers: [request.path], deny_when_header: x-deny }}
  - name: open
    match: {{ hosts: [admin.internal] }}
    upstream: echo
    filters: [{{ plugin: t, config: {{ add_request_headers: [[x-route, internal]], properties_to_request_headers: [request.path] }} }}]
  - name: rest
    upstream: echo
    filters: [{{ plugin: t, config: {{ add_request_headers: [[x-route, open]], properties_to_request_headers: [request.path] }} }}]
"#,
        addr = up.addr,
        wasm = test_filter_wasm(),
    ))
    .await
}

/// Sends `request` (raw bytes) on a new connection; the status and the body.
async fn exchange(gw: &TestGateway, request: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream.write_all(request).await?;
    let response = read_response(&mut stream, Duration::from_secs(10)).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn get(target: &str, host: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").into_bytes()
}

/// The variants of `/admin` an attacker tries, and whether Weir refuses them
/// (400) or must route them through the `/admin` filter.
const SPELLINGS: [(&str, bool); 30] = [
    ("/admin", false),
    ("/admin/", false),
    ("/admin/secret", false),
    ("/ADMIN", false),
    ("/Admin/Secret", false),
    ("//admin", false),
    ("/./admin", false),
    ("/x/../admin", false),
    ("/%61dmin", false),
    ("/adm%69n/secret", false),
    ("/admin%2F", true),
    ("/%2fadmin", true),
    ("/%2e/admin", false),
    ("/x/%2e%2e/admin", false),
    ("/x/..%2fadmin", true),
    ("/admin;x", false),
    ("/admin%20", false),
    ("/admin.", false),
    ("/admin%00", true),
    ("/x/../../admin", false),
    ("http://a/%61dmin", false),
    ("/admin//secret", false),
    ("/admin/./secret", false),
    ("/admin/x/../secret", false),
    ("/%41DMIN", false),
    ("/admin%5csecret", true),
    ("/x\\..\\admin", true),
    ("/admin.json", false),
    ("/admin?q=1", false),
    ("/admin%zz", true),
];

#[tokio::test]
async fn every_spelling_of_admin_goes_through_its_filter_or_is_refused() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = admin_gateway(&up, "").await?;
    for (target, refused) in SPELLINGS {
        let (status, body) = exchange(&gw, &get(target, "a")).await?;
        if refused {
            assert_eq!(status, 400, "{target}: {body}");
            let json: serde_json::Value = serde_json::from_str(&body)?;
            assert_eq!(json["error"]["code"], "invalid_path", "{target}");
            continue;
        }
        assert_eq!(status, 200, "{target}: {body}");
        let echo: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(
            echo["headers"]["x-route"][0], "admin",
            "{target} skipped the filter"
        );
        let sent = match echo["query"].as_str() {
            Some(query) => format!("{}?{query}", echo["path"].as_str().unwrap_or_default()),
            None => echo["path"].as_str().unwrap_or_default().to_owned(),
        };
        assert_eq!(
            echo["headers"]["x-prop-request.path"][0], sent,
            "{target}: the upstream got another path than the filter saw"
        );
        // The same spelling with the filter's deny switch is stopped by it.
        let denied =
            format!("GET {target} HTTP/1.1\r\nhost: a\r\nx-deny: 1\r\nconnection: close\r\n\r\n");
        let (status, _) = exchange(&gw, denied.as_bytes()).await?;
        assert_eq!(status, 403, "{target} with x-deny");
    }
    Ok(())
}

#[tokio::test]
async fn escaped_slashes_can_be_kept_or_decoded_per_listener() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let keep = admin_gateway(&up, ", paths: { escaped_slashes: keep }").await?;
    let (status, body) = exchange(&keep, &get("/x/..%2fadmin", "a")).await?;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        echo["path"], "/x/..%2Fadmin",
        "kept escaped, hex upper-cased"
    );
    assert_eq!(echo["headers"]["x-route"][0], "open");

    let decode = admin_gateway(&up, ", paths: { escaped_slashes: decode }").await?;
    let (status, body) = exchange(&decode, &get("/x/..%2fadmin", "a")).await?;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(echo["path"], "/admin");
    assert_eq!(echo["headers"]["x-route"][0], "admin");

    let unmerged = admin_gateway(&up, ", paths: { merge_slashes: false }").await?;
    let (status, body) = exchange(&unmerged, &get("//admin", "a")).await?;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(echo["path"], "//admin", "forwarded as routed");
    assert_eq!(echo["headers"]["x-route"][0], "open");
    Ok(())
}

#[tokio::test]
async fn one_authority_routes_and_is_forwarded() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = admin_gateway(&up, "").await?;
    // The absolute-form authority wins over the Host header, for routing and upstream.
    let (status, body) = exchange(&gw, &get("http://other/x", "admin.internal")).await?;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(echo["headers"]["x-route"][0], "open");
    assert_eq!(echo["headers"]["host"][0], "other");
    let (_, body) = exchange(&gw, &get("http://admin.internal/x", "other")).await?;
    let echo: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(echo["headers"]["x-route"][0], "internal");
    assert_eq!(echo["headers"]["host"][0], "admin.internal");
    // A trailing dot, upper case and a port still match the host route.
    for host in ["admin.internal.", "ADMIN.Internal", "admin.internal.:8080"] {
        let (status, body) = exchange(&gw, &get("/x", host)).await?;
        assert_eq!(status, 200, "{host}: {body}");
        let echo: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(echo["headers"]["x-route"][0], "internal", "{host}");
        assert!(
            echo["headers"]["host"][0]
                .as_str()
                .is_some_and(|h| h.starts_with("admin.internal") && !h.contains(".:")),
            "{host} forwarded as {}",
            echo["headers"]["host"][0]
        );
    }
    Ok(())
}

#[tokio::test]
async fn bad_hosts_are_refused_with_a_json_400() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = admin_gateway(&up, "").await?;
    let cases: [(&str, &[u8]); 5] = [
        (
            "two hosts",
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: admin.internal\r\nconnection: close\r\n\r\n",
        ),
        ("no host", b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n"),
        (
            "space",
            b"GET / HTTP/1.1\r\nhost: a b\r\nconnection: close\r\n\r\n",
        ),
        (
            "user info",
            b"GET / HTTP/1.1\r\nhost: x@y\r\nconnection: close\r\n\r\n",
        ),
        (
            "bad port",
            b"GET / HTTP/1.1\r\nhost: a:b\r\nconnection: close\r\n\r\n",
        ),
    ];
    for (case, request) in cases {
        let (status, body) = exchange(&gw, request).await?;
        assert_eq!(status, 400, "{case}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(json["error"]["code"], "invalid_host", "{case}");
        assert!(json["error"]["request_id"].is_string(), "{case}");
    }
    assert_eq!(up.hits(), 0);
    // HTTP/1.0 may leave the host out.
    let (status, _) = exchange(&gw, b"GET /x HTTP/1.0\r\n\r\n").await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn a_client_cannot_strip_the_request_id_or_host_with_connection() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = admin_gateway(&up, "").await?;
    let request = b"GET /x HTTP/1.1\r\nhost: a\r\nx-request-id: req-7\r\nx-mine: 1\r\n\
        connection: x-request-id, host, x-mine, x-route\r\n\r\n";
    let (status, body) = exchange(&gw, request).await?;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(echo["headers"]["x-request-id"][0], "req-7");
    assert_eq!(echo["headers"]["host"][0], "a");
    assert_eq!(
        echo["headers"]["x-route"][0], "open",
        "what a filter adds is not the client's to strip"
    );
    assert!(
        echo["headers"].get("x-mine").is_none(),
        "its own header named in connection is hop-by-hop"
    );
    Ok(())
}

#[tokio::test]
async fn bad_chunk_framing_is_a_400_and_nothing_reaches_the_upstream() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let filtered = admin_gateway(&up, "").await?;
    let plain = TestGateway::proxying(&up, "").await?;
    // A bad size, a chunk longer than its size, data not ended by CRLF.
    let cases: [&[u8]; 3] = [
        b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    ];
    for (request, gw) in cases.iter().flat_map(|r| [(r, &filtered), (r, &plain)]) {
        let mut stream = TcpStream::connect(gw.addr("main")).await?;
        stream.write_all(request).await?;
        let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&received);
        let sent = String::from_utf8_lossy(request);
        assert!(text.starts_with("HTTP/1.1 400"), "{sent:?}: {text}");
        assert!(
            text.contains("\"code\":\"bad_request\""),
            "{sent:?}: {text}"
        );
    }
    assert_eq!(up.hits(), 0, "no part of a broken body was forwarded");
    Ok(())
}

#[tokio::test]
async fn get_bodies_are_forwarded_alike_in_both_framings() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let filtered = admin_gateway(&up, "").await?;
    let plain = TestGateway::proxying(&up, "").await?;
    for gw in [&filtered, &plain] {
        get_bodies_arrive(gw).await?;
    }
    Ok(())
}

async fn get_bodies_arrive(gw: &TestGateway) -> anyhow::Result<()> {
    let sized =
        b"GET /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
    let chunked = b"GET /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    for request in [&sized[..], &chunked[..]] {
        let (status, body) = exchange(gw, request).await?;
        assert_eq!(status, 200, "{body}");
        let echo: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(
            echo["body"],
            "hello",
            "{}",
            String::from_utf8_lossy(request)
        );
    }
    // A chunked GET body that arrives in pieces streams through too.
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"GET /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n")
        .await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"2\r\nde\r\n0\r\n\r\n").await?;
    let response = read_response(&mut stream, Duration::from_secs(10)).await?;
    assert!(response.contains("\"body\":\"abcde\""), "{response}");
    Ok(())
}

#[tokio::test]
async fn a_route_matching_but_for_its_method_answers_405_with_allow() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
routes:
  - {{ name: read, match: {{ path: {{ prefix: /users }}, methods: [GET, HEAD] }}, upstream: echo }}
  - {{ name: write, match: {{ path: {{ exact: /users }}, methods: [POST] }}, upstream: echo }}
"#,
        up.addr
    ))
    .await?;
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"DELETE /users HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await?;
    let response = read_response(&mut stream, Duration::from_secs(5)).await?;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    let head = response.to_ascii_lowercase();
    assert!(
        head.contains("\r\nallow: post, get, head\r\n"),
        "{response}"
    );
    assert!(
        response.contains("\"code\":\"method_not_allowed\""),
        "{response}"
    );
    let (status, _) = exchange(&gw, &get("/elsewhere", "a")).await?;
    assert_eq!(status, 404);
    Ok(())
}

/// An upstream that answers every request in HTTP/1.0 and closes.
async fn http10_upstream() -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket
                    .write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn an_http11_client_keeps_http11_behind_an_http10_upstream() -> anyhow::Result<()> {
    let upstream = http10_upstream().await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: old, targets: ["{upstream}"] }}]
routes: [{{ name: all, upstream: old }}]
"#
    ))
    .await?;
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await?;
        let response = read_response(&mut stream, Duration::from_secs(5)).await?;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("ok"), "{response}");
    }
    Ok(())
}
