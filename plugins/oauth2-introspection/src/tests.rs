//! The filter on the SDK's test kit: the calls it makes, what it does with
//! each answer, and what it keeps.

use std::time::Duration;

use weir_sdk::consumers::Consumer;
use weir_sdk::testing::{Exchange, Request, Response, TestConsumer, TestKit};
use weir_sdk::{Flow, HostError};

use super::*;

/// The kit's clock at start, in seconds.
const NOW: u64 = 1_700_000_000;

const CONFIG: &str = r#"{"upstream": "idp", "path": "/oauth2/introspect",
    "client_id": "gateway", "client_secret": "s3cret", "timeout": "1500ms",
    "token_type_hint": "access_token", "required_scopes": ["orders:read"],
    "forward": {"sub": "x-user-sub", "scope": "x-token-scope"}}"#;

fn consumer(name: &str, subjects: &[(Option<&str>, &str)]) -> TestConsumer {
    TestConsumer {
        consumer: Consumer {
            name: name.into(),
            groups: vec!["staff".into()],
            ..Consumer::default()
        },
        subjects: subjects
            .iter()
            .map(|(issuer, subject)| (issuer.map(String::from), (*subject).to_owned()))
            .collect(),
        ..TestConsumer::default()
    }
}

fn kit(config: &str) -> TestKit<Introspector> {
    let consumers = vec![
        consumer("ada", &[(Some("https://idp.test"), "user-1")]),
        consumer("billing-app", &[]),
        consumer("guest", &[]),
    ];
    TestKit::configure_with(config, consumers).expect("configured")
}

/// A request for `/orders` with `token`.
fn with_token(token: &str) -> Request {
    Request::get("/orders").header("authorization", &format!("Bearer {token}"))
}

fn bearer<'k>(kit: &'k TestKit<Introspector>, token: &str) -> Exchange<'k, Introspector> {
    kit.request(with_token(token))
}

fn active(extra: serde_json::Value) -> Response {
    let mut body = serde_json::json!({"active": true, "sub": "user-1",
        "iss": "https://idp.test", "scope": "orders:read orders:write", "exp": NOW + 300});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    Response::new(200)
        .header("content-type", "application/json")
        .body(body.to_string())
}

/// Sends `exchange`'s headers, answers its one new call with `answer`, and
/// returns the flow of the headers callback.
fn introspected(exchange: &mut Exchange<'_, Introspector>, answer: Response) -> Flow {
    let before = exchange.calls().len();
    let flow = exchange.send_headers();
    let calls = exchange.calls();
    assert_eq!(calls.len(), before + 1, "one introspection call");
    exchange.answer_call(calls[before].token, answer);
    flow
}

#[test]
fn posts_the_token_with_client_credentials_and_admits_its_consumer() {
    let kit = kit(CONFIG);
    let mut exchange = kit.request(
        with_token("tok/en+1==")
            .header("x-consumer-name", "root")
            .header("x-user-sub", "spoofed"),
    );
    assert_eq!(exchange.send_headers(), Flow::Pause, "waits for the server");
    let call = exchange.calls().pop().expect("a call");
    assert_eq!(call.upstream, "idp");
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header(":path"), Some("/oauth2/introspect"));
    assert_eq!(
        call.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // base64("gateway:s3cret")
    assert_eq!(
        call.header("authorization"),
        Some("Basic Z2F0ZXdheTpzM2NyZXQ=")
    );
    assert_eq!(
        String::from_utf8_lossy(&call.body),
        "token=tok%2Fen%2B1%3D%3D&token_type_hint=access_token"
    );
    assert_eq!(call.timeout_ms, 1500);
    assert_eq!(exchange.request_header("x-user-sub").as_deref(), None);

    exchange.answer_call(call.token, active(serde_json::json!({})));
    assert!(exchange.resumed());
    assert_eq!(exchange.local_reply(), None);
    let consumer = exchange.consumer().expect("identified");
    assert_eq!((consumer.name.as_str(), consumer.anonymous), ("ada", false));
    assert_eq!(
        exchange.request_header("x-consumer-name").as_deref(),
        Some("ada")
    );
    assert_eq!(
        exchange.request_header("x-user-sub").as_deref(),
        Some("user-1")
    );
    assert_eq!(
        exchange.request_header("x-token-scope").as_deref(),
        Some("orders:read orders:write")
    );
    assert_eq!(kit.metric("oauth2_introspection_calls"), Some(1));
}

#[test]
fn answers_are_cached_by_a_digest_of_the_token_until_exp() {
    let kit = kit(CONFIG);
    let mut first = bearer(&kit, "tok-1");
    introspected(&mut first, active(serde_json::json!({"exp": NOW + 30})));
    let key = cache::key(
        &Policy::from_config(serde_json::from_str(CONFIG).expect("json")).expect("valid"),
        "tok-1",
    );
    assert!(!key.contains("tok-1"), "the token itself is never stored");
    let stored = kit.shared(&key).expect("cached");
    assert!(!String::from_utf8_lossy(&stored).contains("tok-1"));
    drop(first);

    let mut again = bearer(&kit, "tok-1");
    assert_eq!(
        again.send_headers(),
        Flow::Continue,
        "answered from the cache"
    );
    assert_eq!(again.calls().len(), 1, "no second call");
    assert_eq!(
        again.request_header("x-consumer-name").as_deref(),
        Some("ada")
    );
    assert_eq!(kit.metric("oauth2_introspection_cache_hits"), Some(1));
    drop(again);

    // Another token is asked about.
    let mut other = bearer(&kit, "tok-2");
    introspected(&mut other, active(serde_json::json!({})));
    drop(other);

    // Past the token's `exp` (30 s, less than max_ttl), it is asked about again.
    kit.advance(Duration::from_secs(30));
    let mut expired = bearer(&kit, "tok-1");
    introspected(&mut expired, active(serde_json::json!({"exp": NOW + 300})));
    assert_eq!(expired.calls().len(), 3);
}

#[test]
fn active_answers_are_kept_at_most_max_ttl_and_inactive_ones_inactive_ttl() {
    let kit = kit(
        r#"{"upstream": "idp", "client_id": "gw", "client_secret": "s",
            "cache": {"max_ttl": "20s", "inactive_ttl": "5s"}}"#,
    );
    let status = |token: &str, answer: Option<Response>| {
        let mut exchange = bearer(&kit, token);
        match answer {
            Some(answer) => introspected(&mut exchange, answer),
            None => exchange.send_headers(),
        };
        exchange.local_reply().map_or(200, |r| r.status)
    };
    // An active token valid for an hour is kept for 20 s only.
    assert_eq!(
        status("long", Some(active(serde_json::json!({"exp": NOW + 3600})))),
        200
    );
    let inactive = Response::new(200).body(r#"{"active": false}"#);
    assert_eq!(status("revoked", Some(inactive.clone())), 401);
    kit.advance(Duration::from_secs(4));
    assert_eq!(status("long", None), 200, "cached");
    assert_eq!(status("revoked", None), 401, "cached inactive");
    kit.advance(Duration::from_secs(1));
    assert_eq!(
        status("revoked", Some(inactive)),
        401,
        "asked again after 5 s"
    );
    kit.advance(Duration::from_secs(15));
    assert_eq!(
        status("long", Some(active(serde_json::json!({"exp": NOW + 3600})))),
        200,
        "asked again after 20 s"
    );
    assert_eq!(kit.metric("oauth2_introspection_calls"), Some(4));
}

#[test]
fn a_zero_ttl_keeps_nothing() {
    let kit = kit(
        r#"{"upstream": "idp", "client_id": "gw", "client_secret": "s",
            "cache": {"max_ttl": "0s", "inactive_ttl": "0s"}}"#,
    );
    for _ in 0..2 {
        let mut exchange = bearer(&kit, "tok");
        introspected(&mut exchange, active(serde_json::json!({})));
        let mut inactive = bearer(&kit, "bad");
        introspected(
            &mut inactive,
            Response::new(200).body(r#"{"active": false}"#),
        );
    }
    assert_eq!(kit.metric("oauth2_introspection_calls"), Some(4));
}

#[test]
fn inactive_and_expired_tokens_get_401_invalid_token() {
    let kit = kit(CONFIG);
    for answer in [
        r#"{"active": false}"#.to_owned(),
        format!(r#"{{"active": true, "sub": "user-1", "scope": "orders:read", "exp": {NOW}}}"#),
    ] {
        let mut exchange = bearer(&kit, &format!("tok-{}", answer.len()));
        introspected(&mut exchange, Response::new(200).body(answer));
        let reply = exchange.local_reply().expect("refused");
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer error="invalid_token""#)
        );
        assert_eq!(
            reply.json(),
            serde_json::json!({"error": {"status": 401, "code": "unauthorized",
                "message": "the token is not active", "request_id": "test-request"}})
        );
        assert_eq!(exchange.consumer(), None);
    }
}

#[test]
fn requests_without_a_bearer_token_are_refused_without_a_call() {
    let kit = kit(CONFIG);
    for (authorization, challenge, message) in [
        (None, "Bearer", "missing token"),
        (Some("Basic YTpi"), "Bearer", "missing token"),
        (
            Some("Bearer"),
            r#"Bearer error="invalid_token""#,
            "the token is malformed",
        ),
        (
            Some("Bearer a b"),
            r#"Bearer error="invalid_token""#,
            "the token is malformed",
        ),
        (
            Some("Bearer =="),
            r#"Bearer error="invalid_token""#,
            "the token is malformed",
        ),
    ] {
        let mut request = Request::get("/");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let mut exchange = kit.request(request);
        assert_eq!(exchange.send_headers(), Flow::Pause);
        let reply = exchange.local_reply().expect("refused");
        assert_eq!(reply.status, 401, "{authorization:?}");
        assert_eq!(reply.header("www-authenticate"), Some(challenge));
        assert_eq!(reply.json()["error"]["message"], message);
        assert!(exchange.calls().is_empty());
    }
}

#[test]
fn a_token_without_a_required_scope_gets_403_insufficient_scope() {
    let kit = kit(CONFIG);
    let mut exchange = bearer(&kit, "tok");
    introspected(
        &mut exchange,
        active(serde_json::json!({"scope": "orders:write profile"})),
    );
    let reply = exchange.local_reply().expect("refused");
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="insufficient_scope", scope="orders:read""#)
    );
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": {"status": 403, "code": "insufficient_scope",
            "message": "the token lacks scope `orders:read`", "request_id": "test-request"}})
    );
    // Scopes as a JSON array are read too.
    let mut listed = bearer(&kit, "tok-2");
    introspected(
        &mut listed,
        active(serde_json::json!({"scope": ["orders:read"]})),
    );
    assert_eq!(listed.local_reply(), None);
}

#[test]
fn a_server_that_cannot_answer_gets_503_and_nothing_is_cached() {
    let kit = kit(CONFIG);
    let failures: [(&str, Option<Response>); 4] = [
        ("reset", None),
        ("5xx", Some(Response::new(500).body("oops"))),
        (
            "401",
            Some(Response::new(401).body(r#"{"error": "invalid_client"}"#)),
        ),
        ("html", Some(Response::new(200).body("<html>"))),
    ];
    for (what, answer) in failures {
        for _ in 0..2 {
            let mut exchange = bearer(&kit, "tok");
            assert_eq!(exchange.send_headers(), Flow::Pause);
            let call = exchange.calls().pop().expect("a call");
            match answer.clone() {
                Some(answer) => exchange.answer_call(call.token, answer),
                None => exchange.fail_call(call.token),
            }
            let reply = exchange.local_reply().expect("answered here");
            assert_eq!(reply.status, 503, "{what}");
            assert_eq!(
                reply.json(),
                serde_json::json!({"error": {"status": 503, "code": "introspection_unavailable",
                    "message": "the token could not be checked; try again later",
                    "request_id": "test-request"}})
            );
        }
    }
    assert_eq!(
        kit.metric("oauth2_introspection_calls"),
        Some(8),
        "never cached"
    );
    assert_eq!(kit.metric("oauth2_introspection_failures"), Some(8));
    assert!(
        kit.logs()
            .iter()
            .any(|(_, line)| line.contains("answered 401"))
    );

    kit.fail_host_call("http_call", HostError::BadArgument);
    let mut unknown = bearer(&kit, "tok");
    assert_eq!(unknown.send_headers(), Flow::Pause);
    assert_eq!(unknown.local_reply().map(|r| r.status), Some(503));
}

#[test]
fn anonymous_callers_pass_as_the_anonymous_consumer() {
    let kit = kit(
        r#"{"upstream": "idp", "client_id": "gw", "client_secret": "s", "anonymous": "guest"}"#,
    );
    let mut missing = kit.request(Request::get("/").header("x-consumer-name", "ada"));
    assert_eq!(missing.send_headers(), Flow::Continue);
    let consumer = missing.consumer().expect("anonymous");
    assert_eq!(
        (consumer.name.as_str(), consumer.anonymous),
        ("guest", true)
    );
    assert_eq!(
        missing.request_header("x-consumer-name").as_deref(),
        Some("guest")
    );

    let mut inactive = bearer(&kit, "revoked");
    introspected(
        &mut inactive,
        Response::new(200).body(r#"{"active": false}"#),
    );
    assert!(inactive.resumed());
    assert_eq!(inactive.consumer().map(|c| c.anonymous), Some(true));

    let error = TestKit::<Introspector>::configure(
        r#"{"upstream": "idp", "client_id": "gw", "client_secret": "s", "anonymous": "nobody"}"#,
    )
    .err()
    .expect("refused");
    assert_eq!(error.pointer, "/anonymous");
}

#[test]
fn consumers_are_found_by_client_id_when_configured() {
    let kit = kit(
        r#"{"upstream": "idp", "client_id": "gw", "client_secret": "s", "consumer_by": "client_id",
            "consumer_header": "X-Caller"}"#,
    );
    let mut exchange = bearer(&kit, "tok");
    introspected(
        &mut exchange,
        active(serde_json::json!({"client_id": "billing-app"})),
    );
    assert_eq!(
        exchange.consumer().map(|c| c.name),
        Some("billing-app".into())
    );
    assert_eq!(
        exchange.request_header("x-caller").as_deref(),
        Some("billing-app")
    );
    assert_eq!(exchange.request_header("x-consumer-name"), None);
}

#[test]
fn a_token_of_no_consumer_passes_unnamed_unless_one_is_required() {
    let kit = kit(r#"{"upstream": "idp", "client_id": "gw", "client_secret": "s"}"#);
    let mut exchange = kit.request(with_token("tok").header("x-consumer-name", "ada"));
    introspected(
        &mut exchange,
        active(serde_json::json!({"sub": "stranger"})),
    );
    assert!(exchange.resumed());
    assert_eq!(exchange.consumer(), None);
    assert_eq!(
        exchange.request_header("x-consumer-name"),
        None,
        "the client's own header is dropped"
    );
    // The consumer of `user-1` is `ada` only for her issuer.
    let mut other_issuer = bearer(&kit, "tok-2");
    introspected(
        &mut other_issuer,
        active(serde_json::json!({"iss": "https://other.test"})),
    );
    assert_eq!(other_issuer.consumer(), None);

    let kit = self::kit(
        r#"{"upstream": "idp", "client_id": "gw", "client_secret": "s", "consumer_required": true}"#,
    );
    let mut exchange = bearer(&kit, "tok");
    introspected(
        &mut exchange,
        active(serde_json::json!({"sub": "stranger"})),
    );
    let reply = exchange.local_reply().expect("refused");
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json()["error"]["message"],
        "the token belongs to no consumer"
    );
}

#[test]
fn bad_configurations_are_refused_at_their_field() {
    let refused = |config: &str| {
        TestKit::<Introspector>::configure(config)
            .err()
            .expect("refused")
    };
    let base = r#""upstream": "idp", "client_id": "gw", "client_secret": "s""#;
    for (extra, pointer) in [
        (r#""timeout": "2""#, "/timeout"),
        (r#""timeout": "0s""#, "/timeout"),
        (r#""timeout": "2m""#, "/timeout"),
        (r#""path": "introspect""#, "/path"),
        (r#""required_scopes": ["a", "b c"]"#, "/required_scopes/1"),
        (r#""cache": {"max_ttl": "soon"}"#, "/cache/max_ttl"),
        (r#""cache": {"inactive_ttl": "10"}"#, "/cache/inactive_ttl"),
        (r#""cache": {"ttl": "10s"}"#, "/cache/ttl"),
        (r#""consumer_by": "username""#, "/consumer_by"),
        (r#""consumer_header": "x consumer""#, "/consumer_header"),
        (r#""forward": {"sub": "bad header"}"#, "/forward/sub"),
        (r#""forward": {"a/b": "x-consumer-name"}"#, "/forward/a~1b"),
        (r#""forward": {"sub": "x-a", "iss": "X-A"}"#, "/forward/sub"),
        (r#""token_type_hint": """#, "/token_type_hint"),
        (r#""scopes": []"#, "/scopes"),
    ] {
        assert_eq!(
            refused(&format!("{{{base}, {extra}}}")).pointer,
            pointer,
            "{extra}"
        );
    }
    assert_eq!(
        refused(r#"{"upstream": "", "client_id": "gw", "client_secret": "s"}"#).pointer,
        "/upstream"
    );
    assert_eq!(
        refused(r#"{"upstream": "idp", "client_id": "gw", "client_secret": ""}"#).pointer,
        "/client_secret"
    );
    assert_eq!(
        refused(r#"{"upstream": "idp", "client_secret": "s"}"#).pointer,
        ""
    );
}

#[test]
fn bearer_tokens_are_read_as_rfc_6750_has_them() {
    assert_eq!(Presented::of(Some("Bearer abc")), Presented::Token("abc"));
    assert_eq!(
        Presented::of(Some("bearer  a.b-c_~+/==")),
        Presented::Token("a.b-c_~+/==")
    );
    assert_eq!(Presented::of(Some("Bearer a\"b")), Presented::Malformed);
    assert_eq!(Presented::of(Some("Token abc")), Presented::Nothing);
    assert_eq!(Presented::of(None), Presented::Nothing);
}
