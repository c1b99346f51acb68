//! The test kit's own tests: a small filter that uses every part of the SDK
//! (typed config, headers, deny, upstream calls, Redis, shared data,
//! metrics, failures, background work), driven through the kit as a host
//! would drive it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use weir_sdk::metrics::Counter;
use weir_sdk::testing::{Request, Response, TestKit};
use weir_sdk::{
    CallRequest, ConfigError, Error, Filter, Flow, HostError, Http, Outcome, Plugin, RedisValue,
    background, shared,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    greeting: String,
    #[serde(default)]
    limit: u32,
}

struct Guard {
    greeting: String,
    limit: u32,
    denied: Counter,
    ticks: Counter,
    /// The message of the day, once the plugin's own call brought it.
    motd: RefCell<Option<String>>,
    /// Whether that call is in flight.
    fetching: Cell<bool>,
}

/// The event requests waiting for the message of the day park on.
const MOTD: &str = "motd";

impl Guard {
    /// Starts the plugin's call for the message of the day, unless one is in
    /// flight: one call serves every request waiting for it.
    fn fetch_motd(self: &Rc<Self>) -> Result<(), HostError> {
        if self.fetching.replace(true) {
            return Ok(());
        }
        let plugin = self.clone();
        background::call("config", CallRequest::get("/motd"), move |answer| {
            plugin.fetching.set(false);
            if let Ok(answer) = answer
                && answer.status == 200
            {
                *plugin.motd.borrow_mut() = Some(String::from_utf8_lossy(&answer.body).into());
            }
            background::wake(MOTD);
        })
    }
}

impl Plugin for Guard {
    const NAME: &'static str = "guard";
    type Config = Config;
    type Filter = GuardFilter;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if config.greeting.is_empty() {
            return Err(ConfigError::at("/greeting", "must not be empty"));
        }
        let counter = |name| Counter::define(name).map_err(|e| ConfigError::new(e.to_string()));
        background::set_tick_period(Duration::from_secs(1))
            .map_err(|e| ConfigError::new(e.to_string()))?;
        Ok(Self {
            greeting: config.greeting,
            limit: config.limit,
            denied: counter("guard_denied")?,
            ticks: counter("guard_ticks")?,
            motd: RefCell::new(None),
            fetching: Cell::new(false),
        })
    }

    fn on_tick(self: &Rc<Self>) {
        let _ = self.ticks.increment(1);
    }

    fn filter(self: &Rc<Self>) -> GuardFilter {
        GuardFilter {
            plugin: self.clone(),
            user: None,
        }
    }
}

struct GuardFilter {
    plugin: Rc<Guard>,
    user: Option<String>,
}

impl Filter for GuardFilter {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        match http.path_only()?.as_deref() {
            Some("/forbidden") => {
                self.plugin.denied.increment(1)?;
                http.deny(403, "forbidden", "this path is forbidden")
            }
            Some("/broken") => Err(Error::msg("the filter broke")),
            Some("/who") => {
                let token = http.request_header("authorization")?.unwrap_or_default();
                http.call(
                    "auth",
                    CallRequest::get("/check").header("x-token", &token),
                    |filter, http, answer| {
                        let answer = answer?;
                        if answer.status != 200 {
                            return http.deny(401, "unauthorized", "the token was refused");
                        }
                        let user = String::from_utf8_lossy(&answer.body).into_owned();
                        http.set_request_header("x-user", &user)?;
                        filter.user = Some(user);
                        Ok(Flow::Continue)
                    },
                )?;
                Ok(Flow::Pause)
            }
            Some("/count") => {
                let limit = i64::from(self.plugin.limit);
                http.redis("counters", &["INCR", "hits"], move |_, http, reply| {
                    let hits = reply?.as_int().unwrap_or_default();
                    if hits > limit {
                        return http.deny_with(
                            429,
                            "rate_limited",
                            "too many",
                            &[("retry-after", "1")],
                        );
                    }
                    Ok(Flow::Continue)
                })?;
                Ok(Flow::Pause)
            }
            Some("/motd") => self.motd(http),
            Some("/stamp") => {
                let before = http.property(&["guard", "stamp"])?;
                http.set_property(&["guard", "stamp"], b"stamped")?;
                http.set_request_header("x-stamped-before", &format!("{}", before.is_some()))?;
                Ok(Flow::Continue)
            }
            Some("/remember") => {
                let seen = shared::get("seen")?.map_or(0, |e| e.value.len());
                shared::set("seen", &vec![b'x'; seen + 1], None)?;
                Ok(Flow::Continue)
            }
            _ => Ok(Flow::Continue),
        }
    }

    fn on_response_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        http.set_response_header("x-hello", &self.plugin.greeting)?;
        if let Some(motd) = self.plugin.motd.borrow().as_deref() {
            http.set_response_header("x-motd", motd)?;
        }
        if let Some(user) = &self.user {
            http.set_response_header("x-served-user", user)?;
        }
        Ok(Flow::Continue)
    }
}

impl GuardFilter {
    /// Lets the request through once the message of the day is known; the
    /// first request to need it has the plugin fetch it, and every request
    /// waits for that one call.
    fn motd(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        if self.plugin.motd.borrow().is_some() {
            return Ok(Flow::Continue);
        }
        self.plugin.fetch_motd()?;
        http.wait(MOTD, |filter, http| {
            match filter.plugin.motd.borrow().as_deref() {
                Some(_) => Ok(Flow::Continue),
                None => http.deny(503, "unavailable", "no message of the day"),
            }
        });
        Ok(Flow::Pause)
    }
}

fn kit() -> TestKit<Guard> {
    TestKit::configure(r#"{"greeting": "hi", "limit": 2}"#).expect("a good configuration")
}

#[test]
fn a_passing_request_continues_and_its_response_gets_the_header() {
    let kit = kit();
    let mut exchange = kit.request(Request::get("/"));
    assert_eq!(exchange.send_headers(), Flow::Continue);
    assert_eq!(
        exchange.respond(Response::new(200).body("ok")),
        Flow::Continue
    );
    assert_eq!(exchange.response_header("x-hello").as_deref(), Some("hi"));
    assert_eq!(exchange.local_reply(), None);
}

#[test]
fn deny_answers_in_weirs_json_shape_with_the_request_id() {
    let kit = kit();
    let mut exchange = kit.request(Request::get("/forbidden?x=1").header("x-request-id", "r-42"));
    assert_eq!(exchange.send_headers(), Flow::Pause);
    let reply = exchange.local_reply().expect("a local reply");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        serde_json::json!({"error": {"status": 403, "code": "forbidden",
            "message": "this path is forbidden", "request_id": "r-42"}})
    );
    drop(exchange);
    assert_eq!(kit.metric("guard_denied"), Some(1));
}

#[test]
fn an_upstream_call_pauses_the_request_and_its_answer_resumes_it() {
    let kit = kit();
    let mut exchange = kit.request(Request::get("/who").header("authorization", "t0k"));
    assert_eq!(exchange.send_headers(), Flow::Pause);
    let calls = exchange.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].upstream, "auth");
    assert_eq!(calls[0].header(":path"), Some("/check"));
    assert_eq!(calls[0].header(":authority"), Some("auth"));
    assert_eq!(calls[0].header("x-token"), Some("t0k"));
    assert!(!exchange.resumed());
    exchange.answer_call(calls[0].token, Response::new(200).body("ada"));
    assert!(exchange.resumed());
    assert_eq!(exchange.request_header("x-user").as_deref(), Some("ada"));
    exchange.respond(Response::new(204));
    assert_eq!(
        exchange.response_header("x-served-user").as_deref(),
        Some("ada")
    );
}

#[test]
fn a_refused_or_failed_call_is_answered_and_never_resumed() {
    let kit = kit();
    let mut refused = kit.request(Request::get("/who"));
    refused.send_headers();
    let token = refused.calls()[0].token;
    refused.answer_call(token, Response::new(403));
    assert_eq!(refused.local_reply().map(|r| r.status), Some(401));
    assert!(!refused.resumed());

    let mut failed = kit.request(Request::get("/who"));
    failed.send_headers();
    let token = failed.calls()[1].token;
    failed.fail_call(token);
    let reply = failed.local_reply().expect("a 500");
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"]["code"], "plugin_error");
    assert!(!failed.resumed());
}

#[test]
fn redis_replies_reach_the_continuation() {
    let kit = kit();
    for (hits, limited) in [(1, false), (3, true)] {
        let mut exchange = kit.request(Request::get("/count"));
        assert_eq!(exchange.send_headers(), Flow::Pause);
        let call = exchange.redis_calls().pop().expect("a Redis call");
        assert_eq!(call.service, "counters");
        assert_eq!(call.query, b"*2\r\n$4\r\nINCR\r\n$4\r\nhits\r\n".to_vec());
        exchange.answer_redis(call.token, &RedisValue::Int(hits));
        assert_eq!(exchange.resumed(), !limited);
        let status = exchange.local_reply().map(|r| r.status);
        assert_eq!(status, limited.then_some(429));
    }
}

#[test]
fn a_failing_callback_is_logged_and_answered_with_a_json_500() {
    let kit = kit();
    let mut exchange = kit.request(Request::get("/broken").header("x-request-id", "r-7"));
    assert_eq!(exchange.send_headers(), Flow::Pause);
    let reply = exchange.local_reply().expect("a 500");
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"]["request_id"], "r-7");
    let logs = kit.logs();
    assert!(
        logs.iter()
            .any(|(_, line)| line == "guard: failed: the filter broke (request r-7)"),
        "{logs:?}"
    );
}

#[test]
fn a_host_error_fails_the_request_instead_of_the_vm() {
    let kit = kit();
    kit.fail_host_call("http_call", HostError::BadArgument);
    let mut exchange = kit.request(Request::get("/who"));
    assert_eq!(exchange.send_headers(), Flow::Pause);
    assert_eq!(exchange.local_reply().map(|r| r.status), Some(500));
    // The next request is served as usual.
    let mut next = kit.request(Request::get("/"));
    assert_eq!(next.send_headers(), Flow::Continue);
}

#[test]
fn shared_data_persists_across_requests() {
    let kit = kit();
    for _ in 0..3 {
        let mut exchange = kit.request(Request::get("/remember"));
        assert_eq!(exchange.send_headers(), Flow::Continue);
    }
    assert_eq!(kit.shared("seen"), Some(b"xxx".to_vec()));
}

#[test]
fn bad_configurations_are_refused_with_the_offending_field() {
    let error = TestKit::<Guard>::configure(r#"{"greeting": ""}"#)
        .err()
        .expect("refused");
    assert_eq!(error, ConfigError::at("/greeting", "must not be empty"));
    let error = TestKit::<Guard>::configure(r#"{"greeting": "x", "limit": -1}"#)
        .err()
        .expect("refused");
    assert_eq!(error.pointer, "/limit");
    assert!(
        error.message.starts_with("invalid value: integer `-1`"),
        "{}",
        error.message
    );
    let error = TestKit::<Guard>::configure(r#"{"greting": "x"}"#)
        .err()
        .expect("refused");
    assert!(
        error.message.starts_with("unknown field `greting`"),
        "{}",
        error.message
    );
}

#[test]
fn requests_parked_on_an_event_share_one_plugin_call_that_outlives_its_starter() {
    let kit = kit();
    let mut first = kit.request(Request::get("/motd"));
    assert_eq!(first.send_headers(), Flow::Pause);
    let mut second = kit.request(Request::get("/motd"));
    assert_eq!(second.send_headers(), Flow::Pause);
    let calls = kit.calls();
    assert_eq!(calls.len(), 1, "one call for both requests");
    assert_eq!(calls[0].upstream, "config");
    // The request whose callback started the call goes away first.
    drop(first);
    kit.answer_call(calls[0].token, Response::new(200).body("hello"));
    assert!(
        second.resumed(),
        "the plugin's answer woke the parked request"
    );
    second.respond(Response::new(200));
    assert_eq!(second.response_header("x-motd").as_deref(), Some("hello"));
    // Known now: the next request neither waits nor calls.
    let mut third = kit.request(Request::get("/motd"));
    assert_eq!(third.send_headers(), Flow::Continue);
    assert_eq!(kit.calls().len(), 1);
}

#[test]
fn a_failed_plugin_call_wakes_its_waiters_to_answer_for_themselves() {
    let kit = kit();
    let mut waiting = kit.request(Request::get("/motd"));
    assert_eq!(waiting.send_headers(), Flow::Pause);
    let token = kit.calls()[0].token;
    kit.fail_call(token);
    assert_eq!(waiting.local_reply().map(|r| r.status), Some(503));
    assert!(!waiting.resumed());
    // Nobody waits on the event now; waking it again is harmless.
    let mut again = kit.request(Request::get("/motd"));
    assert_eq!(again.send_headers(), Flow::Pause);
    assert_eq!(kit.calls().len(), 2, "a new call once the first one ended");
}

#[test]
fn the_plugin_ticks_at_the_period_it_asked_for() {
    let kit = kit();
    assert_eq!(kit.tick_period(), Some(Duration::from_secs(1)));
    kit.tick();
    kit.tick();
    assert_eq!(kit.metric("guard_ticks"), Some(2));
}

#[test]
fn a_property_a_filter_sets_belongs_to_its_request() {
    let kit = kit();
    let mut first = kit.request(Request::get("/stamp"));
    assert_eq!(first.send_headers(), Flow::Continue);
    assert_eq!(
        first.property(&["guard", "stamp"]),
        Some(b"stamped".to_vec())
    );
    let mut second = kit.request(Request::get("/stamp"));
    second.send_headers();
    assert_eq!(
        second.request_header("x-stamped-before").as_deref(),
        Some("false"),
        "the first request's property is not the second's"
    );
}
