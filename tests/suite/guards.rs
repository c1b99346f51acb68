//! The guard built-ins that work with the manifest's consumers (`key-auth`,
//! `basic-auth`, `acl`) and `ip-restriction`, through the real gateway: who
//! gets in, as whom, and what the upstream sees.

use base64::Engine;
use weir_tests::{EchoUpstream, RedisServer, TestGateway, http1_client, json};

/// bcrypt (cost 4) of `open sesame`.
const ADA_PASSWORD_HASH: &str = "$2b$04$fxkGKLa9wM76.DYO3ba4L.arqrrKurAcP2mFn86VBP4tD88FkhYae";

/// `key` as a manifest writes it.
fn key_digest(key: &str) -> String {
    format!("sha256:{}", weir_tests::sha256_hex(key))
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// A manifest with consumers ada (staff, key `k-ada`, password `open
/// sesame`), eve (banned, key `k-eve`) and guest, `app` as upstream, and
/// `routes` (YAML list items) with the given `redis` section.
fn manifest(app: &EchoUpstream, routes: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{app}"] }}]
consumers:
  - name: ada
    groups: [staff]
    api_keys: ["{ada_key}"]
    basic_auth: {{ username: ada, password_hash: "{ADA_PASSWORD_HASH}" }}
  - {{ name: eve, groups: [banned], api_keys: ["{eve_key}"] }}
  - {{ name: guest, groups: [public] }}
plugins:
  - {{ name: keys, builtin: key-auth, vms: 1 }}
  - {{ name: basic, builtin: basic-auth, vms: 1 }}
  - {{ name: acl, builtin: acl, vms: 1 }}
  - {{ name: ips, builtin: ip-restriction, vms: 1 }}
{extra}
routes:
{routes}
"#,
        app = app.addr,
        ada_key = key_digest("k-ada"),
        eve_key = key_digest("k-eve"),
    )
}

#[tokio::test]
async fn key_auth_identifies_consumers_and_acl_admits_their_groups() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = TestGateway::from_yaml(&manifest(
        &app,
        r#"  - name: staff-only
    upstream: app
    filters:
      - { plugin: keys, config: { sources: [{ header: x-api-key }, { query: api_key }] } }
      - { plugin: acl, config: { deny: [banned], groups_header: x-consumer-groups } }"#,
        "",
    ))
    .await?;
    let client = http1_client();

    let echoed = json(
        client
            .get(gw.url("main", "/items?page=2&api_key=k-ada"))
            .header("x-consumer-name", "forged")
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        echoed["headers"]["x-consumer-name"],
        serde_json::json!(["ada"])
    );
    assert_eq!(
        echoed["headers"]["x-consumer-groups"],
        serde_json::json!(["staff"])
    );
    assert_eq!(echoed["query"], "page=2", "the key stays at the gateway");

    let by_header = json(
        client
            .get(gw.url("main", "/"))
            .header("x-api-key", "k-ada")
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        by_header["headers"]["x-consumer-name"],
        serde_json::json!(["ada"])
    );
    assert!(by_header["headers"].get("x-api-key").is_none());

    let banned = client
        .get(gw.url("main", "/"))
        .header("x-api-key", "k-eve")
        .send()
        .await?;
    assert_eq!(banned.status(), 403);
    let body = json(banned).await?;
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        body["error"]["message"],
        "consumer `eve` may not use this route"
    );

    for (key, message) in [
        (None, "missing API key"),
        (Some("k-nobody"), "invalid API key"),
    ] {
        let mut request = client.get(gw.url("main", "/"));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await?;
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Key");
        let body = json(response).await?;
        assert_eq!(body["error"]["code"], "unauthorized");
        assert_eq!(body["error"]["message"], message);
    }
    assert_eq!(app.hits(), 2, "only ada's requests went upstream");
    Ok(())
}

#[tokio::test]
async fn basic_auth_checks_password_hashes_and_keeps_the_password_at_the_gateway()
-> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = TestGateway::from_yaml(&manifest(
        &app,
        r#"  - { name: basic, upstream: app, filters: [{ plugin: basic, config: { realm: ops } }] }"#,
        "",
    ))
    .await?;
    let client = http1_client();
    for _ in 0..2 {
        let echoed = json(
            client
                .get(gw.url("main", "/"))
                .header("authorization", basic("ada", "open sesame"))
                .send()
                .await?,
        )
        .await?;
        assert_eq!(
            echoed["headers"]["x-consumer-name"],
            serde_json::json!(["ada"])
        );
        assert!(echoed["headers"].get("authorization").is_none());
    }
    for header in [basic("ada", "open sesame!"), basic("eve", "open sesame")] {
        let response = client
            .get(gw.url("main", "/"))
            .header("authorization", header)
            .send()
            .await?;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Basic realm="ops", charset="UTF-8""#
        );
        assert_eq!(
            json(response).await?["error"]["message"],
            "invalid user name or password"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_first_auth_filter_that_identifies_the_caller_wins() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = TestGateway::from_yaml(&manifest(
        &app,
        r#"  - name: either
    upstream: app
    match: { path: { prefix: /either } }
    filters:
      - { plugin: keys, config: { anonymous: guest } }
      - { plugin: basic }
  - name: open
    upstream: app
    match: { path: { prefix: /open } }
    filters:
      - { plugin: keys, config: { anonymous: guest } }
      - { plugin: acl, config: { allow: [public, staff], allow_anonymous: true } }
  - name: members
    upstream: app
    match: { path: { prefix: /members } }
    filters:
      - { plugin: keys, config: { anonymous: guest } }
      - { plugin: acl, config: { allow: [public, staff], allow_anonymous: false } }"#,
        "",
    ))
    .await?;
    let client = http1_client();
    let consumer = |echoed: serde_json::Value| echoed["headers"]["x-consumer-name"].clone();

    let by_key = client
        .get(gw.url("main", "/either"))
        .header("x-api-key", "k-ada")
        .header("authorization", basic("ada", "wrong"))
        .send()
        .await?;
    assert_eq!(
        by_key.status(),
        200,
        "the key identified ada: basic-auth steps aside"
    );
    assert_eq!(consumer(json(by_key).await?), serde_json::json!(["ada"]));

    let by_password = client
        .get(gw.url("main", "/either"))
        .header("authorization", basic("ada", "open sesame"))
        .send()
        .await?;
    assert_eq!(by_password.status(), 200);
    assert_eq!(
        consumer(json(by_password).await?),
        serde_json::json!(["ada"])
    );

    let nobody = client.get(gw.url("main", "/either")).send().await?;
    assert_eq!(
        nobody.status(),
        401,
        "the last auth filter has no anonymous consumer"
    );
    assert_eq!(
        nobody.headers()["www-authenticate"],
        r#"Basic realm="weir", charset="UTF-8""#
    );

    let anonymous = client.get(gw.url("main", "/open")).send().await?;
    assert_eq!(anonymous.status(), 200);
    assert_eq!(
        consumer(json(anonymous).await?),
        serde_json::json!(["guest"])
    );
    let kept_out = client.get(gw.url("main", "/members")).send().await?;
    assert_eq!(kept_out.status(), 403);
    let member = client
        .get(gw.url("main", "/members"))
        .header("x-api-key", "k-ada")
        .send()
        .await?;
    assert_eq!(member.status(), 200);
    Ok(())
}

#[tokio::test]
async fn key_auth_finds_keys_in_redis_remembers_them_and_never_guesses() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let mut redis = RedisServer::start().await?;
    let gw = TestGateway::from_yaml(&manifest(
        &app,
        r#"  - name: r
    upstream: app
    filters: [{ plugin: keys, config: { redis: { service: keys, cache_seconds: 60, negative_cache_seconds: 0 } } }]"#,
        &format!(
            r#"redis: [{{ name: keys, url: "redis://{}", timeout: 300ms }}]"#,
            redis.addr
        ),
    ))
    .await?;
    let redis_key = |key: &str| format!("weir:api-key:{}", weir_tests::sha256_hex(key));
    redis
        .command(&["SET", &redis_key("k-redis"), "ada"])
        .await?;
    redis
        .command(&["SET", &redis_key("k-ghost"), "nobody"])
        .await?;
    let client = http1_client();
    let get = |key: &'static str| {
        client
            .get(gw.url("main", "/"))
            .header("x-api-key", key)
            .send()
    };

    let found = get("k-redis").await?;
    assert_eq!(found.status(), 200);
    assert_eq!(
        json(found).await?["headers"]["x-consumer-name"],
        serde_json::json!(["ada"])
    );
    assert_eq!(get("k-unknown").await?.status(), 401);
    assert_eq!(
        get("k-ghost").await?.status(),
        401,
        "a name no consumer has is no consumer"
    );

    // Remembered on the node: Redis is not asked again within cache_seconds.
    redis.command(&["DEL", &redis_key("k-redis")]).await?;
    assert_eq!(get("k-redis").await?.status(), 200);

    redis.stop();
    let started = std::time::Instant::now();
    let down = get("k-new").await?;
    assert_eq!(down.status(), 503);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "decided within the Redis timeout, took {:?}",
        started.elapsed()
    );
    assert_eq!(json(down).await?["error"]["code"], "auth_unavailable");
    assert_eq!(get("k-redis").await?.status(), 200, "still remembered");
    Ok(())
}

#[tokio::test]
async fn consumer_changes_apply_from_the_next_request_after_a_reload() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let routes = r#"  - { name: r, upstream: app, filters: [{ plugin: keys }] }"#;
    let gw = TestGateway::from_yaml(&manifest(&app, routes, "")).await?;
    let client = http1_client();
    let status = async |key: &str| -> anyhow::Result<u16> {
        let response = client
            .get(gw.url("main", "/"))
            .header("x-api-key", key)
            .send()
            .await?;
        Ok(response.status().as_u16())
    };
    assert_eq!(status("k-ada").await?, 200);
    assert_eq!(status("k-ada-2").await?, 401);
    let rotated = manifest(&app, routes, "").replace(&key_digest("k-ada"), &key_digest("k-ada-2"));
    gw.reload(&rotated)?;
    assert_eq!(status("k-ada").await?, 401, "the old key stopped working");
    assert_eq!(status("k-ada-2").await?, 200);
    Ok(())
}

#[tokio::test]
async fn ip_restriction_judges_clients_through_trusted_proxies() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = TestGateway::from_yaml(&manifest(
        &app,
        r#"  - name: behind-proxy
    upstream: app
    match: { path: { prefix: /proxied } }
    filters: [{ plugin: ips, config: { deny: [203.0.113.0/24, "2001:db8:bad::/48"], trusted_proxies: [127.0.0.0/8] } }]
  - name: office
    upstream: app
    match: { path: { prefix: /office } }
    filters: [{ plugin: ips, config: { allow: [10.0.0.0/8] } }]"#,
        "",
    ))
    .await?;
    let client = http1_client();
    let status = async |path: &str, forwarded: Option<&str>| -> anyhow::Result<u16> {
        let mut request = client.get(gw.url("main", path));
        if let Some(forwarded) = forwarded {
            request = request.header("x-forwarded-for", forwarded);
        }
        Ok(request.send().await?.status().as_u16())
    };
    assert_eq!(status("/proxied", Some("203.0.113.7")).await?, 403);
    assert_eq!(status("/proxied", Some("2001:db8:bad::1")).await?, 403);
    assert_eq!(
        status("/proxied", Some("203.0.113.7, 198.51.100.2")).await?,
        200
    );
    assert_eq!(status("/proxied", None).await?, 200);
    // The loopback client is not in the office, whatever it claims.
    assert_eq!(status("/office", Some("10.1.2.3")).await?, 403);
    let refused = client.get(gw.url("main", "/office")).send().await?;
    let body = json(refused).await?;
    assert_eq!(body["error"]["code"], "ip_forbidden");
    assert_eq!(
        body["error"]["message"],
        "client 127.0.0.1 may not use this route"
    );
    Ok(())
}
