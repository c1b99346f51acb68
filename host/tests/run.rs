//! `weir run` as a process: it serves, reloads its manifest on SIGHUP and when
//! the file changes (rejecting a broken edit whole, with every reason, while
//! the running config keeps serving), and drains on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// How long any one step may take before the test fails instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `weir run`, its JSON log lines read on a thread.
struct Running {
    child: Child,
    lines: Receiver<serde_json::Value>,
    /// Every line read so far, for failure messages.
    seen: Vec<serde_json::Value>,
    address: String,
}

impl Running {
    /// Starts `weir run --config <manifest>` with `args` and waits for its
    /// `listening` line.
    fn start(manifest: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .env_remove("WEIR_CONFIG")
            .env_remove("WEIR_WORKERS")
            .env_remove("WEIR_WATCH")
            .env("WEIR_LOG", "info")
            .env("WEIR_CACHE_DIR", "none")
            .args(["--log-format", "json", "run", "--config"])
            .arg(manifest)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weir starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let json = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                if tx.send(json).is_err() {
                    return;
                }
            }
        });
        let mut running = Self {
            child,
            lines,
            seen: Vec::new(),
            address: String::new(),
        };
        let listening = running.wait_for(|l| l["fields"]["message"] == "listening");
        running.address = listening["fields"]["address"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        running
    }

    /// The next log line that `matches`; fails the test after [`STEP_TIMEOUT`].
    fn wait_for(&mut self, matches: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no such log line within {STEP_TIMEOUT:?}; seen: {:#?}",
                        self.seen
                    );
                }
            }
        }
    }

    /// The body of `GET path` (one connection per request).
    fn get(&self, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(&self.address).expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
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

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory of its own for one test's manifest.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-run-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
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

/// Writes `text` to `path` the way editors do: a new file renamed over the old one.
fn replace_file(path: &Path, text: &str) {
    let fresh = path.with_extension("tmp");
    std::fs::write(&fresh, text).expect("write");
    std::fs::rename(&fresh, path).expect("rename");
}

fn is_message(line: &serde_json::Value, message: &str) -> bool {
    line["fields"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with(message))
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
