//! Where a node stands with its cluster, as `/readyz` and `PUT /config`
//! learn it: the state with its versions and error, and what became of each
//! change that ran here.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::Digest;
use crate::config;

/// Where a node stands with its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started, Redis not asked yet: not ready, since the file may be stale.
    Joining,
    /// Runs the cluster's newest version.
    Synced,
    /// Cannot reach Redis: serves its last good config.
    Disconnected,
    /// The newest version did not build here: serves the one before.
    Diverged,
}

impl State {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Joining => "joining",
            Self::Synced => "synced",
            Self::Disconnected => "disconnected",
            Self::Diverged => "diverged",
        }
    }
}

/// What `/readyz` says about the cluster.
#[derive(Debug, Clone)]
pub(super) struct Report {
    pub(super) state: State,
    /// The cluster version this node runs.
    pub(super) version: Option<u64>,
    /// The newest version seen, when it is not the one that runs.
    pub(super) latest: Option<u64>,
    /// A local change waits to be published.
    pub(super) unpublished: bool,
    /// Why the node is disconnected or diverged.
    pub(super) error: Option<String>,
}

/// What became of a change that ran on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It is the cluster's version `n`.
    Published(u64),
    /// Another node published version `n` first; this node runs that now.
    Lost(u64),
    /// Redis cannot be reached: it waits to be published.
    Unpublished,
}

/// A node's cluster state, shared with the admin API.
#[derive(Debug)]
pub struct ClusterStatus {
    report: Mutex<Report>,
    /// The last change handled: its text's digest, and its outcome.
    handled: watch::Sender<Option<(Digest, Outcome)>>,
}

impl ClusterStatus {
    pub(super) fn new() -> Self {
        Self {
            report: Mutex::new(Report {
                state: State::Joining,
                version: None,
                latest: None,
                unpublished: false,
                error: None,
            }),
            handled: watch::channel(None).0,
        }
    }

    /// What became of the change to manifest `text` that ran here; `None`
    /// if the cluster has not handled it within `limit`.
    pub async fn outcome(&self, text: &str, limit: Duration) -> Option<Outcome> {
        let digest = config::token_digest(text.as_bytes());
        let mut handled = self.handled.subscribe();
        let found = handled.wait_for(|h| h.as_ref().is_some_and(|(d, _)| *d == digest));
        match tokio::time::timeout(limit, found).await {
            Ok(Ok(handled)) => handled.as_ref().map(|(_, outcome)| outcome.clone()),
            _ => None,
        }
    }

    pub(super) fn handled(&self, digest: Digest, outcome: Outcome) {
        self.handled.send_replace(Some((digest, outcome)));
    }

    /// The node's state.
    pub fn state(&self) -> State {
        self.lock().state
    }

    /// Ready for traffic once Redis was asked (or found unreachable): a node
    /// disconnected or diverged serves a config that built, so it stays ready.
    pub fn ready(&self) -> bool {
        self.state() != State::Joining
    }

    /// `{"state": …, "version": …}`, with `latest`, `unpublished` and
    /// `error` when they apply.
    pub fn to_json(&self) -> serde_json::Value {
        let report = self.lock().clone();
        let mut json = serde_json::json!({
            "state": report.state.name(),
            "version": report.version,
        });
        if let Some(latest) = report.latest {
            json["latest"] = latest.into();
        }
        if report.unpublished {
            json["unpublished"] = true.into();
        }
        if let Some(error) = report.error {
            json["error"] = error.into();
        }
        json
    }

    pub(super) fn set(&self, report: Report) -> State {
        std::mem::replace(&mut *self.lock(), report).state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
