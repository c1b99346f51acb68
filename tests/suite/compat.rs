//! Envoy compatibility: where the Proxy-Wasm ABI text is silent or loose, a
//! filter must see on Weir what it sees on Envoy. Each test drives a filter of
//! our own (WAT, or the SDK test filter) through the gateway and checks the
//! behaviour Envoy has (`PLUGIN_GUIDE.md`, "Compatibility with Envoy").

use std::time::{Duration, Instant};

use serde_json::json;
use weir_tests::{
    EchoUpstream, TestGateway, WAT_ABI_AND_ALLOCATOR, WAT_FILTER_BASICS, dead_address,
    http1_client, json, test_filter_wasm,
};

/// A helper every WAT filter below shares (it needs the `$add` import):
/// `$number(name, name_len, value)` adds request header `name` with `value`
/// as two decimal digits (`"07"`), written at offset 1000.
const WAT_NUMBER_HEADER: &str = r#"  (func $number (param $name i32) (param $len i32) (param $value i32)
    (i32.store8 (i32.const 1000) (i32.add (i32.const 48) (i32.div_u (local.get $value) (i32.const 10))))
    (i32.store8 (i32.const 1001) (i32.add (i32.const 48) (i32.rem_u (local.get $value) (i32.const 10))))
    (drop (call $add (i32.const 0) (local.get $name) (local.get $len) (i32.const 1000) (i32.const 2))))
"#;

const ADD_HEADER_IMPORT: &str = r#"  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))"#;

/// Starts a gateway from `yaml` after writing each `(file, text)` next to it.
pub(crate) async fn gateway_with_files(
    yaml: &str,
    files: &[(&str, &str)],
) -> anyhow::Result<TestGateway> {
    let dir = tempfile::tempdir()?;
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text)?;
    }
    TestGateway::from_yaml_in(yaml, dir).await
}

/// A gateway whose only route runs a filter of each of `plugins` (`(name,
/// WAT text)`, written as `<name>.wat`), in order, in front of `targets`
/// (round robin).
async fn gateway_with_plugins(
    targets: &[&EchoUpstream],
    plugins: &[(&str, &str)],
) -> anyhow::Result<TestGateway> {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{}\"", t.addr)).collect();
    let files: Vec<(String, &str)> = plugins
        .iter()
        .map(|(name, wat)| (format!("{name}.wat"), *wat))
        .collect();
    let declared: String = plugins
        .iter()
        .map(|(name, _)| format!("  - {{ name: {name}, file: {name}.wat, vms: 1 }}\n"))
        .collect();
    let filters: Vec<String> = plugins
        .iter()
        .map(|(name, _)| format!("{{ plugin: {name} }}"))
        .collect();
    let yaml = format!(
        "apiVersion: weir/v1\n\
         listeners: [{{ name: main, address: 127.0.0.1:0 }}]\n\
         upstreams: [{{ name: echo, targets: [{}] }}]\n\
         plugins:\n{declared}\
         routes: [{{ name: r, upstream: echo, filters: [{}] }}]\n",
        targets.join(", "),
        filters.join(", ")
    );
    let files: Vec<(&str, &str)> = files.iter().map(|(f, w)| (f.as_str(), *w)).collect();
    gateway_with_files(&yaml, &files).await
}

/// `POST /` with the body `payload`; its 200 response.
async fn post_payload(gw: &TestGateway) -> anyhow::Result<reqwest::Response> {
    let response = http1_client()
        .post(gw.url("main", "/"))
        .body("payload")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    Ok(response)
}

/// The request headers the echo upstream saw for `GET /`.
async fn echoed_headers(gw: &TestGateway) -> anyhow::Result<serde_json::Value> {
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200);
    Ok(json(response).await?["headers"].clone())
}

/// At the end of the request body, prepends `<` and appends `>` the way the
/// Go SDK does (`PrependHttpRequestBody`: start 0, size 0;
/// `AppendHttpRequestBody`: start `MaxInt32`); at the end of the response body
/// appends `!`. Traps when a call does not answer OK, or when writing the
/// request body in the headers phase (no body there) answers anything but
/// `BAD_ARGUMENT`, as in Envoy.
fn body_edits_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "<>!")
{WAT_FILTER_BASICS}  (func $edit (param $buffer i32) (param $start i32) (param $size i32) (param $byte i32)
    (if (call $set (local.get $buffer) (local.get $start) (local.get $size) (local.get $byte) (i32.const 1))
      (then unreachable)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $set (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 1)) (i32.const 2))
      (then unreachable))
    (i32.const 0))
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
    let gw = gateway_with_plugins(&[&up], &[("edits", &body_edits_wat())]).await?;
    let text = post_payload(&gw).await?.text().await?;
    let echoed = text
        .strip_suffix('!')
        .unwrap_or_else(|| panic!("the response body was appended to: {text}"));
    let echoed: serde_json::Value = serde_json::from_str(echoed)?;
    assert_eq!(echoed["body"], "<payload>");
    Ok(())
}

/// Holds the request body until it has all arrived, then adds
/// `x-after-body: 1` to the request headers (map 0). Weir sends the request
/// upstream only after the filters had the body's lead, so the header goes
/// with it (it used to be dropped without a word).
fn header_after_body_wat() -> String {
    format!(
        r#"(module
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 16) "x-after-body1")
{WAT_FILTER_BASICS}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32) (param $eos i32) (result i32)
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    (if (call $add (i32.const 0) (i32.const 16) (i32.const 12) (i32.const 28) (i32.const 1))
      (then unreachable))
    (i32.const 0)))
"#
    )
}

#[tokio::test]
async fn a_header_added_once_the_body_is_in_reaches_the_upstream() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway_with_plugins(&[&up], &[("after", &header_after_body_wat())]).await?;
    let echoed = json(post_payload(&gw).await?).await?;
    assert_eq!(echoed["headers"]["x-after-body"], serde_json::json!(["1"]));
    assert_eq!(echoed["body"], "payload");
    Ok(())
}

/// Calls WASI `poll_oneoff` the way Go's runtime sleeps (`usleep`: one
/// relative clock subscription on the monotonic clock, here of 10 s) and
/// reports in request headers: `x-poll-errno`, `x-poll-events` (events
/// written), `x-poll-userdata` (01 when the event carries the subscription's
/// userdata), `x-poll-type` and `x-poll-error` (the event's type and error);
/// then polls an `fd_read` subscription and reports its errno in
/// `x-poll-fd-errno`.
fn poll_wat() -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 64) "x-poll-errno")
  (data (i32.const 80) "x-poll-events")
  (data (i32.const 96) "x-poll-userdata")
  (data (i32.const 112) "x-poll-type")
  (data (i32.const 128) "x-poll-error")
  (data (i32.const 144) "x-poll-fd-errno")
{WAT_FILTER_BASICS}{WAT_NUMBER_HEADER}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; subscription at 256: userdata, tag 0 (clock), clock id 1 (monotonic), timeout 10 s, relative
    (i64.store (i32.const 256) (i64.const 0x1122334455667788))
    (i32.store8 (i32.const 264) (i32.const 0))
    (i32.store (i32.const 272) (i32.const 1))
    (i64.store (i32.const 280) (i64.const 10000000000))
    (i64.store (i32.const 288) (i64.const 1000))
    (i32.store16 (i32.const 296) (i32.const 0))
    (call $number (i32.const 64) (i32.const 12)
      (call $poll (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 600)))
    (call $number (i32.const 80) (i32.const 13) (i32.load (i32.const 600)))
    (call $number (i32.const 96) (i32.const 15)
      (i64.eq (i64.load (i32.const 512)) (i64.const 0x1122334455667788)))
    (call $number (i32.const 112) (i32.const 11) (i32.load8_u (i32.const 522)))
    (call $number (i32.const 128) (i32.const 12) (i32.load16_u (i32.const 520)))
    ;; the same subscription as fd_read (tag 1) on fd 0
    (i32.store8 (i32.const 264) (i32.const 1))
    (i32.store (i32.const 272) (i32.const 0))
    (call $number (i32.const 144) (i32.const 15)
      (call $poll (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 600)))
    (i32.const 0)))
"#
    )
}

#[tokio::test]
async fn poll_oneoff_fires_clock_subscriptions_at_once() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway_with_plugins(&[&up], &[("poll", &poll_wat())]).await?;
    let started = Instant::now();
    let headers = echoed_headers(&gw).await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a 10 s sleep must not hold the worker"
    );
    assert_eq!(headers["x-poll-errno"], json!(["00"]));
    assert_eq!(headers["x-poll-events"], json!(["01"]));
    assert_eq!(headers["x-poll-userdata"], json!(["01"]));
    assert_eq!(headers["x-poll-type"], json!(["00"]), "a clock event");
    assert_eq!(headers["x-poll-error"], json!(["00"]));
    assert_eq!(
        headers["x-poll-fd-errno"],
        json!(["58"]),
        "fd subscriptions are not supported (ENOTSUP)"
    );
    Ok(())
}

#[tokio::test]
async fn std_thread_sleep_in_a_rust_filter_returns() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins: [{{ name: sdk, file: "{}", vms: 1 }}]
routes: [{{ name: r, upstream: echo, filters: [{{ plugin: sdk, config: {{ sleep_ms: 50 }} }}] }}]
"#,
        up.addr,
        test_filter_wasm()
    ))
    .await?;
    assert_eq!(echoed_headers(&gw).await?["x-slept"], json!(["yes"]));
    Ok(())
}

/// Registers shared queue `jobs` in `proxy_on_configure`; on each request
/// reports the queue's id in `x-queue-id` and the item it dequeues, if any,
/// in `x-dequeued`.
fn queue_owner_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 64) "jobs")
  (data (i32.const 80) "x-queue-id")
  (data (i32.const 96) "x-dequeued")
  (global $queue (mut i32) (i32.const 0))
{WAT_ABI_AND_ALLOCATOR}{WAT_NUMBER_HEADER}  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (if (call $register (i32.const 64) (i32.const 4) (i32.const 0)) (then unreachable))
    (global.set $queue (i32.load (i32.const 0)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $number (i32.const 80) (i32.const 10) (global.get $queue))
    (if (i32.eqz (call $dequeue (global.get $queue) (i32.const 0) (i32.const 4)))
      (then (drop (call $add (i32.const 0) (i32.const 96) (i32.const 10)
        (i32.load (i32.const 0)) (i32.load (i32.const 4))))))
    (i32.const 0)))
"#
    )
}

/// A plugin without queues of its own. On each request: resolves `jobs` in
/// its own vm_id (`x-resolve-own`: the status), enqueues `stray` on whatever
/// id that left (the zero default when the resolve failed, as a filter that
/// ignores the status would; `x-enqueue-default`), then resolves `jobs` in
/// vm_id `owner` (`x-resolve-owner`, and the id in `x-owner-queue`).
fn queue_stranger_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_resolve_shared_queue" (func $resolve (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 64) "jobs")
  (data (i32.const 72) "owner")
  (data (i32.const 80) "stray")
  (data (i32.const 96) "x-resolve-own")
  (data (i32.const 112) "x-enqueue-default")
  (data (i32.const 144) "x-resolve-owner")
  (data (i32.const 160) "x-owner-queue")
{WAT_FILTER_BASICS}{WAT_NUMBER_HEADER}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.store (i32.const 0) (i32.const 0))
    (call $number (i32.const 96) (i32.const 13)
      (call $resolve (i32.const 0) (i32.const 0) (i32.const 64) (i32.const 4) (i32.const 0)))
    (call $number (i32.const 112) (i32.const 17)
      (call $enqueue (i32.load (i32.const 0)) (i32.const 80) (i32.const 5)))
    (call $number (i32.const 144) (i32.const 15)
      (call $resolve (i32.const 72) (i32.const 5) (i32.const 64) (i32.const 4) (i32.const 0)))
    (call $number (i32.const 160) (i32.const 13) (i32.load (i32.const 0)))
    (i32.const 0)))
"#
    )
}

#[tokio::test]
async fn shared_queue_ids_start_at_1_so_a_failed_resolve_reaches_no_queue() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway_with_plugins(
        &[&up],
        &[
            ("stranger", &queue_stranger_wat()),
            ("owner", &queue_owner_wat()),
        ],
    )
    .await?;
    let headers = echoed_headers(&gw).await?;
    assert_eq!(headers["x-queue-id"], json!(["01"]), "ids start at 1");
    assert_eq!(
        headers["x-resolve-own"],
        json!(["01"]),
        "NOT_FOUND: queues are found by vm_id and name"
    );
    assert_eq!(
        headers["x-enqueue-default"],
        json!(["01"]),
        "NOT_FOUND: id 0 is no queue"
    );
    assert!(
        headers.get("x-dequeued").is_none(),
        "nothing reached the owner's queue: {headers}"
    );
    assert_eq!(headers["x-resolve-owner"], json!(["00"]));
    assert_eq!(headers["x-owner-queue"], json!(["01"]));
    Ok(())
}

/// Reflects its start-up into request headers: `x-root-id` (the
/// `plugin_root_id` property read when its root context is created, as the C++
/// and AssemblyScript SDKs do to pick a root context), `x-vm-config` (buffer 6
/// in `proxy_on_vm_start`) and `x-plugin-config` (buffer 7 in
/// `proxy_on_configure`). It traps when a call fails or when the size passed
/// to a start-up callback is not the size of its buffer.
fn reflect_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $property (param i32 i32 i32 i32) (result i32)))
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 64) "plugin_root_id")
  (data (i32.const 96) "x-root-id")
  (data (i32.const 112) "x-vm-config")
  (data (i32.const 128) "x-plugin-config")
{WAT_ABI_AND_ALLOCATOR}  ;; Keeps the (ptr, len) the last call wrote at 0 and 4 in the 8 bytes at $at.
  (func $keep (param $at i32)
    (i32.store (local.get $at) (i32.load (i32.const 0)))
    (i32.store offset=4 (local.get $at) (i32.load (i32.const 4))))
  (func $config (param $kind i32) (param $len i32) (param $at i32) (result i32)
    (if (call $buffer (local.get $kind) (i32.const 0) (local.get $len) (i32.const 0) (i32.const 4))
      (then unreachable))
    (if (i32.ne (i32.load (i32.const 4)) (local.get $len)) (then unreachable))
    (call $keep (local.get $at))
    (i32.const 1))
  (func (export "proxy_on_context_create") (param i32) (param $parent i32)
    (if (i32.eqz (local.get $parent))
      (then
        (if (call $property (i32.const 64) (i32.const 14) (i32.const 0) (i32.const 4))
          (then unreachable))
        (call $keep (i32.const 8)))))
  (func (export "proxy_on_vm_start") (param i32) (param $len i32) (result i32)
    (call $config (i32.const 6) (local.get $len) (i32.const 16)))
  (func (export "proxy_on_configure") (param i32) (param $len i32) (result i32)
    (call $config (i32.const 7) (local.get $len) (i32.const 24)))
  (func $header (param $name i32) (param $len i32) (param $at i32)
    (drop (call $add (i32.const 0) (local.get $name) (local.get $len)
      (i32.load (local.get $at)) (i32.load offset=4 (local.get $at)))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $header (i32.const 96) (i32.const 9) (i32.const 8))
    (call $header (i32.const 112) (i32.const 11) (i32.const 16))
    (call $header (i32.const 128) (i32.const 15) (i32.const 24))
    (i32.const 0)))
"#
    )
}

/// A gateway whose only route runs `filters` of plugin `reflect` (declared
/// with `plugin_extra` fields) in front of an echo upstream.
async fn reflect_gateway(
    up: &EchoUpstream,
    plugin_extra: &str,
    filters: &str,
) -> anyhow::Result<TestGateway> {
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins:
  - {{ name: reflect, file: reflect.wat, vms: 1{plugin_extra} }}
routes:
  - name: r
    upstream: echo
    filters: {filters}
"#,
        up.addr
    );
    gateway_with_files(&yaml, &[("reflect.wat", &reflect_wat())]).await
}

#[tokio::test]
async fn a_string_configuration_arrives_as_its_bytes_and_a_mapping_as_json() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = reflect_gateway(
        &up,
        "",
        r#"[{ plugin: reflect, config: my-value }, { plugin: reflect, config: { a: [1, two] } }, { plugin: reflect, config: 42 }, { plugin: reflect }]"#,
    )
    .await?;
    let headers = echoed_headers(&gw).await?;
    assert_eq!(
        headers["x-plugin-config"],
        json!(["my-value", r#"{"a":[1,"two"]}"#, "42", ""]),
        "Envoy hands over a StringValue's bytes, without JSON quotes"
    );
    Ok(())
}

#[tokio::test]
async fn vm_config_reaches_on_vm_start_in_buffer_6() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = reflect_gateway(&up, ", vm_config: vm-value", "[{ plugin: reflect }]").await?;
    assert_eq!(
        echoed_headers(&gw).await?["x-vm-config"],
        json!(["vm-value"])
    );
    let gw = reflect_gateway(&up, ", vm_config: { cache: 10 }", "[{ plugin: reflect }]").await?;
    assert_eq!(
        echoed_headers(&gw).await?["x-vm-config"],
        json!([r#"{"cache":10}"#])
    );
    Ok(())
}

#[tokio::test]
async fn filters_of_one_plugin_pick_their_root_context_by_root_id() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = reflect_gateway(
        &up,
        "",
        r#"[{ plugin: reflect, root_id: add_header }, { plugin: reflect, root_id: "" }, { plugin: reflect }]"#,
    )
    .await?;
    assert_eq!(
        echoed_headers(&gw).await?["x-root-id"],
        json!(["add_header", "", "reflect"]),
        "each filter's root_id; without one, the plugin's name"
    );
    let gw = reflect_gateway(
        &up,
        ", root_id: shared_root",
        r#"[{ plugin: reflect }, { plugin: reflect, root_id: own }]"#,
    )
    .await?;
    assert_eq!(
        echoed_headers(&gw).await?["x-root-id"],
        json!(["shared_root", "own"]),
        "the plugin's root_id is its filters' default"
    );
    Ok(())
}

/// On request headers answers 403 `denied` itself; on response headers adds
/// `x-replier: ran`.
fn replier_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 64) "denied")
  (data (i32.const 80) "x-replier")
  (data (i32.const 96) "ran")
  (data (i32.const 112) "\00\00\00\00")
{WAT_FILTER_BASICS}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (call $reply (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 64) (i32.const 6)
          (i32.const 112) (i32.const 4) (i32.const -1))
      (then unreachable))
    (i32.const 1))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 80) (i32.const 9) (i32.const 96) (i32.const 3)))
    (i32.const 0)))
"#
    )
}

/// Lets requests through; on response headers adds `x-tagger: ran`.
fn tagger_wat() -> String {
    format!(
        r#"(module
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 80) "x-tagger")
  (data (i32.const 96) "ran")
{WAT_FILTER_BASICS}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 80) (i32.const 8) (i32.const 96) (i32.const 3)))
    (i32.const 0)))
"#
    )
}

#[tokio::test]
async fn a_local_reply_runs_the_response_callbacks_as_in_envoy() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway_with_plugins(
        &[&up],
        &[("tagger", &tagger_wat()), ("replier", &replier_wat())],
    )
    .await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["x-replier"],
        "ran",
        "the replying filter's own response callback"
    );
    assert_eq!(
        response.headers()["x-tagger"],
        "ran",
        "an earlier filter's response callback"
    );
    assert_eq!(response.text().await?, "denied");
    assert_eq!(up.hits(), 0, "the upstream was never asked");
    Ok(())
}

/// The filter basics with Higress's ABI version marker instead of 0.2.1's.
fn higress_basics() -> String {
    WAT_FILTER_BASICS.replace("proxy_abi_version_0_2_1", "proxy_abi_version_0_2_100")
}

/// A module marked `proxy_abi_version_0_2_100`, as Higress's Go SDK builds
/// every plugin; adds `x-abi: 0.2.100` to each request.
fn higress_abi_wat() -> String {
    format!(
        r#"(module
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 64) "x-abi")
  (data (i32.const 80) "0.2.100")
{}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 64) (i32.const 5) (i32.const 80) (i32.const 7)))
    (i32.const 0)))
"#,
        higress_basics()
    )
}

#[tokio::test]
async fn a_module_of_higress_abi_0_2_100_loads_and_runs() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway_with_plugins(&[&up], &[("higress", &higress_abi_wat())]).await?;
    assert_eq!(echoed_headers(&gw).await?["x-abi"], json!(["0.2.100"]));
    Ok(())
}

/// Calls the foreign functions Higress's plugin library calls and reports
/// each status in a request header: `get_log_level` (`x-log-level-status`,
/// the result's length in `x-log-level-len`, and in `x-log-level-same` 01
/// when it equals what `proxy_get_log_level` gives),
/// `set_global_max_requests_per_io_cycle` with 8 bytes (`x-cap-status`) and
/// with 4 (`x-cap-short-status`), `inject_encoded_data_to_filter_chain_on_header`
/// (`x-unknown-status`), and the `proxy_inject_encoded_data_to_filter_chain`
/// import (`x-inject-status`).
fn higress_foreign_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_log_level" (func $level (param i32) (result i32)))
  (import "env" "proxy_inject_encoded_data_to_filter_chain" (func $inject (param i32 i32 i32) (result i32)))
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 64) "get_log_level")
  (data (i32.const 80) "set_global_max_requests_per_io_cycle")
  (data (i32.const 128) "inject_encoded_data_to_filter_chain_on_header")
  (data (i32.const 176) "\14\00\00\00\00\00\00\00")
  (data (i32.const 200) "x-log-level-status")
  (data (i32.const 224) "x-log-level-len")
  (data (i32.const 240) "x-log-level-same")
  (data (i32.const 260) "x-cap-status")
  (data (i32.const 280) "x-cap-short-status")
  (data (i32.const 300) "x-unknown-status")
  (data (i32.const 320) "x-inject-status")
{}{WAT_NUMBER_HEADER}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $number (i32.const 200) (i32.const 18)
      (call $foreign (i32.const 64) (i32.const 13) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 4)))
    (call $number (i32.const 224) (i32.const 15) (i32.load (i32.const 4)))
    (drop (call $level (i32.const 8)))
    (call $number (i32.const 240) (i32.const 16)
      (i32.eq (i32.load (i32.load (i32.const 0))) (i32.load (i32.const 8))))
    (call $number (i32.const 260) (i32.const 12)
      (call $foreign (i32.const 80) (i32.const 36) (i32.const 176) (i32.const 8) (i32.const 0) (i32.const 4)))
    (call $number (i32.const 280) (i32.const 18)
      (call $foreign (i32.const 80) (i32.const 36) (i32.const 176) (i32.const 4) (i32.const 0) (i32.const 4)))
    (call $number (i32.const 300) (i32.const 16)
      (call $foreign (i32.const 128) (i32.const 45) (i32.const 176) (i32.const 0) (i32.const 0) (i32.const 4)))
    (call $number (i32.const 320) (i32.const 15)
      (call $inject (i32.const 176) (i32.const 1) (i32.const 1)))
    (i32.const 0)))
"#,
        higress_basics()
    )
}

#[tokio::test]
async fn higress_foreign_functions_answer_as_its_plugin_library_expects() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway_with_plugins(&[&up], &[("foreign", &higress_foreign_wat())]).await?;
    let headers = echoed_headers(&gw).await?;
    assert_eq!(headers["x-log-level-status"], json!(["00"]));
    assert_eq!(headers["x-log-level-len"], json!(["04"]), "a u32");
    assert_eq!(
        headers["x-log-level-same"],
        json!(["01"]),
        "the level proxy_get_log_level gives"
    );
    assert_eq!(headers["x-cap-status"], json!(["00"]), "accepted");
    assert_eq!(
        headers["x-cap-short-status"],
        json!(["02"]),
        "BAD_ARGUMENT: not a u64"
    );
    assert_eq!(
        headers["x-unknown-status"],
        json!(["01"]),
        "NOT_FOUND, so the MCP wrapper falls back to answering at once"
    );
    assert_eq!(headers["x-inject-status"], json!(["12"]), "UNIMPLEMENTED");
    Ok(())
}

/// Reports the route's upstream hosts (`proxy_get_upstream_hosts`): its
/// status in `x-hosts-status`, each host's address in `x-upstream-host` and
/// its info in `x-upstream-host-info`. Then, when the request has `x-pick`,
/// makes that address the request's target
/// (`proxy_set_upstream_override_host`; the status in `x-override-status`).
fn higress_hosts_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_get_upstream_hosts" (func $hosts (param i32 i32) (result i32)))
  (import "env" "proxy_set_upstream_override_host" (func $override (param i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 64) "x-pick")
  (data (i32.const 80) "x-upstream-host")
  (data (i32.const 96) "x-upstream-host-info")
  (data (i32.const 128) "x-hosts-status")
  (data (i32.const 144) "x-override-status")
{}{WAT_NUMBER_HEADER}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $status i32) (local $n i32) (local $i i32) (local $lens i32) (local $data i32) (local $len i32)
    (local.set $status (call $hosts (i32.const 0) (i32.const 4)))
    (call $number (i32.const 128) (i32.const 14) (local.get $status))
    (if (i32.eqz (local.get $status))
      (then
        (local.set $n (i32.load (i32.load (i32.const 0))))
        (local.set $lens (i32.add (i32.load (i32.const 0)) (i32.const 4)))
        (local.set $data (i32.add (local.get $lens) (i32.mul (local.get $n) (i32.const 8))))
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $len (i32.load (i32.add (local.get $lens) (i32.mul (local.get $i) (i32.const 8)))))
            (drop (call $add (i32.const 0) (i32.const 80) (i32.const 15) (local.get $data) (local.get $len)))
            (local.set $data (i32.add (local.get $data) (i32.add (local.get $len) (i32.const 1))))
            (local.set $len (i32.load offset=4 (i32.add (local.get $lens) (i32.mul (local.get $i) (i32.const 8)))))
            (drop (call $add (i32.const 0) (i32.const 96) (i32.const 20) (local.get $data) (local.get $len)))
            (local.set $data (i32.add (local.get $data) (i32.add (local.get $len) (i32.const 1))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next)))))
    (if (i32.eqz (call $get (i32.const 0) (i32.const 64) (i32.const 6) (i32.const 8) (i32.const 12)))
      (then
        (call $number (i32.const 144) (i32.const 17)
          (call $override (i32.load (i32.const 8)) (i32.load (i32.const 12))))))
    (i32.const 0)))
"#,
        higress_basics()
    )
}

#[tokio::test]
async fn a_filter_reads_the_upstream_hosts_and_picks_one_as_in_higress() -> anyhow::Result<()> {
    let one = EchoUpstream::start("one").await?;
    let two = EchoUpstream::start("two").await?;
    let gw = gateway_with_plugins(&[&one, &two], &[("hosts", &higress_hosts_wat())]).await?;
    let headers = echoed_headers(&gw).await?;
    assert_eq!(headers["x-hosts-status"], json!(["00"]));
    assert_eq!(
        headers["x-upstream-host"],
        json!([one.addr.to_string(), two.addr.to_string()])
    );
    assert_eq!(
        headers["x-upstream-host-info"],
        json!([
            r#"{"health_status":"Healthy"}"#,
            r#"{"health_status":"Healthy"}"#
        ])
    );
    assert!(headers.get("x-override-status").is_none());

    let client = http1_client();
    for _ in 0..4 {
        let response = client
            .get(gw.url("main", "/"))
            .header("x-pick", two.addr.to_string())
            .send()
            .await?;
        let echoed = json(response).await?;
        assert_eq!(echoed["headers"]["x-override-status"], json!(["00"]));
        assert_eq!(echoed["upstream"], "two", "the filter's pick, every time");
    }
    let response = client
        .get(gw.url("main", "/"))
        .header("x-pick", "127.0.0.1:1")
        .send()
        .await?;
    let echoed = json(response).await?;
    assert_eq!(
        echoed["headers"]["x-override-status"],
        json!(["02"]),
        "BAD_ARGUMENT: not a host of the route's upstream"
    );
    assert_eq!(one.hits() + two.hits(), 6, "every request was served");
    Ok(())
}

/// Copies the `response.code_details` property into response header
/// `x-code-details`.
fn code_details_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_get_property" (func $property (param i32 i32 i32 i32) (result i32)))
{ADD_HEADER_IMPORT}
  (memory (export "memory") 1)
  (data (i32.const 64) "response\00code_details")
  (data (i32.const 96) "x-code-details")
{WAT_FILTER_BASICS}  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (call $property (i32.const 64) (i32.const 21) (i32.const 0) (i32.const 4)))
      (then (drop (call $add (i32.const 2) (i32.const 96) (i32.const 14)
        (i32.load (i32.const 0)) (i32.load (i32.const 4))))))
    (i32.const 0)))
"#
    )
}

#[tokio::test]
async fn response_code_details_tells_an_upstream_answer_from_a_fixed_one() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins: [{{ name: details, file: details.wat, vms: 1 }}]
routes:
  - {{ name: fixed, match: {{ path: {{ prefix: /fixed }} }}, respond: {{ status: 200 }}, filters: [{{ plugin: details }}] }}
  - {{ name: r, upstream: echo, filters: [{{ plugin: details }}] }}
"#,
        up.addr
    );
    let gw = gateway_with_files(&yaml, &[("details.wat", &code_details_wat())]).await?;
    let client = http1_client();
    let response = client.get(gw.url("main", "/")).send().await?;
    assert_eq!(
        response.headers()["x-code-details"],
        "via_upstream",
        "what Higress's IsResponseFromUpstream checks"
    );
    let response = client.get(gw.url("main", "/fixed")).send().await?;
    assert_eq!(response.headers()["x-code-details"], "direct_response");
    Ok(())
}

/// A gateway running three SDK test filters on route `r`: `outer` adds
/// response header `x-order: outer`, `deny` answers 403 when the request has
/// `x-deny` (and adds `x-order: deny`), `inner` adds `x-order: inner`. The
/// route goes to `upstream`.
async fn three_filter_gateway(upstream: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: up, targets: ["{upstream}"] }}]
plugins: [{{ name: sdk, file: "{}", vms: 1 }}]
routes:
  - name: r
    upstream: up
    filters:
      - {{ plugin: sdk, config: {{ add_response_headers: [[x-order, outer]] }} }}
      - {{ plugin: sdk, config: {{ deny_when_header: x-deny, add_response_headers: [[x-order, deny]] }} }}
      - {{ plugin: sdk, config: {{ add_response_headers: [[x-order, inner]] }} }}
"#,
        test_filter_wasm()
    ))
    .await
}

/// The values of response header `name`, in order.
fn values(response: &reqwest::Response, name: &str) -> Vec<String> {
    response
        .headers()
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

#[tokio::test]
async fn the_response_goes_back_through_the_filters_in_reverse_order() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = three_filter_gateway(&up.addr.to_string()).await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        values(&response, "x-order"),
        ["inner", "deny", "outer"],
        "Envoy's encoder filters run in reverse order"
    );
    Ok(())
}

#[tokio::test]
async fn response_callbacks_run_on_a_local_reply_for_the_filters_the_request_reached()
-> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = three_filter_gateway(&up.addr.to_string()).await?;
    let response = http1_client()
        .get(gw.url("main", "/"))
        .header("x-deny", "1")
        .send()
        .await?;
    assert_eq!(response.status(), 403);
    assert_eq!(values(&response, "x-denied-by"), ["test-filter"]);
    assert_eq!(
        values(&response, "x-order"),
        ["deny", "outer"],
        "the replying filter and the one before it see the reply; the one after never saw the request"
    );
    assert_eq!(response.text().await?, "denied by filter");
    assert_eq!(up.hits(), 0, "a local reply never reaches the upstream");
    Ok(())
}

#[tokio::test]
async fn response_callbacks_run_on_weirs_own_error_when_the_upstream_is_down() -> anyhow::Result<()>
{
    let gw = three_filter_gateway(&dead_address().await?.to_string()).await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 502);
    assert_eq!(values(&response, "x-order"), ["inner", "deny", "outer"]);
    assert_eq!(values(&response, "content-type"), ["application/json"]);
    let body = json(response).await?;
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    Ok(())
}

/// Answers every request locally with `hello` and no headers.
fn plain_reply_wat() -> String {
    format!(
        r#"(module
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello")
{WAT_FILTER_BASICS}  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 5)
      (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1)))
"#
    )
}

#[tokio::test]
async fn a_local_reply_with_a_body_and_no_content_type_is_text_plain() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = gateway_with_plugins(&[&up], &[("hello", &plain_reply_wat())]).await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(values(&response, "content-type"), ["text/plain"]);
    assert_eq!(values(&response, "content-length"), ["5"]);
    assert_eq!(response.text().await?, "hello");
    Ok(())
}

#[tokio::test]
async fn filters_see_the_host_as_authority_only_and_x_forwarded_host_keeps_the_clients()
-> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins: [{{ name: sdk, file: "{}", vms: 1 }}]
routes:
  - name: r
    upstream: echo
    filters:
      - plugin: sdk
        config:
          copy_request_header: [host, x-host-seen]
          replace_request_headers: [[":authority", "internal.example"]]
"#,
        up.addr,
        test_filter_wasm()
    ))
    .await?;
    let response = http1_client()
        .get(gw.url("main", "/"))
        .header("host", "shop.example.com")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let headers = json(response).await?["headers"].clone();
    assert_eq!(
        headers["x-host-seen"],
        json!(["<absent>"]),
        "over HTTP/1 as over HTTP/2 the map has :authority and no host"
    );
    assert_eq!(headers["host"], json!(["internal.example"]));
    assert_eq!(headers["x-forwarded-host"], json!(["shop.example.com"]));
    Ok(())
}

#[tokio::test]
async fn route_and_upstream_metadata_xds_names_and_filter_state_read_as_in_envoy()
-> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - name: echo
    targets: ["{}"]
    metadata: {{ weir: {{ tier: gold, weight: 5, zones: [a, b] }} }}
plugins: [{{ name: sdk, file: "{}", vms: 1 }}]
routes:
  - name: checkout
    upstream: echo
    metadata: {{ weir: {{ team: payments, canary: true }} }}
    filters:
      - plugin: sdk
        config:
          set_properties:
            - [[my_state], from-first]
            - [[metadata, filter_metadata, envoy.filters.http.lua, who], first]
            - [[source, address], "203.0.113.9:1"]
      - plugin: sdk
        config:
          properties_to_request_headers:
            - route_metadata.filter_metadata.weir.team
            - route_metadata.filter_metadata.weir.canary
            - xds.route_metadata.filter_metadata.weir.team
            - cluster_metadata.filter_metadata.weir.tier
            - cluster_metadata.filter_metadata.weir.weight
            - cluster_metadata.filter_metadata.weir.zones
            - cluster_metadata.filter_metadata.weir.zones.1
            - route_metadata.filter_metadata.weir.missing
            - xds.route_name
            - xds.cluster_name
            - my_state
            - source.address
"#,
        up.addr,
        test_filter_wasm()
    ))
    .await?;
    let headers = echoed_headers(&gw).await?;
    let prop = |path: &str| headers[format!("x-prop-{path}")].clone();
    assert_eq!(
        prop("route_metadata.filter_metadata.weir.team"),
        json!(["payments"])
    );
    assert_eq!(
        prop("route_metadata.filter_metadata.weir.canary"),
        json!(["hex:01"]),
        "a boolean is one byte"
    );
    assert_eq!(
        prop("xds.route_metadata.filter_metadata.weir.team"),
        json!(["payments"])
    );
    assert_eq!(
        prop("cluster_metadata.filter_metadata.weir.tier"),
        json!(["gold"])
    );
    assert_eq!(
        prop("cluster_metadata.filter_metadata.weir.weight"),
        json!([format!(
            "hex:{}",
            5.0f64
                .to_le_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )]),
        "a number is an 8-byte little-endian double"
    );
    assert_eq!(
        prop("cluster_metadata.filter_metadata.weir.zones"),
        json!([r#"["a","b"]"#])
    );
    assert_eq!(
        prop("cluster_metadata.filter_metadata.weir.zones.1"),
        json!(["b"])
    );
    assert_eq!(
        prop("route_metadata.filter_metadata.weir.missing"),
        json!(["<none>"])
    );
    assert_eq!(prop("xds.route_name"), json!(["checkout"]));
    assert_eq!(prop("xds.cluster_name"), json!(["echo"]));
    assert_eq!(
        prop("my_state"),
        json!(["from-first"]),
        "filter state reaches later filters"
    );
    assert!(
        prop("source.address")[0]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "a filter cannot forge an attribute for later filters: {}",
        prop("source.address")
    );
    Ok(())
}

#[tokio::test]
async fn metadata_that_is_not_a_mapping_of_namespaces_is_rejected_with_its_line()
-> anyhow::Result<()> {
    let yaml = r#"apiVersion: weir/v1
listeners: [{ name: main, address: 127.0.0.1:0 }]
routes:
  - name: r
    respond: { status: 200 }
    metadata:
      weir: just-a-string
"#;
    let error = TestGateway::from_yaml(yaml)
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        error.contains("7:13") && error.contains("metadata namespace `weir` must be a mapping"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn plugins_of_one_vm_id_share_shared_data_and_others_do_not() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins:
  - {{ name: writer, file: "{wasm}", vms: 1, vm_id: team }}
  - {{ name: reader, file: "{wasm}", vms: 1, vm_id: team }}
  - {{ name: stranger, file: "{wasm}", vms: 1 }}
routes:
  - name: team
    match: {{ path: {{ prefix: /team }} }}
    upstream: echo
    filters:
      - {{ plugin: writer, config: {{ shared_set: [colour, blue] }} }}
      - {{ plugin: reader, config: {{ shared_get: colour, properties_to_request_headers: [plugin_vm_id] }} }}
  - name: other
    match: {{ path: {{ prefix: /other }} }}
    upstream: echo
    filters:
      - {{ plugin: writer, config: {{ shared_set: [colour, blue] }} }}
      - {{ plugin: stranger, config: {{ shared_get: colour, properties_to_request_headers: [plugin_vm_id] }} }}
"#,
        up.addr,
        wasm = test_filter_wasm()
    ))
    .await?;
    let client = http1_client();
    for (path, shared, vm_id) in [("/team", "blue", "team"), ("/other", "<none>", "stranger")] {
        let response = client.get(gw.url("main", path)).send().await?;
        let headers = json(response).await?["headers"].clone();
        assert_eq!(headers["x-shared"], json!([shared]), "{path}");
        assert_eq!(headers["x-prop-plugin_vm_id"], json!([vm_id]), "{path}");
    }
    Ok(())
}
