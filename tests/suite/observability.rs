//! Metrics and the access log, read after known traffic: `/metrics` scraped
//! from the real admin API with exact counts and labels, and access log
//! lines parsed from the file the gateway writes, field by field, including
//! a client that leaves mid-response and an upstream that fails mid-body.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_tests::{FixedUpstream, TestGateway, dead_address, eventually, http1_client};

const TOKEN: &str = "metrics-reader-token";
/// An API key; the manifest holds its SHA-256.
const KEY: &str = "alice-key";
/// The key-auth plugin and its one consumer, for the route `keyed`.
const KEYS: &str = r#"plugins: [{ name: keys, builtin: key-auth }]
consumers: [{ name: alice, api_keys: ["sha256:72ee9d4355ccb9d3a4c9dbf37382e38e75c1b1a225b5bd1f729ee91bbda30c20"] }]
"#;

fn manifest(upstream: SocketAddr, dead: SocketAddr, extra: &str) -> String {
    let digest = weir_tests::sha256_hex(TOKEN);
    format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: pool, targets: ["{upstream}"] }}
  - {{ name: gone, targets: ["{dead}"], retries: 1 }}
routes:
  - {{ name: api, match: {{ path: {{ prefix: /api }} }}, upstream: pool }}
  - {{ name: keyed, match: {{ path: {{ prefix: /keyed }} }}, upstream: pool, filters: [{{ plugin: keys }}] }}
  - {{ name: down, match: {{ path: {{ prefix: /down }} }}, upstream: gone }}
admin:
  address: 127.0.0.1:0
  tokens: [{{ name: prometheus, role: read-only, sha256: "{digest}" }}]
{extra}"#
    )
}

/// `/metrics` from the admin API, in the format `accept` asks for.
async fn scrape(admin: SocketAddr, accept: Option<&str>) -> anyhow::Result<(String, String)> {
    let mut request = http1_client()
        .get(format!("http://{admin}/metrics"))
        .bearer_auth(TOKEN);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await?;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str()?.to_owned();
    Ok((content_type, response.text().await?))
}

/// The value of the series written exactly as `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_known_traffic_with_exact_labels() -> anyhow::Result<()> {
    let upstream = FixedUpstream::start(200, "twelve bytes", Duration::ZERO).await?;
    let dead = dead_address().await?;
    let mut gw = TestGateway::from_yaml(&manifest(upstream.addr, dead, KEYS)).await?;
    let admin = gw.serve_admin().await?;
    let client = http1_client();
    let response = client
        .get(gw.url("main", "/keyed"))
        .header("x-api-key", KEY)
        .send()
        .await?;
    assert_eq!(response.text().await?, "twelve bytes");
    for _ in 0..3 {
        let response = client.get(gw.url("main", "/api/a")).send().await?;
        assert_eq!(response.text().await?, "twelve bytes");
    }
    for _ in 0..2 {
        let response = client
            .post(gw.url("main", "/api/b"))
            .body("seven b")
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        response.bytes().await?;
    }
    let response = client.get(gw.url("main", "/nowhere")).send().await?;
    assert_eq!(response.status(), 404);
    response.bytes().await?;
    let response = client.get(gw.url("main", "/down")).send().await?;
    assert_eq!(response.status(), 502);
    response.bytes().await?;

    let expected = [
        (
            r#"weir_requests_total{route="api",upstream="pool",method="GET",status="2xx"}"#,
            3.0,
        ),
        (
            r#"weir_requests_total{route="api",upstream="pool",method="POST",status="2xx"}"#,
            2.0,
        ),
        (
            r#"weir_requests_total{route="-",upstream="-",method="GET",status="4xx"}"#,
            1.0,
        ),
        (
            r#"weir_requests_total{route="down",upstream="gone",method="GET",status="5xx"}"#,
            1.0,
        ),
        (
            r#"weir_request_flags_total{route="-",flag="no_route"}"#,
            1.0,
        ),
        (
            r#"weir_request_flags_total{route="down",flag="upstream_failed"}"#,
            1.0,
        ),
        (r#"weir_request_duration_seconds_count{route="api"}"#, 5.0),
        (
            r#"weir_upstream_duration_seconds_count{upstream="pool"}"#,
            6.0,
        ),
        (r#"weir_sent_bytes_total{route="api"}"#, 5.0 * 12.0),
        (r#"weir_received_bytes_total{route="api"}"#, 2.0 * 7.0),
        (r#"weir_active_requests{listener="main"}"#, 0.0),
        ("weir_config_generation", 1.0),
        (
            &format!(
                r#"weir_upstream_target_health{{upstream="pool",target="{}",state="unchecked"}}"#,
                upstream.addr
            ),
            1.0,
        ),
        (
            &format!(
                r#"weir_upstream_target_health{{upstream="pool",target="{}",state="ejected"}}"#,
                upstream.addr
            ),
            0.0,
        ),
        (r#"weir_upstream_circuit_open{upstream="pool"}"#, 0.0),
        (r#"weir_upstream_retries_total{upstream="gone"}"#, 1.0),
        (
            r#"weir_requests_total{route="keyed",upstream="pool",method="GET",status="2xx"}"#,
            1.0,
        ),
        (
            r#"weir_plugin_duration_seconds_count{plugin="keys",phase="request_headers"}"#,
            1.0,
        ),
        (
            r#"weir_plugin_duration_seconds_count{plugin="keys",phase="response_headers"}"#,
            1.0,
        ),
    ];
    // A request is counted once its response body has gone; the last
    // client read may finish a moment before.
    let settled = eventually(Duration::from_secs(5), async || {
        let Ok((_, text)) = scrape(admin, None).await else {
            return false;
        };
        expected
            .iter()
            .all(|(series, want)| value(&text, series) == Some(*want))
    })
    .await;
    let (content_type, text) = scrape(admin, None).await?;
    for (series, want) in &expected {
        assert_eq!(value(&text, series), Some(*want), "{series} in\n{text}");
    }
    assert!(settled);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        text.contains("# TYPE weir_requests_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE weir_request_duration_seconds histogram\n"),
        "{text}"
    );
    // Route names label the series, never the raw paths.
    assert!(
        !text.contains("/api/a") && !text.contains("/nowhere"),
        "{text}"
    );

    gw.reload(&manifest(upstream.addr, dead, KEYS))?;
    let (content_type, open) =
        scrape(admin, Some("application/openmetrics-text; version=1.0.0")).await?;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(open.contains("# TYPE weir_requests counter\n"), "{open}");
    assert_eq!(value(&open, "weir_config_generation"), Some(2.0));
    assert_eq!(
        value(&open, r#"weir_config_reloads_total{outcome="applied"}"#),
        Some(1.0)
    );

    // Every series the Grafana dashboard in examples/ charts is one Weir serves.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/grafana-dashboard.json"
    ))?;
    let (_, text) = scrape(admin, None).await?;
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let charted = dashboard_metrics(&dashboard)?;
    assert!(charted.len() >= 10, "{charted:?}");
    for name in &charted {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            families.contains(&family),
            "the dashboard charts {name}, which /metrics lacks"
        );
    }

    let anonymous = http1_client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401, "metrics need a token");
    Ok(())
}

/// The metric names the dashboard's queries use.
fn dashboard_metrics(dashboard: &str) -> anyhow::Result<Vec<String>> {
    let dashboard: Value = serde_json::from_str(dashboard)?;
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let mut rest = expr;
            while let Some(at) = rest.find("weir_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    Ok(names)
}

/// The lines of the access log at `path` once it has `count` of them.
pub(crate) async fn lines(path: &std::path::Path, count: usize) -> anyhow::Result<Vec<Value>> {
    let complete = eventually(Duration::from_secs(5), async || {
        std::fs::read_to_string(path).is_ok_and(|t| t.lines().count() >= count)
    })
    .await;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(complete, "expected {count} lines in:\n{text}");
    text.lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

/// An upstream that answers every request with the raw bytes `answer`,
/// then holds the connection for `hold` and closes it.
async fn raw_upstream(answer: &'static [u8], hold: Duration) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer).await;
                tokio::time::sleep(hold).await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn access_log_lines_carry_every_field_once_the_response_is_done() -> anyhow::Result<()> {
    let upstream = FixedUpstream::start(200, "twelve bytes", Duration::ZERO).await?;
    let dead = dead_address().await?;
    // Ten bytes of a hundred, then the connection closes.
    let broken = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789",
        Duration::ZERO,
    )
    .await?;
    let slow = FixedUpstream::start(200, "late", Duration::from_secs(30)).await?;
    let slow_addr = slow.addr;
    // Ten bytes of a chunked body, then nothing for a minute.
    let stalled = raw_upstream(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        Duration::from_secs(60),
    )
    .await?;
    let yaml = manifest(
        upstream.addr,
        dead,
        &format!("{KEYS}access_log: {{ path: access.log }}\n"),
    )
        .replace(
            "routes:\n",
            "routes:\n  - { name: slow, match: { path: { prefix: /slow } }, upstream: slow }\n  - { name: broken, match: { path: { prefix: /broken } }, upstream: broken }\n  - { name: stalled, match: { path: { prefix: /stalled } }, upstream: stalled }\n",
        )
        .replace(
            "upstreams:\n",
            &format!("upstreams:\n  - {{ name: slow, targets: [\"{slow_addr}\"] }}\n  - {{ name: broken, targets: [\"{broken}\"] }}\n  - {{ name: stalled, targets: [\"{stalled}\"] }}\n"),
        );
    let gw = TestGateway::from_yaml(&yaml).await?;
    let log = gw.dir().join("access.log");
    let client = http1_client();

    // 1: a plain request.
    let sent = std::time::Instant::now();
    let response = client
        .post(gw.url("main", "/api/items?x=1"))
        .body("seven b")
        .send()
        .await?;
    let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(response.text().await?, "twelve bytes");
    let client_ms = sent.elapsed().as_secs_f64() * 1000.0;
    let line = lines(&log, 1).await?.remove(0);
    assert_eq!(line["request_id"], request_id.as_str());
    assert_eq!(line["listener"], "main");
    assert_eq!(line["route"], "api");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/api/items");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream"], "pool");
    assert_eq!(line["upstream_target"], upstream.addr.to_string());
    assert_eq!(line["bytes_in"], 7);
    assert_eq!(line["bytes_out"], 12);
    assert_eq!(line["consumer"], Value::Null);
    assert_eq!(line["tls_version"], Value::Null);
    assert_eq!(line["sni"], Value::Null);
    assert_eq!(line["flags"], serde_json::json!([]));
    let client_addr: SocketAddr = line["client"].as_str().unwrap_or_default().parse()?;
    assert!(client_addr.ip().is_loopback());
    let time = line["time"].as_str().unwrap_or_default();
    humantime::parse_rfc3339(time)?;
    let ms = |key: &str| line[key].as_f64().unwrap_or(-1.0);
    assert!(ms("duration_ms") > 0.0);
    // The gateway's clock runs from arrival to the last byte handed to the
    // client's connection: inside the client's own, never after it.
    assert!(ms("duration_ms") <= client_ms, "{line} vs {client_ms} ms");
    assert!(ms("upstream_ms") > 0.0 && ms("upstream_ms") <= ms("duration_ms"));
    assert_eq!(ms("plugins_ms"), 0.0, "no filters on this route");
    let parts = ms("gateway_ms") + ms("plugins_ms") + ms("upstream_ms");
    assert!((parts - ms("duration_ms")).abs() < 0.01, "{line}");

    // 2: no route.
    let response = client.get(gw.url("main", "/nowhere")).send().await?;
    assert_eq!(response.status(), 404);
    response.bytes().await?;
    let line = lines(&log, 2).await?.remove(1);
    assert_eq!(line["status"], 404);
    assert_eq!(line["route"], Value::Null);
    assert_eq!(line["flags"], serde_json::json!(["no_route"]));

    // 3: the upstream breaks its body after ten of a hundred bytes: the
    // client saw 200, the log says what happened.
    let response = client.get(gw.url("main", "/broken")).send().await?;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err(), "the body cannot complete");
    let line = lines(&log, 3).await?.remove(2);
    assert_eq!(line["route"], "broken");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_out"], 10);
    assert_eq!(line["flags"], serde_json::json!(["upstream_failed"]));

    // 4: the client leaves after the first bytes of a stalled body.
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"GET /stalled HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(10).any(|w| w == b"0123456789") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    let line = lines(&log, 4).await?.remove(3);
    assert_eq!(line["route"], "stalled");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_out"], 10);
    assert_eq!(line["flags"], serde_json::json!(["client_abort"]));

    // 5: a caller an auth filter knows as a consumer; time in the filter.
    let response = client
        .get(gw.url("main", "/keyed"))
        .header("x-api-key", KEY)
        .send()
        .await?;
    assert_eq!(response.text().await?, "twelve bytes");
    let line = lines(&log, 5).await?.remove(4);
    assert_eq!(line["route"], "keyed");
    assert_eq!(line["consumer"], "alice");
    assert!(line["plugins_ms"].as_f64().unwrap_or(0.0) > 0.0, "{line}");

    // 6: the client leaves while the upstream has not answered yet.
    let mut stream = TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await?;
    assert!(
        eventually(Duration::from_secs(5), async || slow.hits() == 1).await,
        "the request reached the upstream"
    );
    drop(stream);
    let line = lines(&log, 6).await?.remove(5);
    assert_eq!(line["route"], "slow");
    assert_eq!(line["status"], 0, "no status was sent");
    assert_eq!(line["flags"], serde_json::json!(["client_abort"]));
    Ok(())
}

#[tokio::test]
async fn sampling_keeps_failures_and_a_reopen_follows_a_rotated_file() -> anyhow::Result<()> {
    let upstream = FixedUpstream::start(200, "ok", Duration::ZERO).await?;
    let dead = dead_address().await?;
    let extra = format!("{KEYS}access_log: {{ path: access.log, percent: 0 }}\n");
    let gw = TestGateway::from_yaml(&manifest(upstream.addr, dead, &extra)).await?;
    let log = gw.dir().join("access.log");
    let client = http1_client();
    for _ in 0..5 {
        client
            .get(gw.url("main", "/api"))
            .send()
            .await?
            .bytes()
            .await?;
    }
    client
        .get(gw.url("main", "/down"))
        .send()
        .await?
        .bytes()
        .await?;
    let logged = lines(&log, 1).await?;
    assert_eq!(
        logged.len(),
        1,
        "answered requests are sampled out: {logged:?}"
    );
    assert_eq!(logged[0]["route"], "down");
    assert_eq!(logged[0]["status"], 502);

    let rotated = gw.dir().join("access.log.1");
    std::fs::rename(&log, &rotated)?;
    gw.gateway().reopen_access_log();
    client
        .get(gw.url("main", "/nowhere"))
        .send()
        .await?
        .bytes()
        .await?;
    let logged = lines(&log, 1).await?;
    assert_eq!(logged[0]["flags"], serde_json::json!(["no_route"]));
    assert_eq!(std::fs::read_to_string(&rotated)?.lines().count(), 1);
    Ok(())
}
