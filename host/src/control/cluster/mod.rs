//! Many nodes, one config: the manifest shared through Redis.
//!
//! Each node still runs its own [`Store`] (its manifest file stays its local
//! copy); this module only moves manifests between the store and Redis. A
//! change that runs on a node is published as the next numbered version; the
//! other nodes hear of it on a pub/sub channel, and poll the version counter
//! every second so a missed message is caught. They run it through their
//! store, which writes their file too.
//!
//! Redis layout, under `weir:<key>` (`--cluster-key`, default `default`):
//!
//! | key | what |
//! |---|---|
//! | `weir:<key>:version` | the newest version, a counter (absent: no config yet) |
//! | `weir:<key>:config:<n>` | the manifest text of version `n`; the last [`KEEP`] are kept |
//! | `weir:<key>:changes` | the channel on which each new version's number is published |
//!
//! A version is published by one Lua script that checks the version the
//! node's change was based on, so two nodes changing at once cannot
//! overwrite each other: the second one finds the counter moved, and takes
//! the cluster's version (logged as a conflict) instead of its own.
//!
//! Must not know the request path; reaches the gateway only through the store.

mod layout;
mod mark;
mod status;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubStream};
use tokio_stream::StreamExt;

use self::layout::{KEEP, Keys, PUBLISH};
use self::mark::Mark;
use self::status::Report;
pub use self::status::{ClusterStatus, Outcome, State};
use super::store::{ChangeError, Store};
use crate::config;

/// Connect and per-command timeout for Redis.
const TIMEOUT: Duration = Duration::from_secs(1);

/// How a node joins a cluster (`weir run --cluster URL --cluster-key KEY`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Names the cluster inside that Redis: nodes with the same key share a config.
    pub key: String,
    /// How often the node reads the version counter whatever pub/sub says,
    /// which bounds how late a missed message is caught.
    pub poll: Duration,
}

impl ClusterSettings {
    /// A client of the cluster's Redis (no connection yet): fails when the
    /// URL is not a Redis URL, so `weir run` can refuse it before serving.
    pub fn client(&self) -> Result<redis::Client, ClusterError> {
        redis::Client::open(self.url.as_str()).map_err(ClusterError::Url)
    }
}

/// Why the cluster could not be joined or reached.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL is not one the `redis` crate accepts (not repeated here: it
    /// may hold a password).
    #[error("the cluster's URL is not a Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// Redis refused or failed a command, or could not be reached.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("Redis did not answer within {}ms", TIMEOUT.as_millis())]
    Timeout,
    /// The counter names a version whose text is gone.
    #[error("version {0} is not in Redis")]
    Missing(u64),
}

/// A SHA-256 digest of a manifest's text.
type Digest = [u8; 32];

/// One node's side of the cluster: it follows the store's changes and Redis.
pub struct Cluster {
    store: Arc<Store>,
    client: redis::Client,
    connection: ConnectionManager,
    keys: Keys,
    status: Arc<ClusterStatus>,
    /// Where the version the manifest file holds is recorded.
    mark: Mark,
    /// How often Redis is read whatever pub/sub says.
    poll: Duration,
    /// The cluster version this node runs, and its text's digest. The store
    /// running other text means a local change not yet published.
    agreed: Option<(u64, Digest)>,
    /// The newest version this node has dealt with (ran, published, or
    /// failed to build): above `agreed` while diverged.
    known: Option<u64>,
    /// Why `known` did not build here.
    diverged: Option<(u64, String)>,
}

/// What one round with Redis found.
enum Round {
    /// Nothing more to do.
    Done,
    /// The counter moved while publishing: look again.
    Again,
}

impl Cluster {
    /// A node of the cluster `settings` names, changing `store`. Connects lazily.
    pub fn new(settings: &ClusterSettings, store: Arc<Store>) -> Result<Self, ClusterError> {
        let client = settings.client()?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let connection = client.get_connection_manager_lazy(manager)?;
        let status = Arc::new(ClusterStatus::new());
        store.join_cluster(status.clone());
        let mark = Mark::beside(store.path(), &settings.key);
        let agreed = mark.read();
        Ok(Self {
            store,
            client,
            connection,
            keys: Keys::new(&settings.key),
            status,
            mark,
            poll: settings.poll,
            agreed,
            known: agreed.map(|(version, _)| version),
            diverged: None,
        })
    }

    /// Follows the cluster until the store is dropped: after every local
    /// change, every message on the channel and every poll period.
    pub async fn run(mut self) {
        let mut changes = self.store.changes();
        let mut messages: Option<PubSubStream> = None;
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Subscribe before reading, so no version slips between the two.
            let subscribed = match messages {
                Some(_) => Ok(()),
                None => self.subscribe().await.map(|stream| messages = Some(stream)),
            };
            let synced = match subscribed {
                Ok(()) => self.sync().await,
                Err(error) => Err(error),
            };
            if synced.is_err() {
                // A Redis that went silent (no reset) leaves the subscription
                // looking alive: make it again with the next round.
                messages = None;
            }
            self.report(synced.err());
            let lost = tokio::select! {
                _ = poll.tick() => false,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return; // the store is gone
                    }
                    false
                }
                message = next_message(&mut messages) => message.is_none(),
            };
            if lost {
                messages = None;
            }
        }
    }

    async fn subscribe(&self) -> Result<PubSubStream, ClusterError> {
        let subscribe = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.keys.channel).await?;
            Ok::<_, ClusterError>(pubsub.into_on_message())
        };
        tokio::time::timeout(TIMEOUT, subscribe)
            .await
            .map_err(|_| ClusterError::Timeout)?
    }

    /// Brings this node and the cluster together; a round that published
    /// into a moved counter is followed by one more.
    async fn sync(&mut self) -> Result<(), ClusterError> {
        for _ in 0..3 {
            if let Round::Done = self.round().await? {
                break;
            }
        }
        Ok(())
    }

    async fn round(&mut self) -> Result<Round, ClusterError> {
        let latest: Option<u64> = self.connection.get(&self.keys.version).await?;
        let latest = latest.unwrap_or(0);
        let (text, running_version) = self.store.current();
        let local = config::token_digest(text.as_bytes());
        let dirty = self.agreed.is_some_and(|(_, digest)| digest != local);
        if latest == 0 {
            // An empty cluster (first node, or Redis lost its data): seed
            // it, unless this node runs an older version than the one the
            // others ran (diverged), which would roll them back.
            if self.diverged.is_some() && !dirty {
                return Ok(Round::Done);
            }
            return self.publish(0, &text).await;
        }
        if self.known == Some(latest) && !dirty {
            return Ok(Round::Done);
        }
        let remote: Option<String> = self.connection.get(self.keys.config(latest)).await?;
        let remote = remote.ok_or(ClusterError::Missing(latest))?;
        let remote_digest = config::token_digest(remote.as_bytes());
        if remote_digest == local {
            self.agree(latest, local);
            self.status.handled(local, Outcome::Published(latest));
            return Ok(Round::Done);
        }
        if dirty {
            let based_on = self.agreed.map(|(_, digest)| digest);
            // The cluster holds what this change was based on, or a version
            // this node already failed to build and is being changed past.
            if based_on == Some(remote_digest) || self.known == Some(latest) {
                return self.publish(latest, &text).await;
            }
            tracing::error!(
                version = latest,
                "cluster conflict: a change made on this node was not published, since the \
                 cluster moved to version {latest} meanwhile; taking the cluster's version"
            );
            self.take(latest, remote, running_version).await;
            self.status.handled(local, Outcome::Lost(latest));
            return Ok(Round::Done);
        }
        self.take(latest, remote, running_version).await;
        Ok(Round::Done)
    }

    /// Publishes `text` as the version after `expected`.
    async fn publish(&mut self, expected: u64, text: &str) -> Result<Round, ClusterError> {
        // EVAL rather than `redis::Script`, whose EVALSHA needs the crate's
        // `script` feature (and SHA-1) for a script this small.
        let (published, version): (u8, u64) = redis::cmd("EVAL")
            .arg(PUBLISH)
            .arg(1)
            .arg(&self.keys.version)
            .arg(expected)
            .arg(text)
            .arg(&self.keys.config_prefix)
            .arg(KEEP)
            .arg(&self.keys.channel)
            .arg(self.known.map_or(1, |known| known + 1))
            .query_async(&mut self.connection)
            .await?;
        if published == 1 {
            tracing::info!(version, "cluster: published this node's config");
            let digest = config::token_digest(text.as_bytes());
            self.agree(version, digest);
            self.status.handled(digest, Outcome::Published(version));
            Ok(Round::Done)
        } else {
            tracing::warn!(
                expected,
                found = version,
                "cluster: another node published first"
            );
            Ok(Round::Again)
        }
    }

    /// Runs version `version` (`text`) through the store, unless a local
    /// change came after `running` (then the next round sees it).
    async fn take(&mut self, version: u64, text: String, running: String) {
        let digest = config::token_digest(text.as_bytes());
        let store = self.store.clone();
        let applied =
            tokio::task::spawn_blocking(move || store.apply(&text, Some(&running), "cluster"))
                .await
                .unwrap_or_else(|e| Err(ChangeError::Task(e.to_string())));
        match applied {
            Ok(_) => {
                tracing::info!(version, "cluster: version applied");
                self.agree(version, digest);
            }
            Err(ChangeError::VersionMismatch { .. }) => {}
            Err(error) => {
                let reason = error.to_string();
                if self.diverged.as_ref() != Some(&(version, reason.clone())) {
                    let running = self.agreed.map(|(v, _)| v);
                    tracing::error!(
                        version,
                        running,
                        "cluster: version {version} cannot run on this node; it keeps its \
                         config:\n{reason}"
                    );
                }
                // An edit of the file waiting to be loaded is tried again
                // next round; a version that does not build is not.
                if !matches!(error, ChangeError::FileChanged { .. }) {
                    self.known = Some(version);
                }
                self.diverged = Some((version, reason));
            }
        }
    }

    /// This node runs cluster version `version`, whose text has `digest`.
    fn agree(&mut self, version: u64, digest: Digest) {
        if self.agreed != Some((version, digest))
            && let Err(error) = self.mark.write(version, &digest)
        {
            // Only a restart needs it, and then the cluster's version wins.
            tracing::warn!(version, %error, "cluster: cannot record the version of the manifest file");
        }
        self.agreed = Some((version, digest));
        self.known = Some(version);
        self.diverged = None;
    }

    /// Sets the status after a round; logs when Redis is lost or found again.
    fn report(&self, error: Option<ClusterError>) {
        let (text, _) = self.store.current();
        let local = config::token_digest(text.as_bytes());
        let version = self.agreed.map(|(v, _)| v);
        let unpublished = self.agreed.is_some_and(|(_, digest)| digest != local);
        if unpublished && error.is_some() {
            self.status.handled(local, Outcome::Unpublished);
        }
        let report = match (&error, &self.diverged) {
            (Some(error), _) => Report {
                state: State::Disconnected,
                version,
                latest: None,
                unpublished,
                error: Some(error.to_string()),
            },
            (None, Some((latest, reason))) => Report {
                state: State::Diverged,
                version,
                latest: Some(*latest),
                unpublished,
                error: Some(reason.clone()),
            },
            (None, None) => Report {
                state: State::Synced,
                version,
                latest: None,
                unpublished,
                error: None,
            },
        };
        let state = report.state;
        let before = self.status.set(report);
        match (before, state, error) {
            (State::Disconnected, State::Disconnected, _) => {}
            (_, State::Disconnected, Some(error)) => tracing::warn!(
                version,
                "cluster: Redis unreachable; serving the last good config: {error}"
            ),
            (State::Disconnected, _, _) => {
                tracing::info!(version, "cluster: Redis reachable again")
            }
            (State::Joining, state, _) => {
                tracing::info!(version, state = state.name(), "cluster joined")
            }
            _ => {}
        }
    }
}

/// The next message on the channel; `None` when the subscription is lost.
/// Waits forever while there is none.
async fn next_message(messages: &mut Option<PubSubStream>) -> Option<redis::Msg> {
    match messages {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}
