//! Proxy-Wasm filters built with the public SDK (`tests/filters`), driven
//! through the real gateway to a real echo upstream.

use serde_json::json;
use weir_tests::{EchoUpstream, TestGateway, http1_client, json, test_filter_wasm};

/// A gateway with the test filter as plugin `sdk`, `route_filters` on the only
/// route and `global_filters` before them.
async fn gateway(
    up: &EchoUpstream,
    global_filters: &str,
    route_filters: &str,
) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins:
  - {{ name: sdk, file: "{}", vms: 1 }}
global_filters: {global_filters}
routes:
  - name: filtered
    upstream: echo
    filters: {route_filters}
"#,
        up.addr,
        test_filter_wasm()
    ))
    .await
}

async fn one_filter(up: &EchoUpstream, config: serde_json::Value) -> anyhow::Result<TestGateway> {
    gateway(up, "[]", &format!("[{{ plugin: sdk, config: {config} }}]")).await
}

#[tokio::test]
async fn adds_replaces_and_removes_request_headers() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = one_filter(
        &up,
        json!({
            "add_request_headers": [["x-added", "1"], ["x-added", "2"]],
            "replace_request_headers": [["x-replaced", "new"]],
            "remove_request_headers": ["x-removed"],
            "add_response_headers": [["x-filtered", "yes"]],
        }),
    )
    .await?;
    let response = http1_client()
        .get(gw.url("main", "/headers"))
        .header("x-replaced", "old")
        .header("x-removed", "gone")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-filtered"], "yes");
    let echoed = json(response).await?;
    let headers = &echoed["headers"];
    assert_eq!(headers["x-added"], json!(["1", "2"]));
    assert_eq!(headers["x-replaced"], json!(["new"]));
    assert!(headers.get("x-removed").is_none());
    Ok(())
}

#[tokio::test]
async fn local_response_skips_the_upstream() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = one_filter(&up, json!({ "deny_when_header": "x-deny" })).await?;
    let client = http1_client();
    let denied = client
        .get(gw.url("main", "/"))
        .header("x-deny", "1")
        .send()
        .await?;
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.headers()["x-denied-by"], "test-filter");
    assert!(denied.headers().contains_key("x-request-id"));
    assert_eq!(denied.text().await?, "denied by filter");
    assert_eq!(up.hits(), 0);
    let allowed = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(allowed.status(), 200);
    assert_eq!(up.hits(), 1);
    Ok(())
}

#[tokio::test]
async fn plugin_configuration_arrives_as_json() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let config = json!({ "config_to_request_header": "x-config" });
    let gw = one_filter(&up, config.clone()).await?;
    let echoed = json(http1_client().get(gw.url("main", "/")).send().await?).await?;
    let seen: serde_json::Value =
        serde_json::from_str(echoed["headers"]["x-config"][0].as_str().unwrap_or("null"))?;
    assert_eq!(seen, config);
    Ok(())
}

#[tokio::test]
async fn rewrites_the_whole_request_body() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = one_filter(&up, json!({ "rewrite_request_body": ["cat", "tiger"] })).await?;
    let echoed = json(
        http1_client()
            .post(gw.url("main", "/"))
            .body("one cat, two cats")
            .send()
            .await?,
    )
    .await?;
    assert_eq!(echoed["body"], "one tiger, two tigers");
    assert_eq!(echoed["headers"]["content-length"][0], "21");
    Ok(())
}

#[tokio::test]
async fn rewrites_the_whole_response_body() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = one_filter(
        &up,
        json!({ "rewrite_response_body": ["\"upstream\":\"echo\"", "\"upstream\":\"rewritten by wasm\""] }),
    )
    .await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    let length: usize = response.headers()["content-length"].to_str()?.parse()?;
    let text = response.text().await?;
    assert_eq!(length, text.len());
    let body: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(body["upstream"], "rewritten by wasm");
    Ok(())
}

#[tokio::test]
async fn streams_bodies_through_filters_that_do_not_buffer() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = one_filter(&up, json!({ "add_request_headers": [["x-a", "1"]] })).await?;
    let payload = "z".repeat(200_000);
    let echoed = json(
        http1_client()
            .post(gw.url("main", "/"))
            .body(payload.clone())
            .send()
            .await?,
    )
    .await?;
    assert_eq!(echoed["body"].as_str().map(str::len), Some(payload.len()));
    Ok(())
}

#[tokio::test]
async fn a_paused_request_resumes_from_a_tick() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = one_filter(&up, json!({ "pause_until_tick": true })).await?;
    let echoed = json(http1_client().get(gw.url("main", "/paused")).send().await?).await?;
    assert_eq!(echoed["headers"]["x-resumed-by"][0], "tick");
    assert_eq!(echoed["path"], "/paused");
    Ok(())
}

#[tokio::test]
async fn filters_read_request_and_plugin_properties() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = one_filter(
        &up,
        json!({ "properties_to_request_headers": [
            "request.path", "request.method", "request.host", "request.id",
            "source.address", "source.port", "plugin_name", "route_name", "cluster_name", "nope"
        ]}),
    )
    .await?;
    let response = http1_client()
        .get(gw.url("main", "/props?x=1"))
        .header("x-request-id", "req-42")
        .send()
        .await?;
    let echoed = json(response).await?;
    let h = &echoed["headers"];
    assert_eq!(h["x-prop-request.path"][0], "/props?x=1");
    assert_eq!(h["x-prop-request.method"][0], "GET");
    assert_eq!(h["x-prop-request.host"][0], gw.addr("main").to_string());
    assert_eq!(h["x-prop-request.id"][0], "req-42");
    let source = h["x-prop-source.address"][0].as_str().unwrap_or_default();
    assert!(source.starts_with("127.0.0.1:"), "{source}");
    assert_eq!(
        source.rsplit(':').next(),
        h["x-prop-source.port"][0].as_str(),
        "port as an 8-byte integer matches the address"
    );
    assert_eq!(h["x-prop-plugin_name"][0], "sdk");
    assert_eq!(h["x-prop-route_name"][0], "filtered");
    assert_eq!(h["x-prop-cluster_name"][0], "echo");
    assert_eq!(h["x-prop-nope"][0], "<none>");
    Ok(())
}

#[tokio::test]
async fn filters_in_a_chain_see_each_others_changes_in_order() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway(
        &up,
        r#"[{ plugin: sdk, config: { add_request_headers: [[x-order, global]], replace_request_headers: [[x-from, global]] } }]"#,
        r#"[{ plugin: sdk, config: { add_request_headers: [[x-order, route-1]], copy_request_header: [x-from, x-seen-by-route] } },
            { plugin: sdk, config: { add_request_headers: [[x-order, route-2]], set_path: /rewritten-by-filter } }]"#,
    )
    .await?;
    let echoed = json(
        http1_client()
            .get(gw.url("main", "/original"))
            .send()
            .await?,
    )
    .await?;
    let h = &echoed["headers"];
    assert_eq!(h["x-order"], json!(["global", "route-1", "route-2"]));
    assert_eq!(h["x-seen-by-route"][0], "global");
    assert_eq!(echoed["path"], "/rewritten-by-filter");
    Ok(())
}

#[tokio::test]
async fn callbacks_run_in_envoys_order() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = one_filter(&up, json!({ "trace_callbacks": true })).await?;
    let response = http1_client()
        .post(gw.url("main", "/"))
        .body("abc")
        .send()
        .await?;
    assert_eq!(
        response.headers()["x-callbacks"],
        "request_headers,request_body,response_headers"
    );
    Ok(())
}

#[tokio::test]
async fn filters_also_run_on_fixed_response_routes() -> anyhow::Result<()> {
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
plugins: [{{ name: sdk, file: "{}" }}]
routes:
  - name: fixed
    respond: {{ body: hello }}
    filters: [{{ plugin: sdk, config: {{ add_response_headers: [[x-filtered, "yes"]] }} }}]
"#,
        test_filter_wasm()
    ))
    .await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.headers()["x-filtered"], "yes");
    assert_eq!(response.text().await?, "hello");
    Ok(())
}

#[tokio::test]
async fn a_configuration_the_filter_rejects_is_refused_at_load() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let error = match one_filter(&up, json!({ "no_such_option": 1 })).await {
        Ok(_) => anyhow::bail!("the gateway started with a rejected configuration"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("plugin `sdk`"), "{error}");
    assert!(error.contains("on_configure rejected"), "{error}");
    Ok(())
}

#[tokio::test]
async fn buffering_filters_are_bounded_by_the_body_limit() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let big: &'static str = Box::leak("a".repeat(200_000).into_boxed_str());
    let big_upstream =
        weir_tests::FixedUpstream::start(200, big, std::time::Duration::ZERO).await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0, limits: {{ max_body_bytes: 2KiB }} }}]
upstreams: [{{ name: echo, targets: ["{}"] }}, {{ name: big, targets: ["{}"] }}]
plugins: [{{ name: sdk, file: "{}", vms: 1 }}]
routes:
  - name: request
    match: {{ path: {{ prefix: /request }} }}
    upstream: echo
    filters: [{{ plugin: sdk, config: {{ rewrite_request_body: [a, b] }} }}]
  - name: response
    match: {{ path: {{ prefix: /response }} }}
    upstream: big
    filters: [{{ plugin: sdk, config: {{ rewrite_response_body: [a, b] }} }}]
"#,
        up.addr,
        big_upstream.addr,
        test_filter_wasm()
    ))
    .await?;
    // A chunked request body (no content-length) grows past the limit while the filter buffers it.
    let mut stream = tokio::net::TcpStream::connect(gw.addr("main")).await?;
    let chunk = "a".repeat(500);
    let mut request = String::from(
        "POST /request HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    );
    for _ in 0..6 {
        request.push_str(&format!("1f4\r\n{chunk}\r\n"));
    }
    request.push_str("0\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await?;
    let (received, closed) =
        weir_tests::read_until_closed(&mut stream, std::time::Duration::from_secs(5)).await;
    assert!(closed, "the connection closed after the answer");
    let reply = String::from_utf8_lossy(&received);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"code\":\"body_too_large\""), "{reply}");
    // A large response arrives in several chunks and outgrows the limit while buffered.
    let response = http1_client()
        .get(gw.url("main", "/response"))
        .send()
        .await?;
    assert_eq!(response.status(), 500);
    assert_eq!(json(response).await?["error"]["code"], "response_too_large");
    Ok(())
}
