//! TLS to upstreams against a real TLS server made in the test (rcgen
//! certificates): the target verified by the configured CA and named by SNI,
//! a target another CA signed refused, and mutual TLS with a client
//! certificate the upstream requires.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use weir_tests::{TestGateway, TestPki, http1_client, json};

/// A TLS upstream presenting `cert`/`key`; with `client_ca`, it requires a
/// client certificate that CA issued. It answers
/// `{"sni": <the name the client sent>, "client_certificate": <bool>}`.
async fn tls_upstream(
    cert: &Path,
    key: &Path,
    client_ca: Option<&str>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca.as_bytes())?)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots.into(), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, session) = tls.get_ref();
                let answer = serde_json::json!({
                    "sni": session.server_name(),
                    "client_certificate": session.peer_certificates().is_some(),
                })
                .to_string();
                let service = service_fn(move |_request| {
                    let answer = answer.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            answer,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

/// A gateway whose one route goes to `target` over TLS set as `tls` (YAML
/// flow mapping), with the manifest's files in `dir`.
async fn gateway(dir: tempfile::TempDir, target: &str, tls: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml_in(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: secure, targets: ["{target}"], tls: {tls} }}]
routes: [{{ name: all, upstream: secure }}]
"#
        ),
        dir,
    )
    .await
}

#[tokio::test]
async fn the_target_is_verified_by_the_given_ca_and_named_by_sni() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    let leaf = pki.leaf(dir.path(), "upstream", &["upstream.test", "localhost"])?;
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem)?;
    let (addr, _server) = tls_upstream(&leaf.cert, &leaf.key, None).await?;

    let named = gateway(
        dir,
        &addr.to_string(),
        "{ server_name: upstream.test, ca: ca.pem }",
    )
    .await?;
    let response = http1_client().get(named.url("main", "/")).send().await?;
    assert_eq!(response.status(), 200);
    let seen = json(response).await?;
    assert_eq!(seen["sni"], "upstream.test");
    assert_eq!(seen["client_certificate"], false);

    // Without `server_name`, the target's host is the name.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem)?;
    let by_host = gateway(dir, &format!("localhost:{}", addr.port()), "{ ca: ca.pem }").await?;
    let seen = json(http1_client().get(by_host.url("main", "/")).send().await?).await?;
    assert_eq!(seen["sni"], "localhost");
    Ok(())
}

#[tokio::test]
async fn a_target_another_ca_signed_is_refused() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let stranger = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    let leaf = stranger.leaf(dir.path(), "upstream", &["upstream.test"])?;
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem)?;
    let (addr, _server) = tls_upstream(&leaf.cert, &leaf.key, None).await?;
    let gw = gateway(
        dir,
        &addr.to_string(),
        "{ server_name: upstream.test, ca: ca.pem }",
    )
    .await?;
    let response = http1_client().get(gw.url("main", "/")).send().await?;
    assert_eq!(response.status(), 502);
    assert_eq!(
        json(response).await?["error"]["code"],
        "upstream_unavailable"
    );
    Ok(())
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate_the_upstream_requires() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    let leaf = pki.leaf(dir.path(), "upstream", &["upstream.test"])?;
    pki.leaf(dir.path(), "gateway", &["gateway.test"])?;
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem)?;
    let (addr, _server) = tls_upstream(&leaf.cert, &leaf.key, Some(&pki.ca_pem)).await?;

    let with_certificate = gateway(
        dir,
        &addr.to_string(),
        "{ server_name: upstream.test, ca: ca.pem, cert: gateway.crt, key: gateway.key }",
    )
    .await?;
    let response = http1_client()
        .get(with_certificate.url("main", "/"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await?["client_certificate"], true);

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem)?;
    let without = gateway(
        dir,
        &addr.to_string(),
        "{ server_name: upstream.test, ca: ca.pem }",
    )
    .await?;
    let response = http1_client().get(without.url("main", "/")).send().await?;
    assert_eq!(
        response.status(),
        502,
        "the upstream refuses a client without a certificate"
    );
    Ok(())
}
