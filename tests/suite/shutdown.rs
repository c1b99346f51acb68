//! Graceful shutdown: stop accepting, finish what is in flight.

use std::time::Duration;

use weir_tests::{EchoUpstream, TestGateway, eventually, http1_client, json};

#[tokio::test]
async fn finishes_in_flight_requests_then_stops_accepting() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let mut gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
routes: [{{ name: all, upstream: echo }}]
shutdown_timeout: 5s
"#,
        up.addr
    ))
    .await?;
    let url = gw.url("main", "/slow");
    let in_flight = tokio::spawn(async move {
        let response = http1_client()
            .get(url)
            .header("x-echo-delay-ms", "700")
            .send()
            .await?;
        let status = response.status();
        Ok::<_, anyhow::Error>((status, json(response).await?))
    });
    assert!(eventually(Duration::from_secs(5), async || up.hits() == 1).await);
    let addr = gw.addr("main");
    assert!(gw.shutdown().await, "drained within the deadline");
    let (status, body) = in_flight.await??;
    assert_eq!(status, 200);
    assert_eq!(body["path"], "/slow");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    Ok(())
}
