//! Load balancing across the targets of an upstream group.

use std::time::Duration;

use weir_tests::{EchoUpstream, TestGateway, eventually, http1_client, json};

#[tokio::test]
async fn round_robin_spreads_by_weight() -> anyhow::Result<()> {
    let light = EchoUpstream::start("light").await?;
    let heavy = EchoUpstream::start("heavy").await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - name: pool
    targets: [{{ address: "{}", weight: 1 }}, {{ address: "{}", weight: 3 }}]
routes: [{{ name: all, upstream: pool }}]
"#,
        light.addr, heavy.addr
    ))
    .await?;
    let client = http1_client();
    for _ in 0..40 {
        assert_eq!(client.get(gw.url("main", "/")).send().await?.status(), 200);
    }
    assert_eq!(light.hits(), 10);
    assert_eq!(heavy.hits(), 30);
    Ok(())
}

#[tokio::test]
async fn least_request_avoids_a_busy_target() -> anyhow::Result<()> {
    let a = EchoUpstream::start("a").await?;
    let b = EchoUpstream::start("b").await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: pool, targets: ["{}", "{}"], lb: least_request }}
routes: [{{ name: all, upstream: pool }}]
"#,
        a.addr, b.addr
    ))
    .await?;
    let client = http1_client();
    // Park one slow request on whichever target it lands on.
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
    let busy_known = eventually(Duration::from_secs(5), async || a.hits() + b.hits() == 1).await;
    assert!(busy_known, "the slow request reached an upstream");
    let busy = if a.hits() == 1 { "a" } else { "b" };
    // With two targets, power-of-two-choices compares both: every quick request goes to the idle one.
    for _ in 0..10 {
        let echoed = json(client.get(gw.url("main", "/quick")).send().await?).await?;
        assert_ne!(echoed["upstream"], busy);
    }
    assert_eq!(slow.await??.status(), 200);
    Ok(())
}
