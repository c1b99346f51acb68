//! Test support for Weir's end-to-end suite: the real gateway on port 0,
//! real upstream servers on loopback, real TLS certificates.

mod backend;

pub use backend::{Backend, Behaviour};

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod discovery;
pub use discovery::{ConsulInstance, ConsulServer, DNS_ZONE, DnsServer, EtcdServer, EurekaServer};
pub mod browser;
pub mod websocket;

/// The text of [`WAT_ABI_AND_ALLOCATOR`], as a literal `concat!` can splice.
macro_rules! wat_abi_and_allocator {
    () => {
        r#"  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
"#
    };
}

/// The ABI version export and a bump allocator over `$heap` (from offset
/// 1024): what a hand-written WAT filter needs before any callback. Filters
/// with root callbacks of their own splice this; the others use
/// [`WAT_FILTER_BASICS`].
pub const WAT_ABI_AND_ALLOCATOR: &str = wat_abi_and_allocator!();

/// What every hand-written WAT filter of the suite shares:
/// [`WAT_ABI_AND_ALLOCATOR`] and root callbacks that accept every context, VM
/// start and configuration. Splice it into a `(module …)` beside the filter's
/// own imports, data and callbacks.
pub const WAT_FILTER_BASICS: &str = concat!(
    wat_abi_and_allocator!(),
    r#"  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
"#
);

/// Serves HTTP/1.1 and h2c (prior knowledge) on `listener`, answering each
/// request with `handler`, until the returned task is aborted.
pub fn serve<F, Fut, B>(listener: TcpListener, handler: F) -> JoinHandle<()>
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// An upstream server that answers every request with a JSON description of it.
///
/// Request headers steer it: `x-echo-delay-ms: N` waits before answering,
/// `x-echo-status: N` sets the status.
pub struct EchoUpstream {
    /// Its address.
    pub addr: SocketAddr,
    name: String,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl EchoUpstream {
    /// Starts an echo upstream called `name` on a free loopback port.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_at(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts an echo upstream called `name` on `addr` (any loopback
    /// address, `127.0.0.2` too; port 0 for a free one).
    pub async fn start_at(name: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let (task_name, task_hits) = (Arc::new(name.to_owned()), hits.clone());
        let task = serve(listener, move |req| {
            let (name, hits) = (task_name.clone(), task_hits.clone());
            async move { echo(req, &name, &hits).await }
        });
        Ok(Self {
            addr,
            name: name.to_owned(),
            hits,
            task,
        })
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Its name, as echoed in the `upstream` field.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    req: Request<hyper::body::Incoming>,
    name: &str,
    hits: &AtomicUsize,
) -> Response<Full<Bytes>> {
    hits.fetch_add(1, Ordering::SeqCst);
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(ms) = header("x-echo-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = header("x-echo-status")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200u16);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let payload = serde_json::json!({
        "upstream": name,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut response = Response::new(Full::new(Bytes::from(payload.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        "connection",
        hyper::header::HeaderValue::from_static("keep-alive"),
    );
    response
}

/// A running gateway built from a YAML manifest.
pub struct TestGateway {
    gateway: Option<Arc<weir::Gateway>>,
    /// The admin API, once [`TestGateway::serve_admin`] started it.
    admin: Option<JoinHandle<()>>,
    /// Directory the manifest's relative paths resolve against (certificates live here).
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    /// A gateway with one listener, `main` (with `limits` when not empty, as
    /// YAML: `{ max_body_bytes: 1KiB }`), whose one route forwards everything
    /// to `up` with no filters.
    pub async fn proxying(up: &EchoUpstream, limits: &str) -> anyhow::Result<Self> {
        let limits = if limits.is_empty() {
            String::new()
        } else {
            format!(", limits: {limits}")
        };
        Self::from_yaml(&format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0{limits} }}]
upstreams: [{{ name: echo, targets: ["{}"] }}]
routes: [{{ name: all, upstream: echo }}]
"#,
            up.addr
        ))
        .await
    }

    /// Validates `yaml` and starts the gateway; relative paths resolve in a fresh temp dir.
    pub async fn from_yaml(yaml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Self::from_yaml_in(yaml, dir).await
    }

    /// Like [`TestGateway::from_yaml`], resolving paths in `dir`.
    pub async fn from_yaml_in(yaml: &str, dir: tempfile::TempDir) -> anyhow::Result<Self> {
        Self::start_in(yaml, dir, &weir::gateway::Options::default()).await
    }

    /// Like [`TestGateway::from_yaml`], with exactly `workers` workers
    /// (instead of one per core), so tests of the workers do not depend on
    /// the machine.
    pub async fn with_workers(yaml: &str, workers: usize) -> anyhow::Result<Self> {
        Self::with_workers_in(yaml, tempfile::tempdir()?, workers).await
    }

    /// Like [`TestGateway::with_workers`], resolving paths in `dir`.
    pub async fn with_workers_in(
        yaml: &str,
        dir: tempfile::TempDir,
        workers: usize,
    ) -> anyhow::Result<Self> {
        let options = weir::gateway::Options {
            workers: Some(workers),
            ..weir::gateway::Options::default()
        };
        Self::start_in(yaml, dir, &options).await
    }

    async fn start_in(
        yaml: &str,
        dir: tempfile::TempDir,
        options: &weir::gateway::Options,
    ) -> anyhow::Result<Self> {
        let path = dir.path().join("weir.yaml");
        std::fs::write(&path, yaml)?;
        let manifest = weir::config::load(&path)?;
        // The access log would write to the test binary's stdout; a test
        // that reads it sends it to a file with its own `access_log:`.
        let options = weir::gateway::Options {
            without_access_log: !yaml.contains("access_log:"),
            ..options.clone()
        };
        let gateway = weir::Gateway::start_with(manifest, &options).await?;
        Ok(Self {
            gateway: Some(Arc::new(gateway)),
            admin: None,
            dir,
        })
    }

    /// Validates `yaml` (paths resolve in the gateway's dir) and makes it the
    /// running config; returns the new generation.
    pub fn reload(&self, yaml: &str) -> anyhow::Result<u64> {
        let path = self.dir.path().join("weir.yaml");
        std::fs::write(&path, yaml)?;
        let manifest = weir::config::load(&path)?;
        let gateway = self.gateway.as_ref().context("the gateway was shut down")?;
        Ok(gateway.reload(&manifest)?)
    }

    /// The generation of the running config (the first is 1).
    pub fn generation(&self) -> u64 {
        self.gateway.as_ref().map_or(0, |g| g.generation())
    }

    /// The directory the manifest (and what it names by relative path) is in.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The running gateway, for what a test reads of it directly.
    pub fn gateway(&self) -> &weir::Gateway {
        self.gateway.as_deref().expect("the gateway was shut down")
    }

    /// How many workers serve.
    pub fn workers(&self) -> usize {
        self.gateway.as_ref().map_or(0, |g| g.workers())
    }

    /// Address of the listener named `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.gateway
            .as_ref()
            .and_then(|g| g.address(name))
            .unwrap_or_else(|| panic!("no listener named {name}"))
    }

    /// Each target of upstream `name` with its health as the admin API
    /// shows it (`healthy`, `unhealthy`, `ejected`, `unchecked`).
    pub fn target_health(&self, name: &str) -> Vec<(String, &'static str)> {
        let group = self.gateway.as_ref().and_then(|g| g.upstream(name));
        group.map_or_else(Vec::new, |g| {
            g.target_statuses()
                .into_iter()
                .map(|t| (t.address, t.health.as_str()))
                .collect()
        })
    }

    /// `http://<addr of listener>` + `path`.
    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(listener))
    }

    /// Every metric as `/metrics` shows it (Prometheus text format).
    pub fn metrics_text(&self) -> String {
        self.gateway
            .as_ref()
            .map(|g| g.metrics(weir::observe::Format::Prometheus))
            .unwrap_or_default()
    }

    /// The value of the series `name` (as rendered, e.g.
    /// `weir_plugin_x{plugin="p"}`; a counter's is found with or without
    /// its `_total`); `None` when there is no such series.
    pub fn metric(&self, name: &str) -> Option<i64> {
        let total = match name.split_once('{') {
            Some((family, labels)) => format!("{family}_total{{{labels}"),
            None => format!("{name}_total"),
        };
        self.metrics_text().lines().find_map(|line| {
            let value = [name, total.as_str()]
                .iter()
                .find_map(|series| line.strip_prefix(series)?.strip_prefix(' '))?;
            value.parse().ok()
        })
    }

    /// The addresses of the running group `upstream`'s targets, sorted.
    pub fn target_addresses(&self, upstream: &str) -> Vec<String> {
        let mut addresses: Vec<String> = (self.target_health(upstream).into_iter())
            .map(|(address, _)| address)
            .collect();
        addresses.sort();
        addresses
    }

    /// Serves the real admin API of the manifest's `admin:` section (which
    /// must be there) over this gateway, as `weir run` does; its address.
    pub async fn serve_admin(&mut self) -> anyhow::Result<SocketAddr> {
        let path = self.dir.path().join("weir.yaml");
        let text = std::fs::read_to_string(&path)?;
        let admin = weir::config::load(&path)?
            .admin
            .context("the manifest has no admin section")?;
        let gateway = self.gateway.clone().context("the gateway was shut down")?;
        let listener = weir::control::admin::bind(&admin).await?;
        let address = listener.local_addr()?;
        let store = Arc::new(weir::control::Store::new(gateway, path, text, Some(&admin)));
        self.admin = Some(weir::control::admin::serve(listener, store));
        Ok(address)
    }

    /// Shuts down gracefully; returns whether everything drained in time.
    pub async fn shutdown(&mut self) -> bool {
        if let Some(admin) = self.admin.take() {
            admin.abort();
        }
        match self.gateway.take() {
            Some(g) => g.shutdown().await,
            None => true,
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(admin) = self.admin.take() {
            admin.abort();
        }
    }
}

/// The lowercase hex SHA-256 of `secret`, as a manifest holds an admin
/// token (`sha256: "…"`) or, after `sha256:`, a consumer's API key.
pub fn sha256_hex(secret: &str) -> String {
    weir::config::token_digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An address on which nothing listens (connections are refused). The port
/// stays bound, never listening, for the rest of the test process, so no
/// other test's listener can take it meanwhile.
pub async fn dead_address() -> anyhow::Result<SocketAddr> {
    static HELD: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let addr = socket.local_addr()?;
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(socket);
    Ok(addr)
}

/// An HTTP/1.1 client with keep-alive.
pub fn http1_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .build()
        .expect("client builds")
}

/// An HTTP/2 client speaking h2c with prior knowledge.
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .expect("client builds")
}

/// A TLS client trusting `ca_pem`, resolving `host` to `addr`.
pub fn tls_client(ca_pem: &str, host: &str, addr: SocketAddr) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(host, addr)
        .no_proxy()
        .build()?)
}

/// A JSON body from a response, with context on failure.
pub async fn json(response: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let text = response.text().await?;
    serde_json::from_str(&text)
        .with_context(|| format!("status {status}: body is not JSON: {text}"))
}

/// Resident memory of this process, from `/proc/self/statm` (the gateway
/// under test runs in-process, so this includes it).
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The log lines captured so far that contain `needle`.
///
/// The first call installs a process-wide subscriber (plugin output at info,
/// Weir's own warnings) that keeps only lines mentioning a plugin whose name
/// starts with `hostile`, or a plugin named in [`capture_logs_of`], so the
/// capture stays small; give each test's plugin its own such name and search
/// for it.
pub fn captured_logs(needle: &str) -> Vec<String> {
    log_capture()
        .lines
        .lock()
        .map(|l| l.iter().filter(|l| l.contains(needle)).cloned().collect())
        .unwrap_or_default()
}

/// Keeps, from now on, the log lines of the plugin named `plugin` (its
/// `plugin="…"` field) for [`captured_logs`]. Call it before the gateway
/// starts to see what the plugin logs while starting.
pub fn capture_logs_of(plugin: &str) {
    capture_logs_containing(&format!("plugin=\"{plugin}\""));
}

/// Keeps, from now on, the log lines (plugin output, Weir's warnings and
/// discovery's news) that contain `needle` for [`captured_logs`].
pub fn capture_logs_containing(needle: &str) {
    if let Ok(mut watched) = log_capture().watched.lock() {
        watched.push(needle.to_owned());
    }
}

/// What the log capture keeps, and for which plugins besides `hostile…`.
#[derive(Default)]
struct LogCapture {
    lines: std::sync::Mutex<Vec<String>>,
    watched: std::sync::Mutex<Vec<String>>,
}

/// The process-wide capture, installing its subscriber on first use.
fn log_capture() -> &'static Arc<LogCapture> {
    static CAPTURE: std::sync::OnceLock<Arc<LogCapture>> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Arc::new(LogCapture::default());
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "weir::plugin=info,weir::wasm=warn,weir::upstream::discovery=info",
            ))
            .with_ansi(false)
            .with_writer(move || LineSink(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        capture
    })
}

/// Keeps each formatted log line that mentions a `hostile…` or a watched plugin.
struct LineSink(Arc<LogCapture>);

impl std::io::Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let watched = |text: &str| {
            self.0
                .watched
                .lock()
                .is_ok_and(|w| w.iter().any(|name| text.contains(name.as_str())))
        };
        if (text.contains("hostile") || watched(&text))
            && let Ok(mut lines) = self.0.lines.lock()
        {
            lines.extend(text.lines().map(|l| l.chars().take(512).collect()));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A certificate authority and leaf certificates made for one test.
pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate written to disk.
pub struct Leaf {
    /// Certificate PEM path.
    pub cert: PathBuf,
    /// Key PEM path.
    pub key: PathBuf,
    /// The certificate in DER, to compare with what a server presents.
    pub der: Vec<u8>,
}

impl TestPki {
    /// A fresh CA.
    pub fn new() -> anyhow::Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Weir test CA");
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            ca_pem: cert.pem(),
            ca: rcgen::Issuer::new(params, key),
        })
    }

    /// Issues a certificate for `names`, written as `<file_stem>.crt/.key` in `dir`.
    pub fn leaf(&self, dir: &Path, file_stem: &str, names: &[&str]) -> anyhow::Result<Leaf> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names)?;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let cert_path = dir.join(format!("{file_stem}.crt"));
        let key_path = dir.join(format!("{file_stem}.key"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok(Leaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().to_vec(),
        })
    }
}

/// The test filter built from `tests/filters` with the proxy-wasm SDK.
pub fn test_filter_wasm() -> &'static str {
    env!("WEIR_TEST_FILTER_WASM")
}

/// The weir-sdk test filter built from `tests/sdk-filter`.
pub fn sdk_test_filter_wasm() -> &'static str {
    env!("WEIR_SDK_TEST_FILTER_WASM")
}

/// The file of a built-in plugin (e.g. `jwt-auth`), as the `weir` crate's
/// build wrote it before embedding it: for manifests that name the same
/// module as a `file` (a manifest can name it `builtin: jwt-auth` instead).
pub fn plugin_wasm(name: &str) -> String {
    format!(
        "{}/weir_{}.wasm",
        weir::builtins::BUILD_DIR,
        name.replace('-', "_")
    )
}

/// The proxy-wasm SDK's example `name` (e.g. `http_headers`), built from
/// `tests/sdk-examples`.
pub fn sdk_example_wasm(name: &str) -> String {
    format!(
        "{}/proxy_wasm_example_{name}.wasm",
        env!("WEIR_SDK_EXAMPLES_DIR")
    )
}

/// The example filter of `examples/filters/<language>` (e.g. `go`,
/// `rust-proxy-wasm`), built by its `build.sh`.
pub fn example_filter_wasm(language: &str) -> String {
    format!(
        "{}/hello_{}.wasm",
        env!("WEIR_EXAMPLE_FILTERS_DIR"),
        language.replace('-', "_")
    )
}

/// An upstream that answers every request with the same status and body,
/// optionally after a delay.
pub struct FixedUpstream {
    /// Its address.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FixedUpstream {
    /// Starts it on a free loopback port.
    pub async fn start(status: u16, body: &'static str, delay: Duration) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let task_hits = hits.clone();
        let task = serve(listener, move |_req| {
            let hits = task_hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *response.status_mut() =
                    hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                response
            }
        });
        Ok(Self { addr, hits, task })
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for FixedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real `redis-server` on a free loopback port, stopped on drop.
pub struct RedisServer {
    /// Its address.
    pub addr: SocketAddr,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts `redis-server` (installed by `.ci/run`) and waits until it answers PING.
    pub async fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start redis-server (on a fresh machine `.ci/run` installs it)")?;
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: Some(child),
        };
        let up = eventually(Duration::from_secs(10), async || {
            server.command(&["PING"]).await.is_ok_and(|r| r == "+PONG")
        })
        .await;
        if !up {
            server.stop();
            anyhow::bail!("redis-server did not answer PING on port {port}");
        }
        Ok(server)
    }

    /// Sends one command and returns the first line of the reply (bulk strings: their value).
    pub async fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        let (read, mut write) = stream.into_split();
        let mut query = format!("*{}\r\n", args.len());
        for arg in args {
            query.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        write.write_all(query.as_bytes()).await?;
        let mut lines = BufReader::new(read).lines();
        let first = lines.next_line().await?.context("no reply")?;
        if first.starts_with('$') && first != "$-1" {
            return lines.next_line().await?.context("no bulk value");
        }
        Ok(first)
    }

    /// The exact bytes stored at `key` (`None` when it does not exist).
    pub async fn get_bytes(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        let (read, mut write) = stream.into_split();
        let query = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
        write.write_all(query.as_bytes()).await?;
        let mut reader = BufReader::new(read);
        let mut head = String::new();
        reader.read_line(&mut head).await?;
        if head == "$-1\r\n" {
            return Ok(None);
        }
        let len: usize = head
            .strip_prefix('$')
            .and_then(|h| h.trim_end().parse().ok())
            .with_context(|| format!("not a bulk string: {head:?}"))?;
        let mut value = vec![0; len + 2];
        reader.read_exact(&mut value).await?;
        anyhow::ensure!(value.ends_with(b"\r\n"), "bulk string without its CRLF");
        value.truncate(len);
        Ok(Some(value))
    }

    /// The text of `INFO section` (`commandstats`, `clients`, …).
    pub async fn info(&self, section: &str) -> anyhow::Result<String> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        let (read, mut write) = stream.into_split();
        let query = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
        write.write_all(query.as_bytes()).await?;
        let mut reader = BufReader::new(read);
        let mut head = String::new();
        reader.read_line(&mut head).await?;
        let len: usize = head
            .strip_prefix('$')
            .and_then(|h| h.trim_end().parse().ok())
            .with_context(|| format!("not a bulk string: {head:?}"))?;
        let mut text = vec![0; len];
        reader.read_exact(&mut text).await?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// How many clients are subscribed to `channel` (`PUBSUB NUMSUB`).
    pub async fn subscribers(&self, channel: &str) -> anyhow::Result<u64> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        let (read, mut write) = stream.into_split();
        let query = format!(
            "*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n${}\r\n{channel}\r\n",
            channel.len()
        );
        write.write_all(query.as_bytes()).await?;
        // `*2`, `$<len>`, the channel, `:<count>`.
        let mut lines = BufReader::new(read).lines();
        for _ in 0..3 {
            lines.next_line().await?.context("a short PUBSUB reply")?;
        }
        let count = lines.next_line().await?.context("no subscriber count")?;
        count
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("not a count: {count:?}"))
    }

    /// How many times command `name` (lower case, `evalsha`) ran since the
    /// server started or its statistics were reset (`CONFIG RESETSTAT`).
    pub async fn command_calls(&self, name: &str) -> anyhow::Result<u64> {
        let stats = self.info("commandstats").await?;
        let prefix = format!("cmdstat_{name}:calls=");
        Ok(stats
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(Ok(0), str::parse)?)
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing is
    /// answered, as from a server that hangs.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the server was stopped")?;
        let status = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    /// Stops the server (requests to it fail from now on).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads from `stream` until the peer closes it or `limit` passes; returns what
/// was read and whether the peer closed.
pub async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (received, false),
        }
    }
}

/// Reads one HTTP/1.1 response from `stream` (its head, then a body of
/// `content-length` bytes), leaving the connection open for the next one.
pub async fn read_response(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(Ok(0), |value| value.trim().parse::<usize>())?;
            if received.len() >= end + 4 + length {
                return Ok(String::from_utf8_lossy(&received).into_owned());
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut buf))
            .await
            .context("no whole response in time")??;
        anyhow::ensure!(
            n > 0,
            "the connection closed after {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
}
