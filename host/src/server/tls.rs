//! TLS termination: certificates loaded from PEM files, chosen by SNI, with ALPN
//! offering h2 and HTTP/1.1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use super::certs::ListenerCerts;
use crate::config::model::AdminTls;

/// Why a listener's TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error(transparent)]
    Pem(#[from] crate::pem::PemError),
    /// A client CA file holds no certificate rustls can verify clients with.
    #[error("client CA {}: {reason}", path.display())]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate or key.
    #[error("certificate {}: {source}", path.display())]
    Rustls {
        /// The certificate file.
        path: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
}

/// Builds the rustls server configuration of a listener, whose
/// certificates `certs` resolves (and reloads).
pub fn server_config(certs: Arc<ListenerCerts>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            path: PathBuf::new(),
            source,
        })?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The crypto provider every listener uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the rustls server configuration of the admin listener: one
/// certificate, HTTP/1.1, and with `client_ca` a client certificate that CA
/// issued required of every client.
pub fn admin_server_config(tls: &AdminTls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let resolver = SniResolver {
        by_name: HashMap::new(),
        default: Some(Arc::new(load_certified_key(
            &tls.cert, &tls.key, &provider,
        )?)),
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            path: tls.cert.clone(),
            source,
        })?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let ca_error = |reason: String| TlsError::ClientCa {
                path: ca.clone(),
                reason,
            };
            let roots = crate::pem::roots(ca).map_err(|e| ca_error(e.reason))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = crate::pem::chain(cert)?;
    let private_key = crate::pem::key(key)?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|source| TlsError::Rustls {
        path: cert.to_path_buf(),
        source,
    })
}

/// Picks a certificate by exact SNI name, then by `*.` wildcard, then the default.
#[derive(Debug, Default)]
pub(super) struct SniResolver {
    pub(super) by_name: HashMap<String, Arc<CertifiedKey>>,
    pub(super) default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    pub(super) fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name.map(str::to_ascii_lowercase) {
            if let Some(key) = self.by_name.get(&name) {
                return Some(key.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(key) = self.by_name.get(&format!("*.{parent}"))
            {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
    }
}
