//! The filter on the test kit: JSON Schemas for bodies, query and headers;
//! an OpenAPI 3.1 and a 3.0 description for requests and responses; limits
//! and configuration errors.

use serde_json::{Value, json};
use weir_sdk::LogLevel;
use weir_sdk::testing::{Request, Response, TestKit};

use super::*;

fn kit(config: Value) -> TestKit<Validation> {
    TestKit::<Validation>::configure(&config.to_string()).expect("configured")
}

/// The status and JSON body of the local reply to `request`, or `None`
/// when it went on.
fn outcome(kit: &TestKit<Validation>, request: Request) -> Option<(u16, Value)> {
    let mut exchange = kit.request(request);
    let mut flow = exchange.send_headers();
    if flow == Flow::Continue && !exchange.request_body().is_empty() {
        flow = exchange.send_body();
    }
    match exchange.local_reply() {
        Some(reply) => Some((reply.status, reply.json())),
        None => {
            assert_eq!(flow, Flow::Continue);
            None
        }
    }
}

/// The violations of a 400, as (in, pointer, message).
fn violations(kit: &TestKit<Validation>, request: Request) -> Vec<(String, String, String)> {
    let (status, body) = outcome(kit, request).expect("refused");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    body["error"]["violations"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| {
            (
                v["in"].as_str().unwrap_or_default().to_owned(),
                v["pointer"].as_str().unwrap_or_default().to_owned(),
                v["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn v(place: &str, pointer: &str, message: &str) -> (String, String, String) {
    (place.to_owned(), pointer.to_owned(), message.to_owned())
}

fn post_json(path: &str, body: &str) -> Request {
    Request::post(path, body).header("content-type", "application/json")
}

fn user_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "email"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "email": {"type": "string", "format": "email"},
            "age": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}
        }
    })
}

#[test]
fn a_valid_json_body_goes_on_untouched() {
    let kit = kit(json!({"body": user_schema()}));
    let body = r#"{"name": "Ada", "email": "ada@example.com", "age": 36, "tags": ["x"]}"#;
    let mut exchange = kit.request(post_json("/users", body));
    assert_eq!(exchange.send_headers(), Flow::Continue);
    assert_eq!(exchange.send_body(), Flow::Continue);
    assert!(exchange.local_reply().is_none());
    assert_eq!(exchange.request_body(), body.as_bytes());
    assert_eq!(kit.metric("validation_rejected"), Some(0));
}

#[test]
fn every_violation_of_a_json_body_is_listed_in_weirs_error_shape() {
    let kit = kit(json!({"body": user_schema()}));
    let (status, body) = outcome(
        &kit,
        post_json(
            "/users",
            r#"{"email": "not-an-email", "age": -3, "tags": ["a", 7, "c"], "admin": true}"#,
        ),
    )
    .expect("refused");
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {
            "status": 400,
            "code": "validation_failed",
            "message": "the request does not match its schema: 6 violations",
            "request_id": "test-request",
            "violations": [
                {"in": "body", "pointer": "", "message": "\"name\" is a required property"},
                {"in": "body", "pointer": "", "message": "Additional properties are not allowed ('admin' was unexpected)"},
                {"in": "body", "pointer": "/age", "message": "-3 is less than the minimum of 0"},
                {"in": "body", "pointer": "/email", "message": "\"not-an-email\" is not a \"email\""},
                {"in": "body", "pointer": "/tags", "message": "[\"a\",7,\"c\"] has more than 2 items"},
                {"in": "body", "pointer": "/tags/1", "message": "7 is not of type \"string\""}
            ]
        }})
    );
    assert_eq!(kit.metric("validation_rejected"), Some(1));
}

#[test]
fn draft_7_is_read_from_schema() {
    let kit = kit(json!({"body": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"positive": {"type": "number", "exclusiveMinimum": 0}},
        "type": "object",
        "properties": {"price": {"$ref": "#/definitions/positive"}},
        "dependencies": {"price": ["currency"]}
    }}));
    assert_eq!(
        violations(&kit, post_json("/items", r#"{"price": 0}"#)),
        [
            v("body", "", "\"currency\" is a required property"),
            v(
                "body",
                "/price",
                "0 is less than or equal to the minimum of 0"
            ),
        ]
    );
    assert_eq!(
        outcome(
            &kit,
            post_json("/items", r#"{"price": 2, "currency": "EUR"}"#)
        ),
        None
    );
}

#[test]
fn bodies_that_are_not_json_or_not_a_checked_type_are_refused() {
    let kit = kit(json!({"body": user_schema()}));
    assert_eq!(
        violations(&kit, post_json("/users", r#"{"name": "Ada",}"#)),
        [v(
            "body",
            "",
            "the body is not valid JSON: trailing comma at line 1 column 16"
        )]
    );
    let (status, body) = outcome(
        &kit,
        Request::post("/users", "name=Ada").header("content-type", "text/plain"),
    )
    .expect("refused");
    assert_eq!(status, 415);
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    assert_eq!(
        body["error"]["message"],
        "the body's content type text/plain is not one of application/json, application/x-www-form-urlencoded"
    );
}

#[test]
fn a_form_body_is_checked_as_an_object_of_typed_fields() {
    let kit = kit(json!({"body": user_schema()}));
    assert_eq!(
        outcome(
            &kit,
            Request::post(
                "/users",
                "name=Ada&email=ada%40example.com&age=36&tags=a&tags=b"
            )
            .header("content-type", "application/x-www-form-urlencoded")
        ),
        None
    );
    assert_eq!(
        violations(
            &kit,
            Request::post("/users", "name=Ada&email=ada%40example.com&age=old")
                .header("content-type", "application/x-www-form-urlencoded")
        ),
        [v("body", "/age", "\"old\" is not of type \"integer\"")]
    );
}

#[test]
fn query_and_headers_are_typed_from_their_schemas() {
    let kit = kit(json!({
        "query": {
            "type": "object",
            "required": ["page"],
            "properties": {
                "page": {"type": "integer", "minimum": 1},
                "sort": {"enum": ["asc", "desc"]},
                "ids": {"type": "array", "items": {"type": "integer"}},
                "draft": {"type": "boolean"}
            }
        },
        "headers": {
            "type": "object",
            "required": ["X-Tenant"],
            "properties": {"X-Tenant": {"type": "string", "pattern": "^[a-z]+$"}}
        }
    }));
    assert_eq!(
        outcome(
            &kit,
            Request::get("/items?page=2&sort=asc&ids=1&ids=2&draft=false")
                .header("x-tenant", "acme")
        ),
        None
    );
    assert_eq!(
        violations(
            &kit,
            Request::get("/items?page=0&sort=up&ids=1&ids=x&draft=maybe")
                .header("x-tenant", "ACME")
        ),
        [
            v("query", "/draft", "\"maybe\" is not of type \"boolean\""),
            v("query", "/ids/1", "\"x\" is not of type \"integer\""),
            v("query", "/page", "0 is less than the minimum of 1"),
            v("query", "/sort", "\"up\" is not one of \"asc\" or \"desc\""),
            v(
                "header",
                "/x-tenant",
                "\"ACME\" does not match \"^[a-z]+$\""
            ),
        ]
    );
    assert_eq!(
        violations(&kit, Request::get("/items")),
        [
            v("query", "", "\"page\" is a required property"),
            v("header", "", "\"x-tenant\" is a required property"),
        ]
    );
}

#[test]
fn the_list_is_capped_at_max_violations() {
    let kit =
        kit(json!({"body": {"type": "array", "items": {"type": "integer"}}, "max_violations": 2}));
    let (status, body) =
        outcome(&kit, post_json("/n", r#"["a", "b", "c", "d"]"#)).expect("refused");
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "the request does not match its schema: more than 2 violations; the first 2 are listed"
    );
    assert_eq!(
        body["error"]["violations"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn a_body_over_max_body_bytes_is_refused_with_413() {
    let kit = kit(json!({"body": {"type": "object"}, "max_body_bytes": 16}));
    let (status, body) =
        outcome(&kit, post_json("/x", r#"{"a": "0123456789abcdef"}"#)).expect("refused");
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "body_too_large");
    assert_eq!(outcome(&kit, post_json("/x", r#"{"a": 1}"#)), None);
}

#[test]
fn a_required_body_must_be_there() {
    let kit = kit(json!({"body": {"type": "object"}, "require_body": true}));
    assert_eq!(
        violations(&kit, Request::new("POST", "/x")),
        [v("body", "", "a request body is required")]
    );
    let optional = super::tests::kit(json!({"body": {"type": "object"}}));
    assert_eq!(outcome(&optional, Request::get("/x")), None);
}

#[test]
fn bad_configurations_are_refused_at_their_field() {
    let refused = |config: Value| {
        TestKit::<Validation>::configure(&config.to_string())
            .err()
            .expect("refused")
    };
    assert_eq!(refused(json!({})).pointer, "");
    assert_eq!(
        refused(json!({"body": {"type": "objec"}})).pointer,
        "/body/type"
    );
    let remote = refused(json!({"query": {"$ref": "https://example.com/q.json"}}));
    assert_eq!(remote.pointer, "/query");
    assert_eq!(
        refused(json!({"body": {}, "responses": "log"})).pointer,
        "/responses"
    );
    assert_eq!(
        refused(json!({"openapi": {"openapi": "3.1.0", "paths": {}}, "body": {}})).pointer,
        "/body"
    );
    assert_eq!(
        refused(json!({"openapi": {"swagger": "2.0"}})).pointer,
        "/openapi/openapi"
    );
    assert_eq!(
        refused(json!({"body": {}, "max_violations": 0})).pointer,
        "/max_violations"
    );
    assert_eq!(refused(json!({"body": {}, "bdy": {}})).pointer, "/bdy");
}

/// A pet store in OpenAPI 3.1.
fn petstore() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "pets", "version": "1"},
        "paths": {
            "/pets": {
                "get": {
                    "parameters": [
                        {"$ref": "#/components/parameters/limit"},
                        {"name": "tags", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
                        {"name": "ids", "in": "query", "explode": false, "schema": {"type": "array", "items": {"type": "integer"}}}
                    ],
                    "responses": {
                        "200": {"description": "pets", "content": {"application/json": {
                            "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}}}}}
                    }
                },
                "post": {
                    "parameters": [
                        {"name": "X-Request-Sig", "in": "header", "required": true, "schema": {"type": "string", "minLength": 8}}
                    ],
                    "requestBody": {"$ref": "#/components/requestBodies/NewPet"},
                    "responses": {
                        "201": {
                            "description": "created",
                            "headers": {"Location": {"required": true, "schema": {"type": "string", "pattern": "^/pets/[0-9]+$"}}},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}
                        },
                        "4XX": {"description": "refused", "content": {"application/json": {"schema": {"type": "object", "required": ["error"]}}}}
                    }
                }
            },
            "/pets/mine": {
                "get": {"responses": {"200": {"description": "mine"}}}
            },
            "/pets/{petId}": {
                "parameters": [
                    {"name": "petId", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}}
                ],
                "get": {
                    "parameters": [
                        {"name": "session", "in": "cookie", "schema": {"type": "string", "format": "uuid"}}
                    ],
                    "responses": {"default": {"description": "any"}}
                },
                "delete": {"responses": {"204": {"description": "gone"}}}
            }
        },
        "components": {
            "parameters": {
                "limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
            },
            "requestBodies": {
                "NewPet": {"required": true, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/NewPet"}},
                    "application/octet-stream": {}
                }}
            },
            "schemas": {
                "NewPet": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "tag": {"type": ["string", "null"]}}
                },
                "Pet": {
                    "allOf": [
                        {"$ref": "#/components/schemas/NewPet"},
                        {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}
                    ]
                }
            }
        }
    })
}

#[test]
fn openapi_path_query_header_cookie_and_body_are_checked() {
    let kit = kit(json!({"openapi": petstore()}));
    assert_eq!(
        outcome(&kit, Request::get("/pets?limit=10&tags=a&tags=b&ids=1,2,3")),
        None
    );
    assert_eq!(
        violations(&kit, Request::get("/pets?limit=500&ids=1,x")),
        [
            v("query", "/ids/1", "\"x\" is not of type \"integer\""),
            v("query", "/limit", "500 is greater than the maximum of 100"),
        ]
    );
    assert_eq!(outcome(&kit, Request::get("/pets/7")), None);
    assert_eq!(
        violations(
            &kit,
            Request::get("/pets/0").header("cookie", "theme=dark; session=nope")
        ),
        [
            v("path", "/petId", "0 is less than the minimum of 1"),
            v("cookie", "/session", "\"nope\" is not a \"uuid\""),
        ]
    );
    assert_eq!(
        outcome(&kit, Request::get("/pets/mine")),
        None,
        "a literal path is matched before a template"
    );
    let new_pet = |body: &str| post_json("/pets", body).header("x-request-sig", "signature");
    assert_eq!(
        outcome(&kit, new_pet(r#"{"name": "Rex", "tag": null}"#)),
        None
    );
    assert_eq!(
        violations(
            &kit,
            post_json("/pets", r#"{"tag": 3}"#).header("x-request-sig", "short")
        ),
        [
            v(
                "header",
                "/x-request-sig",
                "\"short\" is shorter than 8 characters"
            ),
            v("body", "", "\"name\" is a required property"),
            v("body", "/tag", "3 is not of types \"null\", \"string\""),
        ]
    );
    assert_eq!(
        violations(
            &kit,
            Request::new("POST", "/pets").header("x-request-sig", "signature")
        ),
        [v("body", "", "a request body is required")]
    );
    assert_eq!(
        outcome(
            &kit,
            Request::post("/pets", vec![0u8, 1, 2])
                .header("content-type", "application/octet-stream")
                .header("x-request-sig", "signature")
        ),
        None,
        "a media type without a schema is only checked for its type"
    );
    let (status, body) = outcome(
        &kit,
        Request::post("/pets", "<pet/>")
            .header("content-type", "application/xml")
            .header("x-request-sig", "signature"),
    )
    .expect("refused");
    assert_eq!(status, 415);
    assert_eq!(
        body["error"]["message"],
        "the body's content type application/xml is not one of application/json, application/octet-stream"
    );
}

#[test]
fn unknown_operations_are_refused_or_let_through() {
    let kit = kit(json!({"openapi": petstore()}));
    let (status, body) = outcome(&kit, Request::get("/owners")).expect("refused");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_operation");
    let mut exchange = kit.request(Request::new("PUT", "/pets/3"));
    assert_eq!(exchange.send_headers(), Flow::Pause);
    let reply = exchange.local_reply().expect("refused");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["error"]["code"], "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("GET, DELETE"));
    drop(exchange);
    assert_eq!(
        outcome(&kit, Request::new("HEAD", "/pets/3")),
        None,
        "HEAD finds GET"
    );

    let open = super::tests::kit(json!({"openapi": petstore(), "unknown_operation": "allow"}));
    assert_eq!(outcome(&open, Request::get("/owners")), None);
    assert_eq!(outcome(&open, Request::new("PUT", "/pets/3")), None);
}

#[test]
fn the_base_path_is_where_the_descriptions_paths_start() {
    let kit = kit(json!({"openapi": petstore(), "base_path": "/api/v1"}));
    assert_eq!(outcome(&kit, Request::get("/api/v1/pets/7")), None);
    assert_eq!(
        outcome(&kit, Request::get("/pets/7")).map(|r| r.0),
        Some(404)
    );
    assert_eq!(
        outcome(&kit, Request::get("/api/v1x/pets/7")).map(|r| r.0),
        Some(404)
    );
}

/// Runs `request` through, answers it with `response`; the flow of the
/// last response callback and the local reply, if any.
fn respond(
    kit: &TestKit<Validation>,
    request: Request,
    response: Response,
) -> (Flow, Option<(u16, Value)>) {
    let mut exchange = kit.request(request);
    assert_eq!(exchange.send_headers(), Flow::Continue);
    if !exchange.request_body().is_empty() {
        assert_eq!(exchange.send_body(), Flow::Continue);
    }
    let flow = exchange.respond(response);
    (flow, exchange.local_reply().map(|r| (r.status, r.json())))
}

fn json_response(status: u16, body: &str) -> Response {
    Response::new(status)
        .header("content-type", "application/json")
        .body(body)
}

#[test]
fn responses_are_logged_when_they_break_the_contract() {
    let kit = kit(json!({"openapi": petstore(), "responses": "log"}));
    let (flow, reply) = respond(
        &kit,
        Request::get("/pets"),
        json_response(200, r#"[{"id": 1, "name": "Rex"}]"#),
    );
    assert_eq!((flow, reply), (Flow::Continue, None));
    let (flow, reply) = respond(
        &kit,
        Request::get("/pets"),
        json_response(200, r#"[{"id": "1", "name": "Rex"}, {"id": 2}]"#),
    );
    assert_eq!(
        (flow, reply),
        (Flow::Continue, None),
        "logged, not replaced"
    );
    let warnings: Vec<String> = kit
        .logs()
        .into_iter()
        .filter(|(level, _)| *level == LogLevel::Warn)
        .map(|(_, line)| line)
        .collect();
    assert_eq!(
        warnings,
        [
            "validation: the response of GET /pets (status 200) breaks the API description: \
          body /0/id: \"1\" is not of type \"integer\"; body /1: \"name\" is a required property \
          (request test-request)"
        ]
    );
    assert_eq!(kit.metric("validation_response_violations"), Some(1));
}

#[test]
fn enforced_responses_that_break_the_contract_become_502() {
    let kit = kit(json!({"openapi": petstore(), "responses": "enforce"}));
    let created = |response: Response| {
        respond(
            &kit,
            post_json("/pets", r#"{"name": "Rex"}"#).header("x-request-sig", "signature"),
            response,
        )
    };
    let (flow, reply) =
        created(json_response(201, r#"{"id": 9, "name": "Rex"}"#).header("location", "/pets/9"));
    assert_eq!((flow, reply), (Flow::Continue, None));

    let (_, reply) =
        created(json_response(201, r#"{"name": "Rex"}"#).header("location", "/pets/9"));
    let (status, body) = reply.expect("replaced");
    assert_eq!(status, 502);
    assert_eq!(
        body,
        json!({"error": {
            "status": 502,
            "code": "upstream_contract_violation",
            "message": "the upstream's response does not match the API description: 1 violation",
            "request_id": "test-request",
            "violations": [
                {"in": "body", "pointer": "", "message": "\"id\" is a required property"}
            ]
        }})
    );
    // A broken head is answered at once: the body is not waited for.
    let (flow, reply) =
        created(json_response(201, r#"{"name": "Rex"}"#).header("location", "/pets/x"));
    assert_eq!(flow, Flow::Pause);
    assert_eq!(
        reply.map(|(s, b)| (s, b["error"]["violations"].clone())),
        Some((
            502,
            json!([{"in": "header", "pointer": "/location", "message": "\"/pets/x\" does not match \"^/pets/[0-9]+$\""}])
        ))
    );

    let (_, reply) = created(json_response(409, r#"{"error": "exists"}"#));
    assert_eq!(reply, None, "4XX is described");
    let (_, reply) = created(Response::new(500));
    assert_eq!(
        reply.map(|(s, b)| (s, b["error"]["violations"].clone())),
        Some((
            502,
            json!([{"in": "status", "pointer": "", "message": "status 500 is not among the operation's responses (201, 4XX)"}])
        ))
    );
    let (_, reply) = created(
        Response::new(201)
            .header("content-type", "text/html")
            .header("location", "/pets/9")
            .body("<p>ok</p>"),
    );
    assert_eq!(
        reply.map(|(s, b)| (s, b["error"]["violations"].clone())),
        Some((
            502,
            json!([{"in": "header", "pointer": "/content-type", "message": "content type text/html is not one of application/json"}])
        ))
    );
}

/// The pet store's schemas in OpenAPI 3.0's dialect.
fn petstore_30() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "pets", "version": "1"},
        "paths": {
            "/pets": {
                "post": {
                    "requestBody": {"required": true, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/NewPet"}}}},
                    "responses": {"201": {"description": "created"}}
                }
            }
        },
        "components": {"schemas": {"NewPet": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "tag": {"type": "string", "nullable": true},
                "weight": {"type": "number", "minimum": 0, "exclusiveMinimum": true},
                "kind": {"type": "string", "enum": ["cat", "dog"], "nullable": true}
            }
        }}}
    })
}

#[test]
fn openapi_30_nullable_and_boolean_exclusive_minimum_are_understood() {
    let kit = kit(json!({"openapi": petstore_30()}));
    assert_eq!(
        outcome(
            &kit,
            post_json(
                "/pets",
                r#"{"name": "Rex", "tag": null, "weight": 0.5, "kind": null}"#
            )
        ),
        None
    );
    assert_eq!(
        violations(
            &kit,
            post_json("/pets", r#"{"name": null, "weight": 0, "kind": "cow"}"#)
        ),
        [
            v(
                "body",
                "/kind",
                "\"cow\" is not one of \"cat\", \"dog\" or null"
            ),
            v("body", "/name", "null is not of type \"string\""),
            v(
                "body",
                "/weight",
                "0 is less than or equal to the minimum of 0"
            ),
        ]
    );
}

#[test]
fn bad_descriptions_are_refused_where_they_are_wrong() {
    let refused = |document: Value| {
        TestKit::<Validation>::configure(&json!({"openapi": document}).to_string())
            .err()
            .expect("refused")
    };
    let error = refused(json!({"openapi": "3.1.0", "paths": {"/a/{id}": {"get": {}}}}));
    assert_eq!(error.pointer, "/openapi/paths/~1a~1{id}/get");
    assert_eq!(error.message, "path parameter `id` is not declared");
    let error = refused(json!({"openapi": "3.1.0", "paths": {"/a": {"get": {
        "parameters": [{"$ref": "#/components/parameters/missing"}]}}}}));
    assert_eq!(error.pointer, "/openapi/paths/~1a/get/parameters/0/$ref");
    let error = refused(json!({"openapi": "3.1.0", "paths": {"/a": {"get": {
        "responses": {"2XY": {"description": "x"}}}}}}));
    assert_eq!(error.pointer, "/openapi/paths/~1a/get/responses/2XY");
}

#[test]
fn only_the_upstreams_responses_are_checked() {
    let kit = kit(json!({"openapi": petstore(), "responses": "enforce"}));
    // This filter's own 400 is not an undescribed status of the operation.
    let mut refused = kit.request(Request::get("/pets?limit=0"));
    assert_eq!(refused.send_headers(), Flow::Pause);
    assert_eq!(refused.respond(Response::new(400)), Flow::Continue);
    assert_eq!(refused.local_reply().map(|r| r.status), Some(400));
    drop(refused);
    // Another filter's or the route's answer is not the upstream's either.
    kit.set_property(&["response", "code_details"], b"direct_response");
    let (flow, reply) = respond(&kit, Request::get("/pets"), Response::new(401));
    assert_eq!((flow, reply), (Flow::Continue, None));
    kit.set_property(&["response", "code_details"], b"via_upstream");
    let (_, reply) = respond(&kit, Request::get("/pets"), Response::new(401));
    assert_eq!(reply.map(|r| r.0), Some(502));
}
