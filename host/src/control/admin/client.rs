//! A small client of the admin API, for the `weir apply` and `weir admin`
//! commands: one request per connection, HTTP/1.1, over TLS for an
//! `https://` URL (trusting the given CA, else the system's roots, and
//! presenting a client certificate when one is given).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why a call to the admin API failed before it had an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The admin URL is not `http://host:port` or `https://host:port`.
    #[error(
        "`{0}` is not an admin API URL like http://127.0.0.1:9901 or https://admin.example:9901"
    )]
    Url(String),
    /// A CA, certificate or key file cannot be used.
    #[error("{}: {reason}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS settings are incomplete or refused.
    #[error("TLS: {0}")]
    Tls(String),
    /// The TLS handshake failed (e.g. the server refused the client certificate).
    #[error("TLS handshake with {address} failed: {source}")]
    Handshake {
        /// Where.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The connection failed.
    #[error("cannot reach the admin API at {address}: {source}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("the admin API call failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("the admin API request is invalid: {0}")]
    Request(#[from] http::Error),
}

/// An answer of the admin API.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: http::HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// A problem answer as lines a person reads: its title and detail, then
    /// each violation with its place.
    pub fn problem_text(&self) -> String {
        let problem = self.json();
        let mut lines = vec![format!(
            "{} ({}): {}",
            problem["title"].as_str().unwrap_or("error"),
            self.status.as_u16(),
            problem["detail"].as_str().unwrap_or_default()
        )];
        for error in problem["errors"].as_array().into_iter().flatten() {
            lines.push(format!(
                "  {} (line {}, column {}): {}",
                error["pointer"].as_str().unwrap_or("-"),
                error["line"],
                error["column"],
                error["detail"].as_str().unwrap_or_default()
            ));
        }
        lines.join("\n")
    }
}

/// How the client speaks TLS to an `https://` admin API.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA certificates (PEM) that issued the admin API's certificate; the
    /// system's roots when absent.
    pub ca: Option<PathBuf>,
    /// A client certificate chain (PEM) for an admin API that asks for one.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// The rustls configuration these settings describe.
    fn config(&self) -> Result<rustls::ClientConfig, ClientError> {
        let file_error = |path: &PathBuf, reason: String| ClientError::TlsFile {
            path: path.clone(),
            reason,
        };
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for cert in
                    CertificateDer::pem_file_iter(ca).map_err(|e| file_error(ca, e.to_string()))?
                {
                    roots
                        .add(cert.map_err(|e| file_error(ca, e.to_string()))?)
                        .map_err(|e| file_error(ca, e.to_string()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| file_error(cert, e.to_string()))?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| file_error(key, e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| file_error(cert, e.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(ClientError::Tls(
                    "a client certificate needs both its certificate and its key".into(),
                ));
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// An admin API and how to reach it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// A bearer token of the manifest's `admin.tokens`.
    pub token: Option<String>,
    /// TLS settings for an `https://` URL.
    pub tls: ClientTls,
}

impl Endpoint {
    /// The admin API at `url`, called with `token` (no TLS settings).
    pub fn new(url: impl Into<String>, token: Option<&str>) -> Self {
        Self {
            url: url.into(),
            token: token.map(str::to_owned),
            tls: ClientTls::default(),
        }
    }
}

/// Sends one request to the admin API at `endpoint`.
pub async fn call(
    endpoint: &Endpoint,
    method: Method,
    path_and_query: &str,
    body: Option<(Bytes, &'static str)>,
    if_match: Option<&str>,
) -> Result<Answer, ClientError> {
    let base = endpoint.url.as_str();
    let uri: Uri = format!("{}{path_and_query}", base.trim_end_matches('/'))
        .parse()
        .map_err(|_| ClientError::Url(base.to_owned()))?;
    let authority = uri
        .authority()
        .ok_or_else(|| ClientError::Url(base.to_owned()))?
        .clone();
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(ClientError::Url(base.to_owned())),
    };
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(if https { 443 } else { 80 })
    );
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|source| ClientError::Connect {
            address: address.clone(),
            source,
        })?;
    let mut sender = if https {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server_name =
            ServerName::try_from(host.to_owned()).map_err(|_| ClientError::Url(base.to_owned()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(endpoint.tls.config()?));
        let stream = connector
            .connect(server_name, stream)
            .await
            .map_err(|source| ClientError::Handshake {
                address: address.clone(),
                source,
            })?;
        handshake(stream).await?
    } else {
        handshake(stream).await?
    };
    let mut request = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |pq| pq.as_str()))
        .header(header::HOST, authority.as_str());
    if let Some(token) = &endpoint.token
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        request = request.header(header::AUTHORIZATION, value);
    }
    if let Some(version) = if_match {
        request = request.header(header::IF_MATCH, format!("\"{version}\""));
    }
    let (body, content_type) = body.unwrap_or((Bytes::new(), "application/json"));
    let request = request
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

/// Starts an HTTP/1.1 client connection on `stream`, driven by a task of its own.
async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}
