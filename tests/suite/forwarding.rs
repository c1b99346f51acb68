//! Forwarding headers, hop-by-hop hygiene, request ids and body passthrough.

use weir_tests::{EchoUpstream, TestGateway, h2c_client, http1_client, json};

#[tokio::test]
async fn adds_forwarding_headers_and_strips_hop_by_hop() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "").await?;
    let response = http1_client()
        .get(gw.url("main", "/headers"))
        .header("host", "shop.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-conn-secret")
        .header("x-conn-secret", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("x-app", "kept")
        .send()
        .await?;
    assert_eq!(response.headers()["via"], "1.1 weir");
    let echoed = json(response).await?;
    let headers = &echoed["headers"];
    assert_eq!(headers["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    assert_eq!(headers["x-forwarded-host"][0], "shop.example.com");
    assert_eq!(headers["host"][0], "shop.example.com");
    assert_eq!(headers["via"][0], "1.1 weir");
    assert_eq!(headers["x-app"][0], "kept");
    assert!(headers.get("x-conn-secret").is_none());
    assert!(headers.get("keep-alive").is_none());
    Ok(())
}

#[tokio::test]
async fn generates_a_request_id_or_keeps_the_clients() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "").await?;
    let client = http1_client();
    let generated = client.get(gw.url("main", "/")).send().await?;
    let id = generated.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let echoed = json(generated).await?;
    assert_eq!(echoed["headers"]["x-request-id"][0], id.as_str());

    let kept = client
        .get(gw.url("main", "/"))
        .header("x-request-id", "abc-123")
        .send()
        .await?;
    assert_eq!(kept.headers()["x-request-id"], "abc-123");
    assert_eq!(json(kept).await?["headers"]["x-request-id"][0], "abc-123");
    Ok(())
}

#[tokio::test]
async fn streams_request_and_response_bodies() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "").await?;
    let payload = "x".repeat(300_000);
    let echoed = json(
        http1_client()
            .post(gw.url("main", "/upload?kind=big"))
            .body(payload.clone())
            .send()
            .await?,
    )
    .await?;
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["query"], "kind=big");
    assert_eq!(echoed["body"].as_str().map(str::len), Some(payload.len()));
    Ok(())
}

#[tokio::test]
async fn serves_h2c_and_forwards_over_http1() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::proxying(&up, "").await?;
    let response = h2c_client().get(gw.url("main", "/h2")).send().await?;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let echoed = json(response).await?;
    assert_eq!(echoed["path"], "/h2");
    assert_eq!(echoed["headers"]["host"][0], gw.addr("main").to_string());
    Ok(())
}
