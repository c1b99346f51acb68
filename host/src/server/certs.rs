//! A TLS listener's certificates, reloaded from disk without a restart: the
//! listener's rustls config resolves each handshake's certificate through
//! [`ListenerCerts`], whose table of certificates by SNI name is swapped
//! whole (`ArcSwap`) when the files change. A handshake under way keeps the
//! certificate it was given; the next one gets the new table. A new set
//! that does not load (a file missing, unreadable, not PEM, a key that does
//! not match its certificate) is refused with its reason and the running
//! one stays.
//!
//! [`watch`] re-reads the files when anything changes in their directories
//! (editors and secret stores replace files by renaming or swapping a
//! symlink, which a watch on the file itself would miss).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::{mpsc, watch as signal};

use super::tls::{SniResolver, TlsError};
use crate::config::MAX_PEM_BYTES;
use crate::config::model::ListenerTls;
use crate::pem::PemError;

/// How long the certificate files must stay quiet before they are read
/// again: a certificate and its key are written one after the other.
const SETTLE: Duration = Duration::from_millis(200);

/// The bytes of each certificate's certificate and key files, in the
/// listener's order.
type Files = Vec<(Vec<u8>, Vec<u8>)>;

/// The certificates of one TLS listener, as loaded last.
pub struct ListenerCerts {
    listener: String,
    tls: ListenerTls,
    provider: Arc<CryptoProvider>,
    table: ArcSwap<SniResolver>,
    /// The bytes of each certificate's files as loaded, to tell a change.
    loaded: Mutex<Files>,
    swapped: AtomicU64,
    refused: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// How a listener's certificate reloads went so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateReloads {
    /// New certificates swapped in since the listener started.
    pub swapped: u64,
    /// Changed files refused (the running certificates stayed).
    pub refused: u64,
    /// Why the last refusal happened.
    pub last_error: Option<String>,
}

impl std::fmt::Debug for ListenerCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCerts")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl ListenerCerts {
    /// Loads the certificates of listener `listener`.
    pub fn load(
        listener: &str,
        tls: &ListenerTls,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let (files, table) = read(tls, &provider)?;
        Ok(Self {
            listener: listener.to_owned(),
            tls: tls.clone(),
            provider,
            table: ArcSwap::from_pointee(table),
            loaded: Mutex::new(files),
            swapped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// The listener's name.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// Every certificate and key file.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        (self.tls.certificates.iter()).flat_map(|c| [c.cert.as_path(), c.key.as_path()])
    }

    /// How its reloads went so far.
    pub fn reloads(&self) -> CertificateReloads {
        CertificateReloads {
            swapped: self.swapped.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// Reads the files again and swaps their certificates in when they
    /// changed and load; `Ok(true)` when swapped, `Ok(false)` when nothing
    /// changed. A set that does not load is refused, logged and returned;
    /// the running one stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let mut loaded = lock(&self.loaded);
        let files = match read_files(&self.tls) {
            Ok(files) if files == *loaded => return Ok(false),
            Ok(files) => files,
            Err(error) => return Err(self.refuse(error)),
        };
        let table = match table(&self.tls, &files, &self.provider) {
            Ok(table) => table,
            Err(error) => return Err(self.refuse(error)),
        };
        self.table.store(Arc::new(table));
        *loaded = files;
        self.swapped.fetch_add(1, Ordering::Relaxed);
        tracing::info!(listener = %self.listener, "TLS certificates reloaded");
        Ok(true)
    }

    fn refuse(&self, error: TlsError) -> TlsError {
        self.refused.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some(error.to_string());
        tracing::error!(
            listener = %self.listener,
            %error,
            "new TLS certificates refused; the running ones stay"
        );
        error
    }
}

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table.load().lookup(hello.server_name())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads every certificate's files and builds the table of `tls`.
fn read(tls: &ListenerTls, provider: &CryptoProvider) -> Result<(Files, SniResolver), TlsError> {
    let files = read_files(tls)?;
    let table = table(tls, &files, provider)?;
    Ok((files, table))
}

/// The bytes of each certificate's certificate and key files.
fn read_files(tls: &ListenerTls) -> Result<Files, TlsError> {
    let read =
        |path: &Path| crate::config::read_file(path, MAX_PEM_BYTES).map_err(|e| pem_error(path, e));
    (tls.certificates.iter())
        .map(|c| Ok((read(&c.cert)?, read(&c.key)?)))
        .collect()
}

fn pem_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Pem(PemError {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })
}

/// The certificates of `tls` by SNI name, from its files' bytes `files`.
fn table(
    tls: &ListenerTls,
    files: &[(Vec<u8>, Vec<u8>)],
    provider: &CryptoProvider,
) -> Result<SniResolver, TlsError> {
    let mut resolver = SniResolver::default();
    for (cert, (chain_pem, key_pem)) in tls.certificates.iter().zip(files) {
        let key = Arc::new(certified_key(
            (&cert.cert, chain_pem),
            (&cert.key, key_pem),
            provider,
        )?);
        if cert.server_names.is_empty() {
            resolver.default.get_or_insert_with(|| key.clone());
        }
        for name in &cert.server_names {
            resolver
                .by_name
                .entry(name.clone())
                .or_insert_with(|| key.clone());
        }
    }
    Ok(resolver)
}

/// A certificate chain and its key from PEM bytes, the key checked against
/// the chain's leaf.
fn certified_key(
    (cert_path, chain_pem): (&Path, &[u8]),
    (key_path, key_pem): (&Path, &[u8]),
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_path, e))?;
    if chain.is_empty() {
        return Err(pem_error(cert_path, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem_error(key_path, e))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Rustls {
        path: cert_path.to_path_buf(),
        source,
    })
}

/// Reloads `certs` whenever something changes in the directories of their
/// files, until `shutdown` fires; the watcher must be kept alive as long.
/// Runs its task on the current tokio runtime.
pub fn watch(
    certs: Vec<Arc<ListenerCerts>>,
    mut shutdown: signal::Receiver<bool>,
) -> Result<RecommendedWatcher, notify::Error> {
    let dirs: HashSet<PathBuf> = (certs.iter())
        .flat_map(|c| c.files().map(Path::to_path_buf).collect::<Vec<_>>())
        .map(|file| {
            let file = file.canonicalize().unwrap_or(file);
            file.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        })
        .collect();
    let (tx, mut changes) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                change = changes.recv() => if change.is_none() { return },
            }
            // Let a certificate and its key both be written.
            crate::file_watch::settle(&mut changes, SETTLE).await;
            let certs = certs.clone();
            // Failures are logged by `reload`.
            let _ = tokio::task::spawn_blocking(move || {
                for listener in &certs {
                    let _ = listener.reload();
                }
            })
            .await;
        }
    });
    Ok(watcher)
}
