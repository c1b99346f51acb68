//! Host services from a filter: callouts to upstream groups, shared data,
//! metrics and shared queues, through the real gateway.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use weir_tests::{
    EchoUpstream, FixedUpstream, TestGateway, dead_address, eventually, http1_client, json,
    test_filter_wasm,
};

/// A gateway whose route forwards to `app` after the test filter with `config`;
/// `upstreams` are extra `(name, address)` groups for callouts.
pub(crate) async fn gateway(
    app: &EchoUpstream,
    upstreams: &[(&str, String)],
    config: serde_json::Value,
    vms: usize,
) -> anyhow::Result<TestGateway> {
    let extra: String = upstreams
        .iter()
        .map(|(name, addr)| {
            format!(
                "  - {{ name: {name}, targets: [\"{addr}\"], timeouts: {{ connect: 300ms }} }}\n"
            )
        })
        .collect();
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: app, targets: ["{}"] }}
{extra}
plugins: [{{ name: sdk, file: "{}", vms: {vms} }}]
routes: [{{ name: r, upstream: app, filters: [{{ plugin: sdk, config: {config} }}] }}]
"#,
        app.addr,
        test_filter_wasm()
    ))
    .await
}

#[tokio::test]
async fn a_callout_to_an_auth_upstream_allows_or_denies() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let allow = FixedUpstream::start(200, "user-7", Duration::ZERO).await?;
    let deny = FixedUpstream::start(403, "no entry", Duration::ZERO).await?;
    let config = json!({ "callouts": ["auth"], "callout_timeout_ms": 2000 });
    let allowed = gateway(&app, &[("auth", allow.addr.to_string())], config.clone(), 1).await?;
    let echoed = json(
        http1_client()
            .get(allowed.url("main", "/in"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(echoed["headers"]["x-auth"][0], "user-7");
    assert_eq!(allow.hits(), 1);

    let denied = gateway(&app, &[("auth", deny.addr.to_string())], config, 1).await?;
    let response = http1_client().get(denied.url("main", "/in")).send().await?;
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["x-denied-by"], "callout");
    assert_eq!(response.text().await?, "no entry");
    assert_eq!(app.hits(), 1, "the denied request never reached the app");
    Ok(())
}

#[tokio::test]
async fn two_callouts_compose_one_local_response() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let a = FixedUpstream::start(200, "alpha", Duration::from_millis(50)).await?;
    let b = FixedUpstream::start(200, "beta", Duration::ZERO).await?;
    let gw = gateway(
        &app,
        &[("a", a.addr.to_string()), ("b", b.addr.to_string())],
        json!({ "callouts": ["a", "b"], "callout_timeout_ms": 2000 }),
        1,
    )
    .await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-fan-out"], "1");
    assert_eq!(response.text().await?, "alpha+beta");
    assert_eq!(app.hits(), 0);
    Ok(())
}

#[tokio::test]
async fn callout_failures_reach_the_filter_and_never_hang() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let slow = FixedUpstream::start(200, "late", Duration::from_secs(5)).await?;
    let dead = dead_address().await?;
    let gw = gateway(
        &app,
        &[("slow", slow.addr.to_string()), ("dead", dead.to_string())],
        json!({ "callouts": ["slow"], "callout_timeout_ms": 200 }),
        1,
    )
    .await?;
    let started = Instant::now();
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-callout-failed"], "1");
    assert!(
        response
            .text()
            .await?
            .contains("did not answer within 200ms")
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    let gw = gateway(
        &app,
        &[("dead", dead.to_string())],
        json!({ "callouts": ["dead"] }),
        1,
    )
    .await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 502);
    let text = response.text().await?;
    assert!(text.contains("unavailable"), "{text}");

    let gw = gateway(&app, &[], json!({ "callouts": ["nowhere"] }), 1).await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.text().await?,
        "dispatch to nowhere refused: BadArgument"
    );
    assert_eq!(app.hits(), 0);
    Ok(())
}

#[tokio::test]
async fn a_shared_counter_loses_no_update_under_concurrent_load() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app, &[], json!({ "count_requests": true }), 2).await?;
    let client = http1_client();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url) = (client.clone(), gw.url("main", "/count"));
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..10 {
                let echoed = json(client.get(&url).send().await?).await?;
                let count: u64 = echoed["headers"]["x-count"][0]
                    .as_str()
                    .unwrap_or("0")
                    .parse()?;
                seen.push(count);
            }
            Ok::<_, anyhow::Error>(seen)
        }));
    }
    let mut all = BTreeSet::new();
    for task in tasks {
        all.extend(task.await??);
    }
    assert_eq!(all.len(), 160, "every request saw a distinct count");
    assert_eq!(all.iter().next_back(), Some(&160));
    Ok(())
}

#[tokio::test]
async fn metrics_are_kept_per_plugin_and_readable() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app, &[], json!({ "count_metric": true }), 2).await?;
    for expected in ["1", "2", "3"] {
        let echoed = json(http1_client().get(gw.url("main", "/")).send().await?).await?;
        assert_eq!(echoed["headers"]["x-metric"][0], expected);
    }
    Ok(())
}

#[tokio::test]
async fn queued_items_reach_the_root_context() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app, &[], json!({ "queue_events": true }), 1).await?;
    let first = json(
        http1_client()
            .get(gw.url("main", "/first-event"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(first["headers"]["x-last-event"][0], "<none>");
    let delivered = eventually(Duration::from_secs(5), async || {
        let Ok(response) = http1_client().get(gw.url("main", "/later")).send().await else {
            return false;
        };
        json(response)
            .await
            .is_ok_and(|e| e["headers"]["x-last-event"][0] != "<none>")
    })
    .await;
    assert!(delivered, "on_queue_ready stored the dequeued path");
    Ok(())
}

#[tokio::test]
async fn a_callout_answered_after_the_request_went_on_is_delivered_safely() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let auth = FixedUpstream::start(200, "late answer", Duration::from_millis(200)).await?;
    let gw = gateway(
        &app,
        &[("auth", auth.addr.to_string())],
        json!({ "callouts": ["auth"], "callout_timeout_ms": 2000, "callouts_in_background": true, "shared_get": "background_answer" }),
        1,
    )
    .await?;
    let first = json(http1_client().get(gw.url("main", "/")).send().await?).await?;
    assert_eq!(
        first["headers"]["x-shared"][0], "<none>",
        "the request did not wait"
    );
    let delivered = eventually(Duration::from_secs(5), async || {
        let Ok(response) = http1_client().get(gw.url("main", "/")).send().await else {
            return false;
        };
        response.status() == 200
            && json(response)
                .await
                .is_ok_and(|e| e["headers"]["x-shared"][0] == "late answer")
    })
    .await;
    assert!(
        delivered,
        "the answer reached the filter, whose VM kept serving"
    );
    Ok(())
}
