//! `weir run` as a process: it serves, reloads its manifest on SIGHUP and when
//! the file changes (rejecting a broken edit whole, with every reason, while
//! the running config keeps serving), takes changes through its admin API
//! (and the `weir apply` / `weir admin` commands), and drains on SIGTERM.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Nodes sharing one config through Redis (`--cluster`).
#[path = "run/cluster.rs"]
mod cluster;

use support::{
    ADMIN_TOKEN, READER_TOKEN, Running, STEP_TIMEOUT, admin_call, admin_cli, is_message, test_dir,
    weir_at, with_admin_api,
};

impl Running {
    /// Starts `weir run --config <manifest>` with `args` and waits for its
    /// `listening` line.
    fn start(manifest: &Path, args: &[&str]) -> Self {
        Self::start_env(manifest, args, &[])
    }

    /// Sends `signal` (`HUP`, `TERM`) to the process.
    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Waits for the process to exit; true when it exited successfully.
    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "weir did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A manifest whose one route answers `body`.
fn answering(body: &str) -> String {
    format!(
        "apiVersion: weir/v1\n\
         listeners: [{{ name: main, address: 127.0.0.1:0 }}]\n\
         routes: [{{ name: hello, respond: {{ body: {body} }} }}]\n"
    )
}

/// Three problems at once: an unknown upstream, a bad status and an unknown field.
const BROKEN: &str = "apiVersion: weir/v1
listeners: [{ name: main, address: 127.0.0.1:0 }]
routes:
  - { name: a, upstream: nowhere }
  - { name: b, respond: { status: 1000 } }
  - { name: c, respond: { body: x }, colour: blue }
";

/// A manifest answering `body`, with an admin API (see [`with_admin_api`]).
fn with_admin(body: &str) -> String {
    with_admin_api(&answering(body))
}

/// Writes `text` to `path` the way editors do: a new file renamed over the old one.
fn replace_file(path: &Path, text: &str) {
    let fresh = path.with_extension("tmp");
    std::fs::write(&fresh, text).expect("write");
    std::fs::rename(&fresh, path).expect("rename");
}

#[test]
fn run_serves_then_drains_and_exits_cleanly_on_sigterm() {
    let dir = test_dir("sigterm");
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, answering("hello")).expect("write manifest");
    let mut weir = Running::start(&manifest, &[]);
    assert_eq!(weir.get("/"), "hello");
    weir.signal("TERM");
    assert!(weir.wait_exit(), "exit status");
    weir.wait_for(|l| l["fields"]["drained"] == true);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_edit_of_the_manifest_is_served_and_a_broken_one_is_rejected_with_every_reason() {
    let dir = test_dir("watch");
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, answering("one")).expect("write manifest");
    let mut weir = Running::start(&manifest, &[]);
    assert_eq!(weir.get("/"), "one");

    replace_file(&manifest, &answering("two"));
    let reloaded = weir.wait_for(|l| is_message(l, "manifest reloaded"));
    assert_eq!(reloaded["fields"]["cause"], "file changed");
    assert_eq!(reloaded["fields"]["generation"], 2);
    assert_eq!(weir.get("/"), "two");

    replace_file(&manifest, BROKEN);
    let rejected = weir.wait_for(|l| is_message(l, "reload rejected"));
    let message = rejected["fields"]["message"].as_str().unwrap_or_default();
    for reason in [
        "weir.yaml:4:",
        "nowhere",
        "weir.yaml:5:",
        "1000",
        "weir.yaml:6:",
        "colour",
    ] {
        assert!(
            message.contains(reason),
            "`{reason}` missing from: {message}"
        );
    }
    assert_eq!(weir.get("/"), "two", "the running config stays");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_the_manifest_when_the_file_is_not_watched() {
    let dir = test_dir("sighup");
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, answering("one")).expect("write manifest");
    let mut weir = Running::start(&manifest, &["--watch", "false"]);

    std::fs::write(&manifest, answering("two")).expect("edit");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(weir.get("/"), "one", "an unwatched edit waits for SIGHUP");

    weir.signal("HUP");
    let reloaded = weir.wait_for(|l| is_message(l, "manifest reloaded"));
    assert_eq!(reloaded["fields"]["cause"], "SIGHUP");
    assert_eq!(weir.get("/"), "two");

    std::fs::write(&manifest, BROKEN).expect("edit");
    weir.signal("HUP");
    let rejected = weir.wait_for(|l| is_message(l, "reload rejected"));
    assert_eq!(rejected["fields"]["cause"], "SIGHUP");
    assert_eq!(weir.get("/"), "two");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_admin_api_checks_tokens_and_roles() {
    let dir = test_dir("admin-auth");
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, with_admin("one")).expect("write manifest");
    let (_weir, url) = Running::start_with_admin(&manifest, &["--watch", "false"]);
    let get = |token| admin_call(&url, token, http::Method::GET, "/config", None, None);

    assert_eq!(
        admin_call(&url, None, http::Method::GET, "/healthz", None, None).status,
        200
    );
    let ready = admin_call(&url, None, http::Method::GET, "/readyz", None, None);
    assert_eq!(
        (ready.status.as_u16(), ready.json()["ready"].clone()),
        (200, true.into())
    );

    let anonymous = get(None);
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.headers["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        anonymous.headers["www-authenticate"],
        "Bearer realm=\"weir-admin\""
    );
    assert_eq!(get(Some("guess")).status, 401);

    let read = get(Some(READER_TOKEN));
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["routes"][0]["name"], "hello");
    assert!(read.headers.contains_key("etag"));

    let refused = admin_call(
        &url,
        Some(READER_TOKEN),
        http::Method::PUT,
        "/config",
        Some(&with_admin("two")),
        None,
    );
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["type"], "urn:weir:problem:forbidden");
    assert_eq!(get(Some(ADMIN_TOKEN)).status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_manifest_put_through_the_admin_api_runs_and_is_written_to_the_file() {
    let dir = test_dir("admin-put");
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, with_admin("one")).expect("write manifest");
    let (weir, url) = Running::start_with_admin(&manifest, &[]);
    let put = |text: &str, if_match| {
        admin_call(
            &url,
            Some(ADMIN_TOKEN),
            http::Method::PUT,
            "/config",
            Some(text),
            if_match,
        )
    };
    let read = admin_call(
        &url,
        Some(ADMIN_TOKEN),
        http::Method::GET,
        "/config",
        None,
        None,
    );
    let version = read.headers["etag"]
        .to_str()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();

    let applied = put(&with_admin("two"), Some(&version));
    assert_eq!(applied.status, 200, "{}", applied.problem_text());
    assert_eq!(applied.json()["generation"], 2);
    assert_eq!(weir.get("/"), "two");
    assert_eq!(
        std::fs::read_to_string(&manifest).ok(),
        Some(with_admin("two")),
        "persisted"
    );

    // The version read before the change is stale now.
    let stale = put(&with_admin("three"), Some(&version));
    assert_eq!(stale.status, 412);
    assert_eq!(weir.get("/"), "two");

    // Three problems at once: each listed with its place; nothing changes.
    let broken = format!("{BROKEN}{}", &with_admin("x")[answering("x").len()..]);
    let rejected = put(&broken, None);
    assert_eq!(rejected.status, 422);
    let problem = rejected.json();
    assert_eq!(problem["type"], "urn:weir:problem:invalid-config");
    let errors = problem["errors"].as_array().cloned().unwrap_or_default();
    let pointers: Vec<&str> = errors
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert_eq!(
        pointers,
        [
            "/routes/0/upstream",
            "/routes/1/respond/status",
            "/routes/2/colour"
        ],
        "{problem:#}"
    );
    assert_eq!(errors[0]["line"], 4);
    assert_eq!(weir.get("/"), "two");
    assert_eq!(
        std::fs::read_to_string(&manifest).ok(),
        Some(with_admin("two"))
    );

    // A plugin that is not Wasm: the build fails whole.
    std::fs::write(dir.join("bad.wasm"), b"not wasm").expect("write plugin");
    let bad_plugin = with_admin("four").replace(
        "routes: [{ name: hello, respond: { body: four } }]",
        "plugins: [{ name: bad, file: bad.wasm }]\n\
         routes: [{ name: hello, respond: { body: four }, filters: [{ plugin: bad }] }]",
    );
    let refused = put(&bad_plugin, None);
    assert_eq!(refused.status, 422, "{}", refused.problem_text());
    assert_eq!(refused.json()["type"], "urn:weir:problem:build-failed");
    assert_eq!(weir.get("/"), "two");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_admin_change_is_refused_while_the_file_holds_an_edit_not_loaded() {
    let dir = test_dir("admin-conflict");
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, with_admin("one")).expect("write manifest");
    let (weir, url) = Running::start_with_admin(&manifest, &["--watch", "false"]);
    std::fs::write(&manifest, with_admin("edited")).expect("edit");
    let refused = admin_call(
        &url,
        Some(ADMIN_TOKEN),
        http::Method::PUT,
        "/config",
        Some(&with_admin("api")),
        None,
    );
    assert_eq!(refused.status, 409, "{}", refused.problem_text());
    assert!(
        refused.problem_text().contains("SIGHUP"),
        "{}",
        refused.problem_text()
    );
    assert_eq!(weir.get("/"), "one");
    assert_eq!(
        std::fs::read_to_string(&manifest).ok(),
        Some(with_admin("edited"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weir_apply_and_weir_admin_drive_the_admin_api() {
    let dir = test_dir("admin-cli");
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, with_admin("one")).expect("write manifest");
    let (weir_run, url) = Running::start_with_admin(&manifest, &["--watch", "false"]);
    let cli = |args: &[&str]| admin_cli(&url, args);
    let next = dir.join("next.yaml");
    std::fs::write(&next, with_admin("applied")).expect("write");
    let applied = cli(&["apply", "-f", next.to_str().unwrap_or_default()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert_eq!(weir_run.get("/"), "applied");

    let shown = cli(&["admin", "config"]);
    assert!(shown.status.success());
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).trim_end(),
        with_admin("applied").trim_end()
    );

    std::fs::write(&next, BROKEN).expect("write");
    let refused = cli(&["apply", "-f", next.to_str().unwrap_or_default()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for place in [
        "/routes/0/upstream (line 4",
        "/routes/1/respond/status (line 5",
        "/routes/2/colour (line 6",
    ] {
        assert!(stderr.contains(place), "`{place}` missing from:\n{stderr}");
    }
    assert_eq!(weir_run.get("/"), "applied");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An upstream that answers `slow` after holding each request for `delay`;
/// tells `arrived` when a request is in.
fn slow_upstream(delay: Duration, arrived: std::sync::mpsc::Sender<()>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let arrived = arrived.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head);
                let _ = arrived.send(());
                std::thread::sleep(delay);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow",
                );
            });
        }
    });
    address
}

#[test]
fn readyz_answers_503_while_the_gateway_drains() {
    let dir = test_dir("admin-drain");
    let manifest = dir.join("weir.yaml");
    let (arrived, in_upstream) = std::sync::mpsc::channel();
    let upstream = slow_upstream(Duration::from_millis(1500), arrived);
    let text = with_admin("unused").replace(
        "routes: [{ name: hello, respond: { body: unused } }]",
        &format!(
            "upstreams: [{{ name: slow, targets: [\"{upstream}\"] }}]\n\
             routes: [{{ name: hello, upstream: slow }}]\nshutdown_timeout: 10s"
        ),
    );
    std::fs::write(&manifest, text).expect("write manifest");
    let (mut weir, url) = Running::start_with_admin(&manifest, &["--watch", "false"]);
    let address = weir.address.clone();
    let in_flight = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .expect("send");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    });
    in_upstream
        .recv_timeout(STEP_TIMEOUT)
        .expect("the request reached the upstream");
    weir.signal("TERM");
    let deadline = Instant::now() + STEP_TIMEOUT;
    let draining = loop {
        let ready = admin_call(&url, None, http::Method::GET, "/readyz", None, None);
        if ready.status == 503 {
            break ready.json();
        }
        assert!(Instant::now() < deadline, "readyz never turned 503");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(draining["reason"], "draining");
    let response = in_flight.join().expect("the client thread");
    assert!(
        response.ends_with("slow"),
        "the request in flight finished: {response}"
    );
    assert!(weir.wait_exit());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_copied_binary_runs_builtin_plugins_with_no_module_on_disk() {
    let dir = test_dir("builtins-copied");
    let binary = dir.join("weir");
    std::fs::copy(env!("CARGO_BIN_EXE_weir"), &binary).expect("copy the binary");
    std::fs::write(
        dir.join("weir.yaml"),
        "apiVersion: weir/v1\n\
         listeners: [{ name: main, address: 127.0.0.1:0 }]\n\
         plugins: [{ name: auth, builtin: jwt-auth }, { name: stamp, builtin: header-rewrite }]\n\
         routes:\n\
         \x20 - name: private\n\
         \x20   match: { path: { prefix: /private } }\n\
         \x20   respond: { body: secret }\n\
         \x20   filters: [{ plugin: stamp }, { plugin: auth, config: { secret: s3cret } }]\n\
         \x20 - { name: open, respond: { body: hello } }\n",
    )
    .expect("write manifest");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["weir", "weir.yaml"],
        "nothing else in the directory"
    );
    let mut command = weir_at(&binary);
    command.current_dir(&dir);
    let weir = Running::start_command(command, Path::new("weir.yaml"), &[]);
    assert_eq!(weir.get("/"), "hello");
    let (status, body) = weir.fetch("/private");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(r#""code":"unauthorized""#), "{body}");
    drop(weir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The signals `pid` has installed handlers for: `SigCgt` of
/// `/proc/PID/status`, where bit N-1 stands for signal N.
fn caught_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0)
}

/// SIGHUP (1) and SIGUSR1 (10) in a `SigCgt` mask.
const HUP_AND_USR1: u64 = 1 | 1 << 9;

/// A manifest answering `up` on `/` after `routes` other routes: long enough
/// to read and build that a signal sent as soon as the handlers are in
/// place arrives while the gateway starts.
fn with_many_routes(routes: usize) -> String {
    let mut text = String::from(
        "apiVersion: weir/v1\n\
         listeners: [{ name: main, address: 127.0.0.1:0 }]\n\
         routes:\n",
    );
    for i in 0..routes {
        text.push_str(&format!(
            "  - {{ name: r{i}, match: {{ path: {{ prefix: /r{i}/ }} }}, respond: {{ body: r{i} }} }}\n"
        ));
    }
    text.push_str("  - { name: root, match: { path: { exact: / } }, respond: { body: up } }\n");
    text
}

/// Waits until `weir` has logged a line starting with each of `messages`, in any order.
fn wait_for_all(weir: &mut Running, messages: &[&str]) {
    let mut missing = messages.to_vec();
    while !missing.is_empty() {
        let line = weir.wait_for(|l| missing.iter().any(|m| is_message(l, m)));
        missing.retain(|m| !is_message(&line, m));
    }
}

#[test]
fn sighup_and_sigusr1_never_kill_the_gateway_even_while_it_starts() {
    let dir = test_dir("signals");
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, with_many_routes(20_000)).expect("write manifest");
    let mut weir = Running::spawn_command(support::weir(), &manifest, &["--watch", "false"]);
    let pid = weir.child.id();

    // The first moment the handlers can be seen, while the gateway starts.
    let deadline = Instant::now() + STEP_TIMEOUT;
    while caught_signals(pid) & HUP_AND_USR1 != HUP_AND_USR1 {
        assert!(
            weir.child.try_wait().expect("wait").is_none(),
            "weir exited while starting; seen: {:#?}",
            weir.seen
        );
        assert!(Instant::now() < deadline, "no SIGHUP handler in time");
        std::thread::sleep(Duration::from_millis(1));
    }
    weir.signal("HUP");
    weir.signal("USR1");
    let listening = weir.wait_for(|l| is_message(l, "listening"));
    weir.address = listening["fields"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_for_all(
        &mut weir,
        &["SIGHUP: reloading", "SIGUSR1: reopening the access log"],
    );
    assert!(weir.child.try_wait().expect("wait").is_none(), "alive");
    assert_eq!(weir.get("/"), "up");
    assert_eq!(weir.get("/r19999/x"), "r19999");

    // Once serving, and several at once.
    for _ in 0..5 {
        weir.signal("HUP");
    }
    weir.signal("USR1");
    wait_for_all(
        &mut weir,
        &["SIGHUP: reloading", "SIGUSR1: reopening the access log"],
    );
    assert!(weir.child.try_wait().expect("wait").is_none(), "alive");
    assert_eq!(weir.get("/"), "up");

    weir.signal("TERM");
    assert!(weir.wait_exit(), "exit status after SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `weir --log-format text run` on `manifest` with `env`, its stderr
/// into `stderr`.
fn text_logging(manifest: &Path, stderr: std::process::Stdio) -> Command {
    let mut command = support::weir();
    command
        .env_remove("NO_COLOR")
        .env("WEIR_LOG", "info")
        .env("WEIR_CACHE_DIR", "none")
        .args(["--log-format", "text", "run", "--config"])
        .arg(manifest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    command
}

/// Polls `read` until what it returns contains `needle`; fails after
/// [`STEP_TIMEOUT`].
fn read_until(mut read: impl FnMut() -> Vec<u8>, needle: &str) -> Vec<u8> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let bytes = read();
        if String::from_utf8_lossy(&bytes).contains(needle) {
            return bytes;
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` within {STEP_TIMEOUT:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn text_logs_written_to_a_file_carry_no_colour_codes() {
    let dir = test_dir("plain-logs");
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, answering("hello")).expect("write manifest");
    let log = dir.join("stderr.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = text_logging(&manifest, file.into())
        .spawn()
        .expect("weir starts");
    read_until(|| std::fs::read(&log).unwrap_or_default(), " listening ");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().expect("wait").success());
    let text = std::fs::read_to_string(&log).expect("the log");
    assert!(!text.contains('\x1b'), "escape codes in: {text:?}");
    assert!(text.contains(" INFO weir::gateway: listening "), "{text}");
    assert!(text.contains(" INFO weir: stopped drained=true"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn text_logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let dir = test_dir("tty-logs");
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, answering("hello")).expect("write manifest");
    for (no_color, coloured) in [(None, true), (Some(""), true), (Some("1"), false)] {
        // `script` (util-linux) runs the command on a pseudo-terminal and
        // copies what it writes there to its stdout.
        let weir = text_logging(&manifest, std::process::Stdio::null());
        let line = std::iter::once(weir.get_program())
            .chain(weir.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut script = Command::new("script");
        script
            .args(["-qfec", &format!("exec {line}"), "/dev/null"])
            .env_remove("NO_COLOR")
            .env("WEIR_LOG", "info")
            .env("WEIR_CACHE_DIR", "none")
            .env_remove("WEIR_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Some(value) = no_color {
            script.env("NO_COLOR", value);
        }
        let mut script = script.spawn().expect("script (util-linux) runs");
        let mut stdout = script.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                if tx.send(chunk[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        let mut seen = Vec::new();
        let output = read_until(
            || {
                seen.extend(rx.try_iter().flatten());
                seen.clone()
            },
            "listening",
        );
        // `exec` made weir the child of `script`.
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", script.id()))
            .expect("script's children");
        let pid = children.split_whitespace().next().expect("weir runs");
        let _ = Command::new("kill").args(["-TERM", pid]).status();
        let _ = script.wait();
        let text = String::from_utf8_lossy(&output);
        assert_eq!(
            text.contains("\x1b["),
            coloured,
            "NO_COLOR={no_color:?}: {text:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dist/weir.service`.
fn systemd_unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/weir.service"))
        .expect("dist/weir.service")
}

/// The values of the unit's `key=` lines, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// Runs `systemd-analyze` with `args`; its status and output.
fn systemd_analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let output = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (Debian's systemd package; scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_systemd_unit_verifies_is_hardened_and_its_commands_serve_reload_and_stop() {
    let unit = systemd_unit();
    assert_eq!(
        unit_values(&unit, "ExecStart"),
        ["/usr/local/bin/weir run --config /etc/weir/weir.yaml"]
    );
    assert_eq!(
        unit_values(&unit, "ExecReload"),
        ["/bin/kill -HUP $MAINPID"]
    );
    assert_eq!(unit_values(&unit, "KillSignal"), ["SIGTERM"]);
    assert_eq!(unit_values(&unit, "Restart"), ["on-failure"]);
    assert_eq!(
        unit_values(&unit, "AmbientCapabilities"),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert_eq!(unit_values(&unit, "ProtectSystem"), ["strict"]);
    assert_eq!(unit_values(&unit, "LimitNOFILE"), ["1048576"]);
    assert!(
        unit_values(&unit, "MemoryDenyWriteExecute").is_empty(),
        "plugins are compiled to machine code at load"
    );

    // systemd's own checks, on a copy that runs this build's binary.
    let dir = test_dir("systemd");
    let copy = dir.join("weir.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/weir", env!("CARGO_BIN_EXE_weir")),
    )
    .expect("write the unit");
    let (ok, report) = systemd_analyze(&["verify", "--man=no"], &copy);
    assert!(ok, "systemd-analyze verify: {report}");
    let (ok, report) = systemd_analyze(&["security", "--offline=yes", "--threshold=25"], &copy);
    assert!(ok, "exposure above 2.5: {report}");

    // Its environment is accepted (the cache directory moved into the
    // test's directory); its command line serves; its reload command
    // reloads; its stop signal drains and exits 0.
    let manifest = dir.join("weir.yaml");
    std::fs::write(&manifest, answering("from the unit")).expect("write manifest");
    let cache = dir.join("cache");
    let mut validate = support::weir();
    for line in unit_values(&unit, "Environment") {
        let (name, value) = line.split_once('=').expect("VAR=value");
        validate.env(name, value.replace("%C", &cache.display().to_string()));
    }
    let output = validate
        .arg("validate")
        .arg(&manifest)
        .output()
        .expect("weir runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let exec_start = unit_values(&unit, "ExecStart")[0];
    let args: Vec<&str> = exec_start
        .split_whitespace()
        .skip(1)
        .map(|arg| {
            if arg == "/etc/weir/weir.yaml" {
                manifest.to_str().expect("UTF-8 path")
            } else {
                arg
            }
        })
        .collect();
    // `Running` adds `--log-format json run --config FILE` itself.
    assert_eq!(args, ["run", "--config", manifest.to_str().expect("UTF-8")]);
    let mut weir = Running::spawn_command(support::weir(), &manifest, &[]);
    let listening = weir.wait_for(|l| is_message(l, "listening"));
    weir.address = listening["fields"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(weir.get("/"), "from the unit");

    let reload =
        unit_values(&unit, "ExecReload")[0].replace("$MAINPID", &weir.child.id().to_string());
    let mut reload = reload.split_whitespace();
    let status = Command::new(reload.next().expect("a program"))
        .args(reload)
        .status()
        .expect("the reload command runs");
    assert!(status.success());
    weir.wait_for(|l| is_message(l, "SIGHUP: reloading"));
    assert_eq!(weir.get("/"), "from the unit");

    weir.signal("TERM");
    assert!(weir.wait_exit(), "exit status after the unit's KillSignal");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `examples/NAME.yaml` written into `dir` with its gateway listener on a
/// free port (0) and its demo upstream, which the gateway must be told, on
/// a port found free just before.
fn example_on_free_ports(name: &str, dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{name}.yaml")),
    )
    .expect("the example");
    let demo = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    assert!(text.contains("127.0.0.1:8080") && text.contains("127.0.0.1:3001"));
    let manifest = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &manifest,
        text.replace("127.0.0.1:8080", "127.0.0.1:0")
            .replace("127.0.0.1:3001", &demo.to_string()),
    )
    .expect("write the example");
    manifest
}

/// Starts `weir run` on `manifest`, its address that of listener `public`.
fn start_example(manifest: &Path) -> Running {
    let mut weir = Running::spawn_command(support::weir(), manifest, &[]);
    let line = weir.wait_for(|l| is_message(l, "listening") && l["fields"]["listener"] == "public");
    weir.address = line["fields"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    weir
}

/// `GET path` with `headers` (one connection): status, head and body.
fn get_with(weir: &Running, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(&weir.address).expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn the_auth_example_answers_as_its_comment_says() {
    let dir = test_dir("example-auth");
    let weir = start_example(&example_on_free_ports("auth", &dir));
    let (status, _, body) = get_with(&weir, "/api/orders", &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(r#""message":"missing API key""#), "{body}");
    let (status, _, body) = get_with(&weir, "/api/orders", &[("x-api-key", "wrong")]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(r#""message":"invalid API key""#), "{body}");
    let (status, _, body) = get_with(&weir, "/api/orders", &[("x-api-key", "ada-demo-key")]);
    assert_eq!((status, body.as_str()), (200, r#"{"orders":[]}"#));
    let (status, _, body) = get_with(&weir, "/api/orders?api_key=ada-demo-key", &[]);
    assert_eq!((status, body.as_str()), (200, r#"{"orders":[]}"#));
    assert_eq!(weir.get("/status"), "up\n");
    drop(weir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_rate_limit_example_answers_as_its_comment_says() {
    let dir = test_dir("example-rate-limit");
    let weir = start_example(&example_on_free_ports("rate-limit", &dir));
    // A burst of 10 passes; the limit refills 5 a second, so on a slow
    // machine a few more may pass before the first 429.
    let mut passed = 0;
    let limited = loop {
        let (status, head, body) = get_with(&weir, "/api", &[]);
        match status {
            200 => {
                assert_eq!(body, "ok\n");
                assert!(
                    head.contains(
                        "\r\nratelimit-policy: \"per-second\";q=5;w=1, \"per-minute\";q=100;w=60"
                    ),
                    "{head}"
                );
                passed += 1;
                assert!(passed < 100, "no 429 within the minute's 100");
            }
            429 => break (head, body),
            other => panic!("status {other}: {body}"),
        }
    };
    assert!(passed >= 10, "only {passed} passed before the first 429");
    let (head, body) = limited;
    assert!(head.contains("\r\nretry-after: "), "{head}");
    assert!(body.contains(r#""code":"rate_limited""#), "{body}");
    drop(weir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_plugin_example_runs_the_example_filter_built_as_its_comment_says() {
    let dir = test_dir("example-plugin");
    let manifest = example_on_free_ports("plugin", &dir);
    let filter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/filters/rust-weir-sdk");
    let mut build = Command::new("bash");
    build
        .arg(filter.join("build.sh"))
        .arg(dir.join("filters/rust-weir-sdk/out"))
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-filter-target"),
        );
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        build.env_remove(var);
    }
    let output = build.output().expect("bash runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let weir = start_example(&manifest);
    let (status, head, body) = get_with(&weir, "/hello", &[]);
    assert_eq!((status, body.as_str()), (200, "hello\n"));
    assert!(
        head.lines().any(|l| l == "x-hello: hello from rust"),
        "{head}"
    );
    let (status, head, body) = get_with(&weir, "/forbidden", &[]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#""code":"forbidden""#), "{body}");
    assert!(
        head.lines().any(|l| l == "x-hello: hello from rust"),
        "{head}"
    );
    drop(weir);
    let _ = std::fs::remove_dir_all(&dir);
}
