//! The built-in plugins (`plugins/`), driven through the gateway: named
//! with `builtin:`, from the bytes embedded in the `weir` crate.

use std::time::{SystemTime, UNIX_EPOCH};

use weir_tests::{EchoUpstream, TestGateway, http1_client, json, plugin_wasm};

/// A gateway whose one route runs built-in `plugin` with `config`.
async fn gateway(app: &EchoUpstream, plugin: &str, config: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
plugins: [{{ name: {plugin}, builtin: {plugin}, vms: 1 }}]
routes: [{{ name: r, upstream: app, filters: [{{ plugin: {plugin}, config: {config} }}] }}]
"#,
        app.addr,
    ))
    .await
}

#[tokio::test]
async fn builtins_run_from_a_directory_without_wasm_files() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_owned();
    let gw = TestGateway::from_yaml_in(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
plugins:
  - {{ name: auth, builtin: jwt-auth }}
  - {{ name: stamp, builtin: header-rewrite }}
routes:
  - name: r
    upstream: app
    filters:
      - {{ plugin: stamp, config: {{ request: {{ set: [[x-env, prod]] }}, response: {{ set: [[x-served-by, weir]] }} }} }}
      - {{ plugin: auth, config: {{ secret: s3cret }} }}
"#,
            app.addr
        ),
        dir,
    )
    .await?;
    let files: Vec<String> = std::fs::read_dir(&path)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert_eq!(files, ["weir.yaml"], "no module on disk");
    let client = http1_client();

    let missing = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(missing.status(), 401, "jwt-auth runs");
    assert_eq!(json(missing).await?["error"]["code"], "unauthorized");
    assert_eq!(app.hits(), 0);

    let valid = token(
        "s3cret",
        serde_json::json!({ "sub": "ada", "exp": now() + 60 }),
    )?;
    let response = client
        .get(gw.url("main", "/"))
        .bearer_auth(valid)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-served-by"],
        "weir",
        "header-rewrite runs"
    );
    let echoed = json(response).await?;
    assert_eq!(echoed["headers"]["x-env"], serde_json::json!(["prod"]));
    assert_eq!(echoed["headers"]["x-jwt-sub"][0], "ada");
    Ok(())
}

#[tokio::test]
async fn a_builtin_and_its_build_file_are_one_module() -> anyhow::Result<()> {
    let builtin = weir::builtins::find("header-rewrite").expect("built in");
    assert_eq!(
        std::fs::read(plugin_wasm("header-rewrite"))?,
        builtin.module
    );
    // Both forms in one manifest: each runs as a plugin of its own.
    let app = EchoUpstream::start("app").await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
plugins:
  - {{ name: built-in, builtin: header-rewrite }}
  - {{ name: from-file, file: "{}" }}
routes:
  - name: r
    upstream: app
    filters:
      - {{ plugin: built-in, config: {{ request: {{ add: [[x-via, builtin]] }} }} }}
      - {{ plugin: from-file, config: {{ request: {{ add: [[x-via, file]] }} }} }}
"#,
        app.addr,
        plugin_wasm("header-rewrite")
    ))
    .await?;
    let echoed = json(http1_client().get(gw.url("main", "/")).send().await?).await?;
    assert_eq!(
        echoed["headers"]["x-via"],
        serde_json::json!(["builtin", "file"])
    );
    Ok(())
}

fn token(secret: &str, claims: serde_json::Value) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test]
async fn jwt_auth_accepts_valid_tokens_only() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        &app,
        "jwt-auth",
        "{ secret: s3cret, issuer: https://idp.test }",
    )
    .await?;
    let client = http1_client();
    let valid = token(
        "s3cret",
        serde_json::json!({ "sub": "ada", "iss": "https://idp.test", "exp": now() + 60 }),
    )?;
    let echoed = json(
        client
            .get(gw.url("main", "/"))
            .bearer_auth(&valid)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(echoed["headers"]["x-jwt-sub"][0], "ada");

    let expired = token(
        "s3cret",
        serde_json::json!({ "sub": "ada", "iss": "https://idp.test", "exp": now() - 3600 }),
    )?;
    let forged = token(
        "guess",
        serde_json::json!({ "sub": "eve", "iss": "https://idp.test", "exp": now() + 60 }),
    )?;
    let wrong_issuer = token(
        "s3cret",
        serde_json::json!({ "sub": "ada", "iss": "https://evil.test", "exp": now() + 60 }),
    )?;
    for (bad, reason) in [
        (expired, "the token has expired"),
        (forged, "the token's signature is invalid"),
        (wrong_issuer, "the token's issuer is not accepted"),
        ("not.a.token".to_owned(), "the token is malformed"),
    ] {
        let response = client
            .get(gw.url("main", "/"))
            .bearer_auth(&bad)
            .send()
            .await?;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            format!(r#"Bearer error="invalid_token", error_description="{reason}""#).as_str()
        );
        let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
        assert_eq!(
            json(response).await?,
            serde_json::json!({"error": {"status": 401, "code": "unauthorized",
                "message": reason, "request_id": request_id}})
        );
    }
    let missing = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(app.hits(), 1);
    Ok(())
}

/// The jwt-auth plugin's count of requests let through from its cache.
const CACHE_HITS: &str = r#"weir_plugin_jwt_auth_cache_hits{plugin="jwt-auth"}"#;

#[tokio::test]
async fn jwt_auth_remembers_tokens_but_rechecks_their_expiry() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app, "jwt-auth", "{ secret: s3cret, leeway_seconds: 0 }").await?;
    let client = http1_client();
    let exp = now() + 2;
    let valid = token("s3cret", serde_json::json!({ "sub": "ada", "exp": exp }))?;
    let status = |token: String| {
        let request = client.get(gw.url("main", "/")).bearer_auth(token);
        async move { anyhow::Ok(request.send().await?.status()) }
    };
    assert_eq!(status(valid.clone()).await?, 200);
    assert_eq!(
        gw.metric(CACHE_HITS),
        Some(0),
        "the first use is verified in full"
    );
    assert_eq!(status(valid.clone()).await?, 200);
    assert_eq!(
        gw.metric(CACHE_HITS),
        Some(1),
        "the second request is answered from the remembered verification"
    );
    // The same claims with another signature are not the remembered token.
    let mut tampered = valid.clone();
    let last = if tampered.ends_with('A') { "B" } else { "A" };
    tampered.replace_range(tampered.len() - 1.., last);
    assert_eq!(status(tampered).await?, 401);
    assert_eq!(gw.metric(CACHE_HITS), Some(1));
    // Once `exp` has passed, the remembered token is refused.
    let expired =
        weir_tests::eventually(std::time::Duration::from_secs(5), async || now() > exp).await;
    assert!(expired);
    assert_eq!(status(valid).await?, 401);
    assert_eq!(gw.metric(CACHE_HITS), Some(1), "an expired token is no hit");
    assert_eq!(app.hits(), 2);
    Ok(())
}

/// The statuses of `n` requests to `path` with `x-api-key: key`, sent all at
/// once, each on a connection of its own (so they spread over workers and VMs).
async fn burst_of(gw: &TestGateway, path: &str, key: &str, n: usize) -> anyhow::Result<Vec<u16>> {
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..n {
        let request = http1_client()
            .get(gw.url("main", path))
            .header("x-api-key", key);
        sends.spawn(async move { anyhow::Ok(request.send().await?.status().as_u16()) });
    }
    let mut statuses = Vec::with_capacity(n);
    while let Some(status) = sends.join_next().await {
        statuses.push(status??);
    }
    Ok(statuses)
}

#[tokio::test]
async fn rate_limit_holds_per_node_across_workers_and_vms() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    // Two workers with two VMs each: four VMs that share one bucket per key.
    let gw = TestGateway::with_workers(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
plugins: [{{ name: limit, builtin: rate-limit, vms: 4 }}]
routes:
  - {{ name: a, match: {{ path: {{ prefix: /a }} }}, upstream: app, filters: [{{ plugin: limit, config: {{ rate: 0.001, burst: 5, key_header: x-api-key }} }}] }}
  - {{ name: b, match: {{ path: {{ prefix: /b }} }}, upstream: app, filters: [{{ plugin: limit, config: {{ rate: 0.001, burst: 5, key_header: x-api-key }} }}] }}
"#,
            app.addr
        ),
        2,
    )
    .await?;
    // The first request makes the bucket; the rest race for what is left.
    let mut statuses = burst_of(&gw, "/a", "k", 1).await?;
    statuses.extend(burst_of(&gw, "/a", "k", 19).await?);
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (admitted, limited),
        (5, 15),
        "burst 5 admits five on this node, whatever VM serves: {statuses:?}"
    );
    // Another route and another key have buckets of their own.
    assert_eq!(burst_of(&gw, "/b", "k", 1).await?, [200]);
    assert_eq!(burst_of(&gw, "/a", "other", 1).await?, [200]);
    Ok(())
}

#[tokio::test]
async fn rate_limit_answers_429_past_the_burst() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        &app,
        "rate-limit",
        "{ rate: 0.01, burst: 3, key_header: x-api-key }",
    )
    .await?;
    let client = http1_client();
    for _ in 0..3 {
        let r = client
            .get(gw.url("main", "/"))
            .header("x-api-key", "k1")
            .send()
            .await?;
        assert_eq!(r.status(), 200);
    }
    let limited = client
        .get(gw.url("main", "/"))
        .header("x-api-key", "k1")
        .send()
        .await?;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "100");
    let request_id = limited.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(
        json(limited).await?,
        serde_json::json!({"error": {"status": 429, "code": "rate_limited",
            "message": "too many requests", "request_id": request_id}})
    );
    let other_key = client
        .get(gw.url("main", "/"))
        .header("x-api-key", "k2")
        .send()
        .await?;
    assert_eq!(other_key.status(), 200, "each key has its own bucket");
    Ok(())
}

#[tokio::test]
async fn header_rewrite_edits_both_directions() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        &app,
        "header-rewrite",
        "{ request: { set: [[x-env, prod]], add: [[x-tag, a]], remove: [cookie] }, response: { set: [[x-served-by, weir]], remove: [content-type] } }",
    )
    .await?;
    let response = http1_client()
        .get(gw.url("main", "/"))
        .header("cookie", "secret=1")
        .header("x-env", "dev")
        .send()
        .await?;
    assert_eq!(response.headers()["x-served-by"], "weir");
    assert!(!response.headers().contains_key("content-type"));
    let echoed: serde_json::Value = serde_json::from_str(&response.text().await?)?;
    assert_eq!(echoed["headers"]["x-env"], serde_json::json!(["prod"]));
    assert_eq!(echoed["headers"]["x-tag"][0], "a");
    assert!(echoed["headers"].get("cookie").is_none());
    Ok(())
}

#[tokio::test]
async fn cors_answers_preflights_and_marks_responses_for_allowed_origins() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        &app,
        "cors",
        r#"{ allow_origins: [https://app.example.com, "https://*.example.org"], allow_methods: [GET, PUT], allow_headers: [content-type], expose_headers: [x-total], allow_credentials: true, max_age: 60 }"#,
    )
    .await?;
    let client = http1_client();
    let preflight = |origin: &'static str, method: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, gw.url("main", "/items"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "content-type")
            .send()
    };

    let granted = preflight("https://shop.example.org", "PUT").await?;
    assert_eq!(granted.status(), 204);
    let header = |name: &str| {
        granted
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("access-control-allow-origin").as_deref(),
        Some("https://shop.example.org")
    );
    assert_eq!(
        header("access-control-allow-methods").as_deref(),
        Some("GET, PUT")
    );
    assert_eq!(
        header("access-control-allow-headers").as_deref(),
        Some("content-type")
    );
    assert_eq!(
        header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(header("access-control-max-age").as_deref(), Some("60"));
    assert_eq!(header("vary").as_deref(), Some("Origin"));

    let refused = preflight("https://evil.test", "PUT").await?;
    assert_eq!(refused.status(), 403);
    let request_id = refused.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(
        json(refused).await?,
        serde_json::json!({"error": {"status": 403, "code": "cors_forbidden",
            "message": "origin `https://evil.test` is not allowed", "request_id": request_id}})
    );
    assert_eq!(
        preflight("https://app.example.com", "DELETE")
            .await?
            .status(),
        403
    );
    assert_eq!(app.hits(), 0, "preflights never reach the upstream");

    let allowed = client
        .get(gw.url("main", "/items"))
        .header("origin", "https://app.example.com")
        .send()
        .await?;
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        allowed.headers()["access-control-expose-headers"],
        "x-total"
    );
    assert_eq!(allowed.headers()["vary"], "Origin");
    let other = client
        .get(gw.url("main", "/items"))
        .header("origin", "https://evil.test")
        .send()
        .await?;
    assert_eq!(
        other.status(),
        200,
        "an actual request passes; the browser decides"
    );
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    assert_eq!(app.hits(), 2);
    Ok(())
}
