//! Hostile filters (WAT): each misbehaviour fails only its own request, the
//! broken VM is replaced, and the next request is served normally.
//!
//! The filters misbehave only on requests with more than 20 headers (or, for
//! the draining tests, a marker header), so one test can send a hostile
//! request and then a normal one.

use std::time::Duration;

use weir_tests::{EchoUpstream, TestGateway, eventually, http1_client, json};

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
  (global $heap (mut i32) (i32.const 1024))
  (global $armed (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32) (param $n i32) (param i32) (result i32)
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
    Ok(())
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
