//! The `transform` built-in through the gateway: what reaches the upstream
//! (the echo upstream answers with what it got) and what reaches the
//! client, for headers with templates, the path and query, JSON bodies,
//! form and XML conversions, and bodies over the limit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json as j};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_tests::{EchoUpstream, TestGateway, http1_client, json, read_response, serve};

const SECRET: &str = "transform-test-secret";

/// A gateway whose route `orders` (listener `main`) runs `filters` (YAML
/// flow list) in front of `app`, with jwt-auth (`auth`, HS256 with
/// [`SECRET`]) and transform (`transform`) as plugins, and consumer `ada`
/// for tokens of subject `u-ada`.
async fn gateway(app: std::net::SocketAddr, filters: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{app}"] }}]
consumers: [{{ name: ada, jwt: [{{ subject: u-ada }}] }}]
plugins:
  - {{ name: auth, builtin: jwt-auth, vms: 1 }}
  - {{ name: transform, builtin: transform, vms: 1 }}
routes: [{{ name: orders, upstream: app, filters: {filters} }}]
"#
    ))
    .await
}

/// A token of subject `sub` with claim `org`, valid for ten minutes.
fn token(sub: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = j!({"sub": sub, "org": 42, "exp": now + 600});
    Ok(jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )?)
}

/// An upstream that answers every request with `content_type` and `body`.
struct FixedBody {
    addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl FixedBody {
    async fn start(content_type: &'static str, body: &'static str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = serve(listener, move |_request| async move {
            let mut response = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static(content_type),
            );
            response
        });
        Ok(Self { addr, task })
    }
}

impl Drop for FixedBody {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Header `name`'s values as the echo upstream got them.
fn echoed<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["headers"][name]
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn headers_path_and_query_reach_the_upstream_rewritten_from_templates() -> anyhow::Result<()>
{
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        app.addr,
        r#"[{ plugin: auth, config: { secret: transform-test-secret } },
            { plugin: transform, config: {
                request: {
                  headers: {
                    remove: [cookie],
                    rename: [[x-old, x-new]],
                    set: [[x-consumer, "${consumer}"], [x-user, "${jwt.sub}/${jwt.org}"],
                          [x-route, "${route}"], [x-trace, "${request_id}"],
                          [x-tenant, "t-${header.x-tenant}"], [x-page, "${query.page}"],
                          [x-none, "${header.x-absent}"]],
                    add: [[x-tenant, ignored], [x-fresh, "1"]],
                    append: [[x-list, b]] },
                  path: { regex: "^/v1/(?P<rest>.*)$", replace: "/api/$rest" },
                  query: { remove: [api_key], set: [[page, "1"]], append: [[by, "${consumer}"]] } },
                response: {
                  headers: { set: [[x-served-for, "${consumer}"]] } } } }]"#,
    )
    .await?;
    let response = http1_client()
        .get(gw.url("main", "/v1/orders/7?api_key=s&page=3&q=caf%C3%A9"))
        .bearer_auth(token("u-ada")?)
        .header("x-tenant", "acme")
        .header("x-old", "kept")
        .header("x-old", "also")
        .header("x-list", "a")
        .header("cookie", "session=1")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-served-for"], "ada");
    let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
    let echo = json(response).await?;
    assert_eq!(echo["path"], "/api/orders/7");
    assert_eq!(echo["query"], "page=1&q=caf%C3%A9&by=ada");
    assert_eq!(echoed(&echo, "cookie"), Vec::<&str>::new());
    assert_eq!(echoed(&echo, "x-old"), Vec::<&str>::new());
    assert_eq!(echoed(&echo, "x-new"), ["kept", "also"]);
    assert_eq!(echoed(&echo, "x-consumer"), ["ada"]);
    assert_eq!(echoed(&echo, "x-user"), ["u-ada/42"]);
    assert_eq!(echoed(&echo, "x-route"), ["orders"]);
    assert_eq!(echoed(&echo, "x-trace"), [request_id.as_str()]);
    assert_eq!(echoed(&echo, "x-tenant"), ["t-acme"]);
    assert_eq!(
        echoed(&echo, "x-page"),
        ["3"],
        "the query as the client sent it"
    );
    assert_eq!(echoed(&echo, "x-none"), Vec::<&str>::new());
    assert_eq!(echoed(&echo, "x-fresh"), ["1"]);
    assert_eq!(echoed(&echo, "x-list"), ["a", "b"]);
    assert_eq!(app.hits(), 1);
    Ok(())
}

#[tokio::test]
async fn json_bodies_are_rewritten_on_the_way_up_and_down() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        app.addr,
        r#"[{ plugin: transform, config: {
              request: { json: [
                { remove: /password },
                { rename: /user_name, to: username },
                { set: /meta/route, value: "${route}" },
                { set: /meta/version, value: 2 },
                { move: /legacy/id, to: /id },
                { wrap: data } ] },
              response: { json: [ { keep: [/method, /path, /body] }, { wrap: echo } ] } } }]"#,
    )
    .await?;
    let sent = r#"{"user_name":"ada","password":"p","legacy":{"id":7}}"#;
    let response = http1_client()
        .post(gw.url("main", "/users"))
        .header("content-type", "application/json")
        .body(sent)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let length: usize = response.headers()["content-length"].to_str()?.parse()?;
    let text = response.text().await?;
    assert_eq!(length, text.len(), "the length is the rewritten body's");
    let upstream_got =
        r#"{"data":{"username":"ada","legacy":{},"meta":{"route":"orders","version":2},"id":7}}"#;
    assert_eq!(
        text,
        j!({"echo": {"method": "POST", "path": "/users", "body": upstream_got}}).to_string()
    );

    // A HEAD answer has no body to rewrite, whatever its headers say.
    let head = http1_client().head(gw.url("main", "/users")).send().await?;
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "application/json");
    assert_eq!(app.hits(), 2);
    Ok(())
}

#[tokio::test]
async fn the_upstream_gets_the_exact_length_of_the_rewritten_body() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        app.addr,
        r#"[{ plugin: transform, config: { request: { json: [{ keep: [/id] }] } } }]"#,
    )
    .await?;
    let echo = json(
        http1_client()
            .post(gw.url("main", "/"))
            .header("content-type", "application/json; charset=utf-8")
            .body(r#"{"id": 1, "secret": "a long value the upstream never sees"}"#)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(echo["body"], r#"{"id":1}"#);
    assert_eq!(echoed(&echo, "content-length"), ["8"]);
    assert_eq!(
        echoed(&echo, "content-type"),
        ["application/json; charset=utf-8"]
    );

    // A body sent in chunks, without a length, is gathered and rewritten whole.
    let mut stream = tokio::net::TcpStream::connect(gw.addr("main")).await?;
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\n\r\n6\r\n{\"id\":\r\n",
        )
        .await?;
    stream.flush().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(b"a\r\n 2, \"x\": 1\r\n1\r\n}\r\n0\r\n\r\n")
        .await?;
    let answer = read_response(&mut stream, Duration::from_secs(5)).await?;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let echo: Value = serde_json::from_str(body)?;
    assert_eq!(echo["body"], r#"{"id":2}"#);
    assert_eq!(echoed(&echo, "content-length"), ["8"]);
    assert_eq!(echoed(&echo, "transfer-encoding"), Vec::<&str>::new());
    Ok(())
}

#[tokio::test]
async fn forms_go_up_as_json_and_json_comes_back_as_a_form() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        app.addr,
        r#"[{ plugin: transform, config: {
              request: { convert: form_to_json, json: [{ rename: /tag, to: tags }] },
              response: { convert: json_to_form, json: [{ keep: [/method, /body] }] } } }]"#,
    )
    .await?;
    let response = http1_client()
        .post(gw.url("main", "/form"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Ada+Lovelace&tag=a&tag=b%26c")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-www-form-urlencoded"
    );
    let body = response.text().await?;
    let upstream_got = r#"{"name":"Ada Lovelace","tags":["a","b&c"]}"#;
    assert_eq!(upstream_got.len(), 42);
    assert_eq!(
        body,
        "method=POST&body=%7B%22name%22%3A%22Ada+Lovelace%22%2C%22tags%22%3A%5B%22a%22%2C%22b%26c%22%5D%7D"
    );
    Ok(())
}

#[tokio::test]
async fn xml_goes_up_as_json_and_json_up_as_xml() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        app.addr,
        r#"[{ plugin: transform, config: { request: { convert: xml_to_json } } }]"#,
    )
    .await?;
    let echo = json(
        http1_client()
            .post(gw.url("main", "/orders"))
            .header("content-type", "application/xml")
            .body(r#"<?xml version="1.0"?><order id="7"><item sku="a">2</item><item sku="b">1</item><note>fragile &amp; urgent</note></order>"#)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        echo["body"],
        r##"{"order":{"@id":"7","item":[{"@sku":"a","#text":"2"},{"@sku":"b","#text":"1"}],"note":"fragile & urgent"}}"##
    );
    assert_eq!(echoed(&echo, "content-type"), ["application/json"]);

    let gw = gateway(
        app.addr,
        r#"[{ plugin: transform, config: { request: { convert: json_to_xml } } }]"#,
    )
    .await?;
    let echo = json(
        http1_client()
            .post(gw.url("main", "/orders"))
            .header("content-type", "application/json")
            .body(r#"{"order":{"@id":7,"item":["a","b"],"note":"x < y"}}"#)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        echo["body"],
        r#"<?xml version="1.0" encoding="UTF-8"?><order id="7"><item>a</item><item>b</item><note>x &lt; y</note></order>"#
    );
    assert_eq!(echoed(&echo, "content-type"), ["application/xml"]);
    Ok(())
}

#[tokio::test]
async fn xml_responses_reach_the_client_as_json() -> anyhow::Result<()> {
    let soap = FixedBody::start(
        "text/xml; charset=utf-8",
        r#"<user id="5"><name>Ada</name><role>admin</role><role>dev</role></user>"#,
    )
    .await?;
    let gw = gateway(
        soap.addr,
        r#"[{ plugin: transform, config: { response: { convert: xml_to_json, json: [{ unwrap: user }] } } }]"#,
    )
    .await?;
    let response = http1_client().get(gw.url("main", "/user/5")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["content-length"], "47");
    assert_eq!(
        response.text().await?,
        r#"{"@id":"5","name":"Ada","role":["admin","dev"]}"#
    );
    Ok(())
}

#[tokio::test]
async fn bodies_over_the_limit_get_the_configured_answer_never_a_partial_rewrite()
-> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        app.addr,
        r#"[{ plugin: transform, config: { max_body_bytes: 64,
              request: { json: [{ remove: /secret }], too_large: { status: 413, code: payload_too_large } },
              response: { json: [{ remove: /headers }] } } }]"#,
    )
    .await?;
    let client = http1_client();
    let big = j!({"secret": "s", "padding": "x".repeat(100)}).to_string();
    let refused = client
        .post(gw.url("main", "/"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await?;
    assert_eq!(refused.status(), 413);
    let request_id = refused.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(
        json(refused).await?,
        j!({"error": {"status": 413, "code": "payload_too_large",
            "message": "the request body is larger than the 64 bytes the transform rewrites",
            "request_id": request_id}})
    );
    assert_eq!(app.hits(), 0, "the upstream never sees it");

    // A body of another content type is not buffered, so not limited: it
    // reaches the upstream, whose answer (its JSON description of the
    // request) is over 64 bytes.
    let response = client
        .post(gw.url("main", "/"))
        .header("content-type", "text/plain")
        .body(big)
        .send()
        .await?;
    assert_eq!(app.hits(), 1);
    assert_eq!(response.status(), 502);
    let error = json(response).await?;
    assert_eq!(error["error"]["code"], "transform_body_too_large");
    assert_eq!(
        error["error"]["message"],
        "the response body is larger than the 64 bytes the transform rewrites"
    );
    Ok(())
}

#[tokio::test]
async fn a_body_that_is_not_its_content_type_is_refused() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        app.addr,
        r#"[{ plugin: transform, config: { request: { json: [{ remove: /a }] } } }]"#,
    )
    .await?;
    let response = http1_client()
        .post(gw.url("main", "/"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let error = json(response).await?;
    assert_eq!(error["error"]["code"], "transform_invalid_body");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("the request body cannot be rewritten: not JSON")),
        "{error}"
    );
    assert_eq!(app.hits(), 0);
    Ok(())
}

#[tokio::test]
async fn configuration_errors_are_refused_at_their_field() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let Err(error) = gateway(
        app.addr,
        r#"[{ plugin: transform, config: { request: { headers: { set: [[x-a, "${user}"]] } } } }]"#,
    )
    .await
    else {
        panic!("an unknown placeholder was accepted");
    };
    let message = format!("{error:#}");
    assert!(
        message.contains("/request/headers/set/0/1")
            && message.contains("unknown placeholder `${user}`"),
        "{message}"
    );
    Ok(())
}
