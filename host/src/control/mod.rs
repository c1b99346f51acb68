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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::file_watch;

pub use store::{ADMIN_API, Applied, ChangeError, EditError, Store, read_manifest};

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
    let result = tokio::task::spawn_blocking(move || blocking.reload_file(cause))
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

/// Reads the TLS listeners' certificate files again (an unchanged manifest
/// does not rebuild anything, but its certificate files may have changed);
/// failures are logged where they happen.
async fn reload_certificates(store: &Arc<Store>) {
    let gateway = store.gateway().clone();
    let _ = tokio::task::spawn_blocking(move || gateway.reload_certificates()).await;
}

/// The signals a running gateway answers, taken over from their default
/// actions (SIGHUP's and SIGUSR1's is to kill the process). Install them
/// first thing, before the manifest is read: a signal that arrives while
/// the gateway starts is kept and answered once it serves (SIGHUP reloads,
/// SIGTERM stops it as soon as start-up is done).
///
/// Other parts may listen for the same signals (tokio delivers each one to
/// every listener); installing these first makes sure none of them is fatal.
pub struct Signals {
    term: Signal,
    interrupt: Signal,
    hangup: Signal,
    user1: Signal,
}

impl Signals {
    /// Starts listening for SIGTERM, SIGINT, SIGHUP and SIGUSR1. Must be
    /// called within a tokio runtime.
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
            user1: listen(SignalKind::user_defined1(), "SIGUSR1")?,
        })
    }
}

/// Serves until SIGTERM or Ctrl-C, reloading the store's manifest (and the
/// listeners' certificates) on SIGHUP and, when `watch_file` is set,
/// whenever the file changes; SIGUSR1 reopens the access log's file (after
/// it was rotated).
pub async fn run_until_stopped(
    store: &Arc<Store>,
    signals: Signals,
    watch_file: bool,
) -> Result<(), ControlError> {
    let Signals {
        mut term,
        mut interrupt,
        mut hangup,
        mut user1,
    } = signals;
    let (_watcher, mut edits) = if watch_file {
        let (watcher, edits) =
            file_watch::watch(store.path()).map_err(|e| ControlError::Watch {
                path: e.dir,
                source: e.source,
            })?;
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
                tracing::info!(manifest = %store.path().display(), "SIGHUP: reloading the manifest and certificates");
                let _ = reload_file(store, "SIGHUP").await;
                reload_certificates(store).await;
            }
            _ = user1.recv() => {
                tracing::info!("SIGUSR1: reopening the access log");
                store.gateway().reopen_access_log();
            }
            Some(()) = edits.recv() => {
                file_watch::settle(&mut edits, SETTLE).await;
                let _ = reload_file(store, "file changed").await;
            }
        }
    }
}
