//! The filter on the SDK's test kit: the calls it starts, what it makes of
//! their answers, and when it answers.

use std::time::Duration;

use serde_json::json;
use weir_sdk::testing::{Call, Request, Response, TestKit};
use weir_sdk::{Flow, HostError};

use super::*;

const CONFIG: &str = r#"{
    "path_pattern": "/users/(?P<id>[0-9]+)",
    "calls": [
        {"name": "user", "upstream": "users", "path": "/users/${path.id}",
         "headers": ["authorization"], "timeout": "300ms",
         "select": ["name", "/address/city"]},
        {"name": "orders", "upstream": "orders",
         "path": "/orders?user=${path.id}&q=${query.q}&tenant=${header.x-tenant}",
         "merge": {"under": "recent_orders"}},
        {"name": "profile", "upstream": "profiles", "path": "/profiles${path}",
         "method": "post", "merge": "deep"}
    ]}"#;

fn kit(config: &str) -> TestKit<Aggregator> {
    TestKit::configure(config).expect("configured")
}

fn json_answer(body: serde_json::Value) -> Response {
    Response::new(200)
        .header("content-type", "application/json")
        .body(body.to_string())
}

/// The call made to `upstream`.
fn call_to(calls: &[Call], upstream: &str) -> Call {
    calls
        .iter()
        .find(|c| c.upstream == upstream)
        .cloned()
        .unwrap_or_else(|| panic!("no call to {upstream}: {calls:?}"))
}

#[test]
fn every_call_starts_at_once_with_its_rendered_path_headers_and_timeout() {
    let kit = kit(CONFIG);
    let mut exchange = kit.request(
        Request::get("/users/42?q=red%20shoes&x=1")
            .header("authorization", "Bearer t")
            .header("x-tenant", "acme&co")
            .header("cookie", "secret=1"),
    );
    assert_eq!(exchange.send_headers(), Flow::Pause);
    let calls = exchange.calls();
    assert_eq!(calls.len(), 3, "all calls start with the request");

    let user = call_to(&calls, "users");
    assert_eq!(user.header(":method"), Some("GET"));
    assert_eq!(user.header(":path"), Some("/users/42"));
    assert_eq!(user.header("authorization"), Some("Bearer t"));
    assert_eq!(user.header("x-request-id"), Some("test-request"));
    assert_eq!(user.header("cookie"), None, "only the listed headers go");
    assert_eq!(user.timeout_ms, 300);

    let orders = call_to(&calls, "orders");
    assert_eq!(
        orders.header(":path"),
        Some("/orders?user=42&q=red%20shoes&tenant=acme%26co")
    );
    assert_eq!(orders.header("authorization"), None);
    assert_eq!(orders.timeout_ms, 5000, "the default timeout");

    let profile = call_to(&calls, "profiles");
    assert_eq!(profile.header(":method"), Some("POST"));
    assert_eq!(profile.header(":path"), Some("/profiles/users/42"));
    assert!(exchange.local_reply().is_none(), "nothing answered yet");
}

#[test]
fn answers_merge_in_call_order_whatever_order_they_arrive_in() {
    let kit = kit(CONFIG);
    let mut exchange = kit.request(Request::get("/users/42"));
    exchange.send_headers();
    let calls = exchange.calls();
    exchange.answer_call(
        call_to(&calls, "profiles").token,
        json_answer(json!({"name": "from profile", "bio": "hi", "address": {"zip": "N1"}})),
    );
    exchange.answer_call(
        call_to(&calls, "orders").token,
        json_answer(json!([{"id": 7}])),
    );
    assert!(exchange.local_reply().is_none(), "one call is still out");
    exchange.answer_call(
        call_to(&calls, "users").token,
        json_answer(json!({"name": "Ada", "password": "x",
            "address": {"city": "London", "street": "1 Lane"}})),
    );
    let reply = exchange
        .local_reply()
        .expect("answered after the last call");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header(PARTIAL_HEADER), None);
    assert_eq!(
        reply.json(),
        json!({
            "user": {"name": "Ada", "address": {"city": "London"}},
            "recent_orders": [{"id": 7}],
            "name": "from profile", "bio": "hi", "address": {"zip": "N1"}
        })
    );
}

#[test]
fn under_fail_the_first_failure_answers_502_at_once() {
    let kit = kit(CONFIG);
    let mut exchange = kit.request(Request::get("/users/42"));
    exchange.send_headers();
    let calls = exchange.calls();
    exchange.answer_call(
        call_to(&calls, "orders").token,
        Response::new(503).body("busy"),
    );
    let reply = exchange.local_reply().expect("answered at the failure");
    assert_eq!(reply.status, 502);
    assert_eq!(
        reply.json(),
        json!({"error": {"status": 502, "code": "upstream_failed",
            "message": "call `orders` failed: the upstream answered 503",
            "request_id": "test-request"}})
    );
    // The others' answers, arriving later, change nothing.
    exchange.answer_call(call_to(&calls, "users").token, json_answer(json!({})));
    exchange.fail_call(call_to(&calls, "profiles").token);
    assert_eq!(exchange.local_reply(), Some(reply));
    assert_eq!(kit.metric("aggregate_failed_answers"), Some(1));
    assert_eq!(
        kit.metric("aggregate_call_failures"),
        Some(1),
        "failures after the answer are not counted"
    );
    assert_eq!(kit.metric("aggregate_partial_answers"), Some(0));
}

const PARTIAL: &str = r#"{
    "on_partial_failure": "partial", "status": 203,
    "content_type": "application/vnd.api+json",
    "calls": [
        {"name": "ok", "upstream": "a", "path": "/a"},
        {"name": "status", "upstream": "b", "path": "/b"},
        {"name": "text", "upstream": "c", "path": "/c"},
        {"name": "slow", "upstream": "d", "path": "/d", "timeout": "200ms"},
        {"name": "reset", "upstream": "e", "path": "/e", "timeout": "200ms"},
        {"name": "list", "upstream": "f", "path": "/f", "merge": "deep"}
    ]}"#;

#[test]
fn under_partial_what_arrived_is_answered_with_each_failure_named() {
    let kit = kit(PARTIAL);
    let mut exchange = kit.request(Request::get("/dashboard"));
    exchange.send_headers();
    let calls = exchange.calls();
    let token = |upstream: &str| call_to(&calls, upstream).token;
    exchange.answer_call(token("a"), json_answer(json!({"n": 1})));
    exchange.answer_call(token("b"), Response::new(404).body(r#"{"error": "gone"}"#));
    exchange.answer_call(token("c"), Response::new(200).body("<html>"));
    exchange.fail_call(token("e"));
    exchange.answer_call(token("f"), json_answer(json!([1, 2])));
    assert!(exchange.local_reply().is_none(), "`slow` is still out");
    kit.advance(Duration::from_millis(200));
    exchange.fail_call(token("d"));

    let reply = exchange
        .local_reply()
        .expect("answered after the last call");
    assert_eq!(reply.status, 203);
    assert_eq!(
        reply.header("content-type"),
        Some("application/vnd.api+json")
    );
    assert_eq!(reply.header(PARTIAL_HEADER), Some("true"));
    assert_eq!(
        reply.json(),
        json!({
            "ok": {"n": 1},
            "_errors": {
                "status": {"error": "bad_status", "status": 404,
                    "message": "the upstream answered 404"},
                "text": {"error": "not_json", "status": 200,
                    "message": "the upstream's answer is not JSON"},
                "slow": {"error": "timeout", "message": "no answer within 200ms"},
                "reset": {"error": "unavailable",
                    "message": "no answer (connection refused or reset)"},
                "list": {"error": "not_object", "status": 200,
                    "message": "the upstream's answer is not a JSON object, which `merge: deep` needs"}
            }
        })
    );
    assert_eq!(kit.metric("aggregate_call_failures"), Some(5));
    assert_eq!(kit.metric("aggregate_partial_answers"), Some(1));
    assert_eq!(kit.metric("aggregate_failed_answers"), Some(0));
}

#[test]
fn under_partial_a_required_call_still_fails_the_answer() {
    let kit = kit(r#"{"on_partial_failure": "partial", "calls": [
            {"name": "optional", "upstream": "a", "path": "/a"},
            {"name": "core", "upstream": "b", "path": "/b", "required": true}]}"#);
    let mut exchange = kit.request(Request::get("/"));
    exchange.send_headers();
    let calls = exchange.calls();
    exchange.fail_call(call_to(&calls, "a").token);
    assert!(
        exchange.local_reply().is_none(),
        "an optional failure waits"
    );
    exchange.answer_call(call_to(&calls, "b").token, Response::new(500));
    let reply = exchange.local_reply().expect("answered");
    assert_eq!(reply.status, 502);
    assert_eq!(
        reply.json()["error"]["message"],
        "call `core` failed: the upstream answered 500"
    );
}

#[test]
fn a_call_the_host_refuses_to_start_is_a_failure() {
    let kit = kit(r#"{"on_partial_failure": "partial",
            "calls": [{"name": "a", "upstream": "nowhere", "path": "/a"}]}"#);
    kit.fail_host_call("http_call", HostError::BadArgument);
    let mut exchange = kit.request(Request::get("/"));
    assert_eq!(exchange.send_headers(), Flow::Pause);
    let reply = exchange.local_reply().expect("answered at once");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["_errors"]["a"]["error"], "not_started");
}

#[test]
fn a_path_outside_path_pattern_is_not_found() {
    let kit = kit(CONFIG);
    let mut exchange = kit.request(Request::get("/users/ada"));
    assert_eq!(exchange.send_headers(), Flow::Pause);
    let reply = exchange.local_reply().expect("refused");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "no_route");
    assert!(exchange.calls().is_empty(), "no call made");
}

#[test]
fn bad_configurations_are_refused_at_their_field() {
    let refused = |config: &str| {
        TestKit::<Aggregator>::configure(config)
            .err()
            .expect("refused")
    };
    let call = |extra: &str| {
        format!(r#"{{"calls": [{{"name": "a", "upstream": "u", "path": "/a"{extra}}}]}}"#)
    };
    assert_eq!(refused(r#"{"calls": []}"#).pointer, "/calls");
    assert_eq!(
        refused(&call(r#", "timout": "1s""#)).pointer,
        "/calls/0/timout"
    );
    let unknown = refused(r#"{"calls": [{"name": "a", "upstream": "u", "path": "/a/${user}"}]}"#);
    assert_eq!(unknown.pointer, "/calls/0/path");
    assert!(unknown.message.starts_with("unknown template `${user}`"));
    assert_eq!(
        refused(r#"{"calls": [{"name": "a", "upstream": "u", "path": "/a/${path.id}"}]}"#).pointer,
        "/calls/0/path"
    );
    assert_eq!(
        refused(r#"{"calls": [{"name": "a", "upstream": "u", "path": "a"}]}"#).pointer,
        "/calls/0/path"
    );
    assert_eq!(
        refused(
            r#"{"calls": [{"name": "a", "upstream": "u", "path": "/a"},
            {"name": "a", "upstream": "v", "path": "/b"}]}"#
        )
        .pointer,
        "/calls/1/name"
    );
    assert_eq!(
        refused(&call(r#", "timeout": "2""#)).pointer,
        "/calls/0/timeout"
    );
    assert_eq!(
        refused(&call(r#", "timeout": "2m""#)).pointer,
        "/calls/0/timeout"
    );
    assert_eq!(
        refused(&call(r#", "method": "GE T""#)).pointer,
        "/calls/0/method"
    );
    assert_eq!(
        refused(&call(r#", "headers": ["ok", "not ok"]"#)).pointer,
        "/calls/0/headers/1"
    );
    assert_eq!(
        refused(&call(r#", "select": ["/a~2"]"#)).pointer,
        "/calls/0/select/0"
    );
    assert_eq!(
        refused(&call(r#", "merge": {"under": "_errors"}"#)).pointer,
        "/calls/0/merge/under"
    );
    assert_eq!(
        refused(&call(r#", "merge": "shallow""#)).pointer,
        "/calls/0/merge"
    );
    assert_eq!(
        refused(r#"{"calls": [{"name": "a", "upstream": "", "path": "/a"}]}"#).pointer,
        "/calls/0/upstream"
    );
    let pattern = refused(&format!(
        r#"{{"path_pattern": "/users/(?P<id>[0-9]+", {}"#,
        &call("")[1..]
    ));
    assert_eq!(pattern.pointer, "/path_pattern");
    assert_eq!(
        pattern.message,
        "not a regex: unclosed group, at character 8"
    );
    assert_eq!(
        refused(&format!(r#"{{"status": 700, {}"#, &call("")[1..])).pointer,
        "/status"
    );
    assert_eq!(
        refused(&format!(
            r#"{{"on_partial_failure": "ignore", {}"#,
            &call("")[1..]
        ))
        .pointer,
        "/on_partial_failure"
    );
}
