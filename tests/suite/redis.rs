//! The Redis-call extension from a filter, against a real `redis-server`.

use std::time::{Duration, Instant};

use weir_tests::{EchoUpstream, RedisServer, TestGateway, http1_client, json, test_filter_wasm};

/// The filter configuration that INCRs and EXPIREs a key on Redis service `cache`.
const INCR_CONFIG: &str = "{ redis_incr: hits, redis_service: cache }";

/// A gateway (one "node") with Redis service `cache` and the test filter as
/// plugin `sdk` (`plugin_extra` adds fields to the plugin) configured with `config`.
async fn gateway(
    app: &EchoUpstream,
    redis: &RedisServer,
    plugin_extra: &str,
    config: &str,
) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
redis: [{{ name: cache, url: "redis://{}", timeout: 500ms }}]
plugins: [{{ name: sdk, file: "{}", vms: 1 {plugin_extra} }}]
routes: [{{ name: r, upstream: app, filters: [{{ plugin: sdk, config: {config} }}] }}]
"#,
        app.addr,
        redis.addr,
        test_filter_wasm()
    ))
    .await
}

#[tokio::test]
async fn incr_and_expire_round_trip_from_a_filter() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app, &redis, "", INCR_CONFIG).await?;
    for expected in ["1", "2"] {
        let echoed = json(http1_client().get(gw.url("main", "/")).send().await?).await?;
        assert_eq!(echoed["headers"]["x-redis-count"][0], expected);
        assert_eq!(echoed["headers"]["x-redis-expire"][0], "1");
    }
    assert_eq!(redis.command(&["GET", "hits"]).await?, "2");
    let ttl: i64 = redis
        .command(&["TTL", "hits"])
        .await?
        .trim_start_matches(':')
        .parse()?;
    assert!((1..=60).contains(&ttl), "ttl {ttl}");
    Ok(())
}

#[tokio::test]
async fn redis_stopped_mid_test_gives_the_filter_an_error_within_the_timeout() -> anyhow::Result<()>
{
    let mut redis = RedisServer::start().await?;
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app, &redis, "", INCR_CONFIG).await?;
    let ok = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(ok.status(), 200);
    redis.stop();
    let started = Instant::now();
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-redis"], "down");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.hits(), 1);
    Ok(())
}

#[tokio::test]
async fn shared_data_tiered_onto_redis_reaches_another_node() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let app = EchoUpstream::start("app").await?;
    let tier = ", shared_data_tier: cache";
    let writer = gateway(&app, &redis, tier, "{ shared_set: [greeting, hello] }").await?;
    let reader = gateway(&app, &redis, tier, "{ shared_get: greeting }").await?;
    let first = json(http1_client().get(reader.url("main", "/")).send().await?).await?;
    assert_eq!(first["headers"]["x-shared"][0], "<none>");

    assert_eq!(
        http1_client()
            .get(writer.url("main", "/"))
            .send()
            .await?
            .status(),
        200
    );
    let stored = weir_tests::eventually(Duration::from_secs(5), async || {
        redis
            .command(&["GET", "weir:shared:sdk:greeting"])
            .await
            .is_ok_and(|v| v == "hello")
    })
    .await;
    assert!(stored, "the write went through to Redis");
    let seen = weir_tests::eventually(Duration::from_secs(5), async || {
        let Ok(response) = http1_client().get(reader.url("main", "/")).send().await else {
            return false;
        };
        json(response)
            .await
            .is_ok_and(|e| e["headers"]["x-shared"][0] == "hello")
    })
    .await;
    assert!(seen, "the other node read the entry through the tier");
    Ok(())
}
