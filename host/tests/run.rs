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
