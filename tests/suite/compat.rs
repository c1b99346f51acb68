//! Envoy compatibility: where the Proxy-Wasm ABI text is silent or loose, a
//! filter must see on Weir what it sees on Envoy. Each test drives a filter of
//! our own (WAT, or the SDK test filter) through the gateway and checks the
//! behaviour Envoy has (`PLUGIN_GUIDE.md`, "Compatibility with Envoy").

use weir_tests::{EchoUpstream, TestGateway, WAT_FILTER_BASICS, http1_client};

/// Starts a gateway from `yaml` after writing each `(file, text)` next to it.
async fn gateway_with_files(yaml: &str, files: &[(&str, &str)]) -> anyhow::Result<TestGateway> {
    let dir = tempfile::tempdir()?;
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text)?;
    }
    TestGateway::from_yaml_in(yaml, dir).await
}

/// At the end of the request body, prepends `<` and appends `>` the way the
/// Go SDK does (`PrependHttpRequestBody`: start 0, size 0;
/// `AppendHttpRequestBody`: start `MaxInt32`); at the end of the response body
/// appends `!`. Traps when a call does not answer OK.
fn body_edits_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "<>!")
{WAT_FILTER_BASICS}  (func $edit (param $buffer i32) (param $start i32) (param $size i32) (param $byte i32)
    (if (call $set (local.get $buffer) (local.get $start) (local.get $size) (local.get $byte) (i32.const 1))
      (then unreachable)))
  (func (export "proxy_on_request_body") (param i32 i32) (param $eos i32) (result i32)
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    (call $edit (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 16))
    (call $edit (i32.const 0) (i32.const 0x7fffffff) (i32.const 0) (i32.const 17))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32) (param $eos i32) (result i32)
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    (call $edit (i32.const 1) (i32.const 0x7fffffff) (i32.const 0) (i32.const 18))
    (i32.const 0)))
"#
    )
}

#[tokio::test]
async fn set_buffer_bytes_past_the_end_appends_as_in_envoy() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins: [{{ name: edits, file: edits.wat, vms: 1 }}]
routes: [{{ name: r, upstream: echo, filters: [{{ plugin: edits }}] }}]
"#,
        up.addr
    );
    let gw = gateway_with_files(&yaml, &[("edits.wat", &body_edits_wat())]).await?;
    let response = http1_client()
        .post(gw.url("main", "/"))
        .body("payload")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let text = response.text().await?;
    let echoed = text
        .strip_suffix('!')
        .unwrap_or_else(|| panic!("the response body was appended to: {text}"));
    let echoed: serde_json::Value = serde_json::from_str(echoed)?;
    assert_eq!(echoed["body"], "<payload>");
    Ok(())
}
