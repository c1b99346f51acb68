//! Swapping the config snapshot of a running gateway: new requests see the
//! new config at once, requests in flight finish on the one they started
//! with, and a config that cannot be built changes nothing.

use std::time::Duration;

use weir_tests::{EchoUpstream, TestGateway, http1_client, json};

/// The route that forwards `/slow…` to `upstream`.
fn slow_route(upstream: &EchoUpstream) -> String {
    format!(
        "  - name: slow\n    match: {{ path: {{ prefix: /slow }} }}\n    upstream: {}\n",
        upstream.name()
    )
}

/// A manifest answering `/greeting` with `greeting`, followed by `routes`.
fn manifest(upstream: &EchoUpstream, greeting: &str, routes: &str) -> String {
    format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: {name}, targets: [{addr}] }}
routes:
  - name: greeting
    match: {{ path: {{ exact: /greeting }} }}
    respond: {{ status: 200, body: "{greeting}" }}
{routes}"#,
        name = upstream.name(),
        addr = upstream.addr,
    )
}

/// The body `/greeting` answers with.
async fn greeting(gw: &TestGateway, client: &reqwest::Client) -> anyhow::Result<String> {
    Ok(client
        .get(gw.url("main", "/greeting"))
        .send()
        .await?
        .text()
        .await?)
}

#[tokio::test]
async fn a_reload_serves_new_requests_and_lets_requests_in_flight_finish() -> anyhow::Result<()> {
    let upstream = EchoUpstream::start("backend").await?;
    let gw = TestGateway::from_yaml(&manifest(&upstream, "one", &slow_route(&upstream))).await?;
    let client = http1_client();
    assert_eq!(gw.generation(), 1);
    assert_eq!(greeting(&gw, &client).await?, "one");

    // A request that waits on the upstream while the config changes under it.
    let in_flight = tokio::spawn(
        client
            .get(gw.url("main", "/slow/request"))
            .header("x-echo-delay-ms", "400")
            .send(),
    );
    assert!(
        weir_tests::eventually(Duration::from_secs(5), async || upstream.hits() == 1).await,
        "the slow request never reached the upstream"
    );

    // The new config drops the slow route and adds another.
    let added = "  - name: added\n    match: { path: { exact: /added } }\n    respond: { status: 201, body: added }\n";
    assert_eq!(gw.reload(&manifest(&upstream, "two", added))?, 2);
    assert_eq!(gw.generation(), 2);

    assert_eq!(greeting(&gw, &client).await?, "two");
    assert_eq!(
        client.get(gw.url("main", "/added")).send().await?.status(),
        201
    );
    let gone = client.get(gw.url("main", "/slow/other")).send().await?;
    assert_eq!(gone.status(), 404);
    assert_eq!(json(gone).await?["error"]["code"], "no_route");

    // The request that started on generation 1 finished there.
    let finished = in_flight.await??;
    assert_eq!(finished.status(), 200);
    assert_eq!(json(finished).await?["upstream"], "backend");
    Ok(())
}

#[tokio::test]
async fn a_config_that_cannot_be_built_is_refused_and_the_running_one_stays() -> anyhow::Result<()>
{
    let upstream = EchoUpstream::start("backend").await?;
    let gw = TestGateway::from_yaml(&manifest(&upstream, "one", "")).await?;
    let client = http1_client();

    let broken = manifest(&upstream, "two", "")
        .replace(
            "routes:",
            "plugins:\n  - { name: missing, file: no-such-plugin.wasm }\nroutes:",
        )
        .replace(
            "respond: { status: 200, body: \"two\" }",
            "respond: { status: 200, body: \"two\" }\n    filters: [{ plugin: missing }]",
        );
    let error = gw
        .reload(&broken)
        .expect_err("a plugin file that does not exist");
    assert!(
        format!("{error:#}").contains("no-such-plugin.wasm"),
        "the error names the file: {error:#}"
    );

    let moved = manifest(&upstream, "two", "").replace("127.0.0.1:0", "127.0.0.2:0");
    let error = gw.reload(&moved).expect_err("listeners cannot move");
    assert!(format!("{error:#}").contains("listeners"), "{error:#}");

    assert_eq!(gw.generation(), 1);
    assert_eq!(greeting(&gw, &client).await?, "one");
    Ok(())
}

/// A manifest whose route `r` runs the SDK test filter with one VM that
/// reports its number in `x-vm` (plus `extra` config), and whose route `other`
/// answers `other_body`.
fn numbered_vm_manifest(upstream: &EchoUpstream, extra: &str, other_body: &str) -> String {
    format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: backend, targets: [{addr}] }}]
plugins: [{{ name: sdk, file: "{wasm}", vms: 1 }}]
routes:
  - name: r
    match: {{ path: {{ prefix: /r }} }}
    upstream: backend
    filters: [{{ plugin: sdk, config: {{ vm_id_header: x-vm{extra} }} }}]
  - name: other
    match: {{ path: {{ exact: /other }} }}
    respond: {{ status: 200, body: "{other_body}" }}
"#,
        addr = upstream.addr,
        wasm = weir_tests::test_filter_wasm(),
    )
}

/// The number of the VM that served `/r`.
async fn vm_number(gw: &TestGateway, client: &reqwest::Client) -> anyhow::Result<String> {
    let response = client.get(gw.url("main", "/r")).send().await?;
    assert_eq!(response.status(), 200);
    Ok(json(response).await?["headers"]["x-vm"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn a_reload_keeps_the_vms_of_filters_that_did_not_change() -> anyhow::Result<()> {
    let upstream = EchoUpstream::start("backend").await?;
    let gw = TestGateway::from_yaml(&numbered_vm_manifest(&upstream, "", "one")).await?;
    let client = http1_client();
    let first = vm_number(&gw, &client).await?;
    assert!(!first.is_empty());

    // Another route changes; the filter on `r` is the same: its VM lives on.
    gw.reload(&numbered_vm_manifest(&upstream, "", "two"))?;
    assert_eq!(
        client
            .get(gw.url("main", "/other"))
            .send()
            .await?
            .text()
            .await?,
        "two"
    );
    assert_eq!(
        vm_number(&gw, &client).await?,
        first,
        "root-context state survives"
    );

    // The filter's configuration changes: a new VM starts, with a new number.
    gw.reload(&numbered_vm_manifest(
        &upstream,
        ", add_request_headers: [[x-new, \"1\"]]",
        "two",
    ))?;
    let after_change = vm_number(&gw, &client).await?;
    assert_ne!(
        after_change, first,
        "a changed configuration starts fresh VMs"
    );
    Ok(())
}

/// Version `version` of a plugin: a WAT filter that stamps the request it
/// forwards and the response it answers with `x-version: <version>`. Each
/// version is a module of its own (its own bytes, digest and compilation),
/// written into `dir`; its path.
fn plugin_version(dir: &std::path::Path, version: u32) -> anyhow::Result<String> {
    let digits = version.to_string();
    let module = format!(
        r#"(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "x-version")
  (data (i32.const 80) "{digits}")
{basics}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 64) (i32.const 9) (i32.const 80) (i32.const {len})))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 64) (i32.const 9) (i32.const 80) (i32.const {len})))
    (i32.const 0)))
"#,
        basics = weir_tests::WAT_FILTER_BASICS,
        len = digits.len(),
    );
    let path = dir.join(format!("stamp-v{version}.wat"));
    std::fs::write(&path, module)?;
    Ok(path.display().to_string())
}

/// A manifest for the swap test: route `r` (prefix `/`) forwards to
/// `upstream` through `plugin` (a version of [`plugin_version`]) and the SDK
/// test filter configured with `version` (both stamp the request and the
/// response with it); with `extra`, route `/extra` too.
fn versioned_manifest(upstream: &EchoUpstream, plugin: &str, version: u32, extra: bool) -> String {
    let extra = if extra {
        "  - { name: extra, match: { path: { exact: /extra } }, respond: { status: 200, body: extra } }\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: backend, targets: [{addr}] }}]
plugins:
  # The swaps are under test, not CPU deadlines: a loaded machine may hold
  # a callback off the CPU for a while.
  - {{ name: stamp, file: "{plugin}", limits: {{ callback_deadline: 2s }} }}
  - {{ name: sdk, file: "{wasm}", limits: {{ callback_deadline: 2s }} }}
routes:
{extra}  - name: r
    upstream: backend
    filters:
      - plugin: stamp
      - plugin: sdk
        config:
          add_request_headers: [[x-version, "{version}"]]
          add_response_headers: [[x-version, "{version}"]]
"#,
        addr = upstream.addr,
        wasm = weir_tests::test_filter_wasm(),
    )
}

/// One request of the load: `None` when it succeeded with the same version on
/// both legs, else what went wrong.
async fn versioned_request(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = match client.get(url).send().await {
        Ok(response) => response,
        Err(error) => return Some(format!("request failed: {error}")),
    };
    if response.status() != 200 {
        let status = response.status();
        return Some(format!(
            "status {status}: {}",
            response.text().await.unwrap_or_default()
        ));
    }
    let answered: Vec<String> = response
        .headers()
        .get_all("x-version")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let body = match json(response).await {
        Ok(body) => body,
        Err(error) => return Some(format!("body failed: {error}")),
    };
    let forwarded: Vec<String> = body["headers"]["x-version"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    // Both filters stamp both legs: four stamps, all of one version.
    let stamps: Vec<&String> = forwarded.iter().chain(&answered).collect();
    if stamps.len() != 4 || stamps.iter().any(|v| *v != stamps[0]) {
        return Some(format!(
            "versions mixed: forwarded {forwarded:?}, answered {answered:?}"
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_fail_no_request_and_mix_no_versions() -> anyhow::Result<()> {
    let (a, b) = (
        EchoUpstream::start("a").await?,
        EchoUpstream::start("b").await?,
    );
    let modules = tempfile::tempdir()?;
    let first = plugin_version(modules.path(), 0)?;
    let gw = std::sync::Arc::new(
        TestGateway::from_yaml(&versioned_manifest(&a, &first, 0, false)).await?,
    );
    let url = gw.url("main", "/load");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    // 200 requests in flight: half over HTTP/1.1 keep-alive, half over h2c.
    for i in 0..200 {
        let client = if i % 2 == 0 {
            http1_client()
        } else {
            weir_tests::h2c_client()
        };
        let (url, stop) = (url.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let (mut sent, mut failures) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sent += 1;
                if let Some(failure) = versioned_request(&client, &url).await {
                    failures.push(failure);
                }
            }
            (sent, failures)
        }));
    }
    for version in 1..=20u32 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Every swap is a new plugin version (another module) with a new
        // configuration; every other one adds or removes a route and moves
        // the upstream.
        let upstream = if version % 2 == 0 { &a } else { &b };
        let wasm = plugin_version(modules.path(), version)?;
        let yaml = versioned_manifest(upstream, &wasm, version, version % 2 == 1);
        let swapped = gw.clone();
        let generation = tokio::task::spawn_blocking(move || swapped.reload(&yaml)).await??;
        assert_eq!(generation, u64::from(version) + 1);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut sent, mut failures) = (0, Vec::new());
    for task in load {
        let (n, f) = task.await?;
        sent += n;
        failures.extend(f);
    }
    assert!(sent > 1000, "the load ran: {sent} requests");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed or mixed versions, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(a.hits() > 0 && b.hits() > 0, "both upstreams served");
    Ok(())
}
