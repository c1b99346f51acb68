//! What changes a running gateway from outside its request path: the
//! manifest file, reloaded on SIGHUP and when it changes on disk (watched with
//! `notify`, debounced), until SIGTERM or Ctrl-C stops the gateway.
//!
//! A reload loads and validates the whole manifest, builds its snapshot off
//! the request path (compiling plugins, starting VMs, running `on_configure`)
//! and swaps it in only if every part succeeded. Otherwise every reason is
//! logged and the running config stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{self, ConfigError};
use crate::gateway::{Gateway, StartError};

/// How long the manifest file must stay quiet before an edit is reloaded:
/// editors and `cp` write a file in several steps.
const SETTLE: Duration = Duration::from_millis(200);

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The manifest cannot be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new snapshot could not be built (a plugin, a listener change).
    #[error(transparent)]
    Build(#[from] StartError),
    /// The build task ended without an answer.
    #[error("the reload task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

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

/// Reloads `gateway` from the manifest at `path`; `cause` says what asked
/// (for the log). Every failure is logged with every reason.
pub async fn reload_from_file(
    gateway: &Arc<Gateway>,
    path: &Path,
    cause: &'static str,
) -> Result<u64, ReloadError> {
    let result = build_and_swap(gateway.clone(), path.to_path_buf()).await;
    match &result {
        Ok(generation) => {
            tracing::info!(cause, generation, manifest = %path.display(), "manifest reloaded");
        }
        Err(error) => tracing::error!(
            cause,
            manifest = %path.display(),
            "reload rejected; the running config stays:\n{error}"
        ),
    }
    result
}

async fn build_and_swap(gateway: Arc<Gateway>, path: PathBuf) -> Result<u64, ReloadError> {
    // Reading, validating and building all block (files, compilation, VMs).
    tokio::task::spawn_blocking(move || {
        let manifest = config::load(&path)?;
        Ok(gateway.reload(&manifest)?)
    })
    .await?
}

/// Serves until SIGTERM or Ctrl-C, reloading the manifest at `path` on SIGHUP
/// and, when `watch_file` is set, whenever the file changes.
pub async fn run_until_stopped(
    gateway: &Arc<Gateway>,
    path: &Path,
    watch_file: bool,
) -> Result<(), ControlError> {
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| ControlError::Signal {
            signal: name,
            source,
        })
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
    let mut hangup = listen(SignalKind::hangup(), "SIGHUP")?;
    let (_watcher, mut edits) = if watch_file {
        let (watcher, edits) = watch(path)?;
        (Some(watcher), edits)
    } else {
        (None, mpsc::channel(1).1)
    };
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            _ = hangup.recv() => {
                let _ = reload_from_file(gateway, path, "SIGHUP").await;
            }
            Some(()) = edits.recv() => {
                settle(&mut edits).await;
                let _ = reload_from_file(gateway, path, "file changed").await;
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
