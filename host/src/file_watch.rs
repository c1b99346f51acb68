//! Watching one file for changes the way editors and deploy tools make them:
//! the watch is on the file's directory, since a file replaced by renaming a
//! new one over it would slip past a watch on the file itself.
//!
//! Depends on nothing else in Weir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Why a file could not be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {}: {source}", dir.display())]
pub struct WatchError {
    /// The directory the watch was to be on.
    pub dir: PathBuf,
    /// Why.
    pub source: notify::Error,
}

/// Watches the directory of `path` and sends one message per event that
/// touches the file (a full channel already holds a pending one). The
/// watcher must be kept alive as long as the messages are wanted.
pub fn watch(path: &Path) -> Result<(RecommendedWatcher, mpsc::Receiver<()>), WatchError> {
    let file = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
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
            let _ = tx.try_send(());
        }
    };
    let failed = |source| WatchError {
        dir: dir.clone(),
        source,
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(failed)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(failed)?;
    Ok((watcher, rx))
}

/// Waits until no message has arrived for `quiet`, dropping the ones that
/// did (a file written in several steps, a certificate and then its key).
pub async fn settle(changes: &mut mpsc::Receiver<()>, quiet: Duration) {
    while let Ok(Some(())) = tokio::time::timeout(quiet, changes.recv()).await {}
}
