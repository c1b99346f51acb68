//! `rate-limit`: requests counted per key (client IP, consumer, header, JWT
//! claim, route, or a combination) against one or more limits (GCRA or a
//! sliding window), on this node or in Redis across nodes (`exact`: one
//! script per decision; `leased`: batches of permits served from the node).
//! A request past a limit gets a JSON 429 with `Retry-After`; responses carry
//! the IETF `RateLimit-Policy` and `RateLimit` fields. When Redis cannot
//! decide within its timeout, the request fails open or closed as configured.

mod algorithm;
mod config;
mod distributed;
mod headers;
mod key;
mod lease;
mod limit;
mod local;

use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use weir_sdk::metrics::Counter;
use weir_sdk::{ConfigError, Error, Filter, Flow, Http, Outcome, Plugin, RedisValue};

use crate::algorithm::{Ask, Decision, Status};
use crate::config::{Config, Mode, OnError, Settings};
use crate::distributed::{Carry, ReplyError};
use crate::lease::{Claim, Served};
use crate::limit::Limit;

/// How often a Redis failure is logged at most (each is counted).
const WARN_EVERY_NS: u64 = 10_000_000_000;

/// A refused node waits for this many leases' worth of permits, so that the
/// half it then takes is a whole lease.
const LEASE_WAIT_FACTOR: u64 = 2;

/// The limits one request is held to (the configured ones, or its consumer's).
struct Applied {
    limits: Rc<[Limit]>,
    /// The limits' storage tags, joined.
    tags: Rc<str>,
    /// The `RateLimit-Policy` value.
    policy: Rc<str>,
}

impl Applied {
    fn new(limits: Rc<[Limit]>, settings: &Settings) -> Self {
        let tags = limits
            .iter()
            .map(|l| l.tag(settings.algorithm))
            .collect::<Vec<_>>()
            .join(",");
        let policy = headers::policy(&limits);
        Self {
            limits,
            tags: tags.into(),
            policy: policy.into(),
        }
    }
}

impl Clone for Applied {
    fn clone(&self) -> Self {
        Self {
            limits: self.limits.clone(),
            tags: self.tags.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// The plugin's counters (`weir_plugin_rate_limit_…`).
struct Metrics {
    allowed: Option<Counter>,
    limited: Option<Counter>,
    redis_calls: Option<Counter>,
    redis_failures: Option<Counter>,
}

fn bump(counter: Option<Counter>) {
    if let Some(counter) = counter {
        let _ = counter.increment(1);
    }
}

struct RateLimit {
    settings: Settings,
    configured: Applied,
    metrics: Metrics,
    /// When a Redis failure was last logged (Unix ns).
    last_warning: Cell<u64>,
    /// Whether Redis has answered this VM's script by its SHA-1: until it
    /// has, the script goes in full (`EVAL`, which also loads it), so that
    /// no decision takes a second round trip.
    script_loaded: Cell<bool>,
}

impl Plugin for RateLimit {
    const NAME: &'static str = "rate-limit";
    type Config = Config;
    type Filter = Check;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let settings = config.validate()?;
        let configured = Applied::new(settings.limits.clone().into(), &settings);
        let metrics = Metrics {
            allowed: Counter::define("rate_limit_allowed").ok(),
            limited: Counter::define("rate_limit_limited").ok(),
            redis_calls: Counter::define("rate_limit_redis_calls").ok(),
            redis_failures: Counter::define("rate_limit_redis_failures").ok(),
        };
        Ok(Self {
            settings,
            configured,
            metrics,
            last_warning: Cell::new(0),
            script_loaded: Cell::new(false),
        })
    }

    fn filter(self: &Rc<Self>) -> Check {
        Check {
            plugin: self.clone(),
            applied: None,
            status: None,
        }
    }
}

/// One request's check.
struct Check {
    plugin: Rc<RateLimit>,
    applied: Option<Applied>,
    /// The limits' status after an admission, for the response's fields.
    status: Option<Vec<Status>>,
}

/// A Redis decision in flight.
struct Pending {
    key: Rc<str>,
    /// Leased mode: where the grant goes.
    lease: Option<Leased>,
    ask: Ask,
    carry: Carry,
}

/// What a leased-mode decision in flight is for.
#[derive(Clone)]
struct Leased {
    /// The pool the grant goes to.
    pool: String,
    /// This request's claim on the pool's refill.
    claim: Option<Claim>,
    /// The permit the pool already served this request (a refill): the
    /// whole grant goes to the pool, and the request passes whatever Redis
    /// answers.
    served: Option<Decision>,
}

impl Leased {
    /// What to ask Redis when pool `pool` answered a request with `served`:
    /// the permits wanted, and what they are for; `Err` with the decision
    /// when the pool answered the request on its own.
    fn of(pool: String, served: Served) -> Result<(u64, Self), Decision> {
        let (want, claim, served) = match served {
            Served::Here(decision) => return Err(decision),
            Served::Refilling(decision, refill) => {
                (refill.want, Some(refill.claim), Some(decision))
            }
            Served::AskRedis(Some(refill)) => (refill.want, Some(refill.claim), None),
            Served::AskRedis(None) => (1, None, None),
        };
        Ok((
            want,
            Self {
                pool,
                claim,
                served,
            },
        ))
    }
}

fn now_ns<F: Filter>(http: &Http<'_, F>) -> Result<u64, Error> {
    Ok(http
        .now()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64))
}

impl Check {
    fn applied(&self) -> Applied {
        self.applied
            .clone()
            .unwrap_or_else(|| self.plugin.configured.clone())
    }

    /// Sends `pending`'s decision to Redis; the reply resumes the request.
    fn ask_redis(&mut self, http: &mut Http<'_, Self>, pending: Pending) -> Outcome {
        let plugin = self.plugin.clone();
        let Some(redis) = &plugin.settings.redis else {
            return Err(Error::msg("no Redis backend is configured"));
        };
        let applied = self.applied();
        let args = distributed::command(
            pending.carry,
            &redis.prefix,
            &pending.key,
            plugin.settings.algorithm,
            &applied.limits,
            pending.ask,
            pending.lease.is_some(),
        );
        bump(plugin.metrics.redis_calls);
        let lease = pending.lease.clone();
        match http.redis(&redis.service, &args, move |check, http, reply| {
            check.on_reply(http, pending, reply)
        }) {
            Ok(()) => Ok(Flow::Pause),
            Err(error) => self.failed(http, lease, &format!("cannot call Redis: {error}")),
        }
    }

    fn on_reply(
        &mut self,
        http: &mut Http<'_, Self>,
        pending: Pending,
        reply: Result<RedisValue, Error>,
    ) -> Outcome {
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => return self.failed(http, pending.lease, &error.to_string()),
        };
        let count = self.applied().limits.len();
        match distributed::read_reply(&reply, count) {
            Ok(grant) => {
                self.plugin.script_loaded.set(true);
                let decision = match &pending.lease {
                    None => grant.decision,
                    Some(lease) => self.keep(http, lease, &grant)?,
                };
                self.verdict(http, decision)
            }
            // Redis lost the script (restarted, flushed): send it again.
            Err(ReplyError::NoScript) if pending.carry == Carry::Sha => {
                self.plugin.script_loaded.set(false);
                self.ask_redis(
                    http,
                    Pending {
                        carry: Carry::Source,
                        ..pending
                    },
                )
            }
            Err(ReplyError::NoScript) => {
                self.failed(http, pending.lease, "Redis does not keep the script")
            }
            Err(ReplyError::Failed(why)) => self.failed(http, pending.lease, &why),
        }
    }

    /// Puts `grant` into `lease`'s pool; the decision for this request.
    fn keep(
        &self,
        http: &mut Http<'_, Self>,
        lease: &Leased,
        grant: &distributed::Grant,
    ) -> Result<Decision, Error> {
        let now = now_ns(http)?;
        let taken = if lease.served.is_some() { 0 } else { 1 };
        let algorithm = self.plugin.settings.algorithm;
        let stored = lease::store(&lease.pool, algorithm, grant, taken, lease.claim, now);
        let stored = stored.unwrap_or_else(|error| {
            http.warn(&format!(
                "cannot keep a lease, its spare permits are dropped: {error}"
            ));
            grant.decision.clone()
        });
        Ok(match &lease.served {
            Some(served) => Decision {
                status: stored.status,
                ..served.clone()
            },
            None => stored,
        })
    }

    /// Redis could not decide: a refill's claim is let go and its request
    /// passes with the permit the pool gave it; any other request fails
    /// open or closed.
    fn failed(&mut self, http: &mut Http<'_, Self>, lease: Option<Leased>, why: &str) -> Outcome {
        let Some(lease) = lease else {
            return self.redis_failed(http, why);
        };
        if let Some(claim) = lease.claim {
            let limits = self.applied().limits.len();
            if let Err(error) = lease::release(&lease.pool, limits, claim) {
                http.warn(&format!("cannot let a refill claim go: {error}"));
            }
        }
        match lease.served {
            Some(served) => {
                self.note_failure(http, "the node serves the permits it holds", why);
                self.verdict(http, served)
            }
            None => self.redis_failed(http, why),
        }
    }

    /// Admits the request or answers 429.
    fn verdict(&mut self, http: &mut Http<'_, Self>, decision: Decision) -> Outcome {
        if decision.granted > 0 {
            bump(self.plugin.metrics.allowed);
            self.status = Some(decision.status);
            return Ok(Flow::Continue);
        }
        bump(self.plugin.metrics.limited);
        let retry = headers::retry_after(decision.retry_ns);
        let mut fields = vec![("retry-after", retry)];
        if self.plugin.settings.headers {
            let applied = self.applied();
            fields.push((headers::POLICY, applied.policy.to_string()));
            fields.push((
                headers::RATELIMIT,
                headers::current(&applied.limits, &decision.status),
            ));
        }
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http.deny_with(429, "rate_limited", "too many requests", &fields)
    }

    /// Counts a Redis failure and logs it (at most every [`WARN_EVERY_NS`]
    /// per VM), saying what `happens` meanwhile.
    fn note_failure(&self, http: &mut Http<'_, Self>, happens: &str, why: &str) {
        let plugin = &self.plugin;
        bump(plugin.metrics.redis_failures);
        let now = now_ns(http).unwrap_or(0);
        let last = plugin.last_warning.get();
        if last == 0 || now.saturating_sub(last) >= WARN_EVERY_NS {
            plugin.last_warning.set(now.max(1));
            http.warn(&format!("Redis cannot decide, {happens}: {why}"));
        }
    }

    /// Redis could not decide: fail open or closed.
    fn redis_failed(&mut self, http: &mut Http<'_, Self>, why: &str) -> Outcome {
        let on_error = self
            .plugin
            .settings
            .redis
            .as_ref()
            .map_or(OnError::FailOpen, |r| r.on_error);
        let happens = match on_error {
            OnError::FailOpen => "requests are admitted (fail_open)",
            OnError::FailClosed => "requests are refused (fail_closed)",
        };
        self.note_failure(http, happens, why);
        match on_error {
            OnError::FailOpen => Ok(Flow::Continue),
            OnError::FailClosed => http.deny_with(
                503,
                "rate_limit_unavailable",
                "the rate limit cannot be checked",
                &[("retry-after", "1")],
            ),
        }
    }
}

impl Filter for Check {
    fn on_request_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        let plugin = self.plugin.clone();
        let settings = &plugin.settings;
        let consumer = if settings.key.has_consumer() {
            http.consumer()?
        } else {
            None
        };
        // A consumer's own limits replace the configured ones for its key.
        if let Some(own) = consumer.as_ref().filter(|c| !c.limits.is_empty()) {
            let limits: Rc<[Limit]> = own.limits.iter().map(Limit::of_consumer).collect();
            self.applied = Some(Applied::new(limits, settings));
        }
        let applied = self.applied();
        let key = settings
            .key
            .of(http, consumer.as_ref().map(|c| c.name.as_str()))?;
        let now = now_ns(http)?;
        let Some(redis) = &settings.redis else {
            let stored = format!("{key}|{}", applied.tags);
            let idle = local::idle(settings.algorithm, &applied.limits);
            return match local::take(&stored, settings.algorithm, &applied.limits, idle, now) {
                Ok(decision) => self.verdict(http, decision),
                // Shared data full (its quota): admit rather than refuse everyone.
                Err(error) => {
                    http.warn(&format!("cannot count the request, admitted: {error}"));
                    Ok(Flow::Continue)
                }
            };
        };
        let carry = if plugin.script_loaded.get() {
            Carry::Sha
        } else {
            Carry::Source
        };
        let pending = match redis.mode {
            Mode::Exact => Pending {
                key: key.into(),
                lease: None,
                ask: Ask::ONE,
                carry,
            },
            Mode::Leased => {
                let pool = format!("lease|{key}|{}", applied.tags);
                let served = lease::take(&pool, applied.limits.len(), redis.lease, now)
                    .unwrap_or_else(|error| {
                        http.warn(&format!("cannot read the lease pool: {error}"));
                        Served::AskRedis(None)
                    });
                let (want, lease) = match Leased::of(pool, served) {
                    Ok(asked) => asked,
                    Err(decision) => return self.verdict(http, decision),
                };
                Pending {
                    key: key.into(),
                    lease: Some(lease),
                    ask: Ask {
                        want,
                        wait_for: redis.lease * LEASE_WAIT_FACTOR,
                    },
                    carry,
                }
            }
        };
        self.ask_redis(http, pending)
    }

    fn on_response_headers(&mut self, http: &mut Http<'_, Self>) -> Outcome {
        if let Some(status) = self.status.take().filter(|_| self.plugin.settings.headers) {
            let applied = self.applied();
            http.set_response_header(headers::POLICY, &applied.policy)?;
            http.set_response_header(
                headers::RATELIMIT,
                &headers::current(&applied.limits, &status),
            )?;
        }
        Ok(Flow::Continue)
    }
}

weir_sdk::export!(RateLimit);

#[cfg(test)]
mod tests;
