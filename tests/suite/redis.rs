//! The Redis-call extension from a filter, against a real `redis-server`.

use std::time::{Duration, Instant};

use weir_tests::{EchoUpstream, RedisServer, TestGateway, http1_client, json, test_filter_wasm};

async fn gateway(app: &EchoUpstream, redis: &RedisServer) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
redis: [{{ name: cache, url: "redis://{}", timeout: 500ms }}]
plugins: [{{ name: sdk, file: "{}", vms: 1 }}]
routes:
  - name: r
    upstream: app
    filters: [{{ plugin: sdk, config: {{ redis_incr: hits, redis_service: cache }} }}]
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
    let gw = gateway(&app, &redis).await?;
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
    let gw = gateway(&app, &redis).await?;
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
