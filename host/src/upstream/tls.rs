//! TLS to upstream targets: one rustls client configuration per group (trust
//! roots from a CA file or the system's, an optional client certificate for
//! mutual TLS), and the handshake on a target's TCP stream, with the SNI name
//! configured or the target's host and the HTTP versions offered by ALPN.

use std::io;
use std::sync::Arc;

use http::uri::Authority;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::model::UpstreamTls;
use crate::pem::{self, PemError};

/// Why an upstream's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A CA, certificate or key file.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The system has no trust roots rustls can use, and no `ca` was given.
    #[error("no `ca` given and the system's trust roots cannot be read: {0}")]
    NoSystemRoots(String),
    /// `server_name` is not a DNS name or an IP address.
    #[error("`{0}` is not a server name (a DNS name or an IP address)")]
    ServerName(String),
    /// rustls refused the settings (a client certificate that does not match its key).
    #[error("the TLS settings are refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The HTTP versions a TLS connection offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1` only.
    Http1,
    /// `h2` only.
    H2,
    /// `h2`, then `http/1.1`: the target picks.
    Both,
}

/// Makes TLS connections to the targets of one group.
pub struct UpstreamConnector {
    /// One connector per ALPN offer ([`Alpn`]'s order), sharing the settings.
    connectors: [TlsConnector; 3],
    server_name: Option<ServerName<'static>>,
}

impl UpstreamConnector {
    /// Loads `tls`'s files and builds the client configuration, once for
    /// each ALPN offer.
    pub fn new(tls: &UpstreamTls) -> Result<Self, TlsSetupError> {
        let roots = match &tls.ca {
            Some(ca) => pem::roots(ca)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match &tls.client {
            Some((cert, key)) => {
                builder.with_client_auth_cert(pem::chain(cert)?, pem::key(key)?)?
            }
            None => builder.with_no_client_auth(),
        };
        let offering = |protocols: &[&[u8]]| {
            let mut config = config.clone();
            config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(config))
        };
        let connectors = [
            offering(&[b"http/1.1"]),
            offering(&[b"h2"]),
            offering(&[b"h2", b"http/1.1"]),
        ];
        let server_name = tls
            .server_name
            .as_ref()
            .map(|name| {
                ServerName::try_from(name.clone())
                    .map_err(|_| TlsSetupError::ServerName(name.clone()))
            })
            .transpose()?;
        Ok(Self {
            connectors,
            server_name,
        })
    }

    /// The TLS handshake on `stream`, a connection to `target`, offering
    /// `alpn`; whether the target picked `h2` comes with the stream.
    pub async fn connect(
        &self,
        target: &Authority,
        stream: TcpStream,
        alpn: Alpn,
    ) -> io::Result<(TlsStream<TcpStream>, bool)> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = target.host().trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_owned())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            }
        };
        let connector = &self.connectors[alpn as usize];
        let secured = connector.connect(name, stream).await?;
        let h2 = secured.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok((secured, h2))
    }
}

/// The system's trust roots.
fn system_roots() -> Result<rustls::RootCertStore, TlsSetupError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(TlsSetupError::NoSystemRoots(why));
    }
    Ok(roots)
}
