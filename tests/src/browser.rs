//! A real headless browser for tests: Debian's `chromium`, started with a
//! fresh profile and driven over the Chrome DevTools Protocol (one
//! WebSocket, `tokio-tungstenite`, flat sessions).
//!
//! A [`Page`] collects what went wrong in it (uncaught exceptions, console
//! errors, failed loads and refused content) so a test can assert there was
//! none, and can answer HTTP authentication challenges as a user typing
//! the credentials into the browser's prompt would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// How long one DevTools command may take (a 2-core machine under load).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long chromium may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The browser binaries tried, in order, when `WEIR_CHROMIUM` is not set.
const CANDIDATES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// The browser binary: `WEIR_CHROMIUM`, or the first of [`CANDIDATES`] on
/// the `PATH`; a clear error when there is none.
pub fn chromium_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("WEIR_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    CANDIDATES
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            anyhow!(
                "no chromium found (tried {CANDIDATES:?} on the PATH, and WEIR_CHROMIUM): \
                 install it with `scripts/install-toolchains` (Debian: `apt-get install chromium`)"
            )
        })
}

/// A running headless chromium with one page; killed when dropped.
pub struct Browser {
    _child: Child,
    _profile: tempfile::TempDir,
    page: Page,
}

impl Browser {
    /// Starts chromium headless with a fresh profile and opens a blank page.
    pub async fn start() -> anyhow::Result<Self> {
        let binary = chromium_path()?;
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(&binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--password-store=basic",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start `{}`", binary.display()))?;
        let stderr = child.stderr.take().context("chromium's stderr")?;
        let endpoint = tokio::time::timeout(START_TIMEOUT, devtools_url(stderr))
            .await
            .context("chromium did not print its DevTools address in time")??;
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .with_context(|| format!("cannot connect to DevTools at {endpoint}"))?;
        let connection = Connection::start(socket);
        let target = connection
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = target["targetId"].as_str().context("a target id")?;
        let attached = connection
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .context("a session id")?
            .to_owned();
        let page = Page {
            connection,
            session,
        };
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            page.call(domain, json!({})).await?;
        }
        Ok(Self {
            _child: child,
            _profile: profile,
            page,
        })
    }

    /// The browser's page.
    pub fn page(&self) -> &Page {
        &self.page
    }
}

/// Reads chromium's stderr until it names its DevTools WebSocket, then
/// keeps draining it (so chromium never blocks writing to it).
async fn devtools_url(stderr: tokio::process::ChildStderr) -> anyhow::Result<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    while let Some(line) = lines.next_line().await? {
        if let Some(url) = line.strip_prefix("DevTools listening on ") {
            let url = url.trim().to_owned();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(url);
        }
        seen.push(line);
    }
    bail!(
        "chromium exited without a DevTools address; it said:\n{}",
        seen.join("\n")
    )
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// The DevTools WebSocket: commands out, answers matched by id, events
/// handled by the reader task.
struct Connection {
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    state: Arc<Mutex<PageState>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// What the reader task keeps of the page's events.
#[derive(Default)]
struct PageState {
    problems: Vec<String>,
    credentials: Option<(String, String)>,
    auth_challenges: usize,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Connection {
    fn start<S>(socket: tokio_tungstenite::WebSocketStream<S>) -> Self
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        let writer = tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let state: Arc<Mutex<PageState>> = Arc::default();
        let next_id = Arc::new(AtomicU64::new(1_000_000));
        let reader = {
            let pending = pending.clone();
            let state = state.clone();
            let outgoing = outgoing.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = value["id"].as_u64() {
                        let answer = match value.get("error") {
                            Some(error) => Err(error.to_string()),
                            None => Ok(value["result"].clone()),
                        };
                        let waiter = lock(&pending).remove(&id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(answer);
                        }
                    } else if let Some(method) = value["method"].as_str() {
                        let reply = on_event(&state, method, &value["params"]);
                        if let (Some((method, params)), Some(session)) =
                            (reply, value["sessionId"].as_str())
                        {
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            let command = json!({
                                "id": id, "sessionId": session, "method": method, "params": params,
                            });
                            let _ = outgoing.send(Message::text(command.to_string()));
                        }
                    }
                }
                // The browser went away: wake every waiter.
                lock(&pending).clear();
            })
        };
        Self {
            outgoing,
            pending,
            next_id: AtomicU64::new(1),
            state,
            reader,
            writer,
        }
    }

    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let (answer, waiter) = oneshot::channel();
        lock(&self.pending).insert(id, answer);
        self.outgoing
            .send(Message::text(command.to_string()))
            .map_err(|_| anyhow!("the DevTools connection is closed"))?;
        match tokio::time::timeout(COMMAND_TIMEOUT, waiter).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(error))) => bail!("{method} failed: {error}"),
            Ok(Err(_)) => bail!("{method}: the browser closed the connection"),
            Err(_) => bail!("{method}: no answer within {COMMAND_TIMEOUT:?}"),
        }
    }
}

/// Notes a page event's problem, and answers what must be answered (a
/// request paused for authentication): the command to send back, if any.
fn on_event(state: &Mutex<PageState>, method: &str, params: &Value) -> Option<(String, Value)> {
    let mut state = lock(state);
    match method {
        "Runtime.exceptionThrown" => {
            let details = &params["exceptionDetails"];
            let text = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("an exception");
            state.problems.push(format!("uncaught: {text}"));
        }
        "Runtime.consoleAPICalled" if params["type"] == "error" => {
            let args: Vec<String> = (params["args"].as_array().into_iter().flatten())
                .map(|a| {
                    a["value"]
                        .as_str()
                        .map_or_else(|| a["description"].to_string(), str::to_owned)
                })
                .collect();
            state
                .problems
                .push(format!("console.error: {}", args.join(" ")));
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => {
            let entry = &params["entry"];
            state.problems.push(format!(
                "log: {} {}",
                entry["text"].as_str().unwrap_or_default(),
                entry["url"].as_str().unwrap_or_default()
            ));
        }
        "Fetch.requestPaused" => {
            let id = params["requestId"].clone();
            return Some(("Fetch.continueRequest".into(), json!({"requestId": id})));
        }
        "Fetch.authRequired" => {
            state.auth_challenges += 1;
            let id = params["requestId"].clone();
            let response = match &state.credentials {
                Some((username, password)) => json!({
                    "response": "ProvideCredentials", "username": username, "password": password,
                }),
                None => json!({"response": "CancelAuth"}),
            };
            return Some((
                "Fetch.continueWithAuth".into(),
                json!({"requestId": id, "authChallengeResponse": response}),
            ));
        }
        _ => {}
    }
    None
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One page (tab) of the browser.
pub struct Page {
    connection: Connection,
    session: String,
}

impl Page {
    /// Sends DevTools command `method` to the page; its result.
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.connection
            .call(Some(&self.session), method, params)
            .await
    }

    /// Answers every HTTP authentication challenge with `username` and
    /// `password`, as a user would in the browser's prompt.
    pub async fn answer_auth_with(&self, username: &str, password: &str) -> anyhow::Result<()> {
        lock(&self.connection.state).credentials = Some((username.into(), password.into()));
        self.call("Fetch.enable", json!({"handleAuthRequests": true}))
            .await?;
        Ok(())
    }

    /// How many authentication challenges the browser met so far.
    pub fn auth_challenges(&self) -> usize {
        lock(&self.connection.state).auth_challenges
    }

    /// Sends `headers` with every request of the page from now on.
    pub async fn set_headers(&self, headers: &[(&str, &str)]) -> anyhow::Result<()> {
        let map: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), json!(value)))
            .collect();
        self.call("Network.setExtraHTTPHeaders", json!({"headers": map}))
            .await?;
        Ok(())
    }

    /// Loads `url` and waits until its document is complete.
    pub async fn navigate(&self, url: &str) -> anyhow::Result<()> {
        let navigated = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = navigated["errorText"].as_str() {
            bail!("navigating to {url} failed: {error}");
        }
        let loaded = crate::eventually(COMMAND_TIMEOUT, async || {
            self.evaluate("document.readyState === 'complete'")
                .await
                .is_ok_and(|v| v == json!(true))
        })
        .await;
        anyhow::ensure!(loaded, "{url} did not finish loading");
        Ok(())
    }

    /// The value of JavaScript `expression` in the page (awaited when it is
    /// a promise); an error when it throws.
    pub async fn evaluate(&self, expression: &str) -> anyhow::Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(details) = result.get("exceptionDetails") {
            bail!("`{expression}` threw: {details}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// What went wrong in the page so far: uncaught exceptions, console
    /// errors, failed or refused loads.
    pub fn problems(&self) -> Vec<String> {
        lock(&self.connection.state).problems.clone()
    }

    /// Saves a PNG of the page, `width` × `height` CSS pixels, at `path`.
    pub async fn screenshot(&self, path: &Path, width: u32, height: u32) -> anyhow::Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await?;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let data = shot["data"].as_str().context("screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, png)?;
        Ok(())
    }
}
