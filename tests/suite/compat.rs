//! Envoy compatibility: where the Proxy-Wasm ABI text is silent or loose, a
//! filter must see on Weir what it sees on Envoy. Each test drives a filter of
//! our own (WAT, or the SDK test filter) through the gateway and checks the
//! behaviour Envoy has (`PLUGIN_GUIDE.md`, "Compatibility with Envoy").

use std::time::{Duration, Instant};

use serde_json::json;
use weir_tests::{
    EchoUpstream, TestGateway, WAT_ABI_AND_ALLOCATOR, WAT_FILTER_BASICS, http1_client, json,
    test_filter_wasm,
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
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins: [{{ name: poll, file: poll.wat, vms: 1 }}]
routes: [{{ name: r, upstream: echo, filters: [{{ plugin: poll }}] }}]
"#,
        up.addr
    );
    let gw = gateway_with_files(&yaml, &[("poll.wat", &poll_wat())]).await?;
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
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins:
  - {{ name: owner, file: owner.wat, vms: 1 }}
  - {{ name: stranger, file: stranger.wat, vms: 1 }}
routes: [{{ name: r, upstream: echo, filters: [{{ plugin: stranger }}, {{ plugin: owner }}] }}]
"#,
        up.addr
    );
    let gw = gateway_with_files(
        &yaml,
        &[
            ("owner.wat", &queue_owner_wat()),
            ("stranger.wat", &queue_stranger_wat()),
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
