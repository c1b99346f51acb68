//! Routing, versioning, rewrites and fixed responses through the real gateway.

use weir_tests::{EchoUpstream, TestGateway, http1_client, json};

/// A gateway whose routes each point at an upstream echoing its own name.
async fn routed_gateway() -> anyhow::Result<(TestGateway, Vec<EchoUpstream>)> {
    let mut ups = Vec::new();
    for name in [
        "v1",
        "v2",
        "exact",
        "wild",
        "deep-wild",
        "regex",
        "admin",
        "search",
    ] {
        ups.push(EchoUpstream::start(name).await?);
    }
    let upstreams: String = ups
        .iter()
        .map(|u| format!("  - {{ name: {}, targets: [{}] }}\n", u.name(), u.addr))
        .collect();
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
{upstreams}
routes:
  - name: v2-by-header
    match: {{ path: {{ prefix: /v1 }}, headers: [{{ name: accept-version, exact: "2" }}] }}
    upstream: v2
    rewrite: {{ replace_prefix: /v2 }}
  - name: v1
    match: {{ path: {{ prefix: /v1 }} }}
    upstream: v1
    rewrite: {{ strip_prefix: /v1, host: v1.internal }}
  - name: v2
    match: {{ path: {{ prefix: /v2 }} }}
    upstream: v2
  - name: exact-host
    match: {{ hosts: [api.example.com], path: {{ prefix: /hosted }} }}
    upstream: exact
  - name: wildcard-host
    match: {{ hosts: ["*.example.com"], path: {{ prefix: /hosted }} }}
    upstream: wild
  - name: deeper-wildcard-host
    match: {{ hosts: ["*.eu.example.com"], path: {{ prefix: /hosted }} }}
    upstream: deep-wild
  - name: regex
    match: {{ path: {{ regex: "/items/[0-9]+" }}, methods: [GET] }}
    upstream: regex
  - name: admin-exact
    match: {{ path: {{ exact: /items/admin }} }}
    upstream: admin
  - name: search
    match: {{ path: {{ exact: /search }}, query: [{{ name: q, prefix: "weir" }}] }}
    upstream: search
    rewrite: {{ replace_path: /internal/search }}
  - name: status
    match: {{ path: {{ exact: /status }} }}
    respond: {{ status: 203, headers: {{ x-served-by: weir }}, body: "all good" }}
"#
    );
    Ok((TestGateway::from_yaml(&yaml).await?, ups))
}

async fn upstream_for(
    gw: &TestGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<serde_json::Value> {
    let mut req = http1_client().get(gw.url("main", path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    json(req.send().await?).await
}

#[tokio::test]
async fn versions_by_path_and_by_header() -> anyhow::Result<()> {
    let (gw, _ups) = routed_gateway().await?;
    let v1 = upstream_for(&gw, "/v1/users/7", &[]).await?;
    assert_eq!(v1["upstream"], "v1");
    assert_eq!(v1["path"], "/users/7", "strip_prefix removes /v1");
    let v2 = upstream_for(&gw, "/v2/users/7", &[]).await?;
    assert_eq!(v2["upstream"], "v2");
    assert_eq!(v2["path"], "/v2/users/7");
    let by_header = upstream_for(&gw, "/v1/users/7", &[("accept-version", "2")]).await?;
    assert_eq!(by_header["upstream"], "v2");
    assert_eq!(
        by_header["path"], "/v2/users/7",
        "replace_prefix swaps /v1 for /v2"
    );
    let other_version = upstream_for(&gw, "/v1/users/7", &[("accept-version", "3")]).await?;
    assert_eq!(other_version["upstream"], "v1");
    Ok(())
}

#[tokio::test]
async fn prefix_matches_whole_segments_only() -> anyhow::Result<()> {
    let (gw, _ups) = routed_gateway().await?;
    let response = http1_client()
        .get(gw.url("main", "/v1x/users"))
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    Ok(())
}

#[tokio::test]
async fn host_rewrite_sets_the_upstream_host_and_keeps_the_original_in_forwarded_host()
-> anyhow::Result<()> {
    let (gw, _ups) = routed_gateway().await?;
    let v1 = upstream_for(&gw, "/v1/users", &[("host", "public.example.org")]).await?;
    assert_eq!(v1["headers"]["host"][0], "v1.internal");
    assert_eq!(v1["headers"]["x-forwarded-host"][0], "public.example.org");
    Ok(())
}

#[tokio::test]
async fn exact_host_beats_longer_wildcard_beats_shorter_wildcard() -> anyhow::Result<()> {
    let (gw, _ups) = routed_gateway().await?;
    let cases = [
        ("api.example.com", "exact"),
        ("API.example.com:8080", "exact"),
        ("shop.example.com", "wild"),
        ("a.eu.example.com", "deep-wild"),
        ("eu.example.com", "wild"),
    ];
    for (host, expected) in cases {
        let echoed = upstream_for(&gw, "/hosted", &[("host", host)]).await?;
        assert_eq!(echoed["upstream"], expected, "host {host}");
    }
    let response = http1_client()
        .get(gw.url("main", "/hosted"))
        .header("host", "example.com")
        .send()
        .await?;
    assert_eq!(
        response.status(),
        404,
        "a wildcard needs at least one label"
    );
    Ok(())
}

#[tokio::test]
async fn exact_path_beats_regex_and_regex_matches_the_whole_path() -> anyhow::Result<()> {
    let (gw, _ups) = routed_gateway().await?;
    assert_eq!(
        upstream_for(&gw, "/items/42", &[]).await?["upstream"],
        "regex"
    );
    assert_eq!(
        upstream_for(&gw, "/items/admin", &[]).await?["upstream"],
        "admin"
    );
    let partial = http1_client()
        .get(gw.url("main", "/items/42/extra"))
        .send()
        .await?;
    assert_eq!(partial.status(), 404);
    let wrong_method = http1_client()
        .delete(gw.url("main", "/items/42"))
        .send()
        .await?;
    assert_eq!(wrong_method.status(), 405, "the regex route takes only GET");
    assert_eq!(wrong_method.headers()["allow"], "GET");
    Ok(())
}

#[tokio::test]
async fn query_match_and_replace_path_keep_the_query() -> anyhow::Result<()> {
    let (gw, _ups) = routed_gateway().await?;
    let echoed = upstream_for(&gw, "/search?q=weir%20gateway&page=2", &[]).await?;
    assert_eq!(echoed["upstream"], "search");
    assert_eq!(echoed["path"], "/internal/search");
    assert_eq!(echoed["query"], "q=weir%20gateway&page=2");
    let miss = http1_client()
        .get(gw.url("main", "/search?q=envoy"))
        .send()
        .await?;
    assert_eq!(miss.status(), 404);
    Ok(())
}

#[tokio::test]
async fn fixed_response_needs_no_upstream() -> anyhow::Result<()> {
    let (gw, ups) = routed_gateway().await?;
    let response = http1_client().get(gw.url("main", "/status")).send().await?;
    assert_eq!(response.status(), 203);
    assert_eq!(response.headers()["x-served-by"], "weir");
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await?, "all good");
    assert!(ups.iter().all(|u| u.hits() == 0));
    Ok(())
}

#[tokio::test]
async fn no_route_is_a_json_404() -> anyhow::Result<()> {
    let (gw, _ups) = routed_gateway().await?;
    let response = http1_client()
        .post(gw.url("main", "/nowhere"))
        .header("x-request-id", "trace-me")
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = json(response).await?;
    assert_eq!(body["error"]["status"], 404);
    assert_eq!(body["error"]["code"], "no_route");
    assert_eq!(body["error"]["request_id"], "trace-me");
    assert_eq!(body["error"]["message"], "no route matches POST /nowhere");
    Ok(())
}

#[tokio::test]
async fn routes_are_scoped_to_their_listeners() -> anyhow::Result<()> {
    let yaml = r#"apiVersion: weir/v1
listeners:
  - { name: public, address: 127.0.0.1:0 }
  - { name: internal, address: 127.0.0.1:0 }
routes:
  - { name: everywhere, match: { path: { exact: /ping } }, respond: { body: pong } }
  - { name: internal-only, listeners: [internal], match: { path: { exact: /debug } }, respond: { body: secrets } }
"#;
    let gw = TestGateway::from_yaml(yaml).await?;
    let client = http1_client();
    for listener in ["public", "internal"] {
        let r = client.get(gw.url(listener, "/ping")).send().await?;
        assert_eq!(r.text().await?, "pong");
    }
    assert_eq!(
        client
            .get(gw.url("internal", "/debug"))
            .send()
            .await?
            .status(),
        200
    );
    assert_eq!(
        client
            .get(gw.url("public", "/debug"))
            .send()
            .await?
            .status(),
        404
    );
    Ok(())
}
