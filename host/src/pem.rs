//! PEM files read into what rustls takes: certificate chains, private keys
//! and CA roots, each error naming the file. Knows nothing of listeners or
//! upstreams, which both read their certificates through it.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that cannot be read, or holds nothing usable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct PemError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

fn error(path: &Path, reason: impl ToString) -> PemError {
    PemError {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The certificates of `path`, leaf first; at least one.
pub fn chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(path, e))?;
    if chain.is_empty() {
        return Err(error(path, "no certificate found"));
    }
    Ok(chain)
}

/// The private key of `path`.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| error(path, e))
}

/// The CA certificates of `path` as trust roots; at least one.
pub fn roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in chain(path)? {
        roots.add(cert).map_err(|e| error(path, e))?;
    }
    Ok(roots)
}
