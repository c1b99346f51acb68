//! `weir plugin test`: one request through a filter, run by the real binary
//! on filters written here in WAT, checking what it prints and its exit code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A filter that logs `checking`, answers 403 (with `content-type:
/// text/plain` and body `denied`) when `:path` starts with `/private`, and
/// sets `x-checked: yes` on every response. `$check_token` traps when
/// `trap` is set, called from `proxy_on_request_headers`; with `pause`, the
/// request headers phase pauses and never resumes.
fn filter(trap: bool, pause: bool) -> Vec<u8> {
    let check = if trap { "(call $check_token)" } else { "" };
    let verdict = if pause { 1 } else { 0 };
    let wat = format!(
        r#"(module
        (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
        (import "env" "proxy_get_header_map_value"
            (func $get (param i32 i32 i32 i32 i32) (result i32)))
        (import "env" "proxy_replace_header_map_value"
            (func $replace (param i32 i32 i32 i32 i32) (result i32)))
        (import "env" "proxy_send_local_response"
            (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (global $next (mut i32) (i32.const 4096))
        ;; 0: "checking"  16: ":path"  32: "/private"  48: "x-checked"  64: "yes"  80: "denied"
        (data (i32.const 0) "checking")
        (data (i32.const 16) ":path")
        (data (i32.const 32) "/private")
        (data (i32.const 48) "x-checked")
        (data (i32.const 64) "yes")
        (data (i32.const 80) "denied")
        ;; 128: the local reply's headers, one pair: content-type: text/plain
        (data (i32.const 128) "\01\00\00\00\0c\00\00\00\0a\00\00\00content-type\00text/plain\00")
        (func (export "proxy_abi_version_0_2_1"))
        (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
            (local $at i32)
            (local.set $at (global.get $next))
            (global.set $next (i32.add (global.get $next) (local.get $size)))
            (local.get $at))
        (func $check_token unreachable)
        (func $on_request_headers (export "proxy_on_request_headers")
            (param i32 i32 i32) (result i32)
            (drop (call $log (i32.const 2) (i32.const 0) (i32.const 8)))
            {check}
            (drop (call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 96) (i32.const 100)))
            (if (i32.and
                    (i32.ge_u (i32.load (i32.const 100)) (i32.const 8))
                    (i64.eq (i64.load (i32.load (i32.const 96))) (i64.load (i32.const 32))))
                (then
                    (drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0)
                        (i32.const 80) (i32.const 6) (i32.const 128) (i32.const 36) (i32.const -1)))
                    (return (i32.const 1))))
            (i32.const {verdict}))
        (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
            (drop (call $replace (i32.const 2) (i32.const 48) (i32.const 9) (i32.const 64) (i32.const 3)))
            (i32.const 0)))"#
    );
    wat::parse_str(wat).expect("the test filter assembles")
}

/// A scratch directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-plugin-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("the file is written");
    path
}

/// Runs `weir plugin test <wasm> --request <request> <extra…>`.
fn plugin_test(wasm: &Path, request: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["plugin", "test"])
        .arg(wasm)
        .arg("--request")
        .arg(request)
        .args(extra)
        .env("WEIR_LOG", "warn")
        .env("WEIR_CACHE_DIR", "none")
        .stdin(Stdio::null())
        .output()
        .expect("the weir binary starts")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The lines of `text` from the one starting with `== {phase}` to the next phase.
fn phase<'a>(text: &'a str, phase: &str) -> &'a str {
    let start = text
        .find(&format!("== {phase}"))
        .unwrap_or_else(|| panic!("no phase `{phase}` in:\n{text}"));
    let rest = &text[start..];
    let end = rest[3..].find("\n== ").map_or(rest.len(), |at| at + 4);
    &rest[..end]
}

#[test]
fn shows_the_local_reply_of_a_denied_path_and_the_header_a_forwarded_request_gets() {
    let dir = scratch("deny");
    let wasm = write(&dir, "checker.wasm", filter(false, false));

    let denied = write(
        &dir,
        "denied.http",
        "GET /private/report HTTP/1.1\r\nHost: api.example\r\nX-Request-Id: r-1\r\n\r\n",
    );
    let output = plugin_test(&wasm, &denied, &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    let request = phase(&text, "request headers");
    assert!(
        request.starts_with("== request headers: local reply\n"),
        "{text}"
    );
    assert!(
        request.contains("  local reply: 403\n    content-type: text/plain\n"),
        "{text}"
    );
    assert!(request.contains(r#"    body: "denied""#), "{text}");
    assert!(request.contains("    [info] checking\n"), "{text}");
    assert!(
        request.contains(r#"    proxy_get_header_map_value(request_headers, ":path") → OK"#),
        "{text}"
    );
    assert!(
        request.contains("    proxy_send_local_response(403) → OK"),
        "{text}"
    );
    assert!(
        text.contains("== request body: not run (the filter answered locally)"),
        "{text}"
    );
    let response = phase(&text, "response headers");
    assert!(response.contains("    + x-checked: yes\n"), "{text}");
    assert!(
        text.ends_with("summary: answered 403 locally in request headers\n"),
        "{text}"
    );

    let allowed = write(
        &dir,
        "allowed.http",
        "POST /public HTTP/1.1\nHost: api.example\n\nhi",
    );
    let upstream = write(
        &dir,
        "upstream.http",
        "HTTP/1.1 201 Created\nx-checked: no\n\n",
    );
    let output = plugin_test(
        &wasm,
        &allowed,
        &["--response", upstream.to_str().unwrap_or_default()],
    );
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        phase(&text, "request headers")
            .starts_with("== request headers: continue\n  headers: unchanged\n"),
        "{text}"
    );
    assert!(
        phase(&text, "request body").contains("body: unchanged (2 bytes)"),
        "{text}"
    );
    assert!(
        phase(&text, "response headers").contains("    ~ x-checked: no → yes\n"),
        "{text}"
    );
    assert!(
        text.contains("== response body: not run (the response has no body)"),
        "{text}"
    );
    assert!(
        text.ends_with("summary: forwarded; response 201\n"),
        "{text}"
    );
}

#[test]
fn a_trap_names_the_guest_function_in_its_backtrace_and_exits_1() {
    let dir = scratch("trap");
    let wasm = write(&dir, "trapper.wasm", filter(true, false));
    let request = write(&dir, "request.http", "GET / HTTP/1.1\nHost: a\n\n");
    let output = plugin_test(&wasm, &request, &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let headers = phase(&text, "request headers");
    assert!(
        headers.starts_with("== request headers: failure: plugin `trapper` failed: trapped"),
        "{text}"
    );
    assert!(headers.contains("  failure:\n"), "{text}");
    assert!(headers.contains("wasm backtrace"), "{text}");
    assert!(headers.contains("check_token"), "{text}");
    assert!(headers.contains("on_request_headers"), "{text}");
    for later in ["request body", "response headers", "response body"] {
        assert!(
            text.contains(&format!(
                "== {later}: not run (the exchange ended in an earlier phase)"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains("== finish: not run (the filter failed and is not called again)"),
        "{text}"
    );
    assert!(
        text.contains("summary: failed in request headers: plugin `trapper` failed: trapped"),
        "{text}"
    );
}

#[test]
fn a_pause_that_is_never_resumed_fails_after_the_timeout() {
    let dir = scratch("pause");
    let wasm = write(&dir, "pauser.wasm", filter(false, true));
    let request = write(&dir, "request.http", "GET / HTTP/1.1\nHost: a\n\n");
    let output = plugin_test(&wasm, &request, &["--timeout", "200ms"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("== request headers: pause, not resumed in time\n"),
        "{text}"
    );
    assert!(
        text.contains("summary: failed in request headers: the filter paused the stream and did not resume it within 200ms"),
        "{text}"
    );
}

#[test]
fn a_malformed_request_file_exits_2_naming_its_line() {
    let dir = scratch("malformed");
    let wasm = write(&dir, "checker.wasm", filter(false, false));
    let request = write(
        &dir,
        "bad.http",
        "GET / HTTP/1.1\nHost: a\nthis is not a header\n\n",
    );
    let output = plugin_test(&wasm, &request, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.http: line 3: expected `name: value`, found `this is not a header`"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing runs");
}
