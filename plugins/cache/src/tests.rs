use weir_sdk::testing::{Request, Response, TestKit};

use super::*;

fn kit(config: &str) -> TestKit<Cache> {
    let kit = TestKit::configure(config).expect("a valid config");
    kit.set_property(&["route_name"], b"shop");
    kit.set_property(&["cluster_name"], b"app");
    kit
}

fn get(path: &str) -> Request {
    Request::get(path).header(":authority", "example.com")
}

/// Runs a request that misses, answered upstream with `response`.
fn miss(kit: &TestKit<Cache>, request: Request, response: Response) {
    let mut exchange = kit.request(request);
    assert_eq!(
        exchange.send_headers(),
        Flow::Continue,
        "a miss goes upstream"
    );
    exchange.respond(response);
    assert_eq!(exchange.response_header("x-cache").as_deref(), Some("MISS"));
}

fn ok(cache_control: &str, body: &str) -> Response {
    Response::new(200)
        .header("cache-control", cache_control)
        .header("content-type", "text/plain")
        .body(body)
}

#[test]
fn a_stored_response_is_served_by_the_host_until_it_is_stale() {
    let kit = kit("{}");
    miss(&kit, get("/items?page=2"), ok("max-age=60", "page two"));
    kit.advance(Duration::from_secs(30));
    let mut hit = kit.request(get("/items?page=2"));
    assert_eq!(hit.send_headers(), Flow::Pause);
    let reply = hit.local_reply().expect("answered from the cache");
    assert_eq!((reply.status, &reply.body[..]), (200, &b"page two"[..]));
    assert_eq!(reply.header("x-cache"), Some("HIT"));
    assert_eq!(reply.header("age"), Some("30"));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(kit.metric("cache_misses"), Some(1));
    assert_eq!(kit.metric("cache_hits"), Some(1));
    let mut other = kit.request(get("/items?page=3"));
    assert_eq!(
        other.send_headers(),
        Flow::Continue,
        "another query, another key"
    );
    kit.advance(Duration::from_secs(31));
    let mut stale = kit.request(get("/items?page=2"));
    assert_eq!(
        stale.send_headers(),
        Flow::Continue,
        "stale, no validator: fetched"
    );
}

#[test]
fn no_store_private_and_cookies_are_never_stored() {
    let kit = kit("{}");
    for (path, response) in [
        ("/a", ok("no-store", "a")),
        ("/b", ok("private, max-age=60", "b")),
        ("/c", ok("max-age=60", "c").header("set-cookie", "s=1")),
    ] {
        miss(&kit, get(path), response);
        let mut again = kit.request(get(path));
        assert_eq!(again.send_headers(), Flow::Continue, "{path} was stored");
    }
}

#[test]
fn the_client_validators_get_a_304_from_the_cache() {
    let kit = kit("{}");
    miss(
        &kit,
        get("/doc"),
        ok("max-age=60", "doc").header("etag", "\"v7\""),
    );
    let mut conditional = kit.request(get("/doc").header("if-none-match", "W/\"v7\""));
    assert_eq!(conditional.send_headers(), Flow::Pause);
    let reply = conditional.local_reply().expect("a 304");
    assert_eq!(reply.status, 304);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("etag"), Some("\"v7\""));
    let mut changed = kit.request(get("/doc").header("if-none-match", "\"v6\""));
    assert_eq!(changed.send_headers(), Flow::Pause);
    assert_eq!(changed.local_reply().map(|r| r.status), Some(200));
}

#[test]
fn a_stale_entry_with_an_etag_is_revalidated_and_a_304_serves_it() {
    let kit = kit("{}");
    miss(
        &kit,
        get("/doc"),
        ok("max-age=1", "v1 body").header("etag", "\"v1\""),
    );
    kit.advance(Duration::from_secs(5));
    let mut revalidate = kit.request(get("/doc"));
    assert_eq!(revalidate.send_headers(), Flow::Continue);
    assert_eq!(
        revalidate.request_header("if-none-match").as_deref(),
        Some("\"v1\"")
    );
    revalidate.respond(Response::new(304).header("cache-control", "max-age=60"));
    let reply = revalidate.local_reply().expect("the stored body");
    assert_eq!((reply.status, &reply.body[..]), (200, &b"v1 body"[..]));
    assert_eq!(reply.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(reply.header("cache-control"), Some("max-age=60"));
    let mut hit = kit.request(get("/doc"));
    assert_eq!(hit.send_headers(), Flow::Pause, "fresh again for 60 s");
    assert_eq!(
        hit.local_reply()
            .and_then(|r| r.header("x-cache").map(str::to_owned))
            .as_deref(),
        Some("HIT")
    );
}

#[test]
fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let kit = kit(r#"{"stale_while_revalidate": "30s"}"#);
    miss(
        &kit,
        get("/feed").header("accept", "text/plain"),
        ok("max-age=10", "old"),
    );
    kit.advance(Duration::from_secs(15));
    for _ in 0..3 {
        let mut stale = kit.request(get("/feed"));
        assert_eq!(stale.send_headers(), Flow::Pause);
        let reply = stale.local_reply().expect("served stale");
        assert_eq!(
            (reply.header("x-cache"), &reply.body[..]),
            (Some("STALE"), &b"old"[..])
        );
    }
    let calls = kit.calls();
    assert_eq!(calls.len(), 1, "one refresh for three stale answers");
    assert_eq!(calls[0].upstream, "app");
    assert_eq!(calls[0].header(":path"), Some("/feed"));
    kit.answer_call(calls[0].token, ok("max-age=10", "new"));
    let mut fresh = kit.request(get("/feed"));
    assert_eq!(fresh.send_headers(), Flow::Pause);
    let reply = fresh.local_reply().expect("the refreshed entry");
    assert_eq!(
        (reply.header("x-cache"), &reply.body[..]),
        (Some("HIT"), &b"new"[..])
    );
}

#[test]
fn responses_that_vary_are_kept_per_variant() {
    let kit = kit("{}");
    let french = || get("/hello").header("accept-language", "fr");
    let english = || get("/hello").header("accept-language", "en");
    miss(
        &kit,
        french(),
        ok("max-age=60", "bonjour").header("vary", "Accept-Language"),
    );
    miss(
        &kit,
        english(),
        ok("max-age=60", "hello").header("vary", "Accept-Language"),
    );
    for (request, body) in [(french(), "bonjour"), (english(), "hello")] {
        let mut hit = kit.request(request);
        assert_eq!(hit.send_headers(), Flow::Pause);
        assert_eq!(
            hit.local_reply().map(|r| r.body),
            Some(body.as_bytes().to_vec())
        );
    }
}

#[test]
fn other_methods_and_no_cache_requests_bypass_the_cache() {
    let kit = kit("{}");
    miss(&kit, get("/x"), ok("max-age=60", "one"));
    let mut post = kit.request(Request::post("/x", "{}").header(":authority", "example.com"));
    assert_eq!(post.send_headers(), Flow::Continue);
    post.respond(ok("max-age=60", "posted"));
    assert_eq!(post.response_header("x-cache").as_deref(), Some("BYPASS"));
    let mut reload = kit.request(get("/x").header("cache-control", "no-cache"));
    assert_eq!(reload.send_headers(), Flow::Continue);
    reload.respond(ok("max-age=60", "two"));
    assert_eq!(reload.response_header("x-cache").as_deref(), Some("BYPASS"));
    let mut hit = kit.request(get("/x"));
    assert_eq!(hit.send_headers(), Flow::Pause);
    assert_eq!(
        hit.local_reply().map(|r| r.body),
        Some(b"two".to_vec()),
        "the reload refreshed it"
    );
}

#[test]
fn a_body_over_the_limit_is_passed_on_unstored() {
    let kit = kit(r#"{"max_entry_bytes": 8}"#);
    miss(&kit, get("/big"), ok("max-age=60", "nine bytes"));
    let mut again = kit.request(get("/big"));
    assert_eq!(again.send_headers(), Flow::Continue);
}

#[test]
fn bad_settings_are_refused_at_their_field() {
    for (config, pointer) in [
        (r#"{"ttl": "soon"}"#, "/ttl"),
        (r#"{"statuses": [200, 99]}"#, "/statuses/1"),
        (r#"{"max_entry_bytes": 0}"#, "/max_entry_bytes"),
        (r#"{"key": {"headers": [""]}}"#, "/key/headers/0"),
        (r#"{"redis": {"service": ""}}"#, "/redis/service"),
        (r#"{"refresh_timeout": "0s"}"#, "/refresh_timeout"),
    ] {
        let error = TestKit::<Cache>::configure(config).err().expect("refused");
        assert_eq!(error.pointer, pointer, "{config}");
    }
}

#[test]
fn the_age_a_response_arrived_with_shortens_its_freshness_and_shows_in_age() {
    let kit = kit("{}");
    miss(
        &kit,
        get("/aged"),
        ok("max-age=160", "aged").header("age", "100"),
    );
    kit.advance(Duration::from_secs(30));
    let mut hit = kit.request(get("/aged"));
    assert_eq!(hit.send_headers(), Flow::Pause);
    let reply = hit.local_reply().expect("fresh for 60 s in the cache");
    assert_eq!(reply.header("age"), Some("130"));
    kit.advance(Duration::from_secs(31));
    let mut stale = kit.request(get("/aged"));
    assert_eq!(
        stale.send_headers(),
        Flow::Continue,
        "160 s old: fetched again"
    );
}
