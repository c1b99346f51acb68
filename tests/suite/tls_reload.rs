//! A TLS listener's certificate rotated on disk while it serves: new
//! connections get the new certificate, open ones go on, and files that do
//! not load leave the running certificate in place.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use weir_tests::{EchoUpstream, TestGateway, TestPki, eventually, json, tls_client};

const NAME: &str = "api.example.test";

/// A gateway serving `api.crt`/`api.key` (issued by `pki`) in its dir.
async fn gateway(up: &EchoUpstream, pki: &TestPki) -> anyhow::Result<(TestGateway, Vec<u8>)> {
    let dir = tempfile::tempdir()?;
    let leaf = pki.leaf(dir.path(), "api", &[NAME])?;
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners:
  - name: secure
    address: 127.0.0.1:0
    tls: {{ certificates: [{{ cert: api.crt, key: api.key }}] }}
upstreams: [{{ name: echo, targets: ["{}"] }}]
routes: [{{ name: all, upstream: echo }}]
"#,
        up.addr
    );
    Ok((TestGateway::from_yaml_in(&yaml, dir).await?, leaf.der))
}

/// The leaf certificate a new connection to `gw` is shown (verified against
/// no CA: the test compares it byte for byte).
async fn presented(gw: &TestGateway) -> anyhow::Result<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(gw.addr("secure")).await?;
    let tls = connector
        .connect(ServerName::try_from(NAME.to_owned())?, tcp)
        .await?;
    let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
    Ok(chain.first().map(|c| c.to_vec()).unwrap_or_default())
}

/// Accepts whatever certificate the server shows (its signatures are still
/// checked), so a test can look at it.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Issues a new certificate for [`NAME`] from `pki` and moves it over the
/// gateway's files (key first, each by an atomic rename); its DER.
fn rotate(gw: &TestGateway, pki: &TestPki) -> anyhow::Result<Vec<u8>> {
    let staging = tempfile::tempdir()?;
    let leaf = pki.leaf(staging.path(), "api", &[NAME])?;
    std::fs::rename(&leaf.key, gw.dir.path().join("api.key"))?;
    std::fs::rename(&leaf.cert, gw.dir.path().join("api.crt"))?;
    Ok(leaf.der)
}

async fn get(client: &reqwest::Client, gw: &TestGateway) -> anyhow::Result<u16> {
    let url = format!("https://{NAME}:{}/", gw.addr("secure").port());
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    json(response).await?;
    Ok(status)
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_while_open_ones_go_on() -> anyhow::Result<()>
{
    let up = EchoUpstream::start("echo").await?;
    let (old_ca, new_ca) = (TestPki::new()?, TestPki::new()?);
    let (gw, old_der) = gateway(&up, &old_ca).await?;
    // Trusts the old CA only: after the rotation, only a connection opened
    // before it can still be used.
    let old_client = tls_client(&old_ca.ca_pem, NAME, gw.addr("secure"))?;
    assert_eq!(get(&old_client, &gw).await?, 200);
    assert_eq!(presented(&gw).await?, old_der);

    let new_der = rotate(&gw, &new_ca)?;
    let rotated = eventually(Duration::from_secs(10), async || {
        presented(&gw).await.is_ok_and(|der| der == new_der)
    })
    .await;
    assert!(rotated, "new connections never got the new certificate");
    let new_client = tls_client(&new_ca.ca_pem, NAME, gw.addr("secure"))?;
    assert_eq!(get(&new_client, &gw).await?, 200);
    assert_eq!(
        get(&old_client, &gw).await?,
        200,
        "the open connection goes on"
    );
    let reloads = gw.gateway().certificate_reloads("secure");
    assert_eq!(reloads.map(|r| r.swapped), Some(1));
    Ok(())
}

#[tokio::test]
async fn files_that_do_not_load_leave_the_running_certificate() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let pki = TestPki::new()?;
    let (gw, der) = gateway(&up, &pki).await?;
    let cert = gw.dir.path().join("api.crt");

    // Not PEM: refused by the watcher, with the file named.
    std::fs::write(&cert, "not a certificate")?;
    let refused = eventually(Duration::from_secs(10), async || {
        gw.gateway()
            .certificate_reloads("secure")
            .is_some_and(|r| r.refused >= 1)
    })
    .await;
    assert!(refused, "the watcher never looked at the broken file");
    let reloads = gw
        .gateway()
        .certificate_reloads("secure")
        .unwrap_or_default();
    let reason = reloads.last_error.unwrap_or_default();
    assert!(
        reason.contains(&cert.display().to_string()) && reason.contains("no certificate"),
        "{reason}"
    );
    assert_eq!(presented(&gw).await?, der);

    // A certificate whose key is another one's: refused when reloaded by hand too.
    let staging = tempfile::tempdir()?;
    let other = pki.leaf(staging.path(), "other", &[NAME])?;
    std::fs::copy(&other.cert, &cert)?;
    let error = gw
        .gateway()
        .reload_certificates()
        .expect_err("the key does not match");
    assert!(error.to_string().contains("api.crt"), "{error}");
    assert_eq!(presented(&gw).await?, der);
    let client = tls_client(&pki.ca_pem, NAME, gw.addr("secure"))?;
    assert_eq!(get(&client, &gw).await?, 200);

    // Its key follows: the pair loads.
    std::fs::copy(&other.key, gw.dir.path().join("api.key"))?;
    assert!(
        eventually(Duration::from_secs(10), async || {
            presented(&gw).await.is_ok_and(|d| d == other.der)
        })
        .await
    );
    assert_eq!(
        gw.gateway().reload_certificates()?,
        0,
        "nothing changed since"
    );

    // Files that are gone: the listener serves what it loaded.
    std::fs::remove_file(&cert)?;
    let error = gw.gateway().reload_certificates().expect_err("no file");
    assert!(error.to_string().contains("api.crt"), "{error}");
    assert_eq!(presented(&gw).await?, other.der);
    Ok(())
}
