//! Hostile filters (WAT): each misbehaviour fails only its own request, the
//! broken VM is replaced, and the next request is served normally.
//!
//! The filters misbehave only on requests with more than 20 headers (or, for
//! the draining tests, a marker header), so one test can send a hostile
//! request and then a normal one. The host-call filters (at the end) also
//! check that a plain route on the same gateway keeps answering while they
//! run, and that resident memory stays put.

use std::time::{Duration, Instant};

use weir_tests::{
    EchoUpstream, TestGateway, WAT_FILTER_BASICS, captured_logs, eventually, http1_client, json,
    resident_bytes,
};

/// A filter whose phases run `misbehave` once armed by a request with many headers.
fn hostile_wat(phase: &str, misbehave: &str) -> String {
    let at = |p: &str| if p == phase { misbehave } else { "" };
    format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-a")
  (global $armed (mut i32) (i32.const 0))
{WAT_FILTER_BASICS}  (func (export "proxy_on_request_headers") (param i32) (param $n i32) (param i32) (result i32)
    (if (i32.gt_u (local.get $n) (i32.const 20))
      (then (global.set $armed (i32.const 1)) {}))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (if (global.get $armed) (then {})) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (global.get $armed) (then {})) (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    (if (global.get $armed) (then {})) (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (if (global.get $armed) (then {}))))
"#,
        at("request_headers"),
        at("request_body"),
        at("response_headers"),
        at("response_body"),
        at("log"),
    )
}

const TRAP: &str = "unreachable";
const SPIN: &str = "(loop $spin (br $spin))";
/// Grows memory 1 MiB at a time until the cap refuses, then traps.
const MEMORY_BOMB: &str =
    "(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
/// Passes pointers far outside memory; the host must answer INVALID_MEMORY_ACCESS (6).
const BAD_POINTERS: &str = "(if (i32.ne (call $log (i32.const 2) (i32.const -16) (i32.const 1000)) (i32.const 6)) (then unreachable))";

/// Calls the host where the ABI says no; traps unless each answer is the ABI's code:
/// response headers during the request phase → BAD_ARGUMENT (2), an unknown stream
/// type → BAD_ARGUMENT (2), the request body during the headers phase → NOT_FOUND (1).
const WRONG_PHASE: &str = "(if (i32.ne (call $add (i32.const 2) (i32.const 16) (i32.const 3) (i32.const 16) (i32.const 3)) (i32.const 2)) (then unreachable))
  (if (i32.ne (call $continue (i32.const 9)) (i32.const 2)) (then unreachable))
  (if (i32.ne (call $buffer (i32.const 0) (i32.const 0) (i32.const 10) (i32.const 64) (i32.const 68)) (i32.const 1)) (then unreachable))";

async fn hostile_gateway(
    up: &EchoUpstream,
    wat: &str,
    on_error: &str,
) -> anyhow::Result<TestGateway> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("hostile.wat"), wat)?;
    TestGateway::from_yaml_in(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins:
  - name: hostile
    file: hostile.wat
    vms: 1
    on_error: {on_error}
    limits: {{ memory: 4MiB, callback_deadline: 50ms }}
routes: [{{ name: r, upstream: echo, filters: [{{ plugin: hostile }}] }}]
"#,
            up.addr
        ),
        dir,
    )
    .await
}

/// A request that arms the hostile filter (more than 20 headers).
async fn hostile_request(gw: &TestGateway) -> anyhow::Result<reqwest::Response> {
    let mut request = http1_client().post(gw.url("main", "/")).body("payload");
    for i in 0..24 {
        request = request.header(format!("x-h{i}"), "1");
    }
    Ok(request.send().await?)
}

async fn normal_request(gw: &TestGateway) -> anyhow::Result<reqwest::StatusCode> {
    Ok(http1_client()
        .post(gw.url("main", "/"))
        .body("payload")
        .send()
        .await?
        .status())
}

/// Asserts the hostile request failed closed with a JSON 503 naming the plugin.
async fn assert_fails_closed(response: reqwest::Response, reason: &str) -> anyhow::Result<()> {
    assert_eq!(response.status(), 503);
    let body = json(response).await?;
    assert_eq!(body["error"]["code"], "plugin_failed");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("plugin `hostile` failed"), "{message}");
    assert!(
        message.contains(reason),
        "{message} should mention {reason}"
    );
    Ok(())
}

#[tokio::test]
async fn an_infinite_loop_hits_the_cpu_deadline() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = hostile_gateway(&up, &hostile_wat("request_headers", SPIN), "fail_closed").await?;
    assert_fails_closed(hostile_request(&gw).await?, "CPU deadline").await?;
    assert_eq!(up.hits(), 0);
    assert_eq!(
        normal_request(&gw).await?,
        200,
        "a fresh VM serves the next request"
    );
    assert_eq!(vm_failures(&gw, "deadline"), Some(1));
    assert_eq!(vm_failures(&gw, "trap"), None);
    assert_eq!(gw.metric(RESTARTS), Some(1));
    Ok(())
}

/// `weir_plugin_vm_restarts_total` of the hostile plugin.
const RESTARTS: &str = r#"weir_plugin_vm_restarts_total{plugin="hostile"}"#;

/// How many of the hostile plugin's VMs failed with `kind`, as `/metrics` says.
fn vm_failures(gw: &TestGateway, kind: &str) -> Option<i64> {
    gw.metric(&format!(
        r#"weir_plugin_vm_failures_total{{plugin="hostile",kind="{kind}"}}"#
    ))
}

#[tokio::test]
async fn a_memory_bomb_stops_at_the_cap() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = hostile_gateway(
        &up,
        &hostile_wat("request_headers", MEMORY_BOMB),
        "fail_closed",
    )
    .await?;
    assert_fails_closed(hostile_request(&gw).await?, "trapped").await?;
    assert_eq!(normal_request(&gw).await?, 200);
    assert_eq!(vm_failures(&gw, "out_of_memory"), Some(1));
    assert_eq!(
        vm_failures(&gw, "trap"),
        None,
        "a trap after a refused grow is out of memory"
    );
    assert_eq!(gw.metric(RESTARTS), Some(1));
    Ok(())
}

#[tokio::test]
async fn a_trap_in_any_phase_fails_only_its_own_request() -> anyhow::Result<()> {
    for phase in [
        "request_headers",
        "request_body",
        "response_headers",
        "response_body",
    ] {
        let up = EchoUpstream::start("echo").await?;
        let gw = hostile_gateway(&up, &hostile_wat(phase, TRAP), "fail_closed").await?;
        let response = hostile_request(&gw).await?;
        assert_eq!(response.status(), 503, "trap in {phase}");
        assert_fails_closed(response, "trapped").await?;
        assert_eq!(normal_request(&gw).await?, 200, "after a trap in {phase}");
        assert_eq!(normal_request(&gw).await?, 200, "after a trap in {phase}");
        assert_eq!(vm_failures(&gw, "trap"), Some(1), "{phase}");
        assert_eq!(gw.metric(RESTARTS), Some(1), "{phase}");
    }
    // A trap in on_log comes after the response: the request itself succeeded.
    let up = EchoUpstream::start("echo").await?;
    let gw = hostile_gateway(&up, &hostile_wat("log", TRAP), "fail_closed").await?;
    assert_eq!(hostile_request(&gw).await?.status(), 200);
    assert_eq!(normal_request(&gw).await?, 200);
    Ok(())
}

#[tokio::test]
async fn bad_pointers_get_a_status_code_not_a_crash() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = hostile_gateway(
        &up,
        &hostile_wat("request_headers", BAD_POINTERS),
        "fail_closed",
    )
    .await?;
    // The filter traps unless the host answered INVALID_MEMORY_ACCESS, so 200 proves the code.
    assert_eq!(hostile_request(&gw).await?.status(), 200);
    assert_eq!(normal_request(&gw).await?, 200);
    Ok(())
}

#[tokio::test]
async fn calls_in_the_wrong_phase_get_status_codes() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = hostile_gateway(
        &up,
        &hostile_wat("request_headers", WRONG_PHASE),
        "fail_closed",
    )
    .await?;
    assert_eq!(hostile_request(&gw).await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn fail_open_skips_the_broken_filter() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = hostile_gateway(&up, &hostile_wat("request_headers", TRAP), "fail_open").await?;
    assert_eq!(hostile_request(&gw).await?.status(), 200);
    assert_eq!(up.hits(), 1, "the request went on without the filter");
    assert_eq!(normal_request(&gw).await?, 200);
    Ok(())
}

/// Starts a gateway with `file` as a plugin and returns the start-up error.
async fn load_error(file_name: &str, contents: &[u8]) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join(file_name), contents)?;
    let yaml = format!(
        "apiVersion: weir/v1\nlisteners: [{{ name: main, address: 127.0.0.1:0 }}]\n\
         plugins: [{{ name: broken, file: {file_name} }}]\n\
         routes: [{{ name: r, respond: {{ body: x }}, filters: [{{ plugin: broken }}] }}]\n"
    );
    match TestGateway::from_yaml_in(&yaml, dir).await {
        Ok(_) => anyhow::bail!("{file_name} was accepted"),
        Err(e) => Ok(e.to_string()),
    }
}

#[tokio::test]
async fn modules_that_are_not_proxy_wasm_filters_are_rejected_at_load() -> anyhow::Result<()> {
    let garbage = load_error("garbage.wasm", b"\0asm\x01\0\0\0garbage").await?;
    assert!(
        garbage.contains("plugin `broken`: not a valid Wasm module"),
        "{garbage}"
    );

    let no_abi = load_error("no_abi.wat", b"(module (memory (export \"memory\") 1))").await?;
    assert!(
        no_abi.contains("exports no supported Proxy-Wasm ABI version"),
        "{no_abi}"
    );

    let unknown_import = load_error(
        "import.wat",
        br#"(module (import "env" "proxy_teleport" (func)) (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .await?;
    assert!(
        unknown_import.contains("imports `env.proxy_teleport`"),
        "{unknown_import}"
    );

    let vm_start_false = load_error(
        "refuses.wat",
        br#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))
            (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .await?;
    assert!(
        vm_start_false.contains("proxy_on_vm_start returned false"),
        "{vm_start_false}"
    );
    Ok(())
}

/// A filter that traps in `on_log` for requests carrying `x-trap-on-log`, and
/// answers every response with `x-vm: clean`, or `x-vm: marked` once its VM has
/// seen such a request. `x-vm` shows that `on_response_headers` ran, and on
/// which VM: a fresh one says `clean`.
const TRAP_ON_LOG_FOR_MARKED: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-trap-on-log")
  (data (i32.const 64) "x-vm")
  (data (i32.const 80) "marked")
  (data (i32.const 96) "clean")
  (global $marked (mut i32) (i32.const 0))
  (func $flag (param $ctx i32) (result i32)
    (i32.add (i32.const 4096) (i32.and (local.get $ctx) (i32.const 4095))))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 16384))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (local $is i32)
    (local.set $is (i32.eqz (call $get (i32.const 0) (i32.const 16) (i32.const 13) (i32.const 0) (i32.const 4))))
    (i32.store8 (call $flag (local.get $ctx)) (local.get $is))
    (if (local.get $is) (then (global.set $marked (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (global.get $marked)
      (then (drop (call $add (i32.const 2) (i32.const 64) (i32.const 4) (i32.const 80) (i32.const 6))))
      (else (drop (call $add (i32.const 2) (i32.const 64) (i32.const 4) (i32.const 96) (i32.const 5)))))
    (i32.const 0))
  (func (export "proxy_on_log") (param $ctx i32)
    (if (i32.load8_u (call $flag (local.get $ctx))) (then unreachable))))
"#;

/// Requests that wait `delay_ms` at the upstream, sent at once; the handles
/// answer (status, `x-vm`, error message) each.
fn slow_requests(
    gw: &TestGateway,
    count: usize,
    delay_ms: u64,
    marked: bool,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<(u16, String, String)>>> {
    (0..count)
        .map(|_| {
            let mut request = http1_client()
                .get(gw.url("main", "/"))
                .header("x-echo-delay-ms", delay_ms.to_string());
            if marked {
                request = request.header("x-trap-on-log", "1");
            }
            tokio::spawn(async move {
                let response = request.send().await?;
                let status = response.status().as_u16();
                let vm = response
                    .headers()
                    .get("x-vm")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                let text = response.text().await?;
                Ok((status, vm, text))
            })
        })
        .collect()
}

/// The `x-vm` header of a plain request (empty when the filter did not add it).
async fn vm_of_plain_request(gw: &TestGateway) -> anyhow::Result<(u16, String)> {
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    let vm = response
        .headers()
        .get("x-vm")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    Ok((response.status().as_u16(), vm))
}

/// Waits until the upstream has seen `hits` requests (they are in flight then).
async fn until_hits(up: &EchoUpstream, hits: usize) -> anyhow::Result<()> {
    let seen = eventually(Duration::from_secs(10), async || up.hits() >= hits).await;
    anyhow::ensure!(
        seen,
        "only {} of {hits} requests reached the upstream",
        up.hits()
    );
    Ok(())
}

#[tokio::test]
async fn a_trap_after_the_response_does_not_fail_other_streams_on_its_vm() -> anyhow::Result<()> {
    const INNOCENT: usize = 20;
    for on_error in ["fail_closed", "fail_open"] {
        let up = EchoUpstream::start("echo").await?;
        let gw = hostile_gateway(&up, TRAP_ON_LOG_FOR_MARKED, on_error).await?;
        // Bound to the one VM, waiting at the upstream while the VM fails.
        let innocent = slow_requests(&gw, INNOCENT, 3000, false);
        until_hits(&up, INNOCENT).await?;

        let (status, vm, _) = slow_requests(&gw, 1, 0, true).remove(0).await??;
        assert_eq!(
            (status, vm.as_str()),
            (200, "marked"),
            "{on_error}: the trap comes after its response"
        );
        // The trap in on_log replaced the VM for new streams: a fresh VM says `clean`.
        let mut fresh = (0, String::new());
        let replaced = eventually(Duration::from_secs(5), async || {
            fresh = vm_of_plain_request(&gw).await.unwrap_or_default();
            fresh.1 == "clean"
        })
        .await;
        assert!(
            replaced,
            "{on_error}: no fresh VM after the trap: {fresh:?}"
        );
        assert_eq!(fresh.0, 200);
        assert!(
            innocent.iter().all(|h| !h.is_finished()),
            "{on_error}: the innocent requests were still in flight when the VM failed"
        );

        for handle in innocent {
            let (status, vm, body) = handle.await??;
            assert_eq!(
                status, 200,
                "{on_error}: an innocent request failed: {body}"
            );
            assert_eq!(
                vm, "marked",
                "{on_error}: on_response_headers ran for the innocent request, on its own (failed) VM"
            );
        }
        for _ in 0..3 {
            assert_eq!(vm_of_plain_request(&gw).await?, (200, "clean".to_owned()));
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_draining_vm_that_fails_again_fails_its_remaining_streams_with_the_reason()
-> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let gw = hostile_gateway(&up, TRAP_ON_LOG_FOR_MARKED, "fail_closed").await?;
    let innocent = slow_requests(&gw, 5, 3000, false);
    // A second marked request, on the same VM, whose on_log traps while it drains.
    let second = slow_requests(&gw, 1, 500, true);
    until_hits(&up, 6).await?;
    let (status, _, _) = slow_requests(&gw, 1, 0, true).remove(0).await??;
    assert_eq!(status, 200);
    let (status, vm, _) = second.into_iter().next().expect("one request").await??;
    assert_eq!(
        (status, vm.as_str()),
        (200, "marked"),
        "it finished on the draining VM"
    );

    for handle in innocent {
        let (status, _, body) = handle.await??;
        assert_eq!(status, 503, "{body}");
        let error: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(error["error"]["code"], "plugin_failed");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("failed again while draining"),
            "the reason names the second failure: {message}"
        );
    }
    assert_eq!(vm_of_plain_request(&gw).await?, (200, "clean".to_owned()));
    Ok(())
}

// Host calls: a guest must not exhaust the host through them. Each filter below
// runs its body once per hostile request, notes each host call's status, and
// hands the list to the upstream as request header `x-abi` (the echo upstream
// returns it), so the tests read the exact ABI answers.

/// A filter that runs `body` on requests with more than 20 headers, then adds
/// `x-abi: <status>,<status>,…` (every `$note`d value) to the request.
fn host_call_wat(body: &str, data: &str) -> String {
    format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local_reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-abi")
  (data (i32.const 32) "{data}")
  (global $out (mut i32) (i32.const 512))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  ;; Appends the decimal of $v (below 10 000 000) and a comma at $out.
  (func $note (param $v i32)
    (local $div i32) (local $started i32)
    (local.set $div (i32.const 1000000))
    (loop $digit
      (if (i32.or (local.get $started)
            (i32.or (i32.ge_u (local.get $v) (local.get $div)) (i32.eq (local.get $div) (i32.const 1))))
        (then
          (i32.store8 (global.get $out) (i32.add (i32.const 48) (i32.div_u (local.get $v) (local.get $div))))
          (global.set $out (i32.add (global.get $out) (i32.const 1)))
          (local.set $started (i32.const 1))))
      (local.set $v (i32.rem_u (local.get $v) (local.get $div)))
      (local.set $div (i32.div_u (local.get $div) (i32.const 10)))
      (br_if $digit (local.get $div)))
    (i32.store8 (global.get $out) (i32.const 44))
    (global.set $out (i32.add (global.get $out) (i32.const 1))))
  ;; Four ASCII letters (a little-endian i32) naming $i below 26^3.
  (func $letters (param $i i32) (result i32)
    (i32.add (i32.const 0x41414141)
      (i32.add (i32.rem_u (local.get $i) (i32.const 26))
        (i32.add
          (i32.shl (i32.rem_u (i32.div_u (local.get $i) (i32.const 26)) (i32.const 26)) (i32.const 8))
          (i32.shl (i32.div_u (local.get $i) (i32.const 676)) (i32.const 16))))))
  ;; Grows memory to $pages pages.
  (func $grow_to (param $pages i32)
    (if (i32.lt_u (memory.size) (local.get $pages))
      (then (drop (memory.grow (i32.sub (local.get $pages) (memory.size)))))))
  (func (export "proxy_on_request_headers") (param i32) (param $n i32) (param i32) (result i32)
    (local $i i32) (local $ok i32)
    (if (i32.gt_u (local.get $n) (i32.const 20))
      (then
        (global.set $out (i32.const 512))
        {body}
        (drop (call $add (i32.const 0) (i32.const 16) (i32.const 5)
          (i32.const 512) (i32.sub (global.get $out) (i32.const 513))))))
    (i32.const 0)))
"#
    )
}

/// A gateway with a `plain` route (no filter, under `/plain`) and a route
/// through plugin `name` (one VM, 8 MiB) with `limits` added to its limits.
async fn host_call_gateway(
    up: &EchoUpstream,
    name: &str,
    wat: &str,
    limits: &str,
) -> anyhow::Result<TestGateway> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("hostile.wat"), wat)?;
    TestGateway::from_yaml_in(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins:
  - name: {name}
    file: hostile.wat
    vms: 1
    limits: {{ memory: 8MiB{limits} }}
routes:
  - {{ name: plain, match: {{ path: {{ prefix: /plain }} }}, upstream: echo }}
  - {{ name: r, upstream: echo, filters: [{{ plugin: {name} }}] }}
"#,
            up.addr
        ),
        dir,
    )
    .await
}

/// Sends a hostile request to `url`.
async fn hostile_request_to(url: &str) -> anyhow::Result<reqwest::Response> {
    hostile_request_with(&http1_client(), url).await
}

/// Sends a hostile request to `url` with `client` (building a client takes
/// longer than a deadline, so timed requests reuse one).
async fn hostile_request_with(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<reqwest::Response> {
    let mut request = client.post(url).body("payload");
    for i in 0..24 {
        request = request.header(format!("x-h{i}"), "1");
    }
    Ok(request.send().await?)
}

/// A hostile request: its status, its JSON body and how long it took.
async fn timed_hostile_request(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value, Duration)> {
    let started = Instant::now();
    let response = hostile_request_with(client, url).await?;
    let took = started.elapsed();
    let status = response.status();
    Ok((status, json(response).await?, took))
}

/// Sends a hostile request; it must pass (200) and the filter's `x-abi` list comes back.
async fn abi_statuses(url: &str) -> anyhow::Result<String> {
    let response = hostile_request_to(url).await?;
    let status = response.status();
    let body = json(response).await?;
    anyhow::ensure!(status == 200, "hostile request answered {status}: {body}");
    Ok(body["headers"]["x-abi"][0]
        .as_str()
        .unwrap_or("(no x-abi header)")
        .to_owned())
}

/// Held by each host-call test for its whole run, so their resident-memory
/// measurements do not see each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Budget for a plain request while hostile ones run.
const PLAIN_BUDGET: Duration = Duration::from_secs(2);

/// Runs `rounds` of `hostile` one after another on another task while plain
/// requests keep going; every plain request must answer 200 within
/// [`PLAIN_BUDGET`], during the hostile rounds and after them. Returns the
/// hostile rounds' results and how many plain requests ran meanwhile.
async fn while_plain_route_answers<T, F, Fut>(
    gw: &TestGateway,
    rounds: usize,
    hostile: F,
) -> anyhow::Result<(Vec<T>, usize)>
where
    T: Send + 'static,
    F: Fn(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send,
{
    let url = gw.url("main", "/");
    let task = tokio::spawn(async move {
        let mut results = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            results.push(hostile(url.clone()).await?);
        }
        anyhow::Ok(results)
    });
    let plain = gw.url("main", "/plain");
    let client = http1_client();
    let mut meanwhile = 0;
    loop {
        let finished = task.is_finished();
        let started = Instant::now();
        let status = tokio::time::timeout(PLAIN_BUDGET, client.get(&plain).send())
            .await
            .map_err(|_| anyhow::anyhow!("a plain request took over {PLAIN_BUDGET:?}"))??
            .status();
        assert_eq!(status, 200, "plain route after {:?}", started.elapsed());
        if finished {
            break;
        }
        meanwhile += 1;
    }
    Ok((task.await??, meanwhile))
}

/// Asserts resident memory grew by less than `limit` since `before`.
fn assert_resident_growth_below(before: u64, limit: u64, what: &str) {
    let after = resident_bytes();
    let grown = after.saturating_sub(before);
    assert!(
        grown < limit,
        "{what}: resident memory grew by {} MiB (limit {} MiB)",
        grown >> 20,
        limit >> 20
    );
}

/// Resident growth allowed while hostile filters run (the unbounded host
/// calls grew it by 1–6 GB).
const RESIDENT_LIMIT: u64 = 256 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_get_is_bounded_and_fills_in_place() -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let up = EchoUpstream::start("echo").await?;
    // 1 GiB and -1 lie outside memory (EFAULT 21), 2 MiB is over the cap
    // (EINVAL 28), 1 MiB inside memory is served (0).
    let body = "(call $grow_to (i32.const 48))
        (call $note (call $random (i32.const 1024) (i32.const 1073741824)))
        (call $note (call $random (i32.const 1024) (i32.const -1)))
        (call $note (call $random (i32.const 0) (i32.const 2097152)))
        (call $note (call $random (i32.const 65536) (i32.const 1048576)))";
    let gw = host_call_gateway(&up, "hostile-random", &host_call_wat(body, ""), "").await?;
    let before = resident_bytes();
    let (statuses, _) = while_plain_route_answers(&gw, 20, async |url| {
        let started = Instant::now();
        let statuses = abi_statuses(&url).await?;
        anyhow::Ok((statuses, started.elapsed()))
    })
    .await?;
    for (abi, took) in statuses {
        assert_eq!(abi, "21,21,28,0");
        assert!(took < PLAIN_BUDGET, "a hostile request took {took:?}");
    }
    assert_resident_growth_below(before, RESIDENT_LIMIT, "random_get");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_write_takes_a_bounded_short_write() -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = captured_logs("hostile-fd-write");
    let up = EchoUpstream::start("echo").await?;
    // 256 iovecs of 4 MiB each (1 GiB): a short write of 64 KiB (0, then
    // nwritten 65536); 1025 iovecs: EINVAL (28); an iovec past the end of
    // memory: EFAULT (21); fd 3: EBADF (8).
    let body = "(call $grow_to (i32.const 80))
        (local.set $i (i32.const 0))
        (loop $fill
          (i32.store (i32.add (i32.const 1024) (i32.mul (local.get $i) (i32.const 8))) (i32.const 0))
          (i32.store (i32.add (i32.const 1028) (i32.mul (local.get $i) (i32.const 8))) (i32.const 4194304))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $fill (i32.lt_u (local.get $i) (i32.const 1025))))
        (call $note (call $fd_write (i32.const 1) (i32.const 1024) (i32.const 256) (i32.const 0)))
        (call $note (i32.load (i32.const 0)))
        (call $note (call $fd_write (i32.const 1) (i32.const 1024) (i32.const 1025) (i32.const 0)))
        (i32.store (i32.const 1028) (i32.const 8388608))
        (call $note (call $fd_write (i32.const 2) (i32.const 1024) (i32.const 1) (i32.const 0)))
        (call $note (call $fd_write (i32.const 3) (i32.const 1024) (i32.const 1) (i32.const 0)))";
    let gw = host_call_gateway(&up, "hostile-fd-write", &host_call_wat(body, ""), "").await?;
    let before = resident_bytes();
    let (statuses, _) =
        while_plain_route_answers(&gw, 20, async |url| abi_statuses(&url).await).await?;
    for abi in statuses {
        assert_eq!(abi, "0,65536,28,21,8");
    }
    assert_resident_growth_below(before, RESIDENT_LIMIT, "fd_write");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_loop_stops_at_its_deadline() -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Logging on (so each call formats a line), but not kept by the capture.
    let _ = captured_logs("loop-log");
    let up = EchoUpstream::start("echo").await?;
    let body = "(loop $spin
          (drop (call $log (i32.const 3) (i32.const 32) (i32.const 64)))
          (br $spin))";
    let wat = host_call_wat(body, &format!("looping-log {}", "x".repeat(52)));
    let gw = host_call_gateway(&up, "loop-log", &wat, ", callback_deadline: 100ms").await?;
    let client = http1_client();
    let (outcomes, _) = while_plain_route_answers(&gw, 5, move |url| {
        let client = client.clone();
        async move { timed_hostile_request(&client, &url).await }
    })
    .await?;
    for (status, body, took) in outcomes {
        assert_eq!(status, 503);
        assert_eq!(body["error"]["code"], "plugin_failed");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("plugin `loop-log` failed: exceeded its CPU deadline"),
            "{message}"
        );
        // The unbounded calls overran a 100ms deadline five times over.
        assert!(
            took < Duration::from_millis(250),
            "the request took {took:?} with a 100ms deadline"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_calls_without_a_loop_stop_at_the_deadline() -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let up = EchoUpstream::start("echo").await?;
    // A thousand 1 MiB random_get calls in straight-line code: no loop for the
    // epoch interrupt to stop, so only the host calls' own check can; each
    // takes milliseconds, so together they overrun a 100ms deadline many times.
    let body = "(call $grow_to (i32.const 32))\n".to_owned()
        + &"(drop (call $random (i32.const 65536) (i32.const 1048576)))\n".repeat(1000);
    let gw = host_call_gateway(
        &up,
        "straight-line",
        &host_call_wat(&body, ""),
        ", callback_deadline: 100ms",
    )
    .await?;
    let client = http1_client();
    let (outcomes, _) = while_plain_route_answers(&gw, 3, move |url| {
        let client = client.clone();
        async move { timed_hostile_request(&client, &url).await }
    })
    .await?;
    for (status, body, took) in outcomes {
        assert_eq!(status, 503);
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(
            message,
            "plugin `straight-line` failed: exceeded its CPU deadline (during host call `random_get`)"
        );
        assert!(
            took < Duration::from_millis(300),
            "the request took {took:?} with a 100ms deadline"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_bytes_over_the_rate_are_dropped_with_one_warning() -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = captured_logs("hostile-log-rate");
    let up = EchoUpstream::start("echo").await?;
    // Ten 250-byte messages against 1000 bytes per second: four are logged,
    // every call answers OK (the Rust SDK traps on anything else).
    let body = "(local.set $i (i32.const 0))
        (loop $ten
          (call $note (call $log (i32.const 3) (i32.const 32) (i32.const 250)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $ten (i32.lt_u (local.get $i) (i32.const 10))))";
    let message = format!("hostile-log-rate-message {}", "x".repeat(225));
    let gw = host_call_gateway(
        &up,
        "hostile-log-rate",
        &host_call_wat(body, &message),
        ", log_bytes_per_second: 1000",
    )
    .await?;
    let url = gw.url("main", "/");
    assert_eq!(abi_statuses(&url).await?, "0,0,0,0,0,0,0,0,0,0");
    assert_eq!(captured_logs("hostile-log-rate-message").len(), 4);
    let (statuses, _) =
        while_plain_route_answers(&gw, 5, async |url| abi_statuses(&url).await).await?;
    assert!(statuses.iter().all(|s| s == "0,0,0,0,0,0,0,0,0,0"));
    let warnings = captured_logs("plugin `hostile-log-rate` hit its `log_bytes_per_second` quota");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_defines_at_most_its_metric_quota() -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = captured_logs("hostile-metrics");
    let up = EchoUpstream::start("echo").await?;
    // 1000 new names against `metrics: 3`: 3 are defined, the rest answer
    // BAD_ARGUMENT; a defined name is still found (0).
    let body = "(local.set $i (i32.const 0))
        (local.set $ok (i32.const 0))
        (loop $names
          (i32.store (i32.const 32) (call $letters (local.get $i)))
          (if (i32.eqz (call $define_metric (i32.const 0) (i32.const 32) (i32.const 4) (i32.const 8)))
            (then (local.set $ok (i32.add (local.get $ok) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $names (i32.lt_u (local.get $i) (i32.const 1000))))
        (call $note (local.get $ok))
        (i32.store (i32.const 32) (call $letters (i32.const 0)))
        (call $note (call $define_metric (i32.const 0) (i32.const 32) (i32.const 4) (i32.const 8)))
        (i32.store (i32.const 32) (call $letters (i32.const 17000)))
        (call $note (call $define_metric (i32.const 0) (i32.const 32) (i32.const 4) (i32.const 8)))";
    let gw = host_call_gateway(
        &up,
        "hostile-metrics",
        &host_call_wat(body, ""),
        ", metrics: 3",
    )
    .await?;
    let url = gw.url("main", "/");
    assert_eq!(abi_statuses(&url).await?, "3,0,2");
    let (statuses, _) =
        while_plain_route_answers(&gw, 5, async |url| abi_statuses(&url).await).await?;
    assert!(statuses.iter().all(|s| s == "3,0,2"), "{statuses:?}");
    let warnings = captured_logs("plugin `hostile-metrics` hit its `metrics` quota");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_hold_at_most_their_byte_quota() -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = captured_logs("hostile-queues");
    let up = EchoUpstream::start("echo").await?;
    // `queues: 1, queue_bytes: 2MiB`: a second queue is refused (2); two 1 MiB
    // items fit, a third does not (2); an item over the 1 MiB cap is refused (2).
    let body = "(call $grow_to (i32.const 40))
        (call $note (call $register_queue (i32.const 32) (i32.const 1) (i32.const 4)))
        (call $note (call $register_queue (i32.const 33) (i32.const 1) (i32.const 8)))
        (call $note (call $enqueue (i32.load (i32.const 4)) (i32.const 65536) (i32.const 1048576)))
        (call $note (call $enqueue (i32.load (i32.const 4)) (i32.const 65536) (i32.const 1048576)))
        (call $note (call $enqueue (i32.load (i32.const 4)) (i32.const 65536) (i32.const 1048576)))
        (call $note (call $enqueue (i32.load (i32.const 4)) (i32.const 65536) (i32.const 1048577)))";
    let gw = host_call_gateway(
        &up,
        "hostile-queues",
        &host_call_wat(body, "ab"),
        ", queues: 1, queue_bytes: 2MiB",
    )
    .await?;
    let url = gw.url("main", "/");
    assert_eq!(abi_statuses(&url).await?, "0,2,0,0,2,2");
    let before = resident_bytes();
    let (statuses, _) =
        while_plain_route_answers(&gw, 36, async |url| abi_statuses(&url).await).await?;
    assert!(statuses.iter().all(|s| s == "0,2,2,2,2,2"), "{statuses:?}");
    assert_resident_growth_below(before, RESIDENT_LIMIT, "queues");
    for quota in ["queues", "queue_bytes"] {
        let warnings = captured_logs(&format!("plugin `hostile-queues` hit its `{quota}` quota"));
        assert_eq!(warnings.len(), 1, "{quota}: {warnings:#?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_data_holds_at_most_its_byte_quota() -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let _ = captured_logs("hostile-shared");
    let up = EchoUpstream::start("echo").await?;
    // `shared_data_bytes: 2MiB`: one 1 MiB value fits (0), a second does not
    // (2), replacing the first does (0), a value over the 1 MiB cap is refused (2).
    let body = "(call $grow_to (i32.const 40))
        (call $note (call $set_shared (i32.const 32) (i32.const 2) (i32.const 65536) (i32.const 1048576) (i32.const 0)))
        (call $note (call $set_shared (i32.const 34) (i32.const 2) (i32.const 65536) (i32.const 1048576) (i32.const 0)))
        (call $note (call $set_shared (i32.const 32) (i32.const 2) (i32.const 65536) (i32.const 1048576) (i32.const 0)))
        (call $note (call $set_shared (i32.const 34) (i32.const 2) (i32.const 65536) (i32.const 1048577) (i32.const 0)))";
    let gw = host_call_gateway(
        &up,
        "hostile-shared",
        &host_call_wat(body, "k1k2"),
        ", shared_data_bytes: 2MiB",
    )
    .await?;
    let before = resident_bytes();
    let (statuses, _) =
        while_plain_route_answers(&gw, 36, async |url| abi_statuses(&url).await).await?;
    assert!(statuses.iter().all(|s| s == "0,2,0,2"), "{statuses:?}");
    assert_resident_growth_below(before, RESIDENT_LIMIT, "shared data");
    let warnings = captured_logs("plugin `hostile-shared` hit its `shared_data_bytes` quota");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_arguments_get_bad_argument_and_the_gateway_keeps_serving() -> anyhow::Result<()>
{
    let _alone = ONE_AT_A_TIME.lock().await;
    let up = EchoUpstream::start("echo").await?;
    // 4 MiB + 1 of `a` from 64 KiB on (memory: 72 pages, 4.5 MiB). Each
    // argument one byte over its cap answers BAD_ARGUMENT (2); where it is
    // cheap, the same call exactly at the cap is served:
    // - add/replace header: name over (HEADER_NAME 8 KiB), value over
    //   (HEADER_VALUE 64 KiB): 2; replace at both caps, then remove it: 0, 0;
    // - set_property: path over (PROPERTY_PATH 4 KiB), value over
    //   (PROPERTY_VALUE 64 KiB): 2; at both caps: 0;
    // - set_shared_data: key over (SHARED_DATA_KEY 4 KiB), value over
    //   (SHARED_DATA_VALUE 1 MiB): 2; at both caps: 0 (replaced each round);
    // - register a queue: 0; an item over QUEUE_ITEM (1 MiB): 2; at it: 0
    //   (six rounds hold 6 MiB of the default 16 MiB `queue_bytes`);
    // - http_call: a body over HTTP_CALL_BODY (4 MiB): 2; at it (a POST to
    //   the echo upstream, whose answer the filter ignores): 0;
    // - call_foreign_function: args over FOREIGN_ARGS (64 KiB) to a known and
    //   to an unknown function: 2, 2; at the cap, the unknown one is looked
    //   up: NOT_FOUND (1);
    // - send_local_response (last; one that succeeds ends the request): a body
    //   over LOCAL_REPLY_BODY (4 MiB), details over LOCAL_REPLY_DETAILS
    //   (4 KiB): 2, 2.
    // Not here: proxy_set_buffer_bytes past BODY_BYTES (64 MiB), since a span
    // must lie inside guest memory before its cap is considered, and these
    // VMs are limited to 8 MiB.
    let body = "(call $grow_to (i32.const 72))
        (memory.fill (i32.const 65536) (i32.const 97) (i32.const 4194305))
        (call $note (call $add (i32.const 0) (i32.const 65536) (i32.const 8193) (i32.const 65536) (i32.const 1)))
        (call $note (call $add (i32.const 0) (i32.const 65536) (i32.const 1) (i32.const 65536) (i32.const 65537)))
        (call $note (call $replace (i32.const 0) (i32.const 65536) (i32.const 8193) (i32.const 65536) (i32.const 1)))
        (call $note (call $replace (i32.const 0) (i32.const 65536) (i32.const 1) (i32.const 65536) (i32.const 65537)))
        (call $note (call $replace (i32.const 0) (i32.const 65536) (i32.const 8192) (i32.const 65536) (i32.const 65536)))
        (call $note (call $remove (i32.const 0) (i32.const 65536) (i32.const 8192)))
        (call $note (call $set_property (i32.const 65536) (i32.const 4097) (i32.const 65536) (i32.const 1)))
        (call $note (call $set_property (i32.const 65536) (i32.const 1) (i32.const 65536) (i32.const 65537)))
        (call $note (call $set_property (i32.const 65536) (i32.const 4096) (i32.const 65536) (i32.const 65536)))
        (call $note (call $set_shared (i32.const 65536) (i32.const 4097) (i32.const 65536) (i32.const 1) (i32.const 0)))
        (call $note (call $set_shared (i32.const 33) (i32.const 1) (i32.const 65536) (i32.const 1048577) (i32.const 0)))
        (call $note (call $set_shared (i32.const 65536) (i32.const 4096) (i32.const 65536) (i32.const 1048576) (i32.const 0)))
        (call $note (call $register_queue (i32.const 32) (i32.const 1) (i32.const 4)))
        (call $note (call $enqueue (i32.load (i32.const 4)) (i32.const 65536) (i32.const 1048577)))
        (call $note (call $enqueue (i32.load (i32.const 4)) (i32.const 65536) (i32.const 1048576)))
        (call $note (call $http_call (i32.const 34) (i32.const 4) (i32.const 0) (i32.const 0)
          (i32.const 65536) (i32.const 4194305) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 8)))
        (call $note (call $http_call (i32.const 34) (i32.const 4) (i32.const 72) (i32.const 65)
          (i32.const 65536) (i32.const 4194304) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 8)))
        (call $note (call $foreign (i32.const 38) (i32.const 23) (i32.const 65536) (i32.const 65537) (i32.const 24) (i32.const 28)))
        (call $note (call $foreign (i32.const 61) (i32.const 9) (i32.const 65536) (i32.const 65537) (i32.const 24) (i32.const 28)))
        (call $note (call $foreign (i32.const 61) (i32.const 9) (i32.const 65536) (i32.const 65536) (i32.const 24) (i32.const 28)))
        (call $note (call $local_reply (i32.const 200) (i32.const 0) (i32.const 0)
          (i32.const 65536) (i32.const 4194305) (i32.const 0) (i32.const 0) (i32.const -1)))
        (call $note (call $local_reply (i32.const 200) (i32.const 65536) (i32.const 4097)
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))";
    // At 32: queue `q`, key `k`, upstream `echo`, a known and an unknown
    // foreign function; at 72: the callout's headers (`:method POST`,
    // `:path /`, `:authority echo`) as a Proxy-Wasm map.
    let data = concat!(
        "qkechoweir.shared_data_deleteweir.none--",
        r"\03\00\00\00\07\00\00\00\04\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\04\00\00\00",
        r":method\00POST\00:path\00/\00:authority\00echo\00",
    );
    let gw = host_call_gateway(&up, "hostile-caps", &host_call_wat(body, data), "").await?;
    let expected = "2,2,2,2,0,0,2,2,0,2,2,0,0,2,0,2,0,2,2,1,2,2";
    let url = gw.url("main", "/");
    assert_eq!(abi_statuses(&url).await?, expected);
    let before = resident_bytes();
    let (statuses, _) =
        while_plain_route_answers(&gw, 5, async |url| abi_statuses(&url).await).await?;
    assert!(statuses.iter().all(|s| s == expected), "{statuses:?}");
    assert_resident_growth_below(before, RESIDENT_LIMIT, "oversized arguments");
    // A normal request afterwards passes the filter untouched.
    let response = http1_client().get(&url).send().await?;
    assert_eq!(response.status(), 200);
    let body = json(response).await?;
    assert!(body["headers"]["x-abi"].is_null(), "{body}");
    Ok(())
}
