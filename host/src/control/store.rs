//! The manifest file as the one source of truth of a running gateway.
//!
//! Every change goes through here, one at a time: an edit of the file (on
//! SIGHUP or when the watcher sees it) and a manifest sent to the admin API.
//! A change is validated and built whole before it is swapped in; an admin
//! change is then written to the file (atomically: a new file renamed over
//! the old), so it survives a restart and the file always holds what runs.
//!
//! Neither kind of change overwrites the other unseen: the store remembers
//! the digest of the text it runs, an admin change is refused while the file
//! on disk holds something else (an edit not loaded yet, or one that failed),
//! and a caller can make its change conditional on the version it read
//! (`If-Match` on the admin API).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

use super::cluster::ClusterStatus;
use crate::config::model::{Admin, AdminTls, AdminToken};
use crate::config::{self, ConfigError, Diagnostic, MAX_MANIFEST_BYTES};
use crate::gateway::{Gateway, StartError};

/// Why a change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The manifest cannot be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new snapshot could not be built (a plugin, a listener change).
    #[error(transparent)]
    Build(#[from] StartError),
    /// The caller's version is not the running one.
    #[error("the running config is version {running}, not {expected}")]
    VersionMismatch {
        /// The version the caller read.
        expected: String,
        /// The running version.
        running: String,
    },
    /// The file on disk is not what runs: an edit waits (or failed).
    #[error(
        "`{}` was changed on disk since version {running} was loaded; reload it (SIGHUP) \
         or fix it before changing the config through the API",
        path.display()
    )]
    FileChanged {
        /// The manifest file.
        path: PathBuf,
        /// The running version.
        running: String,
    },
    /// The admin API's address and TLS settings cannot change while it serves.
    #[error("the admin API's address and TLS settings cannot change without a restart")]
    AdminMoved,
    /// The task that built the change ended without an answer.
    #[error("the change's build task failed: {0}")]
    Task(String),
    /// The edit of the running manifest's document was refused.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The manifest an edit produced was rejected; `text` is that manifest,
    /// which the diagnostics' places refer to.
    #[error("{source}")]
    Edited {
        /// The manifest the edit produced.
        text: Arc<str>,
        /// Why it was rejected.
        source: Box<ChangeError>,
    },
    /// The new manifest could not be written.
    #[error("the new config runs, but `{}` could not be written: {source}", path.display())]
    Write {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl ChangeError {
    /// Every problem of an invalid manifest, each with its place.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Config(ConfigError::Invalid { diagnostics, .. }) => diagnostics,
            Self::Edited { source, .. } => source.diagnostics(),
            _ => &[],
        }
    }
}

/// Why an edit refused to change the manifest's document.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The entity to change is not in the manifest.
    #[error("the config has no {kind} named `{name}`")]
    NotFound {
        /// `route`, `upstream`, `plugin`, or `plugin version`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The edit cannot be made to this manifest (e.g. no version to roll back to).
    #[error("{0}")]
    Conflict(String),
    /// A file the edit needs could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The edited document cannot be written as a manifest.
    #[error(transparent)]
    Emit(#[from] config::EmitError),
}

/// What a change did, with the version that runs after it (read under the
/// store's lock, so it is this change's, not a later one's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The new config runs, as this generation.
    Swapped {
        /// Its generation.
        generation: u64,
        /// Its version (the admin API's `ETag`).
        version: String,
    },
    /// The text is the one that runs: nothing to do.
    Unchanged {
        /// The running version.
        version: String,
    },
}

impl Applied {
    /// The version that runs after the change.
    pub fn version(&self) -> &str {
        match self {
            Self::Swapped { version, .. } | Self::Unchanged { version } => version,
        }
    }
}

/// The cause of the changes made through the admin API.
pub const ADMIN_API: &str = "admin API";

/// The text that runs and where it came from.
struct Running {
    generation: u64,
    digest: [u8; 32],
    text: Arc<str>,
    /// Who may call the admin API under this config.
    tokens: Arc<[AdminToken]>,
}

/// The manifest file of a running gateway and the changes made to it.
pub struct Store {
    gateway: Arc<Gateway>,
    path: PathBuf,
    /// The admin API's configured address and TLS, which a change may not alter.
    admin: Option<(SocketAddr, Option<AdminTls>)>,
    running: Mutex<Running>,
    draining: AtomicBool,
    /// The generation of every change that runs, for whoever watches
    /// (the cluster publishes a node's own changes).
    changes: watch::Sender<u64>,
    /// The cluster this node shares its config with, if any (for `/readyz`).
    cluster: OnceLock<Arc<ClusterStatus>>,
}

impl Store {
    /// The store of `gateway`, which was started from the manifest `text`
    /// read from `path` (with [`read_manifest`]), whose admin API is `admin`.
    pub fn new(gateway: Arc<Gateway>, path: PathBuf, text: String, admin: Option<&Admin>) -> Self {
        let running = Running {
            generation: gateway.generation(),
            digest: config::token_digest(text.as_bytes()),
            text: text.into(),
            tokens: admin_tokens(admin),
        };
        let admin = admin.map(|a| (a.address, a.tls.clone()));
        let (changes, _) = watch::channel(running.generation);
        Self {
            gateway,
            path,
            admin,
            running: Mutex::new(running),
            draining: AtomicBool::new(false),
            changes,
            cluster: OnceLock::new(),
        }
    }

    /// Follows the changes that run: the receiver sees the generation of
    /// each (only the newest when several come at once), whatever caused it.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records that this node shares its config through a cluster, whose
    /// state `/readyz` reports. Only the first call counts.
    pub fn join_cluster(&self, status: Arc<ClusterStatus>) {
        let _ = self.cluster.set(status);
    }

    /// The cluster this node belongs to, if it does.
    pub fn cluster(&self) -> Option<&Arc<ClusterStatus>> {
        self.cluster.get()
    }

    /// The manifest file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The gateway it changes.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The running manifest's text and version.
    pub fn current(&self) -> (Arc<str>, String) {
        let running = self.lock();
        (running.text.clone(), version(&running))
    }

    /// Who may call the admin API now.
    pub fn tokens(&self) -> Arc<[AdminToken]> {
        self.lock().tokens.clone()
    }

    /// Whether the gateway is draining (no longer ready for traffic).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the gateway as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Loads the file again and runs it if it changed. Blocks (a build
    /// compiles plugins and starts VMs): call it from a blocking task.
    /// `cause` says what asked (for the recent reloads).
    pub fn reload_file(&self, cause: &'static str) -> Result<Applied, ChangeError> {
        let mut running = self.lock();
        let text = match read_manifest(&self.path) {
            Ok(text) => text,
            Err(error) => {
                self.gateway.reload_refused(cause, &error.to_string());
                return Err(error.into());
            }
        };
        self.run(&mut running, &text, cause)
    }

    /// Runs manifest `text` and writes it to the file; with `if_match`, only
    /// when that is the running version; `cause` says who sent it. Blocks:
    /// call it from a blocking task.
    pub fn apply(
        &self,
        text: &str,
        if_match: Option<&str>,
        cause: &'static str,
    ) -> Result<Applied, ChangeError> {
        let mut running = self.lock();
        self.check_preconditions(&running, if_match)?;
        self.run_and_write(&mut running, text, cause)
    }

    /// Edits the running manifest's document (JSON, from
    /// [`config::document`]) with `change`, then runs and writes the result
    /// as [`Store::apply`] does, under the same lock and checks: the whole
    /// manifest is validated and built once. The file then holds YAML
    /// written by Weir ([`config::emit`]): the comments and layout of the
    /// text it replaces are gone. Returns what `change` said of its edit.
    /// Blocks: call it from a blocking task.
    pub fn edit<F, T>(&self, if_match: Option<&str>, change: F) -> Result<(Applied, T), ChangeError>
    where
        F: FnOnce(&mut serde_json::Value) -> Result<T, EditError>,
    {
        let mut running = self.lock();
        self.check_preconditions(&running, if_match)?;
        let mut document = config::document(&running.text)
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        let before = document.clone();
        let said = change(&mut document)?;
        if document == before {
            // Nothing to run, and the file keeps its text (and comments).
            let version = version(&running);
            return Ok((Applied::Unchanged { version }, said));
        }
        let text: Arc<str> = config::emit(&document).map_err(EditError::from)?.into();
        self.run_and_write(&mut running, &text, ADMIN_API)
            .map(|applied| (applied, said))
            .map_err(|source| match source {
                // Both carry places in the edited text.
                ChangeError::Config(_) | ChangeError::Build(_) => ChangeError::Edited {
                    text,
                    source: Box::new(source),
                },
                other => other,
            })
    }

    /// Refuses a change when `if_match` is not the running version or the
    /// file holds something other than what runs.
    fn check_preconditions(
        &self,
        running: &Running,
        if_match: Option<&str>,
    ) -> Result<(), ChangeError> {
        let current = version(running);
        if let Some(expected) = if_match
            && expected != current
            && expected != "*"
        {
            return Err(ChangeError::VersionMismatch {
                expected: expected.to_owned(),
                running: current,
            });
        }
        let on_disk = read_manifest(&self.path).map(|t| config::token_digest(t.as_bytes()));
        if on_disk.ok() != Some(running.digest) {
            return Err(ChangeError::FileChanged {
                path: self.path.clone(),
                running: current,
            });
        }
        Ok(())
    }

    /// Runs manifest `text` in place of `running` and writes it to the file.
    fn run_and_write(
        &self,
        running: &mut Running,
        text: &str,
        cause: &'static str,
    ) -> Result<Applied, ChangeError> {
        let applied = self.run(running, text, cause)?;
        if let Applied::Swapped { .. } = applied {
            write_atomically(&self.path, text.as_bytes()).map_err(|source| ChangeError::Write {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(applied)
    }

    /// Runs manifest `text` in place of `running`, unless it is the running
    /// text; the gateway remembers the attempt with its `cause`.
    fn run(
        &self,
        running: &mut Running,
        text: &str,
        cause: &'static str,
    ) -> Result<Applied, ChangeError> {
        let digest = config::token_digest(text.as_bytes());
        if digest == running.digest {
            return Ok(Applied::Unchanged {
                version: version(running),
            });
        }
        let checked = config::parse(text, &self.path, self.base_dir())
            .map_err(ChangeError::from)
            .and_then(|manifest| self.check_admin(&manifest).map(|()| manifest));
        let manifest = match checked {
            Ok(manifest) => manifest,
            Err(error) => {
                self.gateway.reload_refused(cause, &error.to_string());
                return Err(error);
            }
        };
        let generation = self.gateway.reload_because(&manifest, cause)?;
        *running = Running {
            generation,
            digest,
            text: text.into(),
            tokens: admin_tokens(manifest.admin.as_ref()),
        };
        self.changes.send_replace(generation);
        Ok(Applied::Swapped {
            generation,
            version: version(running),
        })
    }

    /// Checks manifest `text` as `apply` would, without running it.
    pub fn validate(&self, text: &str) -> Result<(), ChangeError> {
        let manifest = config::parse(text, &self.path, self.base_dir())?;
        crate::gateway::build_chains(
            &manifest,
            &crate::gateway::Options::default(),
            &crate::services::Services::standalone(),
        )?;
        Ok(())
    }

    /// The admin API keeps its socket and TLS: a change may not alter them.
    fn check_admin(&self, manifest: &config::Manifest) -> Result<(), ChangeError> {
        let wanted = manifest.admin.as_ref().map(|a| (a.address, a.tls.clone()));
        if self.admin.is_some() && self.admin != wanted {
            return Err(ChangeError::AdminMoved);
        }
        Ok(())
    }

    /// The directory the manifest's relative paths start from.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn admin_tokens(admin: Option<&Admin>) -> Arc<[AdminToken]> {
    admin.map_or_else(Vec::new, |a| a.tokens.clone()).into()
}

/// A version callers can compare: the generation and the start of the text's digest.
fn version(running: &Running) -> String {
    let hex: String = running.digest[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}-{hex}", running.generation)
}

/// Reads a manifest's text (bounded and checked as `config::load` does).
pub fn read_manifest(path: &Path) -> Result<String, ConfigError> {
    let bytes =
        config::read_file(path, MAX_MANIFEST_BYTES).map_err(|reason| ConfigError::Read {
            path: path.to_path_buf(),
            reason,
        })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
        path: path.to_path_buf(),
        diagnostics: vec![Diagnostic {
            location: config::Location { line: 1, column: 1 },
            message: "the manifest is not UTF-8 text".to_owned(),
        }],
    })
}

/// Writes `bytes` to a new file beside `path`, flushes it, and renames it over `path`.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fresh = path.with_file_name(format!(".{name}.weir-new"));
    let mut file = std::fs::File::create(&fresh)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&fresh, path)
}
