//! jwt-auth on the test kit: every algorithm, every way a token can be
//! wrong, scopes and claims, consumers, and a JWKS fetched, shared and
//! refreshed. Tokens are signed with the fixed test keys of `testdata/`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use weir_sdk::Flow;
use weir_sdk::consumers::Consumer;
use weir_sdk::testing::{Exchange, Request, Response, TestConsumer, TestKit};

use super::*;

/// The kit's clock, in seconds.
const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"a shared secret of thirty-two bytes";
const RSA_1: &[u8] = include_bytes!("../testdata/rsa-1.der");
const RSA_2: &[u8] = include_bytes!("../testdata/rsa-2.der");
const EC_P256: &[u8] = include_bytes!("../testdata/ec-p256.der");
const EC_P384: &[u8] = include_bytes!("../testdata/ec-p384.der");
const ED25519: &[u8] = include_bytes!("../testdata/ed25519.der");
const RSA_1_PEM: &str = include_str!("../testdata/rsa-1.pub.pem");

const ALL: [Algorithm; 12] = [
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

/// The test key for `alg`.
fn private(alg: Algorithm) -> EncodingKey {
    match alg.family() {
        AlgorithmFamily::Hmac => EncodingKey::from_secret(SECRET),
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_der(RSA_1),
        AlgorithmFamily::Ec if alg == Algorithm::ES256 => EncodingKey::from_ec_der(EC_P256),
        AlgorithmFamily::Ec => EncodingKey::from_ec_der(EC_P384),
        AlgorithmFamily::Ed => EncodingKey::from_ed_der(ED25519),
    }
}

use jsonwebtoken::AlgorithmFamily;

/// The public JWK of `key` (for `alg`), with `kid` and without `alg`.
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let jwk = Jwk::from_encoding_key(key, alg).expect("a JWK");
    let mut value = serde_json::to_value(jwk).expect("JSON");
    value["kid"] = json!(kid);
    value.as_object_mut().expect("an object").remove("alg");
    value
}

/// A token for `claims` signed with `key` as `alg`, naming `kid`.
fn sign_with(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signed")
}

/// A token for `claims` signed with the test key of `alg`.
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    sign_with(&private(alg), alg, kid, claims)
}

/// A token with `header` and `claims` as they are, and signature `sig`.
fn forge(header: &Value, claims: &Value, sig: &[u8]) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(header),
        part(claims),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// Claims valid at the kit's clock.
fn claims() -> Value {
    json!({"sub": "ada", "iss": "https://idp.test", "aud": "api", "exp": NOW + 600})
}

/// `claims()` with `changes` merged in (`null` removes a claim).
fn claims_with(changes: Value) -> Value {
    let mut all = claims();
    for (k, v) in changes.as_object().expect("an object") {
        match v {
            Value::Null => {
                all.as_object_mut().expect("object").remove(k);
            }
            v => all[k] = v.clone(),
        }
    }
    all
}

/// A kit configured with `config`.
fn kit(config: Value) -> TestKit<JwtAuth> {
    TestKit::configure(&config.to_string()).expect("a good configuration")
}

/// Runs a request with `token` as bearer.
fn send<'k>(kit: &'k TestKit<JwtAuth>, token: &str) -> (Exchange<'k, JwtAuth>, Flow) {
    let mut exchange =
        kit.request(Request::get("/").header("authorization", &format!("Bearer {token}")));
    let flow = exchange.send_headers();
    (exchange, flow)
}

/// The reply's status, message and challenge.
fn refusal(exchange: &Exchange<'_, JwtAuth>) -> (u16, String, String) {
    let reply = exchange.local_reply().expect("a local reply");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned();
    (reply.status, message, challenge)
}

/// Asserts a 401 `invalid_token` for `reason`.
fn assert_invalid(exchange: &Exchange<'_, JwtAuth>, reason: &str) {
    let (status, message, challenge) = refusal(exchange);
    assert_eq!(status, 401, "{message}");
    assert_eq!(message, reason);
    assert_eq!(
        challenge,
        format!(r#"Bearer error="invalid_token", error_description="{reason}""#)
    );
    let reply = exchange.local_reply().expect("a local reply");
    assert_eq!(reply.json()["error"]["code"], "unauthorized");
}

/// Asserts a 503 `auth_unavailable`, without a challenge.
fn assert_unavailable(exchange: &Exchange<'_, JwtAuth>) {
    let (status, message, challenge) = refusal(exchange);
    assert_eq!(status, 503);
    assert_eq!(
        message,
        "the token cannot be checked now: the signing keys could not be fetched"
    );
    assert_eq!(challenge, "");
    let reply = exchange.local_reply().expect("a local reply");
    assert_eq!(reply.json()["error"]["code"], "auth_unavailable");
}

/// A configuration trusting the public JWK of every test key (kid = alg).
fn every_key() -> Value {
    let keys: Vec<Value> = ALL
        .iter()
        .map(|alg| jwk(&private(*alg), *alg, &format!("{alg:?}")))
        .collect();
    json!({"keys": keys, "issuer": "https://idp.test", "audiences": ["api"]})
}

#[test]
fn every_algorithm_verifies_with_its_key() {
    let kit = kit(every_key());
    for alg in ALL {
        let token = sign(alg, Some(&format!("{alg:?}")), &claims());
        let (exchange, flow) = send(&kit, &token);
        assert_eq!(
            flow,
            Flow::Continue,
            "{alg:?}: {:?}",
            exchange.local_reply()
        );
        assert_eq!(exchange.request_header("x-jwt-sub").as_deref(), Some("ada"));
    }
}

#[test]
fn pem_public_keys_verify_their_algorithms() {
    let pem = |name: &str| {
        std::fs::read_to_string(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR")))
            .expect("a test key")
    };
    for (file, alg) in [
        ("rsa-1.pub.pem", Algorithm::RS256),
        ("rsa-1.pub.pem", Algorithm::PS512),
        ("ec-p256.pub.pem", Algorithm::ES256),
        ("ec-p384.pub.pem", Algorithm::ES384),
        ("ed25519.pub.pem", Algorithm::EdDSA),
    ] {
        let kit = kit(json!({"keys": [{"pem": pem(file)}]}));
        let (exchange, flow) = send(&kit, &sign(alg, None, &claims()));
        assert_eq!(
            flow,
            Flow::Continue,
            "{file} {alg:?}: {:?}",
            exchange.local_reply()
        );
    }
}

#[test]
fn the_secret_alone_verifies_hs256_as_it_always_did() {
    let kit = kit(json!({"secret": "s3cret"}));
    let key = EncodingKey::from_secret(b"s3cret");
    let (ok, flow) = send(
        &kit,
        &sign_with(&key, Algorithm::HS256, Some("any"), &claims()),
    );
    assert_eq!(flow, Flow::Continue, "a kid does not matter to the secret");
    assert_eq!(ok.request_header("x-jwt-sub").as_deref(), Some("ada"));
    let (hs512, _) = send(&kit, &sign_with(&key, Algorithm::HS512, None, &claims()));
    assert_invalid(&hs512, "the token's algorithm `HS512` is not accepted");

    let wider = self::kit(json!({"secret": "s3cret", "algorithms": ["HS256", "HS512"]}));
    let (_, flow) = send(&wider, &sign_with(&key, Algorithm::HS512, None, &claims()));
    assert_eq!(flow, Flow::Continue);
}

#[test]
fn every_way_a_token_can_be_wrong_is_refused_with_its_reason() {
    let rsa_1 = private(Algorithm::RS256);
    let mut config = json!({
        "keys": [jwk(&rsa_1, Algorithm::RS256, "rsa"),
                 jwk(&private(Algorithm::ES256), Algorithm::ES256, "p256")],
        "issuer": "https://idp.test", "audiences": ["api"], "leeway_seconds": 30,
        "algorithms": ["RS256", "PS256", "ES256", "ES384", "HS256"]
    });
    // The RSA key pinned to RS256 by its JWK.
    config["keys"][0]["alg"] = json!("RS256");
    let kit = kit(config);
    let rs = |c: &Value| sign(Algorithm::RS256, Some("rsa"), c);
    let unsigned = forge(&json!({"alg": "none", "kid": "rsa"}), &claims(), b"");
    let unsigned_caps = forge(&json!({"alg": "None"}), &claims(), b"");
    // Algorithm confusion: HS256 "signed" with the RSA public key (as PEM
    // text and as its JWK's modulus) as the HMAC secret.
    let confused = sign_with(
        &EncodingKey::from_secret(RSA_1_PEM.as_bytes()),
        Algorithm::HS256,
        Some("rsa"),
        &claims(),
    );
    let crit = forge(
        &json!({"alg": "RS256", "kid": "rsa", "crit": ["exp"], "exp": 1}),
        &claims(),
        b"x",
    );
    let mut tampered = rs(&claims());
    let body = URL_SAFE_NO_PAD.encode(claims_with(json!({"sub": "eve"})).to_string());
    let parts: Vec<&str> = tampered.split('.').collect();
    tampered = format!("{}.{body}.{}", parts[0], parts[2]);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "signed with another key",
            sign_with(
                &EncodingKey::from_rsa_der(RSA_2),
                Algorithm::RS256,
                Some("rsa"),
                &claims(),
            ),
            "the token's signature is invalid",
        ),
        (
            "claims changed after signing",
            tampered,
            "the token's signature is invalid",
        ),
        (
            "expired past the leeway",
            rs(&claims_with(json!({"exp": NOW - 31}))),
            "the token has expired",
        ),
        (
            "not valid yet past the leeway",
            rs(&claims_with(json!({"nbf": NOW + 31}))),
            "the token is not valid yet",
        ),
        (
            "another issuer",
            rs(&claims_with(json!({"iss": "https://evil.test"}))),
            "the token's issuer is not accepted",
        ),
        (
            "no issuer",
            rs(&claims_with(json!({"iss": null}))),
            "the token's issuer is not accepted",
        ),
        (
            "another audience",
            rs(&claims_with(json!({"aud": ["web", "admin"]}))),
            "the token's audience is not accepted",
        ),
        (
            "no audience",
            rs(&claims_with(json!({"aud": null}))),
            "the token's audience is not accepted",
        ),
        (
            "alg none",
            unsigned,
            "the token's algorithm `none` is not accepted",
        ),
        (
            "alg None",
            unsigned_caps,
            "the token's algorithm `None` is not accepted",
        ),
        (
            "HS256 with the RSA public key",
            confused,
            "the token's algorithm `HS256` is not accepted",
        ),
        (
            "PS256 with a key pinned to RS256",
            sign(Algorithm::PS256, Some("rsa"), &claims()),
            "the token's algorithm `PS256` is not accepted",
        ),
        (
            "ES384 with a P-256 key",
            sign(Algorithm::ES384, Some("p256"), &claims()),
            "the token's algorithm `ES384` is not accepted",
        ),
        (
            "an algorithm the route does not accept",
            sign(Algorithm::RS512, Some("rsa"), &claims()),
            "the token's algorithm `RS512` is not accepted",
        ),
        (
            "an unknown kid",
            sign(Algorithm::RS256, Some("rotated-away"), &claims()),
            "the token's key `rotated-away` is unknown",
        ),
        (
            "critical extensions",
            crit,
            "the token names critical header extensions (`crit`), which are not supported",
        ),
        (
            "not three parts",
            "abc.def".to_owned(),
            "the token is malformed",
        ),
        (
            "five parts (JWE)",
            "a.b.c.d.e".to_owned(),
            "the token is malformed",
        ),
        (
            "a header that is not base64url",
            "@@@.e30.x".to_owned(),
            "the token is malformed",
        ),
        (
            "a header that is not JSON",
            format!("{}.e30.x", URL_SAFE_NO_PAD.encode("not json")),
            "the token is malformed",
        ),
        (
            "claims that are not an object",
            sign_with(&rsa_1, Algorithm::RS256, Some("rsa"), &json!(["ada"])),
            "the token is malformed",
        ),
        (
            "an exp that is not a number",
            rs(&claims_with(json!({"exp": "tomorrow"}))),
            "the token is malformed",
        ),
    ];
    for (what, token, reason) in cases {
        let (exchange, flow) = send(&kit, &token);
        assert_eq!(flow, Flow::Pause, "{what}");
        let (_, message, _) = refusal(&exchange);
        assert_eq!(message, reason, "{what}");
        assert_invalid(&exchange, reason);
    }
    // And the good token passes.
    let (_, flow) = send(&kit, &rs(&claims()));
    assert_eq!(flow, Flow::Continue);
}

#[test]
fn a_missing_token_gets_a_bare_bearer_challenge() {
    let kit = kit(json!({"secret": "s3cret"}));
    for request in [
        Request::get("/"),
        Request::get("/").header("authorization", "Bearer "),
        Request::get("/").header("authorization", "Basic YWRhOnB3"),
    ] {
        let mut exchange = kit.request(request);
        assert_eq!(exchange.send_headers(), Flow::Pause);
        let (status, message, challenge) = refusal(&exchange);
        assert_eq!(
            (status, message.as_str(), challenge.as_str()),
            (401, "missing token", "Bearer")
        );
    }
    // The prefix is optional and its case free.
    let token = sign_with(
        &EncodingKey::from_secret(b"s3cret"),
        Algorithm::HS256,
        None,
        &claims(),
    );
    for value in [
        token.clone(),
        format!("bearer {token}"),
        format!("BEARER  {token} "),
    ] {
        let mut exchange = kit.request(Request::get("/").header("authorization", &value));
        assert_eq!(exchange.send_headers(), Flow::Continue, "{value}");
    }
}

#[test]
fn leeway_and_require_exp_shape_the_time_window() {
    let kit = kit(
        json!({"keys": [jwk(&private(Algorithm::ES256), Algorithm::ES256, "k")],
        "leeway_seconds": 30}),
    );
    let es = |c: Value| sign(Algorithm::ES256, Some("k"), &c);
    for (claims, passes) in [
        (json!({"exp": NOW - 30}), true),
        (json!({"exp": NOW - 31}), false),
        (json!({"nbf": NOW + 30}), true),
        (json!({"nbf": NOW + 31}), false),
        (json!({"sub": "no exp"}), true),
        (json!({"exp": (NOW + 10) as f64 + 0.5}), true),
    ] {
        let (_, flow) = send(&kit, &es(claims.clone()));
        assert_eq!(flow == Flow::Continue, passes, "{claims}");
    }
    let strict = self::kit(
        json!({"keys": [jwk(&private(Algorithm::ES256), Algorithm::ES256, "k")],
        "require_exp": true}),
    );
    let (exchange, _) = send(&strict, &es(json!({"sub": "ada"})));
    assert_invalid(&exchange, "the token has no `exp` claim");
}

#[test]
fn missing_scopes_and_claims_answer_403_insufficient_scope() {
    let kit = kit(
        json!({"secret": "s3cret", "required_scopes": ["read", "write"],
        "required_claims": {"email_verified": true, "/org/tier": ["gold", "silver"], "email": null}}),
    );
    let key = EncodingKey::from_secret(b"s3cret");
    let token = |c: Value| sign_with(&key, Algorithm::HS256, None, &c);
    let good = json!({"sub": "ada", "scope": "read write admin", "email_verified": true,
        "email": "ada@example.test", "org": {"tier": "gold"}});
    let (_, flow) = send(&kit, &token(good.clone()));
    assert_eq!(flow, Flow::Continue);
    let with = |change: Value| {
        let mut c = good.clone();
        for (k, v) in change.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    for (claims, message) in [
        (
            with(json!({"scope": "read"})),
            "the token lacks scope `write`",
        ),
        (
            with(json!({"scope": null, "scp": ["write"]})),
            "the token lacks scope `read`",
        ),
        (
            with(json!({"email_verified": false})),
            "the token's `email_verified` claim is missing or not accepted",
        ),
        (
            with(json!({"org": {"tier": "bronze"}})),
            "the token's `/org/tier` claim is missing or not accepted",
        ),
        (
            with(json!({"email": null})),
            "the token's `email` claim is missing or not accepted",
        ),
    ] {
        let (exchange, flow) = send(&kit, &token(claims));
        assert_eq!(flow, Flow::Pause);
        let (status, got, challenge) = refusal(&exchange);
        assert_eq!(status, 403);
        assert_eq!(got, message);
        assert_eq!(
            challenge,
            format!(
                r#"Bearer error="insufficient_scope", error_description="{message}", scope="read write""#
            )
        );
        let reply = exchange.local_reply().expect("a reply");
        assert_eq!(reply.json()["error"]["code"], "forbidden");
    }
}

#[test]
fn chosen_claims_go_upstream_and_the_clients_copies_never_do() {
    let kit = kit(json!({"secret": "s3cret",
        "forward_claims": {"email": "X-User-Email", "/realm/roles": "x-roles", "tier": "x-tier"}}));
    let token = sign_with(
        &EncodingKey::from_secret(b"s3cret"),
        Algorithm::HS256,
        None,
        &json!({"sub": "ada", "email": "ada@example.test", "realm": {"roles": ["admin", "dev"]}}),
    );
    let mut exchange = kit.request(
        Request::get("/")
            .header("authorization", &format!("Bearer {token}"))
            .header("x-tier", "platinum")
            .header("x-jwt-sub", "root"),
    );
    assert_eq!(exchange.send_headers(), Flow::Continue);
    assert_eq!(
        exchange.request_header("x-user-email").as_deref(),
        Some("ada@example.test")
    );
    assert_eq!(
        exchange.request_header("x-roles").as_deref(),
        Some("admin,dev")
    );
    assert_eq!(exchange.request_header("x-jwt-sub").as_deref(), Some("ada"));
    assert_eq!(
        exchange.request_header("x-tier"),
        None,
        "the token has no tier"
    );
    let property = exchange.property(&CLAIMS).expect("the claims property");
    let claims: Value = serde_json::from_slice(&property).expect("JSON");
    assert_eq!(claims["realm"]["roles"], json!(["admin", "dev"]));
    assert_eq!(claims["sub"], "ada");
}

fn consumer(name: &str, subjects: Vec<(Option<&str>, &str)>) -> TestConsumer {
    TestConsumer {
        consumer: Consumer {
            name: name.into(),
            ..Consumer::default()
        },
        subjects: subjects
            .into_iter()
            .map(|(i, s)| (i.map(str::to_owned), s.to_owned()))
            .collect(),
        ..TestConsumer::default()
    }
}

#[test]
fn a_token_names_its_consumer_by_issuer_and_subject() {
    let kit = TestKit::<JwtAuth>::configure_with(
        &json!({"secret": "s3cret"}).to_string(),
        vec![
            consumer("ada-corp", vec![(Some("https://idp.test"), "ada")]),
            consumer("anyone-bob", vec![(None, "bob")]),
        ],
    )
    .expect("configured");
    let key = EncodingKey::from_secret(b"s3cret");
    for (claims, name) in [
        (
            json!({"sub": "ada", "iss": "https://idp.test"}),
            Some("ada-corp"),
        ),
        (json!({"sub": "ada", "iss": "https://other.test"}), None),
        (
            json!({"sub": "bob", "iss": "https://other.test"}),
            Some("anyone-bob"),
        ),
        (json!({"sub": "bob"}), Some("anyone-bob")),
    ] {
        let token = sign_with(&key, Algorithm::HS256, None, &claims);
        let mut exchange = kit.request(
            Request::get("/")
                .header("authorization", &format!("Bearer {token}"))
                .header("x-consumer-name", "forged"),
        );
        assert_eq!(exchange.send_headers(), Flow::Continue, "{claims}");
        assert_eq!(
            exchange.request_header("x-consumer-name").as_deref(),
            name,
            "{claims}"
        );
        assert_eq!(exchange.consumer().map(|c| c.name).as_deref(), name);
    }
}

#[test]
fn consumer_required_refuses_valid_tokens_of_unknown_subjects() {
    let kit = TestKit::<JwtAuth>::configure_with(
        &json!({"secret": "s3cret", "consumer_required": true, "consumer_header": "x-caller"})
            .to_string(),
        vec![consumer("ada", vec![(None, "ada")])],
    )
    .expect("configured");
    let key = EncodingKey::from_secret(b"s3cret");
    let (known, flow) = send(
        &kit,
        &sign_with(&key, Algorithm::HS256, None, &json!({"sub": "ada"})),
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(known.request_header("x-caller").as_deref(), Some("ada"));
    for claims in [json!({"sub": "eve"}), json!({"scope": "no subject"})] {
        let (unknown, _) = send(&kit, &sign_with(&key, Algorithm::HS256, None, &claims));
        assert_invalid(&unknown, "no consumer holds this token's subject");
    }
}

#[test]
fn the_anonymous_consumer_serves_requests_without_a_valid_token() {
    let kit = TestKit::<JwtAuth>::configure_with(
        &json!({"secret": "s3cret", "anonymous": "guest", "required_scopes": ["read"]}).to_string(),
        vec![
            consumer("guest", vec![]),
            consumer("ada", vec![(None, "ada")]),
        ],
    )
    .expect("configured");
    let key = EncodingKey::from_secret(b"s3cret");
    let forged = sign_with(
        &EncodingKey::from_secret(b"guess"),
        Algorithm::HS256,
        None,
        &json!({"sub": "ada"}),
    );
    for request in [
        Request::get("/"),
        Request::get("/").header("authorization", &format!("Bearer {forged}")),
    ] {
        let mut exchange = kit.request(request.header("x-jwt-sub", "ada"));
        assert_eq!(exchange.send_headers(), Flow::Continue);
        let consumer = exchange.consumer().expect("a consumer");
        assert_eq!(
            (consumer.name.as_str(), consumer.anonymous),
            ("guest", true)
        );
        assert_eq!(
            exchange.request_header("x-consumer-name").as_deref(),
            Some("guest")
        );
        assert_eq!(
            exchange.request_header("x-jwt-sub"),
            None,
            "a client's copy is dropped"
        );
        assert_eq!(exchange.property(&CLAIMS), None);
    }
    // A valid token without the scope is no anonymous caller: 403.
    let (no_scope, _) = send(
        &kit,
        &sign_with(&key, Algorithm::HS256, None, &json!({"sub": "ada"})),
    );
    assert_eq!(refusal(&no_scope).0, 403);
    let (ok, _) = send(
        &kit,
        &sign_with(
            &key,
            Algorithm::HS256,
            None,
            &json!({"sub": "ada", "scope": "read"}),
        ),
    );
    assert_eq!(
        ok.consumer().map(|c| (c.name, c.anonymous)),
        Some(("ada".into(), false))
    );

    let error =
        TestKit::<JwtAuth>::configure(&json!({"secret": "s", "anonymous": "nobody"}).to_string())
            .err()
            .expect("refused");
    assert_eq!(error.pointer, "/anonymous");
    assert_eq!(error.message, "no consumer is named `nobody`");
}

#[test]
fn verified_tokens_are_remembered_but_their_expiry_is_rechecked() {
    let kit = kit(json!({"secret": "s3cret", "leeway_seconds": 0}));
    let token = sign_with(
        &EncodingKey::from_secret(b"s3cret"),
        Algorithm::HS256,
        None,
        &json!({"sub": "ada", "exp": NOW + 2}),
    );
    let (_, flow) = send(&kit, &token);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(kit.metric("jwt_auth_cache_hits"), Some(0));
    let (_, flow) = send(&kit, &token);
    assert_eq!(flow, Flow::Continue);
    assert_eq!(kit.metric("jwt_auth_cache_hits"), Some(1));
    kit.advance(Duration::from_secs(3));
    let (expired, _) = send(&kit, &token);
    assert_invalid(&expired, "the token has expired");
    assert_eq!(kit.metric("jwt_auth_cache_hits"), Some(1));
}

#[test]
fn bad_configurations_are_refused_at_the_offending_field() {
    let refused = |config: Value| {
        TestKit::<JwtAuth>::configure(&config.to_string())
            .err()
            .map(|e| (e.pointer, e.message))
            .expect("refused")
    };
    assert_eq!(
        refused(json!({})).1,
        "needs keys: `secret`, `keys` or `jwks` (or several)"
    );
    assert_eq!(refused(json!({"secret": ""})).0, "/secret");
    assert_eq!(
        refused(json!({"secret": "s", "algorithms": ["HS256", "none"]})),
        (
            "/algorithms/1".into(),
            "unsigned tokens (`none`) are never accepted".into()
        )
    );
    assert_eq!(
        refused(json!({"secret": "s", "algorithms": ["HS999"]})).0,
        "/algorithms/0"
    );
    assert_eq!(
        refused(json!({"secret": "s", "algorithms": ["RS256"]})).0,
        "/algorithms"
    );
    let mut short = jwk(&private(Algorithm::ES256), Algorithm::ES256, "k");
    short["x"] = json!("AAAA");
    assert_eq!(
        refused(json!({"keys": [{"pem": RSA_1_PEM}, short]})),
        (
            "/keys/1".into(),
            "has coordinates of the wrong size for its curve".into()
        )
    );
    let mut pinned = jwk(&private(Algorithm::ES256), Algorithm::ES256, "k");
    pinned["alg"] = json!("RS256");
    assert_eq!(refused(json!({"keys": [pinned]})).0, "/keys/0");
    let private_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----";
    assert_eq!(
        refused(json!({"keys": [{"pem": private_pem}]})).1,
        "is a private key: give the public key"
    );
    assert_eq!(refused(json!({"keys": [{"pem": "junk"}]})).0, "/keys/0");
    assert_eq!(
        refused(json!({"jwks": {"upstream": "idp", "min_refresh_interval": "500ms"}})).0,
        "/jwks/min_refresh_interval"
    );
    assert_eq!(
        refused(
            json!({"jwks": {"upstream": "idp", "refresh_interval": "10s",
            "min_refresh_interval": "20s"}})
        )
        .0,
        "/jwks/min_refresh_interval"
    );
    assert_eq!(
        refused(json!({"jwks": {"upstream": "idp", "refresh_interval": "300"}})),
        (
            "/jwks/refresh_interval".into(),
            "`300` is not a duration (`<digits><unit>`, unit `ms`, `s`, `m` or `h`)".into()
        )
    );
    assert_eq!(
        refused(json!({"jwks": {"upstream": "idp", "path": "jwks"}})).0,
        "/jwks/path"
    );
    assert_eq!(
        refused(json!({"jwks": {"upstream": "idp", "timeout": "2m"}})).0,
        "/jwks/timeout"
    );
    assert_eq!(
        refused(json!({"secret": "s", "forward_claims": {"a/b": "bad header"}})).0,
        "/forward_claims/a~1b"
    );
    assert_eq!(
        refused(json!({"secret": "s", "forward_claims": {"sub": "x-jwt-sub"}})).1,
        "header `x-jwt-sub` already carries a claim"
    );
    assert_eq!(
        refused(json!({"secret": "s", "required_scopes": ["a b"]})).0,
        "/required_scopes/0"
    );
    assert_eq!(
        refused(json!({"secret": "s", "required_claims": {"role": {"any": 1}}})).0,
        "/required_claims/role"
    );
    assert!(
        refused(json!({"secret": "s", "scret": 1}))
            .1
            .starts_with("unknown field `scret`")
    );
}

// --- A JWKS fetched through an upstream ---

const JWKS_KEY: &str = "jwt-auth/jwks/idp/.well-known/jwks.json";

fn jwks_kit() -> TestKit<JwtAuth> {
    kit(
        json!({"jwks": {"upstream": "idp", "authority": "idp.example",
        "refresh_interval": "5m", "min_refresh_interval": "30s", "timeout": "2s"}}),
    )
}

/// A JWKS document with the public keys of (alg, kid).
fn jwks(keys: &[(Algorithm, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(alg, kid)| jwk(&private(*alg), *alg, kid))
        .collect();
    json!({ "keys": keys }).to_string()
}

/// Answers the kit's last upstream call with `document`.
fn serve(kit: &TestKit<JwtAuth>, document: &str) {
    let call = kit.calls().pop().expect("a JWKS call");
    kit.answer_call(call.token, Response::new(200).body(document));
}

#[test]
fn the_first_requests_wait_for_one_fetch_of_the_jwks() {
    let kit = jwks_kit();
    let token = sign(Algorithm::RS256, Some("k1"), &claims());
    let (first, flow) = send(&kit, &token);
    assert_eq!(flow, Flow::Pause);
    let (second, flow) = send(&kit, &token);
    assert_eq!(flow, Flow::Pause);
    let calls = kit.calls();
    assert_eq!(calls.len(), 1, "one fetch for both requests");
    assert_eq!(calls[0].upstream, "idp");
    assert_eq!(calls[0].header(":path"), Some("/.well-known/jwks.json"));
    assert_eq!(calls[0].header(":authority"), Some("idp.example"));
    assert_eq!(
        calls[0].header("accept"),
        Some("application/jwk-set+json, application/json")
    );
    assert_eq!(calls[0].timeout_ms, 2000);
    serve(
        &kit,
        &jwks(&[(Algorithm::RS256, "k1"), (Algorithm::EdDSA, "k2")]),
    );
    for exchange in [&first, &second] {
        assert!(exchange.resumed());
        assert_eq!(exchange.request_header("x-jwt-sub").as_deref(), Some("ada"));
    }
    // Later requests use the keys at once, any of them.
    let (_, flow) = send(&kit, &sign(Algorithm::EdDSA, Some("k2"), &claims()));
    assert_eq!(flow, Flow::Continue);
    assert_eq!(kit.calls().len(), 1);
    assert_eq!(kit.metric("jwt_auth_jwks_fetches"), Some(1));
    // The other VMs find the document in shared data.
    let shared: Value =
        serde_json::from_slice(&kit.shared(JWKS_KEY).expect("shared")).expect("JSON");
    assert_eq!(shared["lease_until_ms"], 0);
    assert!(
        shared["jwks"]
            .as_str()
            .expect("the document")
            .contains("\"k2\"")
    );
}

#[test]
fn an_unknown_kid_fetches_again_at_most_once_per_min_interval() {
    let kit = jwks_kit();
    kit.tick();
    serve(&kit, &jwks(&[(Algorithm::ES256, "old")]));
    // The provider rotates: tokens name a key the gateway has not seen.
    let kit_now = || kit.calls().len();
    let rotated = sign(Algorithm::ES384, Some("new"), &claims());
    kit.advance(Duration::from_secs(30));
    let (waiting, flow) = send(&kit, &rotated);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(kit_now(), 2, "the unknown kid fetched the JWKS again");
    serve(
        &kit,
        &jwks(&[(Algorithm::ES256, "old"), (Algorithm::ES384, "new")]),
    );
    assert!(waiting.resumed());
    // A flood of unknown kids within the interval fetches nothing.
    for n in 0..20 {
        let (bogus, flow) = send(
            &kit,
            &sign(Algorithm::ES256, Some(&format!("bogus-{n}")), &claims()),
        );
        assert_eq!(flow, Flow::Pause);
        assert_invalid(&bogus, &format!("the token's key `bogus-{n}` is unknown"));
    }
    assert_eq!(kit_now(), 2);
    // Once the interval has passed, one more fetch.
    kit.advance(Duration::from_secs(30));
    let (bogus, flow) = send(&kit, &sign(Algorithm::ES256, Some("bogus"), &claims()));
    assert_eq!(flow, Flow::Pause);
    assert_eq!(kit_now(), 3);
    serve(&kit, &jwks(&[(Algorithm::ES384, "new")]));
    assert_invalid(&bogus, "the token's key `bogus` is unknown");
    // The old key is gone with that fetch.
    let (old, _) = send(&kit, &sign(Algorithm::ES256, Some("old"), &claims()));
    assert_invalid(&old, "the token's key `old` is unknown");
}

#[test]
fn ticks_fetch_the_keys_first_and_refresh_them_while_the_old_ones_serve() {
    let kit = jwks_kit();
    assert_eq!(kit.tick_period(), Some(Duration::from_secs(1)));
    kit.tick();
    assert_eq!(
        kit.calls().len(),
        1,
        "the first tick fetches before any request"
    );
    kit.tick();
    assert_eq!(kit.calls().len(), 1, "one fetch in flight at a time");
    serve(&kit, &jwks(&[(Algorithm::PS256, "a")]));
    let token = sign(Algorithm::PS256, Some("a"), &claims());
    assert_eq!(send(&kit, &token).1, Flow::Continue);
    kit.tick();
    assert_eq!(kit.calls().len(), 1, "fresh keys are not fetched again");
    kit.advance(Duration::from_secs(300));
    // Due: a request (with a token not verified before) goes on with the
    // cached keys and a fetch starts.
    let another = sign(
        Algorithm::PS256,
        Some("a"),
        &claims_with(json!({"jti": "2"})),
    );
    assert_eq!(send(&kit, &another).1, Flow::Continue);
    assert_eq!(kit.calls().len(), 2);
    // That fetch fails: the cached keys keep serving.
    let call = kit.calls().pop().expect("the refresh");
    kit.answer_call(call.token, Response::new(503));
    assert_eq!(kit.metric("jwt_auth_jwks_fetch_failures"), Some(1));
    assert_eq!(send(&kit, &token).1, Flow::Continue);
    kit.tick();
    assert_eq!(kit.calls().len(), 2, "no new fetch within the min interval");
    kit.advance(Duration::from_secs(30));
    kit.tick();
    assert_eq!(
        kit.calls().len(),
        3,
        "the tick retries after the min interval"
    );
    serve(&kit, &jwks(&[(Algorithm::PS256, "b")]));
    assert_eq!(
        send(&kit, &sign(Algorithm::PS256, Some("b"), &claims())).1,
        Flow::Continue
    );
}

#[test]
fn without_keys_a_failed_fetch_answers_401() {
    let kit = jwks_kit();
    let token = sign(Algorithm::RS256, Some("k1"), &claims());
    let (waiting, _) = send(&kit, &token);
    let call = kit.calls().pop().expect("a fetch");
    kit.fail_call(call.token);
    assert_unavailable(&waiting);
    assert!(kit.logs().iter().any(|(_, line)| line.starts_with(
        "jwt-auth: cannot fetch the JWKS from upstream `idp` /.well-known/jwks.json: the upstream call failed"
    )));
    // Within the min interval, no request fetches or waits.
    let (again, flow) = send(&kit, &token);
    assert_eq!(flow, Flow::Pause);
    assert_unavailable(&again);
    assert_eq!(kit.calls().len(), 1);
    // Documents that are not a JWKS, or have no usable key, fail alike.
    for document in ["<html>", r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#] {
        kit.advance(Duration::from_secs(30));
        let (waiting, _) = send(&kit, &token);
        serve(&kit, document);
        assert_unavailable(&waiting);
    }
    assert_eq!(kit.metric("jwt_auth_jwks_fetch_failures"), Some(3));
}

#[test]
fn symmetric_keys_of_a_jwks_are_left_out() {
    let kit = jwks_kit();
    kit.tick();
    let oct = json!({"kty": "oct", "kid": "h", "k": URL_SAFE_NO_PAD.encode(SECRET)});
    let mut document: Value =
        serde_json::from_str(&jwks(&[(Algorithm::RS256, "r")])).expect("JSON");
    document["keys"].as_array_mut().expect("keys").push(oct);
    serve(&kit, &document.to_string());
    let (hmac, _) = send(&kit, &sign(Algorithm::HS256, Some("h"), &claims()));
    assert_invalid(&hmac, "the token's algorithm `HS256` is not accepted");
    assert!(kit.logs().iter().any(|(_, line)| line.contains(
        "jwt-auth: left out of the JWKS from upstream `idp` /.well-known/jwks.json: \
         key 1 (kid h) is a symmetric key: those are taken only from the configuration"
    )));
}

#[test]
fn requests_wait_for_another_vms_fetch_and_take_its_keys() {
    let kit = jwks_kit();
    // Another VM holds the lease: it is fetching now.
    let lease = |record: Value| kit.set_shared(JWKS_KEY, record.to_string().as_bytes());
    let now_ms = NOW * 1_000;
    lease(
        json!({"fetched_ms": 0, "attempt_ms": now_ms, "lease_until_ms": now_ms + 3_000, "jwks": ""}),
    );
    let token = sign(Algorithm::RS384, Some("r"), &claims());
    let (waiting, flow) = send(&kit, &token);
    assert_eq!(flow, Flow::Pause);
    assert!(kit.calls().is_empty(), "this VM does not fetch too");
    assert_eq!(
        kit.tick_period(),
        Some(Duration::from_millis(100)),
        "it polls fast meanwhile"
    );
    kit.tick();
    assert!(!waiting.resumed(), "still fetching");
    // The other VM's fetch lands in shared data.
    lease(
        json!({"fetched_ms": now_ms + 50, "attempt_ms": now_ms, "lease_until_ms": 0,
        "jwks": jwks(&[(Algorithm::RS384, "r")])}),
    );
    kit.tick();
    assert!(waiting.resumed());
    assert_eq!(waiting.request_header("x-jwt-sub").as_deref(), Some("ada"));
    assert_eq!(kit.tick_period(), Some(Duration::from_secs(1)));
    assert!(kit.calls().is_empty());
}

/// Prints what one full verification costs per algorithm (header, key
/// choice, signature, claims), natively: figures for the docs, not an
/// assertion. `cargo test --release -p weir-jwt-auth -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand in release mode"]
fn verify_cost_per_algorithm() {
    let mut config = every_key();
    config["cache_size"] = json!(0);
    let plugin = JwtAuth::configure(serde_json::from_value(config).expect("a configuration"))
        .expect("configured");
    for alg in ALL {
        let token = sign(alg, Some(&format!("{alg:?}")), &claims());
        let rounds = if alg.family() == AlgorithmFamily::Hmac {
            20_000
        } else {
            500
        };
        assert!(plugin.verify(&token, NOW * 1_000, false).is_ok());
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            assert!(plugin.verify(&token, NOW * 1_000, false).is_ok());
        }
        let each = start.elapsed() / rounds;
        println!(
            "{alg:?}: {:.1} µs per verification",
            each.as_secs_f64() * 1e6
        );
    }
}

#[test]
fn an_earlier_auth_filters_identity_stands_and_an_anonymous_one_gives_way() {
    let kit = TestKit::<JwtAuth>::configure_with(
        &json!({"secret": "s3cret"}).to_string(),
        vec![
            consumer("ada", vec![(None, "ada")]),
            consumer("guest", vec![]),
        ],
    )
    .expect("configured");
    // Identified by an earlier filter (an API key, say): no token needed,
    // and the client's claim headers still never pass.
    let mut keyed = kit.request(Request::get("/").header("x-jwt-sub", "forged"));
    keyed.identify("ada", false);
    assert_eq!(keyed.send_headers(), Flow::Continue);
    assert_eq!(keyed.request_header("x-jwt-sub"), None);
    assert_eq!(keyed.consumer().map(|c| c.name).as_deref(), Some("ada"));
    // Anonymous so far: this filter still checks the token and identifies.
    let token = sign_with(
        &EncodingKey::from_secret(b"s3cret"),
        Algorithm::HS256,
        None,
        &json!({"sub": "ada"}),
    );
    let mut guest =
        kit.request(Request::get("/").header("authorization", &format!("Bearer {token}")));
    guest.identify("guest", true);
    assert_eq!(guest.send_headers(), Flow::Continue);
    let consumer = guest.consumer().expect("a consumer");
    assert_eq!((consumer.name.as_str(), consumer.anonymous), ("ada", false));
    let mut nobody = kit.request(Request::get("/"));
    nobody.identify("guest", true);
    assert_eq!(
        nobody.send_headers(),
        Flow::Pause,
        "no anonymous of its own: 401"
    );
    assert_eq!(refusal(&nobody).0, 401);
}
