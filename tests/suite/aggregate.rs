//! The `aggregate` built-in through the gateway: one route answered by
//! calling several real upstream servers at once, with slow, failing and
//! unreachable ones among them.

use std::time::{Duration, Instant};

use serde_json::json;
use weir_tests::{EchoUpstream, FixedUpstream, TestGateway, dead_address, http1_client, json};

/// The counters of the plugin named `compose`.
const CALL_FAILURES: &str = r#"weir_plugin_aggregate_call_failures{plugin="compose"}"#;
const PARTIAL_ANSWERS: &str = r#"weir_plugin_aggregate_partial_answers{plugin="compose"}"#;
const FAILED_ANSWERS: &str = r#"weir_plugin_aggregate_failed_answers{plugin="compose"}"#;

/// A gateway whose route `/users/...` is answered by an aggregate filter
/// with `config` (a YAML flow mapping), over `upstreams` (YAML list items).
async fn gateway(upstreams: &[(&str, String)], config: &str) -> anyhow::Result<TestGateway> {
    let upstreams: String = upstreams
        .iter()
        .map(|(name, addr)| format!("  - {{ name: {name}, targets: [\"{addr}\"] }}\n"))
        .collect();
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
{upstreams}plugins: [{{ name: compose, builtin: aggregate }}]
routes:
  - name: user-page
    match: {{ path: {{ prefix: /users }} }}
    respond: {{ status: 404 }}
    filters: [{{ plugin: compose, config: {config} }}]
"#
    ))
    .await
}

/// A GET of `path` and how long its answer took.
async fn timed_get(gw: &TestGateway, path: &str) -> anyhow::Result<(reqwest::Response, Duration)> {
    let started = Instant::now();
    let response = http1_client()
        .get(gw.url("main", path))
        .header("authorization", "Bearer t0k")
        .header("x-tenant", "acme & co")
        .send()
        .await?;
    Ok((response, started.elapsed()))
}

#[tokio::test]
async fn aggregate_calls_every_upstream_at_once_and_merges_their_answers() -> anyhow::Result<()> {
    let echo = EchoUpstream::start("echo").await?;
    let profile = FixedUpstream::start(
        200,
        r#"{"name": "Ada", "password": "x", "address": {"city": "London", "street": "1 Lane"}}"#,
        Duration::from_millis(600),
    )
    .await?;
    let orders = FixedUpstream::start(
        200,
        r#"{"orders": [{"id": 7}], "address": {"zip": "N1"}}"#,
        Duration::from_millis(600),
    )
    .await?;
    let gw = gateway(
        &[
            ("echo", echo.addr.to_string()),
            ("profiles", profile.addr.to_string()),
            ("orders", orders.addr.to_string()),
        ],
        r#"{ path_pattern: "/users/(?P<id>[0-9]+)", calls: [
            { name: request, upstream: echo, path: "/echo/${path.id}?q=${query.q}&tenant=${header.x-tenant}",
              headers: [authorization], select: [path, query, /headers/authorization, /headers/x-request-id] },
            { name: profile, upstream: profiles, path: "/profiles/${path.id}", timeout: 2s,
              select: [name, /address/city], merge: { under: user } },
            { name: orders, upstream: orders, path: "/orders", timeout: 2s, merge: deep } ] }"#,
    )
    .await?;

    // The first request opens the connections; the second is timed.
    for round in 0..2 {
        let (response, took) = timed_get(&gw, "/users/42?q=red%20shoes").await?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(response.headers().get("x-aggregate-partial").is_none());
        let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
        assert_eq!(
            json(response).await?,
            json!({
                "request": {
                    "path": "/echo/42",
                    "query": "q=red%20shoes&tenant=acme%20%26%20co",
                    "headers": {"authorization": ["Bearer t0k"], "x-request-id": [request_id]}
                },
                "user": {"name": "Ada", "address": {"city": "London"}},
                "orders": [{"id": 7}],
                "address": {"zip": "N1"}
            }),
            "round {round}"
        );
        if round == 1 {
            assert!(
                took >= Duration::from_millis(600) && took < Duration::from_millis(1_100),
                "two 600 ms calls at once take about 600 ms, not 1.2 s: {took:?}"
            );
        }
    }
    assert_eq!((profile.hits(), orders.hits(), echo.hits()), (2, 2, 2));

    // A path outside path_pattern: no call.
    let (outside, _) = timed_get(&gw, "/users/ada").await?;
    assert_eq!(outside.status(), 404);
    assert_eq!(json(outside).await?["error"]["code"], "no_route");
    assert_eq!(echo.hits(), 2);
    Ok(())
}

#[tokio::test]
async fn aggregate_answers_what_arrived_when_a_backend_is_slow_and_another_fails()
-> anyhow::Result<()> {
    let fast = FixedUpstream::start(200, r#"{"id": 42}"#, Duration::ZERO).await?;
    let slow = FixedUpstream::start(200, r#"{"late": true}"#, Duration::from_secs(5)).await?;
    let failing = FixedUpstream::start(500, r#"{"error": "boom"}"#, Duration::ZERO).await?;
    let html = FixedUpstream::start(200, "<html>", Duration::ZERO).await?;
    let down = dead_address().await?;
    let gw = gateway(
        &[
            ("fast", fast.addr.to_string()),
            ("slow", slow.addr.to_string()),
            ("failing", failing.addr.to_string()),
            ("html", html.addr.to_string()),
            ("down", down.to_string()),
        ],
        r#"{ on_partial_failure: partial, calls: [
            { name: user, upstream: fast, path: "/user" },
            { name: stock, upstream: slow, path: "/stock", timeout: 200ms },
            { name: prices, upstream: failing, path: "/prices" },
            { name: page, upstream: html, path: "/page" },
            { name: reviews, upstream: down, path: "/reviews", timeout: 200ms } ] }"#,
    )
    .await?;

    let (response, took) = timed_get(&gw, "/users/42").await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-aggregate-partial"], "true");
    assert_eq!(
        json(response).await?,
        json!({
            "user": {"id": 42},
            "_errors": {
                "stock": {"error": "timeout", "message": "no answer within 200ms"},
                "prices": {"error": "bad_status", "status": 500,
                    "message": "the upstream answered 500"},
                "page": {"error": "not_json", "status": 200,
                    "message": "the upstream's answer is not JSON"},
                "reviews": {"error": "unavailable",
                    "message": "no answer (connection refused or reset)"}
            }
        })
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(1),
        "the slow call is cut at its 200 ms timeout, not awaited for 5 s: {took:?}"
    );
    assert_eq!(slow.hits(), 1);
    assert_eq!(gw.metric(PARTIAL_ANSWERS), Some(1));
    assert_eq!(gw.metric(CALL_FAILURES), Some(4));
    Ok(())
}

#[tokio::test]
async fn aggregate_fails_with_502_at_the_first_failure_by_default() -> anyhow::Result<()> {
    let slow = FixedUpstream::start(200, r#"{"late": true}"#, Duration::from_secs(2)).await?;
    let failing = FixedUpstream::start(503, "busy", Duration::ZERO).await?;
    let fast = FixedUpstream::start(200, "{}", Duration::ZERO).await?;
    let gw = gateway(
        &[
            ("slow", slow.addr.to_string()),
            ("failing", failing.addr.to_string()),
            ("fast", fast.addr.to_string()),
        ],
        r#"{ calls: [
            { name: stock, upstream: slow, path: "/stock", timeout: 5s },
            { name: prices, upstream: failing, path: "/prices" },
            { name: user, upstream: fast, path: "/user" } ] }"#,
    )
    .await?;

    let (response, took) = timed_get(&gw, "/users/42").await?;
    assert_eq!(response.status(), 502);
    let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(
        json(response).await?,
        json!({"error": {"status": 502, "code": "upstream_failed",
            "message": "call `prices` failed: the upstream answered 503",
            "request_id": request_id}})
    );
    assert!(
        took < Duration::from_secs(1),
        "answered at the failure, not after the 2 s call: {took:?}"
    );
    assert_eq!((slow.hits(), failing.hits(), fast.hits()), (1, 1, 1));
    assert_eq!(gw.metric(FAILED_ANSWERS), Some(1));
    Ok(())
}

#[tokio::test]
async fn aggregate_configuration_errors_point_at_their_line() -> anyhow::Result<()> {
    let fast = FixedUpstream::start(200, "{}", Duration::ZERO).await?;
    let error = gateway(
        &[("fast", fast.addr.to_string())],
        r#"{ calls: [
            { name: user, upstream: fast, path: "/user/${path.id}" } ] }"#,
    )
    .await
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(
        error.contains("calls/0/path")
            && error.contains("`${path.id}` needs path_pattern, a regex with a group named `id`"),
        "{error}"
    );
    Ok(())
}
