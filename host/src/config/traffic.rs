//! How an upstream group spreads and guards its traffic, as validated config:
//! the balancing policy and its hash key, active health checks, passive
//! outlier ejection and slow start, each decoded straight from the manifest
//! with its defaults.

use std::ops::RangeInclusive;
use std::time::Duration;

use http::HeaderName;

use super::decode::{Decode, Diagnostics, Fields, HumanDuration, Located, mismatch};
use super::node::{Node, Value};

/// Load-balancing policy of an upstream group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Power of two random choices on in-flight requests per weight.
    LeastRequest,
    /// A target drawn at random, in proportion to its weight.
    Random,
    /// The same key goes to the same target while it is available; a target
    /// joining or leaving moves only the keys it takes or had.
    ConsistentHash(HashKey),
}

/// What a consistent-hash group hashes to pick a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// A query parameter's value.
    Query(String),
    /// The client's address (as the listener saw it).
    ClientIp,
}

/// How a group learns that a target is down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthChecks {
    /// Probes sent on an interval.
    pub active: Option<ActiveCheck>,
    /// Failures of real requests that eject a target for a while.
    pub passive: Option<OutlierDetection>,
}

impl HealthChecks {
    /// Whether any check can take a target out of rotation.
    pub fn any(&self) -> bool {
        self.active.is_some() || self.passive.is_some()
    }
}

/// A probe sent to every target on an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    /// What the probe does.
    pub kind: ProbeKind,
    /// Time between two probes of a target.
    pub interval: Duration,
    /// How long a probe may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive successes that bring an unhealthy target back.
    pub healthy: u32,
    /// Consecutive failures that take a healthy target out.
    pub unhealthy: u32,
}

/// What an active probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// Opens a connection and closes it.
    Tcp,
    /// Sends `GET path` and expects one of `statuses` (empty: any 2xx or 3xx).
    Http {
        /// The path probed, with its query if any.
        path: String,
        /// The statuses that count as healthy.
        statuses: Vec<u16>,
    },
}

impl ProbeKind {
    /// Whether `status` counts as a healthy answer.
    pub fn accepts(&self, status: u16) -> bool {
        match self {
            Self::Tcp => true,
            Self::Http { statuses, .. } if statuses.is_empty() => (200..400).contains(&status),
            Self::Http { statuses, .. } => statuses.contains(&status),
        }
    }
}

/// Passive outlier ejection: a target whose requests keep failing is taken
/// out for a time that grows with each ejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive failures (5xx answers, failed connections, timeouts) that eject.
    pub failures: u32,
    /// The first ejection's length; each further ejection adds as much again.
    pub ejection: Duration,
    /// The longest an ejection lasts.
    pub max_ejection: Duration,
    /// The largest share of the group's targets ejected at once (one target may
    /// always be ejected).
    pub max_ejected_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            failures: 5,
            ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// Health-check intervals and timeouts allowed.
const CHECK_PERIOD: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(10))..=HumanDuration(Duration::from_secs(3600));
/// Consecutive probe results that flip a target.
const THRESHOLD: RangeInclusive<u32> = 1..=100;
/// Ejection lengths allowed.
const EJECTION: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(100))..=HumanDuration(Duration::from_secs(24 * 3600));
/// Slow-start windows allowed.
pub const SLOW_START: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(100))..=HumanDuration(Duration::from_secs(3600));

impl LbPolicy {
    /// Decodes `lb` with its `hash_on` sibling (required by, and only allowed
    /// with, `consistent_hash`).
    pub fn decode_with_key(
        lb: Option<&Node>,
        hash_on: Option<&Node>,
        at: &Node,
        diags: &mut Diagnostics,
    ) -> Self {
        let name = match lb.map(|n| (n, &n.value)) {
            None => "round_robin",
            Some((_, Value::Str(s))) => s.as_str(),
            Some((node, _)) => {
                return mismatch(node, POLICIES, diags).unwrap_or(LbPolicy::RoundRobin);
            }
        };
        let policy = match name {
            "round_robin" => LbPolicy::RoundRobin,
            "least_request" => LbPolicy::LeastRequest,
            "random" => LbPolicy::Random,
            "consistent_hash" => {
                let Some(key) = hash_on else {
                    diags.error(
                        lb.map_or(at.location, |n| n.location),
                        "`lb: consistent_hash` needs `hash_on` (a header, cookie, query parameter or client_ip)",
                    );
                    return LbPolicy::RoundRobin;
                };
                return HashKey::decode(key, diags)
                    .map_or(LbPolicy::RoundRobin, LbPolicy::ConsistentHash);
            }
            _ => {
                let node = lb.unwrap_or(at);
                return mismatch(node, POLICIES, diags).unwrap_or(LbPolicy::RoundRobin);
            }
        };
        if let Some(key) = hash_on {
            diags.error(
                key.location,
                format!("`hash_on` is only read with `lb: consistent_hash`, not `{name}`"),
            );
        }
        policy
    }
}

const POLICIES: &str = "`round_robin`, `least_request`, `random` or `consistent_hash`";

impl Decode for HashKey {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        const EXPECTED: &str =
            "`client_ip`, `{ header: NAME }`, `{ cookie: NAME }` or `{ query: NAME }`";
        if let Value::Str(s) = &node.value {
            return if s == "client_ip" {
                Some(HashKey::ClientIp)
            } else {
                mismatch(node, EXPECTED, diags)
            };
        }
        let Value::Map(entries) = &node.value else {
            return mismatch(node, EXPECTED, diags);
        };
        let [(kind, value)] = entries.as_slice() else {
            if entries.len() > 1 {
                let kinds: Vec<String> = (entries.iter())
                    .map(|(k, _)| format!("`{}`", k.scalar_text()))
                    .collect();
                diags.error(
                    node.location,
                    format!("a key takes one kind, found {}", kinds.join(" and ")),
                );
                return None;
            }
            return mismatch(node, EXPECTED, diags);
        };
        let name = Located::<String>::decode(value, diags)?;
        if name.value.is_empty() {
            diags.error(name.location, "the name to hash on is empty");
            return None;
        }
        match kind.scalar_text().as_str() {
            "header" => match HeaderName::from_bytes(name.value.as_bytes()) {
                Ok(header) => Some(HashKey::Header(header)),
                Err(_) => {
                    diags.error(
                        name.location,
                        format!("`{}` is not a header name", name.value),
                    );
                    None
                }
            },
            "cookie" if name.value.bytes().all(is_cookie_name_byte) => {
                Some(HashKey::Cookie(name.value))
            }
            "cookie" => {
                diags.error(
                    name.location,
                    format!("`{}` is not a cookie name", name.value),
                );
                None
            }
            "query" => Some(HashKey::Query(name.value)),
            _ => mismatch(node, EXPECTED, diags),
        }
    }
}

/// Whether `b` may appear in a cookie name (an RFC 6265 token).
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

impl Decode for HealthChecks {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "health checks", diags)?;
        let checks = Self {
            active: f.optional("active", diags).flatten(),
            passive: f.optional("passive", diags).flatten(),
        };
        f.finish(diags);
        Some(checks)
    }
}

impl Decode for ActiveCheck {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "active health check", diags)?;
        let kind = f.optional::<Located<String>>("type", diags).flatten();
        let path = f.optional::<Located<String>>("path", diags).flatten();
        let statuses: Vec<Located<u16>> = f.or("statuses", Vec::new(), diags);
        let interval = f.duration("interval", CHECK_PERIOD, Duration::from_secs(5), diags);
        let timeout = f.duration("timeout", CHECK_PERIOD, Duration::from_secs(1), diags);
        let healthy = f.within("healthy", THRESHOLD, 2, diags);
        let unhealthy = f.within("unhealthy", THRESHOLD, 3, diags);
        f.finish(diags);
        check_statuses(&statuses, diags);
        let kind = match kind.as_ref().map_or("http", |k| k.value.as_str()) {
            "tcp" => {
                if let Some(path) = &path {
                    diags.error(path.location, "a `tcp` check sends no request: drop `path`");
                }
                ProbeKind::Tcp
            }
            "http" => {
                let path = path.map_or_else(|| "/".to_owned(), |p| p.value);
                if !path.starts_with('/')
                    || http::uri::PathAndQuery::try_from(path.as_str()).is_err()
                {
                    diags.error(
                        node.location,
                        format!("the check's path `{path}` must be a path starting with `/`"),
                    );
                }
                ProbeKind::Http {
                    path,
                    statuses: statuses.iter().map(|s| s.value).collect(),
                }
            }
            other => {
                diags.error(
                    kind.as_ref().map_or(node.location, |k| k.location),
                    format!("a health check's type is `http` or `tcp`, found `{other}`"),
                );
                return None;
            }
        };
        Some(Self {
            kind,
            interval,
            timeout,
            healthy,
            unhealthy,
        })
    }
}

impl Decode for OutlierDetection {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "passive health check", diags)?;
        let defaults = Self::default();
        let detection = Self {
            failures: f.within("failures", THRESHOLD, defaults.failures, diags),
            ejection: f.duration("ejection", EJECTION, defaults.ejection, diags),
            max_ejection: f.duration("max_ejection", EJECTION, defaults.max_ejection, diags),
            max_ejected_percent: f.within(
                "max_ejected_percent",
                0..=100,
                defaults.max_ejected_percent,
                diags,
            ),
        };
        f.finish(diags);
        if detection.max_ejection < detection.ejection {
            diags.error(
                node.location,
                format!(
                    "`max_ejection` ({}) is shorter than `ejection` ({})",
                    HumanDuration(detection.max_ejection),
                    HumanDuration(detection.ejection)
                ),
            );
        }
        Some(detection)
    }
}

/// Per-upstream limits that fail fast with 503 `circuit_open` rather than
/// let a struggling upstream queue up the gateway's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Connections open to the group's targets at once.
    pub max_connections: usize,
    /// Requests in flight to the group at once.
    pub max_requests: usize,
    /// Requests that may wait for an in-flight slot (beyond, they fail).
    pub max_pending: usize,
    /// Retries in flight to the group at once.
    pub max_retries: usize,
    /// The error-rate breaker, when there is one.
    pub errors: Option<ErrorBreaker>,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_requests: 10_000,
            max_pending: 1_000,
            max_retries: 1_000,
            errors: None,
        }
    }
}

/// Opens when the share of failed requests over a window crosses a
/// threshold; fails fast while open; lets one probe through after a while
/// (half-open) and closes when it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBreaker {
    /// Failed requests, in percent of the window's requests, that open it.
    pub percent: u32,
    /// Requests the window needs before it can open.
    pub min_requests: u32,
    /// The window failures are counted over.
    pub window: Duration,
    /// How long it stays open before a probe may go through.
    pub open_for: Duration,
}

/// When and how a route's request is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry).
    pub attempts: u32,
    /// The failures worth another attempt.
    pub on: RetryOn,
    /// Each attempt's own timeout (the route's timeout bounds them all).
    pub per_try_timeout: Option<Duration>,
    /// The first backoff's ceiling; each retry doubles it, up to `backoff_max`.
    pub backoff_base: Duration,
    /// The largest backoff ceiling (the wait is drawn below it: full jitter).
    pub backoff_max: Duration,
    /// Retries in flight may be at most this percent of the group's requests in flight…
    pub budget_percent: u32,
    /// …or this many, whichever is more.
    pub budget_min: u32,
}

impl RetryPolicy {
    /// The policy an upstream's `retries: n` stands for: `n` more attempts
    /// when the connection fails.
    pub fn connect_only(retries: u32) -> Self {
        Self {
            attempts: retries + 1,
            on: RetryOn {
                connect_failure: true,
                ..RetryOn::default()
            },
            ..Self::default()
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 1,
            on: RetryOn::default(),
            per_try_timeout: None,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget_percent: 20,
            budget_min: 3,
        }
    }
}

/// The failures a retry policy answers with another attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// No connection could be made (the request was not sent).
    pub connect_failure: bool,
    /// The connection broke after the request was sent.
    pub reset: bool,
    /// An attempt ran past its timeout.
    pub timeout: bool,
    /// A 502, 503 or 504 answer.
    pub gateway_error: bool,
    /// Any 5xx answer.
    pub server_error: bool,
    /// These answers.
    pub statuses: Vec<u16>,
}

impl RetryOn {
    /// Whether an answer with `status` is retried.
    pub fn status(&self, status: u16) -> bool {
        (self.server_error && (500..600).contains(&status))
            || (self.gateway_error && matches!(status, 502..=504))
            || self.statuses.contains(&status)
    }
}

const LIMIT: RangeInclusive<usize> = 1..=10_000_000;
const ATTEMPTS: RangeInclusive<u32> = 1..=10;
const BACKOFF: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(1))..=HumanDuration(Duration::from_secs(60));
const WINDOW: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(100))..=HumanDuration(Duration::from_secs(3600));

impl Decode for CircuitBreaker {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "circuit breaker", diags)?;
        let d = Self::default();
        let breaker = Self {
            max_connections: f.within("max_connections", LIMIT, d.max_connections, diags),
            max_requests: f.within("max_requests", LIMIT, d.max_requests, diags),
            max_pending: f.within("max_pending", 0..=10_000_000, d.max_pending, diags),
            max_retries: f.within("max_retries", 0..=10_000_000, d.max_retries, diags),
            errors: f.optional("errors", diags).flatten(),
        };
        f.finish(diags);
        Some(breaker)
    }
}

impl Decode for ErrorBreaker {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "error-rate breaker", diags)?;
        let breaker = Self {
            percent: f.within("percent", 1..=100, 50, diags),
            min_requests: f.within("min_requests", 1..=1_000_000, 20, diags),
            window: f.duration("window", WINDOW, Duration::from_secs(10), diags),
            open_for: f.duration("open_for", WINDOW, Duration::from_secs(30), diags),
        };
        f.finish(diags);
        Some(breaker)
    }
}

impl Decode for RetryPolicy {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "retry policy", diags)?;
        let d = Self::default();
        let attempts = f.within("attempts", ATTEMPTS, 2, diags);
        let on = f
            .optional::<Vec<Located<String>>>("retry_on", diags)
            .flatten()
            .unwrap_or_else(|| {
                vec![Located {
                    value: "connect_failure".to_owned(),
                    location: node.location,
                }]
            });
        let statuses: Vec<Located<u16>> = f.or("statuses", Vec::new(), diags);
        let per_try_timeout = f.bounded("per_try_timeout", BACKOFF, diags).map(|d| d.0);
        let (backoff_base, backoff_max) = match f.node("backoff") {
            None => (d.backoff_base, d.backoff_max),
            Some(backoff) => {
                let mut b = Fields::of(backoff, "retry backoff", diags)?;
                let base = b.duration("base", BACKOFF, d.backoff_base, diags);
                let max = b.duration("max", BACKOFF, d.backoff_max, diags);
                b.finish(diags);
                (base, max.max(base))
            }
        };
        let (budget_percent, budget_min) = match f.node("budget") {
            None => (d.budget_percent, d.budget_min),
            Some(budget) => {
                let mut b = Fields::of(budget, "retry budget", diags)?;
                let percent = b.within("percent", 0..=1000, d.budget_percent, diags);
                let min = b.within("min_concurrent", 0..=1_000_000, d.budget_min, diags);
                b.finish(diags);
                (percent, min)
            }
        };
        f.finish(diags);
        let mut retry_on = RetryOn::default();
        for condition in &on {
            match condition.value.as_str() {
                "connect_failure" => retry_on.connect_failure = true,
                "reset" => retry_on.reset = true,
                "timeout" => retry_on.timeout = true,
                "gateway_error" => retry_on.gateway_error = true,
                "5xx" => retry_on.server_error = true,
                "retriable_status" => {}
                other => diags.error(
                    condition.location,
                    format!(
                        "`{other}` is not a retry condition: `connect_failure`, `reset`, `timeout`, `gateway_error`, `5xx` or `retriable_status`"
                    ),
                ),
            }
        }
        let listed = on.iter().any(|c| c.value == "retriable_status");
        if listed == statuses.is_empty() {
            diags.error(
                node.location,
                "`retriable_status` in `retry_on` and a non-empty `statuses` list go together",
            );
        }
        check_statuses(&statuses, diags);
        retry_on.statuses = statuses.iter().map(|s| s.value).collect();
        Some(Self {
            attempts,
            on: retry_on,
            per_try_timeout,
            backoff_base,
            backoff_max,
            budget_percent,
            budget_min,
        })
    }
}

/// Records every entry of `statuses` that is not an HTTP status.
fn check_statuses(statuses: &[Located<u16>], diags: &mut Diagnostics) {
    for status in statuses {
        if !(100..=599).contains(&status.value) {
            diags.error(
                status.location,
                format!("{} is not an HTTP status (100 to 599)", status.value),
            );
        }
    }
}
