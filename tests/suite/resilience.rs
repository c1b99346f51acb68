//! Upstream failures: connect errors, timeouts and retries, as JSON errors.

use weir_tests::{EchoUpstream, TestGateway, dead_address, http1_client, json};

#[tokio::test]
async fn unreachable_upstream_is_a_json_502() -> anyhow::Result<()> {
    let dead = dead_address().await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: gone, targets: ["{dead}"], timeouts: {{ connect: 500ms }} }}]
routes: [{{ name: all, upstream: gone }}]
"#
    ))
    .await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 502);
    let body = json(response).await?;
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert_eq!(body["error"]["status"], 502);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`gone`"))
    );
    assert!(
        body["error"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    Ok(())
}

#[tokio::test]
async fn slow_upstream_is_a_json_504_and_route_timeout_overrides() -> anyhow::Result<()> {
    let up = EchoUpstream::start("slow").await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: slow, targets: ["{}"], timeouts: {{ request: 300ms }} }}]
routes:
  - {{ name: patient, match: {{ path: {{ prefix: /patient }} }}, upstream: slow, timeout: 3s }}
  - {{ name: default, upstream: slow }}
"#,
        up.addr
    ))
    .await?;
    let client = http1_client();
    let timed_out = client
        .get(gw.url("main", "/"))
        .header("x-echo-delay-ms", "1000")
        .send()
        .await?;
    assert_eq!(timed_out.status(), 504);
    let body = json(timed_out).await?;
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert_eq!(
        body["error"]["message"],
        "upstream `slow` did not answer within 300ms"
    );

    let patient = client
        .get(gw.url("main", "/patient"))
        .header("x-echo-delay-ms", "600")
        .send()
        .await?;
    assert_eq!(patient.status(), 200);
    Ok(())
}

#[tokio::test]
async fn retries_idempotent_requests_on_connect_failure_only() -> anyhow::Result<()> {
    let dead = dead_address().await?;
    let live = EchoUpstream::start("live").await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: half, targets: ["{dead}", "{}"], retries: 1 }}]
routes: [{{ name: all, upstream: half }}]
"#,
        live.addr
    ))
    .await?;
    let client = http1_client();
    // Round robin alternates targets: every GET that lands on the dead one is retried on the live one.
    for _ in 0..6 {
        let response = client.get(gw.url("main", "/")).send().await?;
        assert_eq!(response.status(), 200);
    }
    for _ in 0..2 {
        let response = client
            .put(gw.url("main", "/"))
            .body("same twice")
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        assert_eq!(json(response).await?["body"], "same twice");
    }
    // POST is not idempotent: the request that lands on the dead target fails.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            client
                .post(gw.url("main", "/"))
                .body("once")
                .send()
                .await?
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    Ok(())
}
