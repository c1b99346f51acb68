//! `weir run` as a child process for the integration tests, with its admin
//! API: start it on a manifest, wait for its JSON log lines, send it
//! requests and admin calls. Shared by `run.rs` and `admin.rs`; every item
//! here is used by both (each test file compiles its own copy).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// How long any one step may take before the test fails instead of hanging.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The admin token the admin tests give `weir run` through `WEIR_TEST_ADMIN`.
pub const ADMIN_TOKEN: &str = "admin-secret-for-tests";
/// The read-only token, configured by its digest.
pub const READER_TOKEN: &str = "reader-secret-for-tests";

/// A running `weir run`, its JSON log lines read on a thread.
pub struct Running {
    pub child: Child,
    lines: Receiver<serde_json::Value>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<serde_json::Value>,
    /// The address of its first listener.
    pub address: String,
}

impl Running {
    /// Starts `weir run --config <manifest>` with `args` and `env` added to
    /// the process's environment, and waits for its `listening` line.
    pub fn start_env(manifest: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = weir();
        command.envs(env.iter().copied());
        Self::start_command(command, manifest, args)
    }

    /// Starts `command` (a `weir` binary) as `run --config <manifest>` with
    /// `args`, and waits for its `listening` line.
    pub fn start_command(command: Command, manifest: &Path, args: &[&str]) -> Self {
        let mut running = Self::spawn_command(command, manifest, args);
        let listening = running.wait_for(|l| l["fields"]["message"] == "listening");
        running.address = listening["fields"]["address"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        running
    }

    /// Starts `command` (a `weir` binary) as `run --config <manifest>` with
    /// `args`, without waiting for anything (its `address` stays empty).
    pub fn spawn_command(mut command: Command, manifest: &Path, args: &[&str]) -> Self {
        let mut child = command
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
        Self {
            child,
            lines,
            seen: Vec::new(),
            address: String::new(),
        }
    }

    /// Starts `weir run` on `manifest` (which has an admin API) with the
    /// admin token in its environment; the admin API's URL.
    pub fn start_with_admin(manifest: &Path, args: &[&str]) -> (Self, String) {
        let mut weir = Self::start_env(manifest, args, &[("WEIR_TEST_ADMIN", ADMIN_TOKEN)]);
        let line = weir.wait_for(|l| is_message(l, "admin API listening"));
        let url = format!(
            "http://{}",
            line["fields"]["address"].as_str().unwrap_or_default()
        );
        (weir, url)
    }

    /// The next log line that `matches`; fails the test after [`STEP_TIMEOUT`].
    pub fn wait_for(&mut self, matches: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
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

    /// The body of `GET path` (one connection per request), which must answer 200.
    pub fn get(&self, path: &str) -> String {
        let (status, body) = self.fetch(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The status and body of `GET path` (one connection per request).
    pub fn fetch(&self, path: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(&self.address).expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status = response
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `weir` binary, unaffected by the caller's `WEIR_*` variables.
pub fn weir() -> Command {
    weir_at(Path::new(env!("CARGO_BIN_EXE_weir")))
}

/// The `weir` binary at `binary` (a copy, say), unaffected by the caller's
/// `WEIR_*` variables.
pub fn weir_at(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    for var in [
        "WEIR_CONFIG",
        "WEIR_WORKERS",
        "WEIR_WATCH",
        "WEIR_ADMIN_URL",
        "WEIR_ADMIN_TOKEN",
    ] {
        command.env_remove(var);
    }
    command
}

/// A directory of its own for one test's manifest.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-run-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Runs the `weir` CLI with `args` against the admin API at `url`, with the admin token.
pub fn admin_cli(url: &str, args: &[&str]) -> std::process::Output {
    weir()
        .env("WEIR_ADMIN_URL", url)
        .env("WEIR_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("WEIR_LOG", "warn")
        .args(args)
        .output()
        .expect("weir runs")
}

/// Whether log `line`'s message starts with `message`.
pub fn is_message(line: &serde_json::Value, message: &str) -> bool {
    line["fields"]["message"]
        .as_str()
        .is_some_and(|m| m.starts_with(message))
}

/// `manifest` with an admin API on a free loopback port added: an `admin`
/// token from `WEIR_TEST_ADMIN` and a `read-only` one by digest.
pub fn with_admin_api(manifest: &str) -> String {
    let reader: String = weir::config::token_digest(READER_TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{manifest}admin:\n  address: 127.0.0.1:0\n  tokens:\n    \
         - {{ name: ops, role: admin, env: WEIR_TEST_ADMIN }}\n    \
         - {{ name: dashboards, role: read-only, sha256: \"{reader}\" }}\n"
    )
}

/// One admin API call with a YAML body.
pub fn admin_call(
    url: &str,
    token: Option<&str>,
    method: http::Method,
    path: &str,
    body: Option<&str>,
    if_match: Option<&str>,
) -> weir::control::admin::client::Answer {
    let body = body.map(|b| (bytes::Bytes::from(b.to_owned()), "application/yaml"));
    admin_send(url, token, method, path, body, if_match)
}

/// One admin API call with `body` of its content type.
pub fn admin_send(
    url: &str,
    token: Option<&str>,
    method: http::Method,
    path: &str,
    body: Option<(bytes::Bytes, &'static str)>,
    if_match: Option<&str>,
) -> weir::control::admin::client::Answer {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let endpoint = weir::control::admin::client::Endpoint::new(url, token);
    runtime
        .block_on(weir::control::admin::client::call(
            &endpoint, method, path, body, if_match,
        ))
        .expect("the admin API answers")
}
