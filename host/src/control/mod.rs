//! What changes a running gateway from outside its request path: the
//! manifest file, reloaded on SIGHUP and when it changes on disk (watched with
//! `notify`, debounced), and the admin API; until SIGTERM or Ctrl-C stops the
//! gateway.
//!
//! Every change goes through the [`Store`]: the whole manifest is validated and
//! its snapshot built off the request path (compiling plugins, starting VMs,
//! running `on_configure`), and swapped in only if every part succeeded.
//! Otherwise every reason is reported and the running config stays.

pub mod admin;
pub mod cluster;
mod store;
pub mod versions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

pub use store::{Applied, ChangeError, EditError, Store, read_manifest};

/// How long the manifest file must stay quiet before an edit is reloaded:
/// editors and `cp` write a file in several steps.
const SETTLE: Duration = Duration::from_millis(200);

/// Why the control loop could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A signal handler could not be installed.
    #[error("cannot listen for {signal}: {source}")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest's directory cannot be watched.
    #[error("cannot watch `{}` for changes: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: notify::Error,
    },
}

/// Reloads the store's manifest file; `cause` says what asked (for the log).
/// Every failure is logged with every reason.
pub async fn reload_file(store: &Arc<Store>, cause: &'static str) -> Result<Applied, ChangeError> {
    let blocking = store.clone();
    // Reading, validating and building all block (files, compilation, VMs).
    let result = tokio::task::spawn_blocking(move || blocking.reload_file())
        .await
        .unwrap_or_else(|e| Err(ChangeError::Task(e.to_string())));
    let manifest = store.path().display();
    match &result {
        Ok(Applied::Swapped { generation, .. }) => {
            tracing::info!(cause, generation, %manifest, "manifest reloaded");
        }
        Ok(Applied::Unchanged { .. }) => tracing::debug!(cause, %manifest, "manifest unchanged"),
        Err(error) => tracing::error!(
            cause,
            %manifest,
            "reload rejected; the running config stays:\n{error}"
        ),
    }
    result
}

/// The signals a running gateway answers, taken over from their default
/// actions. Install them before the gateway starts serving, so that a
/// SIGHUP sent as soon as it listens reloads instead of killing it.
pub struct Signals {
    term: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    /// Starts listening for SIGTERM, SIGINT and SIGHUP.
    pub fn install() -> Result<Self, ControlError> {
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| ControlError::Signal {
                signal: name,
                source,
            })
        };
        Ok(Self {
            term: listen(SignalKind::terminate(), "SIGTERM")?,
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            hangup: listen(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

/// Serves until SIGTERM or Ctrl-C, reloading the store's manifest on SIGHUP
/// and, when `watch_file` is set, whenever the file changes.
pub async fn run_until_stopped(
    store: &Arc<Store>,
    signals: Signals,
    watch_file: bool,
) -> Result<(), ControlError> {
    let Signals {
        mut term,
        mut interrupt,
        mut hangup,
    } = signals;
    let (_watcher, mut edits) = if watch_file {
        let (watcher, edits) = watch(store.path())?;
        // An edit made while the gateway started, before the watch began,
        // is caught here (a file that did not change is left alone).
        let _ = reload_file(store, "file changed").await;
        (Some(watcher), edits)
    } else {
        (None, mpsc::channel(1).1)
    };
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            _ = hangup.recv() => {
                let _ = reload_file(store, "SIGHUP").await;
            }
            Some(()) = edits.recv() => {
                settle(&mut edits).await;
                let _ = reload_file(store, "file changed").await;
            }
        }
    }
}

/// Waits until no edit has arrived for [`SETTLE`], dropping the ones that did.
async fn settle(edits: &mut mpsc::Receiver<()>) {
    while let Ok(Some(())) = tokio::time::timeout(SETTLE, edits.recv()).await {}
}

/// Watches the directory of `path` (editors replace a file by renaming a new
/// one over it, which a watch on the file itself would miss) and sends one
/// message per event that touches the file.
fn watch(path: &Path) -> Result<(RecommendedWatcher, mpsc::Receiver<()>), ControlError> {
    let file = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let dir = file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = file.file_name().map(|n| n.to_os_string());
    let (tx, rx) = mpsc::channel(16);
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let touches = event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
        if touches {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
    };
    let watch_error = |source| ControlError::Watch {
        path: dir.clone(),
        source,
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(watch_error)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    Ok((watcher, rx))
}
