//! The filter on the test kit: local limits, keys, the Redis exchange
//! (exact and leased, the script missing, Redis failing) and the fields.

use std::time::Duration;

use weir_sdk::consumers::{Consumer, Limit as ConsumerLimit};
use weir_sdk::testing::{Exchange, Request, Response, TestKit};
use weir_sdk::{Flow, HostError, RedisValue};

use super::*;

/// Sends `request` and says whether it was admitted (and its response's fields).
fn admitted(kit: &TestKit<RateLimit>, request: Request) -> bool {
    let mut exchange = kit.request(request);
    exchange.send_headers() == Flow::Continue
}

fn ints(values: &[i64]) -> RedisValue {
    RedisValue::Array(values.iter().map(|v| RedisValue::Int(*v)).collect())
}

/// The command of the last Redis call, as its arguments.
fn last_command(exchange: &Exchange<'_, RateLimit>) -> Vec<String> {
    let call = exchange.redis_calls().pop().expect("a Redis call");
    let RedisValue::Array(items) = weir_sdk::redis::decode(&call.query).expect("a RESP command")
    else {
        panic!("not an array");
    };
    items
        .iter()
        .map(|i| i.as_str().expect("bulk").to_owned())
        .collect()
}

#[test]
fn the_shorthand_admits_the_burst_then_answers_429_with_retry_after() {
    let kit =
        TestKit::<RateLimit>::configure(r#"{"rate": 0.01, "burst": 3, "key_header": "x-api-key"}"#)
            .expect("configured");
    let key = |k: &str| Request::get("/").header("x-api-key", k);
    let mut first = kit.request(key("k1"));
    assert_eq!(first.send_headers(), Flow::Continue);
    first.respond(Response::new(200));
    assert_eq!(
        first.response_header("ratelimit-policy").as_deref(),
        Some(r#""default";q=3;w=300"#)
    );
    assert_eq!(
        first.response_header("ratelimit").as_deref(),
        Some(r#""default";r=2;t=100"#)
    );
    drop(first);
    assert!(admitted(&kit, key("k1")));
    assert!(admitted(&kit, key("k1")));
    let mut limited = kit.request(key("k1"));
    assert_eq!(limited.send_headers(), Flow::Pause);
    let reply = limited.local_reply().expect("a 429");
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("100"));
    assert_eq!(reply.header("ratelimit"), Some(r#""default";r=0;t=300"#));
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": {"status": 429, "code": "rate_limited",
            "message": "too many requests", "request_id": "test-request"}})
    );
    drop(limited);
    assert!(admitted(&kit, key("k2")), "another key, another bucket");
    kit.advance(Duration::from_secs(100));
    assert!(admitted(&kit, key("k1")), "a token back after 100 s");
    assert!(!admitted(&kit, key("k1")));
    assert_eq!(kit.metric("rate_limit_limited"), Some(2));
    assert_eq!(kit.metric("rate_limit_allowed"), Some(5));
}

#[test]
fn every_limit_of_a_key_holds_and_the_sliding_window_counts_too() {
    // At the start of a second the sliding window still counts the whole
    // previous second; GCRA has its tokens back.
    for (algorithm, expected) in [("gcra", [3, 2, 0]), ("sliding_window", [3, 0, 2])] {
        let kit = TestKit::<RateLimit>::configure(&format!(
            r#"{{"algorithm": "{algorithm}", "limits": [{{"requests": 3, "per": "1s"}},
                {{"requests": 5, "per": "1h", "name": "hourly"}}]}}"#
        ))
        .expect("configured");
        let mut counts = Vec::new();
        for _ in 0..3 {
            counts.push(
                (0..10)
                    .filter(|_| admitted(&kit, Request::get("/")))
                    .count(),
            );
            kit.advance(Duration::from_secs(1));
        }
        assert_eq!(counts, expected, "{algorithm}: 3 a second, 5 an hour");
        let mut refused = kit.request(Request::get("/"));
        refused.send_headers();
        let reply = refused.local_reply().expect("refused");
        let retry: u64 = reply
            .header("retry-after")
            .expect("retry-after")
            .parse()
            .expect("seconds");
        assert!(
            retry > 600,
            "{algorithm}: wait for the hourly limit, not {retry}"
        );
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some(r#""3/1s";q=3;w=1, "hourly";q=5;w=3600"#)
        );
    }
}

#[test]
fn keys_read_the_client_ip_through_trusted_proxies_and_claims() {
    let kit = TestKit::<RateLimit>::configure(
        r#"{"limits": [{"requests": 1, "per": "1h"}], "key": ["ip", "claim:sub"],
            "trusted_proxies": ["10.0.0.0/8"]}"#,
    )
    .expect("configured");
    kit.set_property(&["source", "address"], b"10.0.0.1:5000");
    kit.set_property(&key::CLAIMS, br#"{"sub": "ada"}"#);
    let from = |xff: &str| Request::get("/").header("x-forwarded-for", xff);
    assert!(admitted(&kit, from("203.0.113.5")));
    assert!(!admitted(&kit, from("203.0.113.5")));
    assert!(
        !admitted(&kit, from("198.51.100.1, 203.0.113.5")),
        "what the client wrote itself is not believed"
    );
    assert!(admitted(&kit, from("203.0.113.6")), "another client");
    kit.set_property(&key::CLAIMS, br#"{"sub": "bob"}"#);
    assert!(admitted(&kit, from("203.0.113.5")), "another subject");
    // An untrusted peer's header is ignored: the peer is the client.
    kit.set_property(&["source", "address"], b"192.0.2.9:5000");
    assert!(admitted(&kit, from("203.0.113.5")));
    assert!(!admitted(&kit, from("203.0.113.77")));
}

#[test]
fn a_consumers_own_limits_replace_the_configured_ones() {
    let kit = TestKit::<RateLimit>::configure(
        r#"{"limits": [{"requests": 2, "per": "1h"}], "key": "consumer"}"#,
    )
    .expect("configured");
    let gold = Consumer {
        name: "gold".into(),
        limits: vec![ConsumerLimit {
            requests: 4,
            per_ms: 60_000,
        }],
        ..Consumer::default()
    };
    let plain = Consumer {
        name: "plain".into(),
        ..Consumer::default()
    };
    let count = |consumer: &Consumer| {
        (0..10)
            .filter(|_| admitted(&kit, Request::get("/").consumer(consumer.clone())))
            .count()
    };
    assert_eq!(count(&gold), 4);
    assert_eq!(count(&plain), 2);
    let mut exchange = kit.request(Request::get("/").consumer(gold));
    exchange.send_headers();
    assert_eq!(
        exchange
            .local_reply()
            .expect("refused")
            .header("ratelimit-policy"),
        Some(r#""4/1m";q=4;w=60"#)
    );
}

const EXACT: &str = r#"{"limits": [{"requests": 10, "per": "1s"}], "key": "header:x-api-key",
    "redis": {"service": "cache", "on_error": "fail_closed"}}"#;

#[test]
fn exact_mode_asks_the_script_once_per_request() {
    let kit = TestKit::<RateLimit>::configure(EXACT).expect("configured");
    let mut exchange = kit.request(Request::get("/").header("x-api-key", "k"));
    assert_eq!(exchange.send_headers(), Flow::Pause);
    let call = exchange.redis_calls().pop().expect("a call");
    assert_eq!(call.service, "cache");
    let args = last_command(&exchange);
    assert_eq!(args[0], "EVAL", "the first decision brings the script");
    assert_eq!(args[1], distributed::SCRIPT);
    assert_eq!(&args[2..4], ["1", "weir:rl:{header=k}:g100000000x10"]);
    assert_eq!(&args[4..7], ["1", "1", "0"]);
    exchange.answer_redis(call.token, &ints(&[1, 0, 100_000, 9, 100_000]));
    assert!(exchange.resumed());
    exchange.respond(Response::new(200));
    assert_eq!(
        exchange.response_header("ratelimit").as_deref(),
        Some(r#""10/1s";r=9;t=1"#)
    );
    drop(exchange);

    let mut refused = kit.request(Request::get("/").header("x-api-key", "k"));
    refused.send_headers();
    let args = last_command(&refused);
    assert_eq!(args[0], "EVALSHA", "then it is named by its SHA-1");
    assert_eq!(args[1], distributed::script_sha());
    let token = refused.redis_calls().pop().expect("a call").token;
    refused.answer_redis(token, &ints(&[0, 2_500_000, 0, 0, 1_000_000]));
    let reply = refused.local_reply().expect("a 429");
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("3"));
    assert_eq!(kit.metric("rate_limit_redis_calls"), Some(2));
}

#[test]
fn a_script_redis_lost_is_sent_again_in_full() {
    let kit = TestKit::<RateLimit>::configure(EXACT).expect("configured");
    let mut first = kit.request(Request::get("/"));
    first.send_headers();
    let token = first.redis_calls().pop().expect("a call").token;
    first.answer_redis(token, &ints(&[1, 0, 0, 9, 100_000]));
    drop(first);
    let mut exchange = kit.request(Request::get("/"));
    exchange.send_headers();
    assert_eq!(last_command(&exchange)[0], "EVALSHA");
    let token = exchange.redis_calls().pop().expect("a call").token;
    exchange.answer_redis(
        token,
        &RedisValue::Error("NOSCRIPT No matching script. Please use EVAL.".into()),
    );
    assert!(!exchange.resumed(), "still waiting");
    let args = last_command(&exchange);
    assert_eq!(args[0], "EVAL");
    assert_eq!(args[1], distributed::SCRIPT);
    let token = exchange.redis_calls().pop().expect("a call").token;
    exchange.answer_redis(token, &ints(&[1, 0, 0, 8, 100_000]));
    assert!(exchange.resumed());
    assert_eq!(kit.metric("rate_limit_redis_calls"), Some(3));
}

#[test]
fn redis_failing_fails_open_or_closed_as_configured() {
    let closed = TestKit::<RateLimit>::configure(EXACT).expect("configured");
    let mut exchange = closed.request(Request::get("/"));
    exchange.send_headers();
    let token = exchange.redis_calls().pop().expect("a call").token;
    exchange.fail_redis(token);
    let reply = exchange.local_reply().expect("refused");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["error"]["code"], "rate_limit_unavailable");
    assert_eq!(reply.header("retry-after"), Some("1"));
    drop(exchange);
    // The host refusing the call (no room for callouts) is decided at once.
    closed.fail_host_call("redis_call", HostError::BadArgument);
    let mut exchange = closed.request(Request::get("/"));
    assert_eq!(exchange.send_headers(), Flow::Pause);
    assert_eq!(exchange.local_reply().expect("refused").status, 503);
    drop(exchange);
    assert_eq!(closed.metric("rate_limit_redis_failures"), Some(2));
    let warnings = closed
        .logs()
        .iter()
        .filter(|(_, line)| line.contains("Redis cannot decide"))
        .count();
    assert_eq!(warnings, 1, "one warning per 10 s, every failure counted");

    let open = TestKit::<RateLimit>::configure(&EXACT.replace("fail_closed", "fail_open"))
        .expect("configured");
    let mut exchange = open.request(Request::get("/"));
    exchange.send_headers();
    let token = exchange.redis_calls().pop().expect("a call").token;
    exchange.answer_redis(token, &RedisValue::Error("OOM command not allowed".into()));
    assert!(exchange.resumed() && exchange.local_reply().is_none());
}

const LEASED: &str = r#"{"limits": [{"requests": 100, "per": "1s"}], "key": "header:x-api-key",
    "redis": {"service": "cache", "mode": "leased", "lease": 5}}"#;

#[test]
fn leased_mode_serves_a_batch_from_the_node_and_remembers_a_refusal() {
    let kit = TestKit::<RateLimit>::configure(LEASED).expect("configured");
    let mut first = kit.request(Request::get("/").header("x-api-key", "k"));
    assert_eq!(first.send_headers(), Flow::Pause);
    let args = last_command(&first);
    assert_eq!(
        &args[4..7],
        ["5", "10", "1"],
        "a lease of 5, waiting for 2 leases"
    );
    let token = first.redis_calls().pop().expect("a call").token;
    // Five permits, 50 ms to use them, 90 left in Redis.
    first.answer_redis(token, &ints(&[5, 0, 50_000, 90, 50_000]));
    assert!(first.resumed());
    first.respond(Response::new(200));
    assert_eq!(
        first.response_header("ratelimit").as_deref(),
        Some(r#""100/1s";r=94;t=1"#),
        "Redis's 90 and the 4 held here"
    );
    drop(first);
    assert!(admitted(&kit, Request::get("/").header("x-api-key", "k")));
    // Half the lease used: this request claims the refill and asks Redis for
    // a lease more, which it refuses; the pool gave it a permit, it passes.
    let mut claimant = kit.request(Request::get("/").header("x-api-key", "k"));
    assert_eq!(claimant.send_headers(), Flow::Pause);
    assert_eq!(&last_command(&claimant)[4..7], ["5", "10", "1"]);
    let token = claimant.redis_calls().pop().expect("a call").token;
    claimant.answer_redis(token, &ints(&[0, 3_000_000, 0, 0, 400_000]));
    assert!(claimant.resumed() && claimant.local_reply().is_none());
    drop(claimant);
    for _ in 0..2 {
        assert!(admitted(&kit, Request::get("/").header("x-api-key", "k")));
    }
    let calls = kit.request(Request::get("/")).redis_calls().len();
    assert_eq!(calls, 2, "the rest from the pool, no round trip");

    // The pool is empty and Redis refused: refused here.
    let mut again = kit.request(Request::get("/").header("x-api-key", "k"));
    assert_eq!(again.send_headers(), Flow::Pause);
    let reply = again.local_reply().expect("refused here");
    assert_eq!(
        (reply.status, reply.header("retry-after")),
        (429, Some("3"))
    );
    assert_eq!(again.redis_calls().len(), 2, "refused without asking Redis");
    drop(again);
    // The refusal is repeated until the permits are due back, then Redis
    // is asked again.
    kit.advance(Duration::from_millis(2_999));
    assert!(!admitted(&kit, Request::get("/").header("x-api-key", "k")));
    assert_eq!(kit.request(Request::get("/")).redis_calls().len(), 2);
    kit.advance(Duration::from_millis(1));
    let mut later = kit.request(Request::get("/").header("x-api-key", "k"));
    assert_eq!(later.send_headers(), Flow::Pause);
    assert_eq!(later.redis_calls().len(), 3);
}

/// Leases of 10 of 100 permits a second (GCRA: 10 ms a permit).
const LEASES_OF_TEN: &str = r#"{"limits": [{"requests": 100, "per": "1s"}], "key": "header:x-api-key",
    "redis": {"service": "cache", "mode": "leased", "lease": 10, "on_error": "fail_closed"}}"#;

/// Starts leased mode's pool: the first request takes a lease of 10 good
/// for 100 ms (9 left in the pool, 90 in Redis).
fn first_lease(kit: &TestKit<RateLimit>) {
    let mut first = kit.request(Request::get("/").header("x-api-key", "k"));
    assert_eq!(first.send_headers(), Flow::Pause);
    assert_eq!(&last_command(&first)[4..7], ["10", "20", "1"]);
    let token = first.redis_calls().pop().expect("a call").token;
    first.answer_redis(token, &ints(&[10, 0, 100_000, 90, 100_000]));
    assert!(first.resumed() && first.local_reply().is_none());
}

/// How many Redis commands the kit's requests have sent so far.
fn redis_calls(kit: &TestKit<RateLimit>) -> usize {
    kit.request(Request::get("/")).redis_calls().len()
}

#[test]
fn half_a_lease_used_sends_one_request_to_refill_while_the_pool_serves_the_rest() {
    let kit = TestKit::<RateLimit>::configure(LEASES_OF_TEN).expect("configured");
    let key = || Request::get("/").header("x-api-key", "k");
    first_lease(&kit);
    for _ in 0..3 {
        assert!(admitted(&kit, key()));
    }
    assert_eq!(redis_calls(&kit), 1, "6 left: no refill yet");
    // The fifth permit of ten: this request claims the refill, asking Redis
    // for a whole lease more (the pool then holds at most one and a half).
    let mut claimant = kit.request(key());
    assert_eq!(claimant.send_headers(), Flow::Pause);
    assert_eq!(&last_command(&claimant)[4..7], ["10", "20", "1"]);
    let refill = claimant.redis_calls().pop().expect("a call").token;
    for _ in 0..5 {
        assert!(admitted(&kit, key()), "the pool serves the rest meanwhile");
    }
    assert_eq!(redis_calls(&kit), 2, "one refill claimed, not one each");

    // Empty, with the refill in flight: a request asks for its own permit.
    let mut alone = kit.request(key());
    assert_eq!(alone.send_headers(), Flow::Pause);
    assert_eq!(&last_command(&alone)[4..7], ["1", "20", "1"]);
    let own = alone.redis_calls().pop().expect("a call").token;

    claimant.answer_redis(refill, &ints(&[10, 0, 100_000, 80, 100_000]));
    assert!(claimant.resumed() && claimant.local_reply().is_none());
    claimant.respond(Response::new(200));
    assert_eq!(
        claimant.response_header("ratelimit").as_deref(),
        Some(r#""100/1s";r=90;t=1"#),
        "Redis's 80 and the 10 the refill put in the pool"
    );
    alone.answer_redis(own, &ints(&[1, 0, 10_000, 79, 100_000]));
    assert!(alone.resumed() && alone.local_reply().is_none());
    drop((claimant, alone));

    // The claim went with the reply: at half a lease again (the fifth
    // permit of the new ten), the next refill is claimed.
    for _ in 0..4 {
        assert!(admitted(&kit, key()));
    }
    assert_eq!(redis_calls(&kit), 3, "6 left: no refill yet");
    let mut next = kit.request(key());
    assert_eq!(next.send_headers(), Flow::Pause);
    assert_eq!(&last_command(&next)[4..7], ["10", "20", "1"]);
    assert_eq!(next.redis_calls().len(), 4);
}

#[test]
fn half_the_lease_time_gone_sends_the_next_request_to_refill() {
    let kit = TestKit::<RateLimit>::configure(LEASES_OF_TEN).expect("configured");
    let key = || Request::get("/").header("x-api-key", "k");
    first_lease(&kit);
    assert!(admitted(&kit, key()));
    kit.advance(Duration::from_millis(49));
    assert!(admitted(&kit, key()));
    assert_eq!(redis_calls(&kit), 1, "7 left, 51 ms to go: no refill yet");
    kit.advance(Duration::from_millis(1));
    let mut claimant = kit.request(key());
    assert_eq!(claimant.send_headers(), Flow::Pause, "half of 100 ms gone");
    assert_eq!(&last_command(&claimant)[4..7], ["4", "20", "1"]);
    let token = claimant.redis_calls().pop().expect("a call").token;
    assert!(admitted(&kit, key()), "the pool serves the rest meanwhile");
    assert_eq!(redis_calls(&kit), 2);
    // Four more, 10 ms each: the pool's nine last 90 ms from now.
    claimant.answer_redis(token, &ints(&[4, 0, 40_000, 86, 40_000]));
    assert!(claimant.resumed() && claimant.local_reply().is_none());
    drop(claimant);
    kit.advance(Duration::from_millis(44));
    assert!(admitted(&kit, key()));
    assert_eq!(redis_calls(&kit), 2, "45 ms of 90 not gone yet");
    // The first lease's end: the pool still serves, and half its time is
    // gone, so this request claims the next refill.
    kit.advance(Duration::from_millis(6));
    let mut next = kit.request(key());
    assert_eq!(next.send_headers(), Flow::Pause);
    assert_eq!(&last_command(&next)[4..7], ["3", "20", "1"]);
    assert!(admitted(&kit, key()));
    assert_eq!(redis_calls(&kit), 3);
}

#[test]
fn a_refill_claim_goes_when_redis_fails_and_lapses_after_a_second() {
    let kit = TestKit::<RateLimit>::configure(LEASES_OF_TEN).expect("configured");
    let key = || Request::get("/").header("x-api-key", "k");
    first_lease(&kit);
    for _ in 0..3 {
        assert!(admitted(&kit, key()));
    }
    let mut claimant = kit.request(key());
    assert_eq!(claimant.send_headers(), Flow::Pause);
    let token = claimant.redis_calls().pop().expect("a call").token;
    claimant.fail_redis(token);
    assert!(
        claimant.resumed() && claimant.local_reply().is_none(),
        "it holds a permit: no fail_closed 503"
    );
    drop(claimant);
    assert_eq!(kit.metric("rate_limit_redis_failures"), Some(1));
    // The claim went: the next request claims again, and never answers
    // (its VM gone).
    let mut vanished = kit.request(key());
    assert_eq!(vanished.send_headers(), Flow::Pause);
    assert_eq!(redis_calls(&kit), 3);
    let _abandoned = vanished;
    // The pool lapses; the claim holds for a second: requests ask Redis
    // for their own permit, then one claims a lease.
    kit.advance(Duration::from_millis(999));
    let mut alone = kit.request(key());
    assert_eq!(alone.send_headers(), Flow::Pause);
    assert_eq!(&last_command(&alone)[4..7], ["1", "20", "1"]);
    kit.advance(Duration::from_millis(1));
    let mut claims = kit.request(key());
    assert_eq!(claims.send_headers(), Flow::Pause);
    assert_eq!(&last_command(&claims)[4..7], ["10", "20", "1"]);
}

#[test]
fn leased_permits_lapse_unused() {
    let kit = TestKit::<RateLimit>::configure(LEASED).expect("configured");
    let mut first = kit.request(Request::get("/"));
    first.send_headers();
    let token = first.redis_calls().pop().expect("a call").token;
    first.answer_redis(token, &ints(&[5, 0, 50_000, 90, 50_000]));
    drop(first);
    kit.advance(Duration::from_millis(50));
    let mut late = kit.request(Request::get("/"));
    assert_eq!(
        late.send_headers(),
        Flow::Pause,
        "the lease is over: ask Redis"
    );
    assert_eq!(late.redis_calls().len(), 2);
}

#[test]
fn the_fields_can_be_left_out() {
    let kit = TestKit::<RateLimit>::configure(
        r#"{"limits": [{"requests": 1, "per": "1m"}], "headers": false}"#,
    )
    .expect("configured");
    let mut ok = kit.request(Request::get("/"));
    ok.send_headers();
    ok.respond(Response::new(200));
    assert_eq!(ok.response_header("ratelimit"), None);
    drop(ok);
    let mut refused = kit.request(Request::get("/"));
    refused.send_headers();
    let reply = refused.local_reply().expect("429");
    assert_eq!(reply.header("retry-after"), Some("60"));
    assert_eq!(reply.header("ratelimit-policy"), None);
}

#[test]
fn configurations_are_refused_at_their_field() {
    let error = TestKit::<RateLimit>::configure(r#"{"rate": 0, "burst": 5}"#)
        .err()
        .expect("refused");
    assert_eq!(
        (error.pointer.as_str(), error.message.as_str()),
        ("/rate", "must be a number above 0")
    );
}
