//! Retries (conditions, per-try timeouts, the budget) and circuit breaking
//! (limits, the error-rate breaker, a route's fallback).

use std::time::{Duration, Instant};

use weir_tests::{Backend, Behaviour, EchoUpstream, TestGateway, eventually, http1_client, json};

fn gateway_yaml(upstream: &str, route: &str) -> String {
    format!(
        "apiVersion: weir/v1\nlisteners: [{{ name: main, address: 127.0.0.1:0 }}]\n\
         upstreams:\n  - {upstream}\nroutes:\n  - {route}\n"
    )
}

#[tokio::test]
async fn a_5xx_is_retried_on_another_target() -> anyhow::Result<()> {
    let (broken, good) = (
        Backend::start("broken").await?,
        Backend::start("good").await?,
    );
    broken.behave(Behaviour::Fail);
    let gw = TestGateway::from_yaml(&gateway_yaml(
        &format!(
            r#"{{ name: pool, targets: ["{}", "{}"] }}"#,
            broken.addr, good.addr
        ),
        "{ name: all, upstream: pool, retry: { attempts: 2, retry_on: [5xx] } }",
    ))
    .await?;
    let client = http1_client();
    for _ in 0..10 {
        let response = client.get(gw.url("main", "/")).send().await?;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await?, "good");
    }
    assert_eq!(good.hits(), 10);
    // Each request's retry takes a turn of the round robin, so every first
    // attempt lands on the broken target and every retry on the good one.
    assert_eq!(broken.hits(), 10);
    Ok(())
}

#[tokio::test]
async fn retriable_statuses_are_tried_up_to_the_attempts_then_answered() -> anyhow::Result<()> {
    let up = EchoUpstream::start("up").await?;
    let gw = TestGateway::from_yaml(&gateway_yaml(
        &format!(r#"{{ name: pool, targets: ["{}"] }}"#, up.addr),
        "{ name: all, upstream: pool, retry: { attempts: 3, retry_on: [retriable_status], statuses: [409], backoff: { base: 5ms, max: 20ms } } }",
    ))
    .await?;
    let client = http1_client();
    let response = client
        .get(gw.url("main", "/"))
        .header("x-echo-status", "409")
        .send()
        .await?;
    assert_eq!(response.status(), 409);
    assert_eq!(up.hits(), 3);
    // A status not listed is answered at once.
    let response = client
        .get(gw.url("main", "/"))
        .header("x-echo-status", "500")
        .send()
        .await?;
    assert_eq!(response.status(), 500);
    assert_eq!(up.hits(), 4);
    // A POST is not replayed.
    let response = client
        .post(gw.url("main", "/"))
        .header("x-echo-status", "409")
        .body("once")
        .send()
        .await?;
    assert_eq!(response.status(), 409);
    assert_eq!(up.hits(), 5);
    Ok(())
}

#[tokio::test]
async fn a_hanging_attempt_times_out_per_try_and_the_next_target_answers() -> anyhow::Result<()> {
    let (hanging, good) = (
        Backend::start("hanging").await?,
        Backend::start("good").await?,
    );
    hanging.behave(Behaviour::Hang);
    let gw = TestGateway::from_yaml(&gateway_yaml(
        &format!(r#"{{ name: pool, targets: ["{}", "{}"] }}"#, hanging.addr, good.addr),
        "{ name: all, upstream: pool, timeout: 5s, retry: { attempts: 2, retry_on: [timeout], per_try_timeout: 200ms } }",
    ))
    .await?;
    let client = http1_client();
    let started = Instant::now();
    for _ in 0..4 {
        let response = client.get(gw.url("main", "/")).send().await?;
        assert_eq!(response.text().await?, "good");
    }
    // As above, every first attempt lands on the hanging target.
    assert_eq!(hanging.hits(), 4);
    // Four per-try timeouts, far from the route's five seconds each.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn the_retry_budget_keeps_retries_from_multiplying_an_outage() -> anyhow::Result<()> {
    let broken = Backend::start("broken").await?;
    broken.behave(Behaviour::Fail);
    let budget = |min: u32| {
        gateway_yaml(
            &format!(r#"{{ name: pool, targets: ["{}"] }}"#, broken.addr),
            &format!(
                "{{ name: all, upstream: pool, retry: {{ attempts: 4, retry_on: [5xx], backoff: {{ base: 1ms }}, budget: {{ percent: 0, min_concurrent: {min} }} }} }}"
            ),
        )
    };
    let gw = TestGateway::from_yaml(&budget(0)).await?;
    let client = http1_client();
    let response = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 503);
    assert_eq!(broken.hits(), 1, "no budget: no retry");
    gw.reload(&budget(1))?;
    let response = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 503);
    assert_eq!(
        broken.hits(),
        1 + 4,
        "one retry at a time: all four attempts"
    );
    Ok(())
}

#[tokio::test]
async fn the_error_breaker_opens_fails_fast_half_opens_and_closes() -> anyhow::Result<()> {
    let backend = Backend::start("b").await?;
    backend.behave(Behaviour::Fail);
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - name: pool
    targets: ["{}"]
    circuit_breaker: {{ errors: {{ percent: 50, min_requests: 4, window: 10s, open_for: 300ms }} }}
routes:
  - {{ name: kind, match: {{ path: {{ prefix: /kind }} }}, upstream: pool, fallback: {{ status: 200, body: "from the fallback" }} }}
  - {{ name: all, upstream: pool }}
"#,
        backend.addr
    ))
    .await?;
    let client = http1_client();
    for _ in 0..4 {
        let response = client.get(gw.url("main", "/")).send().await?;
        assert_eq!(response.status(), 503);
        assert_eq!(response.text().await?, "b failing");
    }
    let response = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 503);
    let body = json(response).await?;
    assert_eq!(body["error"]["code"], "circuit_open");
    assert_eq!(
        body["error"]["message"],
        "upstream `pool`'s circuit is open: too many recent requests failed"
    );
    let response = client.get(gw.url("main", "/kind")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "from the fallback");
    assert_eq!(backend.hits(), 4, "nothing reached the upstream while open");

    // Half-open: the first request after the open time is the probe.
    backend.behave(Behaviour::Answer);
    let closed = eventually(Duration::from_secs(5), async || {
        let response = client.get(gw.url("main", "/")).send().await;
        response.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(closed, "the probe closed the breaker");
    for _ in 0..5 {
        assert_eq!(client.get(gw.url("main", "/")).send().await?.status(), 200);
    }
    Ok(())
}

#[tokio::test]
async fn request_and_connection_limits_answer_circuit_open() -> anyhow::Result<()> {
    let up = EchoUpstream::start("up").await?;
    for (limits, reason) in [
        (
            "{ max_requests: 1, max_pending: 0 }",
            "too many requests in flight and pending",
        ),
        (
            "{ max_connections: 1 }",
            "every connection the circuit breaker allows is open",
        ),
    ] {
        let gw = TestGateway::from_yaml(&gateway_yaml(
            &format!(
                r#"{{ name: pool, targets: ["{}"], circuit_breaker: {limits} }}"#,
                up.addr
            ),
            "{ name: all, upstream: pool }",
        ))
        .await?;
        let client = http1_client();
        let hits = up.hits();
        let slow = tokio::spawn({
            let (client, url) = (client.clone(), gw.url("main", "/slow"));
            async move {
                client
                    .get(url)
                    .header("x-echo-delay-ms", "1500")
                    .send()
                    .await
            }
        });
        assert!(eventually(Duration::from_secs(5), async || up.hits() == hits + 1).await);
        let response = client.get(gw.url("main", "/")).send().await?;
        assert_eq!(response.status(), 503, "{limits}");
        let body = json(response).await?;
        assert_eq!(body["error"]["code"], "circuit_open", "{limits}");
        assert_eq!(
            body["error"]["message"],
            format!("upstream `pool`'s circuit is open: {reason}"),
        );
        assert_eq!(slow.await??.status(), 200);
    }
    Ok(())
}

#[tokio::test]
async fn a_pending_request_waits_for_a_slot() -> anyhow::Result<()> {
    let up = EchoUpstream::start("up").await?;
    let gw = TestGateway::from_yaml(&gateway_yaml(
        &format!(
            r#"{{ name: pool, targets: ["{}"], circuit_breaker: {{ max_requests: 1, max_pending: 1 }} }}"#,
            up.addr
        ),
        "{ name: all, upstream: pool }",
    ))
    .await?;
    let client = http1_client();
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), gw.url("main", "/slow"));
        async move {
            client
                .get(url)
                .header("x-echo-delay-ms", "500")
                .send()
                .await
        }
    });
    assert!(eventually(Duration::from_secs(5), async || up.hits() == 1).await);
    let started = Instant::now();
    let response = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200, "it waited for the slow one's slot");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(slow.await??.status(), 200);
    Ok(())
}
