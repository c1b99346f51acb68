//! A weir-sdk filter (`tests/sdk-filter`) through the real gateway: its
//! upstream calls, Redis commands, shared data and metrics go over the real
//! ABI to a real upstream and a real `redis-server`.

use http_body_util::Full;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use weir_tests::{
    EchoUpstream, RedisServer, TestGateway, http1_client, json, sdk_test_filter_wasm, serve,
};

/// An authorization service: `x-token: good` is user `ada`, anything else 403.
async fn auth_service() -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    serve(
        listener,
        |request: Request<hyper::body::Incoming>| async move {
            let good = request.uri().path() == "/check"
                && request
                    .headers()
                    .get("x-token")
                    .is_some_and(|t| t == "good");
            let (status, body) = if good { (200, "ada") } else { (403, "no") };
            Response::builder()
                .status(status)
                .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
                .unwrap_or_default()
        },
    );
    Ok(addr)
}

async fn gateway(app: &EchoUpstream, redis: &RedisServer) -> anyhow::Result<TestGateway> {
    let auth = auth_service().await?;
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: app, targets: ["{app}"] }}
  - {{ name: auth, targets: ["{auth}"] }}
redis: [{{ name: counters, url: "redis://{redis}", timeout: 2s }}]
plugins: [{{ name: sdk, file: "{wasm}", vms: 1 }}]
routes: [{{ name: all, upstream: app, filters: [{{ plugin: sdk, config: {{ redis: counters, limit: 2 }} }}] }}]
"#,
        app = app.addr,
        redis = redis.addr,
        wasm = sdk_test_filter_wasm(),
    ))
    .await
}

#[tokio::test]
async fn a_weir_sdk_filter_calls_upstreams_redis_and_shared_data_through_the_gateway()
-> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let redis = RedisServer::start().await?;
    let gw = gateway(&app, &redis).await?;
    let client = http1_client();

    // An upstream call: the continuation sets a header and resumes the request.
    let granted = client
        .get(gw.url("main", "/call"))
        .header("x-token", "good")
        .send()
        .await?;
    assert_eq!(granted.status(), 200);
    assert_eq!(json(granted).await?["headers"]["x-user"][0], "ada");
    let refused = client
        .get(gw.url("main", "/call"))
        .header("x-token", "bad")
        .send()
        .await?;
    assert_eq!(refused.status(), 401);
    let request_id = refused.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(
        json(refused).await?,
        serde_json::json!({"error": {"status": 401, "code": "unauthorized",
            "message": "the token was refused", "request_id": request_id}})
    );

    // Redis: INCR through the continuation, then a 429 past the limit.
    for expected in ["1", "2"] {
        let counted = client
            .get(gw.url("main", "/count"))
            .header("x-key", "k")
            .send()
            .await?;
        assert_eq!(counted.status(), 200);
        assert_eq!(json(counted).await?["headers"]["x-count"][0], expected);
    }
    let limited = client
        .get(gw.url("main", "/count"))
        .header("x-key", "k")
        .send()
        .await?;
    assert_eq!(limited.status(), 429);
    assert_eq!(redis.command(&["GET", "hits:k"]).await?, "3");

    // Shared data with compare-and-swap, across requests.
    for expected in ["1", "2", "3"] {
        let remembered = client.get(gw.url("main", "/remember")).send().await?;
        assert_eq!(json(remembered).await?["headers"]["x-seen"][0], expected);
    }

    // A host error (an unknown upstream) fails only its request, as a JSON 500.
    let failed = client.get(gw.url("main", "/fail")).send().await?;
    assert_eq!(failed.status(), 500);
    assert_eq!(json(failed).await?["error"]["code"], "plugin_error");
    let after = client.get(gw.url("main", "/remember")).send().await?;
    assert_eq!(after.status(), 200, "the VM goes on serving");

    assert_eq!(
        gw.metric(r#"weir_plugin_sdk_requests{plugin="sdk"}"#),
        Some(10),
        "the filter's counter counts every request it saw"
    );
    // The upstream saw every request but the two denied and the failed one.
    assert_eq!(app.hits(), 7);
    Ok(())
}
