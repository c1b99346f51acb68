//! The `validation` built-in through the gateway: requests checked against
//! JSON Schemas and an OpenAPI description (every violation listed, the
//! upstream never called), operations the description lacks, bodies over
//! the limit, and responses of a real upstream that breaks its contract,
//! logged or replaced by a 502.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use weir_tests::{
    EchoUpstream, TestGateway, capture_logs_of, captured_logs, eventually, http1_client, json,
    serve,
};

const REJECTED: &str = r#"weir_plugin_validation_rejected{plugin="validate"}"#;

/// A gateway whose one route (listener `main`) runs the validation filter,
/// plugin `plugin`, with `config` (YAML, indented for a `config:` block),
/// in front of `upstream`.
async fn gateway(upstream: &str, plugin: &str, config: &str) -> anyhow::Result<TestGateway> {
    TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: ["{upstream}"] }}]
plugins: [{{ name: {plugin}, builtin: validation, vms: 1 }}]
routes:
  - name: r
    upstream: app
    filters:
      - plugin: {plugin}
        config:
{config}"#,
    ))
    .await
}

/// The `violations` of a refused answer, after checking its status and code.
async fn violations(response: reqwest::Response, status: u16, code: &str) -> anyhow::Result<Value> {
    assert_eq!(response.status(), status);
    let body = json(response).await?;
    assert_eq!(body["error"]["code"], code, "{body}");
    Ok(body["error"]["violations"].clone())
}

const USER_SCHEMAS: &str = r#"          body:
            type: object
            required: [name, email]
            additionalProperties: false
            properties:
              name: { type: string, minLength: 1 }
              email: { type: string, format: email }
              age: { type: integer, minimum: 0 }
          query:
            type: object
            properties:
              dry_run: { type: boolean }
              ids: { type: array, items: { type: integer } }
          headers:
            type: object
            required: [X-Tenant]
            properties:
              X-Tenant: { type: string, pattern: "^[a-z]+$" }
"#;

#[tokio::test]
async fn a_request_that_breaks_its_schemas_is_refused_with_every_violation() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app.addr.to_string(), "validate", USER_SCHEMAS).await?;
    let client = http1_client();

    let refused = client
        .post(gw.url("main", "/users?dry_run=maybe&ids=1&ids=x"))
        .header("x-tenant", "ACME")
        .header("content-type", "application/json")
        .body(r#"{"email": "nope", "age": -1, "admin": true}"#)
        .send()
        .await?;
    assert_eq!(refused.status(), 400);
    let request_id = refused.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(
        json(refused).await?,
        json!({"error": {
            "status": 400,
            "code": "validation_failed",
            "message": "the request does not match its schema: 7 violations",
            "request_id": request_id,
            "violations": [
                {"in": "query", "pointer": "/dry_run", "message": "\"maybe\" is not of type \"boolean\""},
                {"in": "query", "pointer": "/ids/1", "message": "\"x\" is not of type \"integer\""},
                {"in": "header", "pointer": "/x-tenant", "message": "\"ACME\" does not match \"^[a-z]+$\""},
                {"in": "body", "pointer": "", "message": "\"name\" is a required property"},
                {"in": "body", "pointer": "", "message": "Additional properties are not allowed ('admin' was unexpected)"},
                {"in": "body", "pointer": "/age", "message": "-1 is less than the minimum of 0"},
                {"in": "body", "pointer": "/email", "message": "\"nope\" is not a \"email\""}
            ]
        }})
    );
    assert_eq!(app.hits(), 0, "the upstream never sees it");

    let body = r#"{"name": "Ada", "email": "ada@example.com", "age": 36}"#;
    let passed = client
        .post(gw.url("main", "/users?dry_run=true&ids=1&ids=2"))
        .header("x-tenant", "acme")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    assert_eq!(passed.status(), 200);
    let echoed = json(passed).await?;
    assert_eq!(echoed["body"], body, "the body goes on as sent");
    assert_eq!(echoed["query"], "dry_run=true&ids=1&ids=2");
    assert_eq!(app.hits(), 1);

    let not_json = client
        .post(gw.url("main", "/users"))
        .header("x-tenant", "acme")
        .header("content-type", "text/plain")
        .body("Ada")
        .send()
        .await?;
    assert_eq!(not_json.status(), 415);
    assert_eq!(
        json(not_json).await?["error"]["code"],
        "unsupported_media_type"
    );
    assert_eq!(app.hits(), 1);
    assert_eq!(gw.metric(REJECTED), Some(2));
    Ok(())
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_refused_with_413() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(
        &app.addr.to_string(),
        "validate",
        "          max_body_bytes: 1024\n          body: { type: object }\n",
    )
    .await?;
    let client = http1_client();
    let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(4096));
    let refused = client
        .post(gw.url("main", "/notes"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await?;
    assert_eq!(refused.status(), 413);
    let body = json(refused).await?;
    assert_eq!(body["error"]["code"], "body_too_large");
    assert_eq!(
        body["error"]["message"],
        "the request body is larger than the 1024 bytes that are checked"
    );
    let small = client
        .post(gw.url("main", "/notes"))
        .header("content-type", "application/json")
        .body(r#"{"text": "hi"}"#)
        .send()
        .await?;
    assert_eq!(small.status(), 200);
    assert_eq!(app.hits(), 1);
    Ok(())
}

/// A pet store in OpenAPI 3.1, as YAML under `config:`.
const PETSTORE: &str = r##"          openapi:
            openapi: 3.1.0
            info: { title: pets, version: "1" }
            paths:
              /pets:
                post:
                  requestBody:
                    required: true
                    content:
                      application/json:
                        schema: { $ref: "#/components/schemas/NewPet" }
                  responses:
                    "201": { description: created }
              /pets/{petId}:
                parameters:
                  - { name: petId, in: path, required: true, schema: { type: integer, minimum: 1 } }
                get:
                  parameters:
                    - { name: fields, in: query, explode: false, schema: { type: array, items: { enum: [name, tag] } } }
                  responses:
                    "200":
                      description: a pet
                      content:
                        application/json:
                          schema: { $ref: "#/components/schemas/Pet" }
            components:
              schemas:
                NewPet:
                  type: object
                  required: [name]
                  properties:
                    name: { type: string }
                    tag: { type: [string, "null"] }
                Pet:
                  allOf:
                    - { $ref: "#/components/schemas/NewPet" }
                    - { type: object, required: [id], properties: { id: { type: integer } } }
"##;

#[tokio::test]
async fn an_openapi_description_finds_each_operation_and_checks_it() -> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let gw = gateway(&app.addr.to_string(), "validate", PETSTORE).await?;
    let client = http1_client();

    let ok = client
        .get(gw.url("main", "/pets/7?fields=name,tag"))
        .send()
        .await?;
    assert_eq!(ok.status(), 200);
    assert_eq!(json(ok).await?["path"], "/pets/7");

    let refused = client
        .get(gw.url("main", "/pets/0?fields=name,owner"))
        .send()
        .await?;
    assert_eq!(
        violations(refused, 400, "validation_failed").await?,
        json!([
            {"in": "path", "pointer": "/petId", "message": "0 is less than the minimum of 1"},
            {"in": "query", "pointer": "/fields/1", "message": "\"owner\" is not one of \"name\" or \"tag\""}
        ])
    );

    let bad_body = client
        .post(gw.url("main", "/pets"))
        .header("content-type", "application/json")
        .body(r#"{"tag": 3}"#)
        .send()
        .await?;
    assert_eq!(
        violations(bad_body, 400, "validation_failed").await?,
        json!([
            {"in": "body", "pointer": "", "message": "\"name\" is a required property"},
            {"in": "body", "pointer": "/tag", "message": "3 is not of types \"null\", \"string\""}
        ])
    );
    let no_body = client.post(gw.url("main", "/pets")).send().await?;
    assert_eq!(
        violations(no_body, 400, "validation_failed").await?,
        json!([{"in": "body", "pointer": "", "message": "a request body is required"}])
    );
    let created = client
        .post(gw.url("main", "/pets"))
        .header("content-type", "application/json")
        .body(r#"{"name": "Rex", "tag": null}"#)
        .send()
        .await?;
    assert_eq!(created.status(), 200, "the echo upstream answers 200");

    let unknown = client.get(gw.url("main", "/owners/1")).send().await?;
    assert_eq!(unknown.status(), 404);
    assert_eq!(json(unknown).await?["error"]["code"], "unknown_operation");
    let wrong_method = client.delete(gw.url("main", "/pets/7")).send().await?;
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["allow"], "GET");
    assert_eq!(
        json(wrong_method).await?["error"]["code"],
        "method_not_allowed"
    );
    assert_eq!(app.hits(), 2, "only the valid requests reach the upstream");
    Ok(())
}

#[tokio::test]
async fn an_openapi_30_description_reads_nullable_and_boolean_exclusive_minimum()
-> anyhow::Result<()> {
    let app = EchoUpstream::start("app").await?;
    let config = r##"          openapi:
            openapi: 3.0.3
            info: { title: orders, version: "1" }
            paths:
              /orders:
                post:
                  requestBody:
                    content:
                      application/json:
                        schema:
                          type: object
                          required: [amount]
                          properties:
                            amount: { type: number, minimum: 0, exclusiveMinimum: true }
                            note: { type: string, nullable: true }
                  responses:
                    "201": { description: created }
"##;
    let gw = gateway(&app.addr.to_string(), "validate", config).await?;
    let client = http1_client();
    let post = |body: &'static str| {
        client
            .post(gw.url("main", "/orders"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        post(r#"{"amount": 0.5, "note": null}"#).await?.status(),
        200
    );
    assert_eq!(
        violations(
            post(r#"{"amount": 0, "note": 1}"#).await?,
            400,
            "validation_failed"
        )
        .await?,
        json!([
            {"in": "body", "pointer": "/amount", "message": "0 is less than or equal to the minimum of 0"},
            {"in": "body", "pointer": "/note", "message": "1 is not of types \"null\", \"string\""}
        ])
    );
    assert_eq!(app.hits(), 1);
    Ok(())
}

/// An upstream that answers `GET /pets/{id}` with a pet (`/pets/1`), a pet
/// without its name (`/pets/2`) or an HTML error (`/pets/3`).
async fn pet_upstream() -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = serve(
        listener,
        |request: hyper::Request<hyper::body::Incoming>| {
            let path = request.uri().path().to_owned();
            async move {
                let (status, content_type, body) = match path.as_str() {
                    "/pets/1" => (200, "application/json", r#"{"id": 1, "name": "Rex"}"#),
                    "/pets/2" => (200, "application/json", r#"{"id": "2"}"#),
                    _ => (500, "text/html", "<h1>oops</h1>"),
                };
                let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
                response.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static(content_type),
                );
                response
            }
        },
    );
    Ok((addr, task))
}

#[tokio::test]
async fn an_upstream_that_breaks_its_contract_is_replaced_with_502() -> anyhow::Result<()> {
    let (addr, upstream) = pet_upstream().await?;
    let config = format!("          responses: enforce\n{PETSTORE}");
    let gw = gateway(&addr.to_string(), "validate", &config).await?;
    let client = http1_client();

    let good = client.get(gw.url("main", "/pets/1")).send().await?;
    assert_eq!(good.status(), 200);
    assert_eq!(good.text().await?, r#"{"id": 1, "name": "Rex"}"#);

    let broken = client.get(gw.url("main", "/pets/2")).send().await?;
    assert_eq!(broken.status(), 502);
    let request_id = broken.headers()["x-request-id"].to_str()?.to_owned();
    assert_eq!(
        json(broken).await?,
        json!({"error": {
            "status": 502,
            "code": "upstream_contract_violation",
            "message": "the upstream's response does not match the API description: 2 violations",
            "request_id": request_id,
            "violations": [
                {"in": "body", "pointer": "", "message": "\"name\" is a required property"},
                {"in": "body", "pointer": "/id", "message": "\"2\" is not of type \"integer\""}
            ]
        }})
    );

    let undescribed = client.get(gw.url("main", "/pets/3")).send().await?;
    assert_eq!(
        violations(undescribed, 502, "upstream_contract_violation").await?,
        json!([{"in": "status", "pointer": "", "message": "status 500 is not among the operation's responses (200)"}])
    );
    assert_eq!(
        gw.metric(r#"weir_plugin_validation_response_violations{plugin="validate"}"#),
        Some(2)
    );

    // The filter's own 400 is not checked as the operation's response.
    let invalid = client.get(gw.url("main", "/pets/0")).send().await?;
    assert_eq!(
        violations(invalid, 400, "validation_failed").await?,
        json!([{"in": "path", "pointer": "/petId", "message": "0 is less than the minimum of 1"}])
    );
    upstream.abort();
    Ok(())
}

#[tokio::test]
async fn a_routes_fixed_response_is_not_checked_as_the_upstreams() -> anyhow::Result<()> {
    let gw = TestGateway::from_yaml(&format!(
        r#"apiVersion: weir/v1
listeners: [{{ name: main, address: 127.0.0.1:0 }}]
plugins: [{{ name: validate, builtin: validation, vms: 1 }}]
routes:
  - name: r
    respond: {{ status: 418, body: teapot }}
    filters:
      - plugin: validate
        config:
          responses: enforce
{PETSTORE}"#
    ))
    .await?;
    let response = http1_client().get(gw.url("main", "/pets/1")).send().await?;
    assert_eq!(response.status(), 418);
    assert_eq!(response.text().await?, "teapot");
    Ok(())
}

#[tokio::test]
async fn in_log_mode_a_broken_response_goes_on_and_is_logged() -> anyhow::Result<()> {
    capture_logs_of("validate-log");
    let (addr, upstream) = pet_upstream().await?;
    let config = format!("          responses: log\n{PETSTORE}");
    let gw = gateway(&addr.to_string(), "validate-log", &config).await?;
    let response = http1_client().get(gw.url("main", "/pets/2")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await?,
        r#"{"id": "2"}"#,
        "the response is untouched"
    );
    let logged = eventually(Duration::from_secs(5), async || {
        captured_logs("breaks the API description").iter().any(|line| {
            line.contains("WARN")
                && line.contains(
                    "the response of GET /pets/{petId} (status 200) breaks the API description: \
                     body : \"name\" is a required property; body /id: \"2\" is not of type \"integer\"",
                )
        })
    })
    .await;
    assert!(logged, "{:?}", captured_logs("validate-log"));
    upstream.abort();
    Ok(())
}
