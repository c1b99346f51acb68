//! The Redis-call extension from a filter, against a real `redis-server`.

use std::time::{Duration, Instant};

use weir_tests::{
    EchoUpstream, RedisServer, TestGateway, WAT_FILTER_BASICS, http1_client, json, test_filter_wasm,
};

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

/// `bytes` as a WAT string literal, every byte hex-escaped.
fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// A WAT filter that sends the RESP `set` (SET) and then `get` (GET) to Redis
/// service `cache`, and answers the request with the GET's raw reply as the body.
fn set_then_get_wat(set: &[u8], get: &[u8]) -> String {
    format!(
        r#"(module
  (import "env" "proxy_redis_call" (func $call (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "cache")
  (data (i32.const 64) "{set}")
  (data (i32.const 512) "{get}")
  (global $stream (mut i32) (i32.const 0))
  (global $got_set (mut i32) (i32.const 0))
{WAT_FILTER_BASICS}  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (global.set $stream (local.get $ctx))
    (if (call $call (i32.const 16) (i32.const 5) (i32.const 64) (i32.const {set_len}) (i32.const 8))
      (then unreachable))
    (i32.const 1))
  (func (export "proxy_on_redis_call_response") (param i32 i32) (param $status i32) (param $len i32)
    (if (local.get $status) (then unreachable))
    (if (i32.eqz (global.get $got_set))
      (then
        (global.set $got_set (i32.const 1))
        (if (call $call (i32.const 16) (i32.const 5) (i32.const 512) (i32.const {get_len}) (i32.const 8))
          (then unreachable))
        (return)))
    (if (call $buffer (i32.const 9) (i32.const 0) (local.get $len) (i32.const 0) (i32.const 4))
      (then unreachable))
    (if (call $effective (global.get $stream)) (then unreachable))
    (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0)
      (i32.load (i32.const 0)) (i32.load (i32.const 4)) (i32.const 0) (i32.const 0) (i32.const -1)))))
"#,
        set = wat_bytes(set),
        get = wat_bytes(get),
        set_len = set.len(),
        get_len = get.len(),
    )
}

#[tokio::test]
async fn a_value_with_crlf_and_nul_round_trips_from_a_filter() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let app = EchoUpstream::start("app").await?;
    let value = b"a\r\nb\0c";
    let mut set = b"*3\r\n$3\r\nSET\r\n$3\r\nbin\r\n$6\r\n".to_vec();
    set.extend_from_slice(value);
    set.extend_from_slice(b"\r\n");
    let get = b"*2\r\n$3\r\nGET\r\n$3\r\nbin\r\n";
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("bin.wat"), set_then_get_wat(&set, get))?;
    let gw = TestGateway::from_yaml_in(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
redis: [{{ name: cache, url: "redis://{}", timeout: 2s }}]
plugins: [{{ name: bin, file: bin.wat, vms: 1 }}]
routes: [{{ name: r, upstream: app, filters: [{{ plugin: bin }}] }}]
"#,
            app.addr, redis.addr
        ),
        dir,
    )
    .await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200);
    let body = response.bytes().await?;
    assert_eq!(
        body.as_ref(),
        b"$6\r\na\r\nb\0c\r\n",
        "the filter got GET's reply as exact RESP"
    );
    assert_eq!(redis.get_bytes("bin").await?, Some(value.to_vec()));
    assert_eq!(app.hits(), 0, "the filter answered locally");
    Ok(())
}
