//! The filter on the test kit: headers with templates, the target, JSON
//! body edits, conversions, the body limit and configuration errors.

use weir_sdk::consumers::Consumer;
use weir_sdk::testing::{Request, Response, TestKit};

use super::*;

fn kit(config: &str) -> TestKit<Transform> {
    TestKit::<Transform>::configure(config).expect("configured")
}

fn refused(config: &str) -> ConfigError {
    match TestKit::<Transform>::configure(config) {
        Ok(_) => panic!("accepted {config}"),
        Err(error) => error,
    }
}

fn consumer(name: &str) -> Consumer {
    Consumer {
        name: name.to_owned(),
        ..Consumer::default()
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("UTF-8")
}

#[test]
fn header_values_come_from_templates_of_the_arriving_request() {
    let kit = kit(r#"{"request": {"headers": {
            "remove": ["cookie"],
            "rename": [["x-old", "x-new"]],
            "set": [["x-consumer", "${consumer}"], ["x-who", "${jwt.sub} of ${jwt.org}"],
                    ["x-route", "${route}"], ["x-id", "${request_id}"],
                    ["x-tenant", "t-${header.x-tenant}"], ["x-page", "${query.page}"],
                    ["x-copy", "${header.x-old}"], ["x-missing", "${jwt.nope}"]],
            "add": [["x-tenant", "ignored"], ["x-fresh", "1"]],
            "append": [["x-list", "b"]]
        }}}"#);
    kit.set_property(&["route_name"], b"orders");
    kit.set_property(
        &["weir", "jwt_claims"],
        br#"{"sub": "u-1", "org": 42, "nope": null}"#,
    );
    let mut exchange = kit.request(
        Request::get("/orders?page=3")
            .header("x-request-id", "r-7")
            .header("x-tenant", "acme")
            .header("x-old", "kept")
            .header("x-list", "a")
            .header("cookie", "s=1")
            .consumer(consumer("alice")),
    );
    assert_eq!(exchange.send_headers(), Flow::Continue);
    let header = |name: &str| exchange.request_header(name);
    assert_eq!(header("cookie"), None);
    assert_eq!(header("x-old"), None);
    assert_eq!(header("x-new").as_deref(), Some("kept"));
    assert_eq!(header("x-consumer").as_deref(), Some("alice"));
    assert_eq!(header("x-who").as_deref(), Some("u-1 of 42"));
    assert_eq!(header("x-route").as_deref(), Some("orders"));
    assert_eq!(header("x-id").as_deref(), Some("r-7"));
    assert_eq!(header("x-tenant").as_deref(), Some("t-acme"));
    assert_eq!(header("x-page").as_deref(), Some("3"));
    assert_eq!(
        header("x-copy").as_deref(),
        Some("kept"),
        "templates read the request as it arrived, before the rename"
    );
    assert_eq!(header("x-missing"), None, "a missing claim skips the edit");
    assert_eq!(header("x-fresh").as_deref(), Some("1"));
    assert_eq!(
        header("x-list").as_deref(),
        Some("a"),
        "append keeps the first"
    );
}

#[test]
fn response_headers_are_edited_on_every_answer() {
    let kit = kit(
        r#"{"response": {"headers": {"remove": ["server"], "set": [["x-request", "${request_id}"]],
            "rename": [["x-internal", "x-public"]]}}}"#,
    );
    let mut exchange = kit.request(Request::get("/").header("x-request-id", "r-9"));
    exchange.send_headers();
    exchange.respond(
        Response::new(200)
            .header("server", "app/1.0")
            .header("x-internal", "v"),
    );
    assert_eq!(exchange.response_header("server"), None);
    assert_eq!(
        exchange.response_header("x-request").as_deref(),
        Some("r-9")
    );
    assert_eq!(exchange.response_header("x-public").as_deref(), Some("v"));
    assert_eq!(exchange.response_header("x-internal"), None);
}

#[test]
fn the_path_is_rewritten_and_query_parameters_edited() {
    let kit = kit(
        r#"{"request": {"path": {"regex": "^/v1/(?P<rest>.*)$", "replace": "/api/v2/$rest"},
            "query": {"remove": ["api_key"], "set": [["page", "1"]], "append": [["by", "${consumer}"]]}}}"#,
    );
    let mut exchange =
        kit.request(Request::get("/v1/items?api_key=s&q=a%20b").consumer(consumer("bob")));
    exchange.send_headers();
    assert_eq!(
        exchange.request_header(":path").as_deref(),
        Some("/api/v2/items?q=a%20b&page=1&by=bob")
    );
    let mut other = kit.request(Request::get("/health"));
    other.send_headers();
    assert_eq!(
        other.request_header(":path").as_deref(),
        Some("/health?page=1"),
        "an append of a missing consumer is skipped"
    );
}

const JSON_EDITS: &str = r#"{"request": {"json": [
    {"remove": "/password"},
    {"rename": "/user_name", "to": "username"},
    {"set": "/meta/by", "value": "${consumer}"},
    {"set": "/meta/version", "value": 2},
    {"set": "/meta/deleted", "value": null},
    {"move": "/legacy/id", "to": "/id"},
    {"wrap": "data"}
]}}"#;

#[test]
fn json_request_bodies_are_edited_by_pointer() {
    let kit = kit(JSON_EDITS);
    let body = r#"{"user_name":"ada","password":"p","legacy":{"id":7}}"#;
    let mut exchange = kit.request(
        Request::post("/users", body)
            .header("content-type", "application/json")
            .header("content-length", &body.len().to_string())
            .consumer(consumer("alice")),
    );
    assert_eq!(exchange.send_headers(), Flow::Continue);
    assert_eq!(
        exchange.request_header("content-length"),
        None,
        "the length changes"
    );
    assert_eq!(exchange.send_body(), Flow::Continue);
    assert_eq!(
        text(exchange.request_body()),
        r#"{"data":{"username":"ada","legacy":{},"meta":{"by":"alice","version":2,"deleted":null},"id":7}}"#
    );
}

#[test]
fn bodies_of_other_content_types_pass_untouched() {
    let kit = kit(JSON_EDITS);
    let mut exchange = kit.request(
        Request::post("/users", "password=p")
            .header("content-type", "text/plain")
            .header("content-length", "10"),
    );
    exchange.send_headers();
    assert_eq!(
        exchange.request_header("content-length").as_deref(),
        Some("10")
    );
    assert_eq!(exchange.send_body(), Flow::Continue);
    assert_eq!(text(exchange.request_body()), "password=p");
}

#[test]
fn a_body_that_is_not_its_content_type_is_refused_not_passed_half_done() {
    let kit = kit(JSON_EDITS);
    let mut exchange = kit.request(
        Request::post("/users", "{not json")
            .header("content-type", "application/json")
            .header("x-request-id", "r-1"),
    );
    exchange.send_headers();
    assert_eq!(exchange.send_body(), Flow::Pause);
    let reply = exchange.local_reply().expect("refused");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "transform_invalid_body");
    assert_eq!(reply.json()["error"]["request_id"], "r-1");
}

#[test]
fn the_filters_own_answers_get_response_headers_but_keep_their_body() {
    let kit = kit(r#"{"request": {"json": [{"remove": "/a"}]},
            "response": {"headers": {"set": [["x-env", "prod"]]}, "json": [{"wrap": "data"}]}}"#);
    let mut exchange =
        kit.request(Request::post("/", "[").header("content-type", "application/json"));
    exchange.send_headers();
    assert_eq!(exchange.send_body(), Flow::Pause);
    let reply = exchange.local_reply().expect("refused");
    let body = String::from_utf8(reply.body.clone()).expect("UTF-8");
    exchange.respond(
        Response::new(400)
            .header("content-type", "application/json")
            .body(body.clone()),
    );
    assert_eq!(exchange.response_header("x-env").as_deref(), Some("prod"));
    assert_eq!(text(exchange.response_body()), body, "not wrapped");
}

#[test]
fn bodies_over_the_limit_get_the_configured_answer() {
    let kit = kit(
        r#"{"max_body_bytes": 16, "request": {"json": [{"remove": "/a"}],
            "too_large": {"status": 422, "code": "too_big"}},
            "response": {"json": [{"remove": "/a"}]}}"#,
    );
    let big = r#"{"a": 1, "b": "more than sixteen bytes"}"#;
    let mut exchange =
        kit.request(Request::post("/", big).header("content-type", "application/json"));
    exchange.send_headers();
    assert_eq!(exchange.send_body(), Flow::Pause);
    let reply = exchange.local_reply().expect("refused");
    assert_eq!(reply.status, 422);
    assert_eq!(reply.json()["error"]["code"], "too_big");
    assert_eq!(
        reply.json()["error"]["message"],
        "the request body is larger than the 16 bytes the transform rewrites"
    );

    let mut response = kit.request(Request::get("/"));
    response.send_headers();
    let flow = response.respond(
        Response::new(200)
            .header("content-type", "application/json")
            .body(big),
    );
    assert_eq!(flow, Flow::Pause);
    let reply = response.local_reply().expect("refused");
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"]["code"], "transform_body_too_large");
}

#[test]
fn forms_become_json_with_their_content_type() {
    let kit = kit(
        r#"{"request": {"convert": "form_to_json", "json": [{"rename": "/tag", "to": "tags"}]}}"#,
    );
    let mut exchange = kit.request(
        Request::post("/", "name=Ada+L&tag=a&tag=b")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", "22"),
    );
    exchange.send_headers();
    assert_eq!(
        exchange.request_header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(exchange.request_header("content-length"), None);
    exchange.send_body();
    assert_eq!(
        text(exchange.request_body()),
        r#"{"name":"Ada L","tags":["a","b"]}"#
    );
}

#[test]
fn json_becomes_a_form() {
    let kit = kit(r#"{"request": {"convert": "json_to_form"}}"#);
    let mut exchange = kit.request(
        Request::post("/", r#"{"q":"a&b","n":2,"ids":[1,2]}"#)
            .header("content-type", "application/json"),
    );
    exchange.send_headers();
    assert_eq!(
        exchange.request_header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    exchange.send_body();
    assert_eq!(text(exchange.request_body()), "q=a%26b&n=2&ids=1&ids=2");
}

#[test]
fn xml_responses_become_json_and_json_becomes_xml() {
    let kit = kit(
        r#"{"response": {"convert": "xml_to_json", "json": [{"unwrap": "user"}]},
            "request": {"convert": "json_to_xml"}}"#,
    );
    let mut exchange = kit.request(
        Request::post("/", r#"{"order":{"@id":"1","item":["a","b"]}}"#)
            .header("content-type", "application/json"),
    );
    exchange.send_headers();
    assert_eq!(
        exchange.request_header("content-type").as_deref(),
        Some("application/xml")
    );
    exchange.send_body();
    assert_eq!(
        text(exchange.request_body()),
        r#"<?xml version="1.0" encoding="UTF-8"?><order id="1"><item>a</item><item>b</item></order>"#
    );
    let flow = exchange.respond(
        Response::new(200)
            .header("content-type", "text/xml; charset=utf-8")
            .header("content-length", "60")
            .body(r#"<user id="5"><name>Ada</name><role>a</role><role>b</role></user>"#),
    );
    assert_eq!(flow, Flow::Continue);
    assert_eq!(
        exchange.response_header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(exchange.response_header("content-length"), None);
    assert_eq!(
        text(exchange.response_body()),
        r#"{"@id":"5","name":"Ada","role":["a","b"]}"#
    );
}

#[test]
fn only_upstream_responses_have_their_bodies_rewritten() {
    let kit = kit(r#"{"response": {"json": [{"wrap": "data"}]}}"#);
    kit.set_property(&["response", "code_details"], b"upstream_unreachable");
    let mut exchange = kit.request(Request::get("/"));
    exchange.send_headers();
    let error = r#"{"error":{"status":502}}"#;
    exchange.respond(
        Response::new(502)
            .header("content-type", "application/json")
            .header("content-length", "24")
            .body(error),
    );
    assert_eq!(text(exchange.response_body()), error);
    assert_eq!(
        exchange.response_header("content-length").as_deref(),
        Some("24")
    );
}

#[test]
fn configuration_errors_name_their_place() {
    let cases = [
        (
            r#"{"request": {"headers": {"set": [["x-a", "${user}"]]}}}"#,
            "/request/headers/set/0/1",
        ),
        (
            r#"{"request": {"headers": {"remove": ["bad name"]}}}"#,
            "/request/headers/remove/0",
        ),
        (
            r#"{"request": {"path": {"regex": "^/(a", "replace": "/"}}}"#,
            "/request/path/regex",
        ),
        (
            r#"{"request": {"path": {"regex": "^/(a)", "replace": "/$2"}}}"#,
            "/request/path/replace",
        ),
        (
            r#"{"request": {"query": {"add": [["q", "${jwt.}"]]}}}"#,
            "/request/query/add/0/1",
        ),
        (
            r#"{"request": {"json": [{"remove": "/a"}, {"remove": "/b", "wrap": "x"}]}}"#,
            "/request/json/1",
        ),
        (
            r#"{"response": {"json": [{"set": "/a"}]}}"#,
            "/response/json/0/value",
        ),
        (
            r#"{"response": {"json": [{"rename": "/a", "to": "/b"}]}}"#,
            "/response/json/0/to",
        ),
        (
            r#"{"response": {"json": [{"keep": ["/a", "b"]}]}}"#,
            "/response/json/0/keep/1",
        ),
        (
            r#"{"response": {"path": {"regex": "a", "replace": "b"}}}"#,
            "/response/path",
        ),
        (
            r#"{"request": {"convert": "yaml_to_json"}}"#,
            "/request/convert",
        ),
        (
            r#"{"request": {"too_large": {"status": 200, "code": "x"}}}"#,
            "/request/too_large/status",
        ),
        (r#"{"max_body_bytes": 0}"#, "/max_body_bytes"),
    ];
    for (config, pointer) in cases {
        assert_eq!(refused(config).pointer, pointer, "{config}");
    }
    assert!(
        refused(r#"{"request": {"headers": {"set": [["x-a", "${user}"]]}}}"#)
            .message
            .contains("unknown placeholder `${user}`")
    );
}
