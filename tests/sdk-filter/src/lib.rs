//! A filter on weir-sdk for the suite (`tests/suite/sdk.rs`): each path
//! exercises one service over the real ABI.
//!
//! - `/call`: asks upstream group `auth` (`GET /check` with the client's
//!   `x-token`) and forwards with `x-user` set to its answer, or denies 401.
//! - `/count`: `INCR`s the Redis key `hits:<x-key>` and forwards with
//!   `x-count`, or denies 429 past `limit`.
//! - `/remember`: appends to a shared-data entry with compare-and-swap and
//!   forwards with `x-seen`; counts requests in the `sdk_requests` counter.
//! - `/fail`: fails with a host error (a call to an upstream that does not
//!   exist), which the SDK answers with a JSON 500.

use std::rc::Rc;

use serde::Deserialize;
use weir_sdk::metrics::Counter;
use weir_sdk::{CallRequest, ConfigError, Filter, Flow, HostError, Http, Outcome, Plugin, shared};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    redis: String,
    limit: i64,
}

struct Services {
    redis: String,
    limit: i64,
    requests: Counter,
}

impl Plugin for Services {
    const NAME: &'static str = "sdk-services";
    type Config = Config;
    type Filter = Request;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        if config.limit < 1 {
            return Err(ConfigError::at("/limit", "must be at least 1"));
        }
        Ok(Self {
            redis: config.redis,
            limit: config.limit,
            requests: Counter::define("sdk_requests")
                .map_err(|e| ConfigError::new(format!("cannot define a counter: {e}")))?,
        })
    }

    fn filter(self: &Rc<Self>) -> Request {
        Request(self.clone())
    }
}

struct Request(Rc<Services>);

/// Appends one byte to the shared entry `seen`, retrying a lost
/// compare-and-swap; the entry's new length.
fn remember() -> Result<usize, HostError> {
    loop {
        let (mut value, cas) = match shared::get("seen")? {
            Some(entry) => (entry.value, Some(entry.cas)),
            None => (Vec::new(), None),
        };
        value.push(b'x');
        match shared::set("seen", &value, cas) {
            Ok(()) => return Ok(value.len()),
            Err(HostError::CasMismatch) => continue,
            Err(error) => return Err(error),
        }
    }
}

impl Filter for Request {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        self.0.requests.increment(1)?;
        match http.path_only()?.as_deref() {
            Some("/call") => {
                let token = http.request_header("x-token")?.unwrap_or_default();
                let check = CallRequest::get("/check").header("x-token", &token);
                http.call("auth", check, |_, http, answer| {
                    let answer = answer?;
                    if answer.status != 200 {
                        return http.deny(401, "unauthorized", "the token was refused");
                    }
                    http.set_request_header("x-user", &String::from_utf8_lossy(&answer.body))?;
                    Ok(Flow::Continue)
                })?;
                Ok(Flow::Pause)
            }
            Some("/count") => {
                let key = format!("hits:{}", http.request_header("x-key")?.unwrap_or_default());
                let limit = self.0.limit;
                http.redis(
                    &self.0.redis,
                    &["INCR", key.as_str()],
                    move |_, http, reply| {
                        let count = reply?
                            .as_int()
                            .ok_or_else(|| weir_sdk::Error::msg("INCR answered no integer"))?;
                        if count > limit {
                            return http.deny(429, "rate_limited", "too many requests");
                        }
                        http.set_request_header("x-count", &count.to_string())?;
                        Ok(Flow::Continue)
                    },
                )?;
                Ok(Flow::Pause)
            }
            Some("/remember") => {
                let seen = remember()?;
                http.set_request_header("x-seen", &seen.to_string())?;
                Ok(Flow::Continue)
            }
            Some("/fail") => {
                http.call("no-such-upstream", CallRequest::get("/"), |_, _, _| {
                    Ok(Flow::Continue)
                })?;
                Ok(Flow::Pause)
            }
            _ => Ok(Flow::Continue),
        }
    }
}

weir_sdk::export!(Services);
