//! TLS termination: SNI certificate choice and ALPN h2.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use weir_tests::{EchoUpstream, TestGateway, TestPki, json, tls_client};

async fn tls_gateway(
    up: &EchoUpstream,
) -> anyhow::Result<(TestGateway, TestPki, Vec<u8>, Vec<u8>)> {
    let pki = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    let api = pki.leaf(dir.path(), "api", &["api.example.test"])?;
    let fallback = pki.leaf(
        dir.path(),
        "default",
        &["default.example.test", "other.example.test"],
    )?;
    let yaml = format!(
        r#"apiVersion: weir/v1
listeners:
  - name: secure
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: api.crt, key: api.key, server_names: [api.example.test] }}
        - {{ cert: default.crt, key: default.key }}
upstreams: [{{ name: echo, targets: ["{}"] }}]
plugins: [{{ name: props, file: "{}" }}]
routes:
  - name: all
    upstream: echo
    filters: [{{ plugin: props, config: {{ properties_to_request_headers: [connection.requested_server_name] }} }}]
"#,
        up.addr,
        weir_tests::test_filter_wasm()
    );
    let gw = TestGateway::from_yaml_in(&yaml, dir).await?;
    Ok((gw, pki, api.der, fallback.der))
}

/// The leaf certificate the server presents for `sni`.
async fn presented_certificate(
    gw: &TestGateway,
    pki: &TestPki,
    sni: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(pki.ca_pem.as_bytes())
        .map(|c: CertificateDer<'static>| c)?;
    roots.add(ca)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(gw.addr("secure")).await?;
    let tls = connector
        .connect(ServerName::try_from(sni.to_owned())?, tcp)
        .await?;
    let (_, session) = tls.get_ref();
    let chain = session.peer_certificates().unwrap_or_default();
    Ok(chain.first().map(|c| c.to_vec()).unwrap_or_default())
}

#[tokio::test]
async fn chooses_the_certificate_by_sni() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let (gw, pki, api_der, default_der) = tls_gateway(&up).await?;
    assert_eq!(
        presented_certificate(&gw, &pki, "api.example.test").await?,
        api_der
    );
    assert_eq!(
        presented_certificate(&gw, &pki, "other.example.test").await?,
        default_der
    );
    Ok(())
}

#[tokio::test]
async fn negotiates_h2_by_alpn_and_forwards_as_https() -> anyhow::Result<()> {
    let up = EchoUpstream::start("echo").await?;
    let (gw, pki, _, _) = tls_gateway(&up).await?;
    let client = tls_client(&pki.ca_pem, "api.example.test", gw.addr("secure"))?;
    let url = format!(
        "https://api.example.test:{}/secure",
        gw.addr("secure").port()
    );
    let response = client.get(&url).send().await?;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let echoed = json(response).await?;
    assert_eq!(echoed["path"], "/secure");
    assert_eq!(echoed["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(
        echoed["headers"]["x-prop-connection.requested_server_name"][0], "api.example.test",
        "filters see the TLS server name"
    );
    Ok(())
}
