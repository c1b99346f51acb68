//! jwt-auth through the gateway: every algorithm in the built-in module, a
//! JWKS served by a real HTTP server in the test that rotates its keys,
//! consumers resolved from the token's subject, the anonymous consumer, and
//! two auth filters on one route.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_tests::{EchoUpstream, TestGateway, dead_address, eventually, http1_client, json, serve};

/// The test keys of the jwt-auth crate (`plugins/jwt-auth/testdata`).
fn test_key(file: &str) -> Vec<u8> {
    let path = format!(
        "{}/../plugins/jwt-auth/testdata/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const SECRET: &[u8] = b"a shared secret of thirty-two bytes";

/// The private key signing `alg` (RSA ones: `rsa-1` or `rsa-2`).
fn private(alg: Algorithm, rsa: &str) -> EncodingKey {
    match alg.family() {
        AlgorithmFamily::Hmac => EncodingKey::from_secret(SECRET),
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_der(&test_key(&format!("{rsa}.der"))),
        AlgorithmFamily::Ec if alg == Algorithm::ES256 => {
            EncodingKey::from_ec_der(&test_key("ec-p256.der"))
        }
        AlgorithmFamily::Ec => EncodingKey::from_ec_der(&test_key("ec-p384.der")),
        AlgorithmFamily::Ed => EncodingKey::from_ed_der(&test_key("ed25519.der")),
    }
}

/// The public JWK of `key` for `alg`, named `kid`, not pinned to `alg`.
fn public_jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> anyhow::Result<Value> {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, alg)?)?;
    jwk["kid"] = json!(kid);
    if let Some(object) = jwk.as_object_mut() {
        object.remove("alg");
    }
    Ok(jwk)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token for `claims` signed with `key` as `alg`, naming `kid`.
fn token(key: &EncodingKey, alg: Algorithm, kid: &str, claims: &Value) -> anyhow::Result<String> {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    Ok(jsonwebtoken::encode(&header, claims, key)?)
}

/// An identity provider's JWKS endpoint: serves the document it holds now
/// (which the test swaps to rotate keys) and counts the fetches.
struct JwksServer {
    addr: std::net::SocketAddr,
    document: Arc<Mutex<String>>,
    /// When each JWKS request arrived.
    fetches: Arc<Mutex<Vec<Instant>>>,
    task: JoinHandle<()>,
}

impl JwksServer {
    async fn start(document: &Value) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let document = Arc::new(Mutex::new(document.to_string()));
        let fetches = Arc::new(Mutex::new(Vec::new()));
        let (served, counted) = (document.clone(), fetches.clone());
        let task = serve(listener, move |request| {
            let (served, counted) = (served.clone(), counted.clone());
            async move {
                if request.uri().path() != "/jwks" {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                    return response;
                }
                if let Ok(mut times) = counted.lock() {
                    times.push(Instant::now());
                }
                let body = served.lock().map(|d| d.clone()).unwrap_or_default();
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_default()
            }
        });
        Ok(Self {
            addr,
            document,
            fetches,
            task,
        })
    }

    /// Serves `document` from now on.
    fn rotate(&self, document: &Value) {
        if let Ok(mut current) = self.document.lock() {
            *current = document.to_string();
        }
    }

    fn hits(&self) -> usize {
        self.fetch_times().len()
    }

    fn fetch_times(&self) -> Vec<Instant> {
        self.fetches.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway in front of `app` whose route `r` runs `filters` (YAML flow),
/// with upstream `idp` at `idp` and `consumers` (YAML flow list).
async fn gateway(
    app: &EchoUpstream,
    idp: std::net::SocketAddr,
    plugins: &str,
    filters: &str,
    consumers: &str,
) -> anyhow::Result<TestGateway> {
    TestGateway::with_workers(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: app, targets: ["{}"] }}
  - {{ name: idp, targets: ["{idp}"] }}
consumers: {consumers}
plugins: {plugins}
routes: [{{ name: r, upstream: app, filters: {filters} }}]
"#,
            app.addr,
        ),
        2,
    )
    .await
}

/// The status, message and challenge of a request with `token`.
async fn call(gw: &TestGateway, token: Option<&str>) -> anyhow::Result<(u16, Value, String)> {
    let mut request = http1_client().get(gw.url("main", "/"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, json(response).await?, challenge))
}

#[tokio::test]
async fn every_algorithm_verifies_in_the_built_in_module() -> anyhow::Result<()> {
    let algorithms = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    // Asymmetric keys from the JWKS, the HMAC one inline.
    let mut keys = Vec::new();
    for alg in &algorithms[3..] {
        keys.push(public_jwk(
            &private(*alg, "rsa-1"),
            *alg,
            &format!("{alg:?}"),
        )?);
    }
    let idp = JwksServer::start(&json!({ "keys": keys })).await?;
    let app = EchoUpstream::start("app").await?;
    let oct = public_jwk(&private(Algorithm::HS256, ""), Algorithm::HS256, "hmac")?;
    let gw = gateway(
        &app,
        idp.addr,
        "[{ name: jwt-auth, builtin: jwt-auth }]",
        &format!(
            "[{{ plugin: jwt-auth, config: {{ jwks: {{ upstream: idp, path: /jwks }}, keys: [{oct}], \
             issuer: https://idp.test, audiences: [api] }} }}]"
        ),
        "[]",
    )
    .await?;
    let claims = json!({"sub": "ada", "iss": "https://idp.test", "aud": "api", "exp": now() + 600});
    for alg in algorithms {
        let kid = if alg.family() == AlgorithmFamily::Hmac {
            "hmac".to_owned()
        } else {
            format!("{alg:?}")
        };
        let signed = token(&private(alg, "rsa-1"), alg, &kid, &claims)?;
        let (status, body, _) = call(&gw, Some(&signed)).await?;
        assert_eq!(status, 200, "{alg:?}: {body}");
        assert_eq!(body["headers"]["x-jwt-sub"][0], "ada", "{alg:?}");
    }
    assert_eq!(idp.hits(), 1, "one fetch served both VMs and every request");
    Ok(())
}

#[tokio::test]
async fn rotated_keys_are_fetched_on_an_unknown_kid_within_the_rate_bound() -> anyhow::Result<()> {
    // Long enough that the steps meant to fall inside it do so on a loaded
    // machine; the spacing of the fetches is checked on the JWKS server's
    // clock whatever the steps took.
    const BOUND: Duration = Duration::from_secs(8);
    let rsa_1 = private(Algorithm::RS256, "rsa-1");
    let rsa_2 = private(Algorithm::RS256, "rsa-2");
    let idp = JwksServer::start(&json!({ "keys": [public_jwk(&rsa_1, Algorithm::RS256, "k1")?] }))
        .await?;
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        &app,
        idp.addr,
        "[{ name: jwt-auth, builtin: jwt-auth, vms: 2 }]",
        "[{ plugin: jwt-auth, config: { jwks: { upstream: idp, path: /jwks, \
         refresh_interval: 5m, min_refresh_interval: 8s } } }]",
        "[]",
    )
    .await?;
    let claims = json!({"sub": "ada", "exp": now() + 600});
    let old = token(&rsa_1, Algorithm::RS256, "k1", &claims)?;

    // A burst of requests over both VMs while no keys are cached: they all
    // wait for one fetch.
    let statuses = concurrently(&gw, std::iter::repeat_n(old.clone(), 16)).await?;
    assert_eq!(statuses, [200; 16]);
    assert_eq!(idp.hits(), 1, "one fetch for the whole burst");

    // The provider rotates to a new key and signs with it at once.
    idp.rotate(&json!({ "keys": [
        public_jwk(&rsa_1, Algorithm::RS256, "k1")?,
        public_jwk(&rsa_2, Algorithm::RS256, "k2")?,
    ]}));
    let new = token(&rsa_2, Algorithm::RS256, "k2", &claims)?;
    // Within the bound of the first fetch, the unknown kid is refused
    // without a fetch; once it has passed, exactly one fetch brings k2.
    let (status, body, challenge) = call(&gw, Some(&new)).await?;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["message"], "the token's key `k2` is unknown");
    assert_eq!(
        challenge,
        r#"Bearer error="invalid_token", error_description="the token's key `k2` is unknown""#
    );
    assert_eq!(idp.hits(), 1);
    let accepted = eventually(BOUND * 4, async || {
        matches!(call(&gw, Some(&new)).await, Ok((200, _, _)))
    })
    .await;
    assert!(accepted, "the new key was picked up");
    assert_eq!(
        idp.hits(),
        2,
        "one fetch for the rotation, however many tries"
    );

    // A flood of made-up kids, sent at once within the bound, fetches
    // nothing more.
    let bogus = (0..20).map(|n| token(&rsa_2, Algorithm::RS256, &format!("bogus-{n}"), &claims));
    let statuses = concurrently(&gw, bogus.collect::<Result<Vec<_>, _>>()?).await?;
    assert_eq!(statuses, [401; 20]);
    let fetches = idp.fetch_times();
    assert_eq!(fetches.len(), 2, "no fetch for the made-up kids");
    // The plugin times the bound from when a fetch starts, this server
    // from when it arrives: allow for the first one's connect.
    let spacing = fetches[1] - fetches[0];
    assert!(
        spacing >= BOUND - Duration::from_millis(500),
        "fetches {spacing:?} apart, under the bound"
    );
    // Both keys verify on every VM.
    for signed in [&old, &new] {
        for _ in 0..4 {
            assert_eq!(call(&gw, Some(signed)).await?.0, 200);
        }
    }
    assert_eq!(
        gw.metric(r#"weir_plugin_jwt_auth_jwks_fetches{plugin="jwt-auth"}"#),
        Some(2)
    );
    Ok(())
}

/// The statuses of one request per token, all sent at once to route `r`.
async fn concurrently(
    gw: &TestGateway,
    tokens: impl IntoIterator<Item = String>,
) -> anyhow::Result<Vec<u16>> {
    let mut requests = tokio::task::JoinSet::new();
    for (n, token) in tokens.into_iter().enumerate() {
        let url = gw.url("main", &format!("/{n}"));
        requests.spawn(async move {
            let response = http1_client().get(url).bearer_auth(token).send().await?;
            anyhow::Ok(response.status().as_u16())
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = requests.join_next().await {
        statuses.push(status??);
    }
    Ok(statuses)
}

#[tokio::test]
async fn without_a_reachable_jwks_tokens_get_503() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        &app,
        dead_address().await?,
        "[{ name: jwt-auth, builtin: jwt-auth }]",
        "[{ plugin: jwt-auth, config: { jwks: { upstream: idp, timeout: 1s }, \
         anonymous: guest } }]",
        "[{ name: guest }]",
    )
    .await?;
    let signed = token(
        &private(Algorithm::ES256, ""),
        Algorithm::ES256,
        "k",
        &json!({"sub": "ada", "exp": now() + 600}),
    )?;
    // Not the caller's fault, and no guess: not even the anonymous consumer.
    let (status, body, challenge) = call(&gw, Some(&signed)).await?;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "auth_unavailable");
    assert_eq!(
        body["error"]["message"],
        "the token cannot be checked now: the signing keys could not be fetched"
    );
    assert_eq!(challenge, "");
    assert_eq!(app.hits(), 0);
    // A request without a token is still the anonymous consumer's.
    assert_eq!(call(&gw, None).await?.0, 200);
    Ok(())
}

/// The manifest's consumers for the consumer tests.
const CONSUMERS: &str = "[{ name: ada, jwt: [{ issuer: https://a.test, subject: ada }] }, \
    { name: bob, jwt: [{ subject: bob }] }, { name: guest }]";

#[tokio::test]
async fn the_tokens_subject_names_the_consumer_later_filters_key_on() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        &app,
        dead_address().await?,
        "[{ name: jwt-auth, builtin: jwt-auth }, { name: limit, builtin: rate-limit }]",
        &format!(
            "[{{ plugin: jwt-auth, config: {{ keys: [{{ pem: {:?} }}], consumer_required: true }} }}, \
             {{ plugin: limit, config: {{ limits: [{{ requests: 1, per: 1h }}], \
             key: [consumer, \"claim:/org/id\"] }} }}]",
            String::from_utf8(test_key("ec-p384.pub.pem"))?
        ),
        CONSUMERS,
    )
    .await?;
    let key = private(Algorithm::ES384, "");
    let signed_for = |sub: &str, iss: &str, org: &str| {
        let claims = json!({"sub": sub, "iss": iss, "org": {"id": org}, "exp": now() + 600});
        token(&key, Algorithm::ES384, "any", &claims)
    };
    let signed = |sub: &str, iss: &str| signed_for(sub, iss, "acme");
    let ada = signed("ada", "https://a.test")?;
    let client = http1_client();
    let echoed = json(
        client
            .get(gw.url("main", "/"))
            .bearer_auth(&ada)
            .header("x-consumer-name", "root")
            .send()
            .await?,
    )
    .await?;
    assert_eq!(echoed["headers"]["x-consumer-name"], json!(["ada"]));
    // The rate limit keys on the consumer and a claim of the token (from
    // weir.jwt_claims): ada's bucket for acme is empty, her bucket for
    // globex and bob's are full.
    assert_eq!(call(&gw, Some(&ada)).await?.0, 429);
    let ada_globex = signed_for("ada", "https://a.test", "globex")?;
    assert_eq!(call(&gw, Some(&ada_globex)).await?.0, 200);
    let bob = signed("bob", "https://anywhere.test")?;
    let (status, body, _) = call(&gw, Some(&bob)).await?;
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["x-consumer-name"], json!(["bob"]));
    // ada from another issuer is nobody's.
    let (status, body, _) = call(&gw, Some(&signed("ada", "https://b.test")?)).await?;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"]["message"],
        "no consumer holds this token's subject"
    );
    Ok(())
}

#[tokio::test]
async fn two_providers_on_one_route_with_an_anonymous_fallback() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let rsa = private(Algorithm::PS256, "rsa-1");
    let idp =
        JwksServer::start(&json!({ "keys": [public_jwk(&rsa, Algorithm::PS256, "b1")?] })).await?;
    // Provider A signs with an HMAC secret, provider B with RSA keys from
    // its JWKS. Each filter serves callers it cannot verify as `guest`, so
    // the next one may still identify them.
    let gw = gateway(
        &app,
        idp.addr,
        "[{ name: idp-a, builtin: jwt-auth }, { name: idp-b, builtin: jwt-auth }]",
        "[{ plugin: idp-a, config: { secret: provider-a-secret, issuer: https://a.test, \
         anonymous: guest, forward_claims: { tier: x-tier } } }, \
         { plugin: idp-b, config: { jwks: { upstream: idp, path: /jwks }, issuer: https://b.test, \
         anonymous: guest, forward_claims: { tier: x-tier } } }]",
        CONSUMERS,
    )
    .await?;
    let exp = now() + 600;
    let from_a = token(
        &EncodingKey::from_secret(b"provider-a-secret"),
        Algorithm::HS256,
        "a1",
        &json!({"sub": "ada", "iss": "https://a.test", "tier": "gold", "exp": exp}),
    )?;
    let from_b = token(
        &rsa,
        Algorithm::PS256,
        "b1",
        &json!({"sub": "bob", "iss": "https://b.test", "tier": "silver", "exp": exp}),
    )?;
    let forged = token(
        &EncodingKey::from_secret(b"guess"),
        Algorithm::HS256,
        "a1",
        &json!({"sub": "ada", "iss": "https://a.test", "exp": exp}),
    )?;
    for (token, consumer, tier, sub) in [
        (
            Some(&from_a),
            "ada",
            Value::from(["gold"]),
            Value::from(["ada"]),
        ),
        (
            Some(&from_b),
            "bob",
            Value::from(["silver"]),
            Value::from(["bob"]),
        ),
        (Some(&forged), "guest", Value::Null, Value::Null),
        (None, "guest", Value::Null, Value::Null),
    ] {
        let mut request = http1_client()
            .get(gw.url("main", "/"))
            .header("x-tier", "platinum");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        assert_eq!(response.status(), 200, "{consumer}");
        let echoed = json(response).await?;
        assert_eq!(echoed["headers"]["x-consumer-name"], json!([consumer]));
        assert_eq!(
            echoed["headers"]["x-tier"], tier,
            "{consumer}: never the client's"
        );
        assert_eq!(echoed["headers"]["x-jwt-sub"], sub, "{consumer}");
    }
    Ok(())
}
