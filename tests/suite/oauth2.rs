//! The `oauth2-introspection` built-in through the gateway, against an RFC
//! 7662 introspection server started in the test on loopback.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_tests::{
    EchoUpstream, FixedUpstream, TestGateway, dead_address, eventually, http1_client, json,
};

/// `Basic base64("gateway:s3cret")`: the only client the server answers.
const GATEWAY_CLIENT: &str = "Basic Z2F0ZXdheTpzM2NyZXQ=";

/// The cache-hit counter of the plugin named `oauth`.
const CACHE_HITS: &str = r#"weir_plugin_oauth2_introspection_cache_hits{plugin="oauth"}"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An introspection endpoint, `POST /introspect`: it answers client
/// `gateway` / `s3cret` only (401 `invalid_client` otherwise), wants a form
/// body of `token` and `token_type_hint=access_token` (400 otherwise), and
/// answers each token it was given with its answer, any other with
/// `{"active": false}`. It counts every call.
struct IntrospectionServer {
    addr: std::net::SocketAddr,
    calls: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl IntrospectionServer {
    async fn start(tokens: &[(&str, serde_json::Value)]) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(AtomicUsize::new(0));
        let tokens: Arc<HashMap<String, serde_json::Value>> = Arc::new(
            tokens
                .iter()
                .map(|(token, answer)| ((*token).to_owned(), answer.clone()))
                .collect(),
        );
        let task_calls = calls.clone();
        let task = weir_tests::serve(listener, move |req| {
            let (tokens, calls) = (tokens.clone(), task_calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                introspect(req, &tokens).await
            }
        });
        Ok(Self { addr, calls, task })
    }

    /// Calls answered so far.
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for IntrospectionServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One introspection request, checked as RFC 7662 §2.1 has it.
async fn introspect(
    req: Request<hyper::body::Incoming>,
    tokens: &HashMap<String, serde_json::Value>,
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if req.method() != hyper::Method::POST || req.uri().path() != "/introspect" {
        return answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        );
    }
    if header("authorization").as_deref() != Some(GATEWAY_CLIENT) {
        return answer(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_client"}),
        );
    }
    if header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
        return answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request"}),
        );
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let form: HashMap<&str, &str> = std::str::from_utf8(&body)
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let (Some(token), Some(&"access_token")) = (form.get("token"), form.get("token_type_hint"))
    else {
        return answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request"}),
        );
    };
    let introspection = tokens
        .get(*token)
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"active": false}));
    answer(StatusCode::OK, introspection)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The tokens the test server knows: `tok-ada` (user-1 of the test issuer,
/// with `orders:read`), `tok-stranger` (a subject of no consumer),
/// `tok-profile` (without `orders:read`).
fn tokens() -> Vec<(&'static str, serde_json::Value)> {
    let active = |sub: &str, scope: &str| {
        serde_json::json!({"active": true, "sub": sub, "iss": "https://idp.test",
            "client_id": "web", "scope": scope, "exp": now() + 3600, "token_type": "Bearer"})
    };
    vec![
        ("tok-ada", active("user-1", "orders:read orders:write")),
        ("tok-stranger", active("user-9", "orders:read")),
        ("tok-profile", active("user-1", "profile")),
    ]
}

/// A gateway on two workers whose plugin `oauth` (two VMs) introspects at
/// upstream `idp` (at `idp`) with `extra` added to its config.
async fn gateway(
    app: &EchoUpstream,
    idp: std::net::SocketAddr,
    extra: &str,
) -> anyhow::Result<TestGateway> {
    TestGateway::with_workers(
        &format!(
            r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: app, targets: ["{}"] }}
  - {{ name: idp, targets: ["{idp}"] }}
consumers:
  - {{ name: ada, groups: [staff], jwt: [{{ issuer: "https://idp.test", subject: user-1 }}] }}
plugins: [{{ name: oauth, builtin: oauth2-introspection, vms: 2 }}]
routes:
  - name: r
    upstream: app
    filters:
      - plugin: oauth
        config: {{ upstream: idp, client_id: gateway, client_secret: s3cret, token_type_hint: access_token, required_scopes: [orders:read], forward: {{ sub: x-user-sub }}{extra} }}
"#,
            app.addr
        ),
        2,
    )
    .await
}

/// A GET of `/orders` with `token`, on a connection of its own.
async fn get(gw: &TestGateway, token: &str) -> anyhow::Result<reqwest::Response> {
    Ok(http1_client()
        .get(gw.url("main", "/orders"))
        .bearer_auth(token)
        .send()
        .await?)
}

#[tokio::test]
async fn oauth2_introspection_admits_active_tokens_and_caches_them_until_max_ttl()
-> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let idp = IntrospectionServer::start(&tokens()).await?;
    let gw = gateway(&app, idp.addr, ", cache: { max_ttl: 2s }").await?;

    let response = http1_client()
        .get(gw.url("main", "/orders"))
        .bearer_auth("tok-ada")
        .header("x-consumer-name", "root")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let echoed = json(response).await?;
    assert_eq!(
        echoed["headers"]["x-consumer-name"],
        serde_json::json!(["ada"]),
        "the consumer, not the client's own value"
    );
    assert_eq!(
        echoed["headers"]["x-user-sub"],
        serde_json::json!(["user-1"])
    );
    assert_eq!(idp.calls(), 1);

    // Again, on another connection (maybe another worker and VM): cached.
    let again = get(&gw, "tok-ada").await?;
    assert_eq!(again.status(), 200);
    assert_eq!(json(again).await?["headers"]["x-consumer-name"][0], "ada");
    assert_eq!(
        idp.calls(),
        1,
        "the second request does not call the server"
    );
    assert_eq!(gw.metric(CACHE_HITS), Some(1));

    // A token of no consumer passes, with no consumer named upstream.
    let stranger = json(get(&gw, "tok-stranger").await?).await?;
    assert!(stranger["headers"].get("x-consumer-name").is_none());
    assert_eq!(stranger["headers"]["x-user-sub"][0], "user-9");
    assert_eq!(idp.calls(), 2);

    // Past max_ttl (2 s; the token's exp is an hour away) it is asked again.
    let started = Instant::now();
    let reintrospected = eventually(Duration::from_secs(10), async || {
        get(&gw, "tok-ada").await.is_ok_and(|r| r.status() == 200) && idp.calls() == 3
    })
    .await;
    assert!(reintrospected, "asked again once the entry expired");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before max_ttl"
    );
    assert_eq!(idp.calls(), 3);
    Ok(())
}

#[tokio::test]
async fn oauth2_introspection_refuses_inactive_tokens_and_missing_scopes() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let idp = IntrospectionServer::start(&tokens()).await?;
    let gw = gateway(&app, idp.addr, "").await?;

    for round in 0..2 {
        let inactive = get(&gw, "tok-revoked").await?;
        assert_eq!(inactive.status(), 401);
        assert_eq!(
            inactive.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        let request_id = inactive.headers()["x-request-id"].to_str()?.to_owned();
        assert_eq!(
            json(inactive).await?,
            serde_json::json!({"error": {"status": 401, "code": "unauthorized",
                "message": "the token is not active", "request_id": request_id}})
        );
        assert_eq!(
            idp.calls(),
            1,
            "round {round}: the inactive answer is cached"
        );
    }

    let unscoped = get(&gw, "tok-profile").await?;
    assert_eq!(unscoped.status(), 403);
    assert_eq!(
        unscoped.headers()["www-authenticate"],
        r#"Bearer error="insufficient_scope", scope="orders:read""#
    );
    let request_id = unscoped.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(
        json(unscoped).await?,
        serde_json::json!({"error": {"status": 403, "code": "insufficient_scope",
            "message": "the token lacks scope `orders:read`", "request_id": request_id}})
    );

    let missing = http1_client().get(gw.url("main", "/orders")).send().await?;
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(json(missing).await?["error"]["message"], "missing token");
    assert_eq!(idp.calls(), 2, "no call without a token");
    assert_eq!(app.hits(), 0, "nothing refused reaches the upstream");
    Ok(())
}

#[tokio::test]
async fn oauth2_introspection_answers_503_when_the_server_cannot_answer() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let idp = IntrospectionServer::start(&tokens()).await?;
    let slow = FixedUpstream::start(200, r#"{"active": true}"#, Duration::from_secs(10)).await?;
    let down = dead_address().await?;
    let unavailable = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 503);
        let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
        assert_eq!(
            json(response).await?,
            serde_json::json!({"error": {"status": 503, "code": "introspection_unavailable",
                "message": "the token could not be checked; try again later",
                "request_id": request_id}})
        );
        anyhow::Ok(())
    };

    // Nothing listens.
    let gw = gateway(&app, down, ", timeout: 500ms").await?;
    unavailable(get(&gw, "tok-ada").await?).await?;

    // It listens, but answers after the timeout.
    let gw = gateway(&app, slow.addr, ", timeout: 500ms").await?;
    let started = Instant::now();
    let response = get(&gw, "tok-ada").await?;
    let waited = started.elapsed();
    unavailable(response).await?;
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "answered at the timeout, not the server's 10 s: {waited:?}"
    );
    assert_eq!(slow.hits(), 1);

    // It answers, but refuses the gateway's client credentials.
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams:
  - {{ name: app, targets: ["{}"] }}
  - {{ name: idp, targets: ["{}"] }}
plugins: [{{ name: oauth, builtin: oauth2-introspection }}]
routes:
  - {{ name: r, upstream: app, filters: [{{ plugin: oauth, config: {{ upstream: idp, client_id: gateway, client_secret: wrong }} }}] }}
"#,
        app.addr, idp.addr
    ))
    .await?;
    for _ in 0..2 {
        unavailable(get(&gw, "tok-ada").await?).await?;
    }
    assert_eq!(idp.calls(), 2, "failures are not cached");
    assert_eq!(app.hits(), 0);
    Ok(())
}
