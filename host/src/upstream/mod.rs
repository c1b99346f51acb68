//! Upstream groups: target choice and health, pooled keep-alive connections,
//! circuit breaking, timeouts and retries.
//!
//! Knows the validated config and HTTP types; knows nothing of routes or servers.

mod affinity;
mod balancer;
mod breaker;
mod caller;
mod checker;
mod collector;
mod connector;
mod directory;
mod discovery;
mod grpc;
mod h2;
mod health;
mod pool;
mod ring;
mod target;
mod tls;
mod upgrade;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};

pub use affinity::key_hash;
use arc_swap::ArcSwap;
pub use caller::UpstreamCaller;
pub use collector::UpstreamMetrics;
pub use directory::{Directory, Groups, build as build_groups};
pub use pool::SendError;
#[cfg(test)]
pub use ring::hash_key;
pub use target::TargetSpec;

use balancer::TargetView;
use breaker::{Admitted, Limits, Refusal};
use health::Transition;
use target::{SetView, TargetSet, TargetState};

use crate::body::{self, Body, BoxError};
use crate::config::model::{LbPolicy, RetryPolicy, Upstream};
use crate::error::{Fault, HttpError};
use crate::observe::record_of;
use crate::observe::trace::{Kind, RequestTrace, Span};

/// Why a request could not be exchanged with an upstream group.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Every attempt to connect failed.
    #[error("upstream `{upstream}` is unavailable: {source}")]
    Unavailable {
        /// Upstream group name.
        upstream: String,
        /// The last connection error.
        source: BoxError,
    },
    /// The group's circuit breaker refused the request.
    #[error("upstream `{upstream}`'s circuit is open: {reason}")]
    CircuitOpen {
        /// Upstream group name.
        upstream: String,
        /// Which limit or breaker refused it.
        reason: &'static str,
    },
    /// Every target is out of rotation (probed down or ejected).
    #[error("upstream `{upstream}` has no healthy target")]
    NoHealthyTarget {
        /// Upstream group name.
        upstream: String,
    },
    /// The upstream did not answer in time.
    #[error("upstream `{upstream}` did not answer within {}ms", timeout.as_millis())]
    Timeout {
        /// Upstream group name.
        upstream: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The connection failed after the request was sent.
    #[error("upstream `{upstream}` failed: {source}")]
    Failed {
        /// Upstream group name.
        upstream: String,
        /// The error.
        source: BoxError,
    },
    /// The client's body grew past the listener's limit while it was sent.
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The client's body broke (bad framing, or the client left) while it was sent.
    #[error(transparent)]
    ClientBody(crate::body::ClientBodyError),
}

impl UpstreamError {
    /// Whether the group refused the request without trying a target
    /// (circuit open, or no healthy target): when a route's fallback answers.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::CircuitOpen { .. } | Self::NoHealthyTarget { .. }
        )
    }
}

impl HttpError for UpstreamError {
    fn status(&self) -> http::StatusCode {
        match self {
            Self::Unavailable { .. } | Self::Failed { .. } => http::StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => http::StatusCode::GATEWAY_TIMEOUT,
            Self::NoHealthyTarget { .. } | Self::CircuitOpen { .. } => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            Self::BodyTooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientBody(_) => http::StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "upstream_unavailable",
            Self::Timeout { .. } => "upstream_timeout",
            Self::NoHealthyTarget { .. } => "no_healthy_upstream",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::Failed { .. } => "upstream_failed",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::ClientBody(_) => "bad_request",
        }
    }

    fn fault(&self) -> Fault {
        match self {
            Self::BodyTooLarge { .. } | Self::ClientBody(_) => Fault::Downstream,
            _ => Fault::Upstream,
        }
    }
}

/// Why an upstream group could not be built.
#[derive(Debug, thiserror::Error)]
#[error("upstream `{upstream}` {source}")]
pub struct InvalidUpstream {
    /// Upstream name.
    pub upstream: String,
    /// What is wrong with it.
    pub source: GroupError,
}

/// What is wrong with an upstream's settings.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A target is not `host:port`.
    #[error("has an invalid target: {0}")]
    Target(#[from] http::uri::InvalidUri),
    /// Its TLS settings cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsSetupError),
}

/// A target of a group as it is now, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    /// `host:port`, as configured.
    pub address: String,
    /// Its relative share of traffic.
    pub weight: u32,
    /// Requests it is serving now.
    pub in_flight: usize,
    /// Whether requests may go to it now, and if not why.
    pub health: TargetHealth,
    /// Times passive detection has ejected it.
    pub ejections: u64,
}

/// A target's health as its group's checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetHealth {
    /// The group has no health checks: the target is always in rotation.
    Unchecked,
    /// In rotation.
    Healthy,
    /// Active probes took it out.
    Unhealthy,
    /// Passive detection took it out for a while.
    Ejected,
}

impl TargetHealth {
    /// The name the admin API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchecked => "unchecked",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Ejected => "ejected",
        }
    }
}

/// A request body as the upstream layer sees it.
pub enum OutgoingBody {
    /// A body that can be sent once.
    Streaming(Body),
    /// A fully read body that can be sent again on retry.
    Replayable(Bytes),
}

/// Where a request would rather go, beside the balancer's choice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Affinity<'a> {
    /// A target a filter chose, by address (taken when it is the group's
    /// and available).
    pub prefer: Option<&'a str>,
    /// The request's key for a consistent-hash group ([`UpstreamGroup::affinity`]).
    pub hash: Option<u64>,
}

/// A live upstream group.
pub struct UpstreamGroup {
    config: Upstream,
    /// Shared with the records of the requests it serves.
    name: Arc<str>,
    settings: connector::ConnectSettings,
    targets: ArcSwap<TargetSet>,
    request_timeout: Duration,
    /// What the upstream's `retries` stands for, for routes without a retry policy.
    default_retry: RetryPolicy,
    limits: Limits,
    /// Whether the active health checks have been started.
    checking: AtomicBool,
    /// Whether discovery has been started (`discovery::start_discovery`).
    discovering: AtomicBool,
}

impl UpstreamGroup {
    /// Builds the group from config. Targets `previous` (the group this one
    /// replaces) also has keep their connections, load and health.
    pub fn new(config: &Upstream, previous: Option<&UpstreamGroup>) -> Result<Self, GroupError> {
        let tls = config
            .tls
            .as_ref()
            .map(tls::UpstreamConnector::new)
            .transpose()?
            .map(Arc::new);
        let limits = Limits::new(&config.circuit_breaker);
        let settings = connector::ConnectSettings {
            tls,
            protocol: config.protocol,
            connect_timeout: config.timeouts.connect,
            idle_timeout: config.timeouts.idle,
            connection_slots: (
                Arc::clone(&limits.connections),
                config.circuit_breaker.max_connections,
            ),
        };
        // Connections made with other TLS settings, protocol or timeouts are not reused.
        let previous = previous
            .filter(|p| {
                p.config.tls == config.tls
                    && p.config.protocol == config.protocol
                    && p.config.timeouts == config.timeouts
            })
            .map(|p| p.targets.load_full());
        let specs: Vec<TargetSpec> = config
            .targets
            .iter()
            .map(|t| TargetSpec {
                address: t.address.clone(),
                weight: t.weight,
            })
            .collect();
        let set = TargetSet::new(&specs, &config.lb, &settings, previous.as_deref())?;
        Ok(Self {
            config: config.clone(),
            name: config.name.as_str().into(),
            settings,
            targets: ArcSwap::from_pointee(set),
            request_timeout: config.timeouts.request,
            default_retry: RetryPolicy::connect_only(config.retries),
            limits,
            checking: AtomicBool::new(false),
            discovering: AtomicBool::new(false),
        })
    }

    /// The configuration the group was built from.
    pub fn config(&self) -> &Upstream {
        &self.config
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its error-rate breaker's state: `closed`, `open` or `half_open`.
    pub fn circuit(&self) -> &'static str {
        self.limits.circuit()
    }

    /// Replaces the group's targets (discovery found new ones). Targets that
    /// stay keep their connections, load and health; requests in flight to
    /// targets that left finish on their connections.
    pub fn set_targets(&self, specs: &[TargetSpec]) -> Result<(), GroupError> {
        let current = self.targets.load_full();
        let set = TargetSet::new(specs, &self.config.lb, &self.settings, Some(&current))?;
        self.targets.store(Arc::new(set));
        Ok(())
    }

    /// The addresses of the group's targets now.
    pub fn addresses(&self) -> Arc<[String]> {
        self.targets.load().addresses.clone()
    }

    /// Each target's address, weight, load and health, in the set's order.
    pub fn target_statuses(&self) -> Vec<TargetStatus> {
        let set = self.targets.load();
        let now = health::now_ms();
        (set.targets.iter())
            .zip(&set.weights)
            .map(|(state, &weight)| TargetStatus {
                address: state.address.to_string(),
                weight,
                in_flight: state.in_flight.load(Ordering::Relaxed),
                health: if !self.config.health.any() {
                    TargetHealth::Unchecked
                } else if state.health.ejected(now) {
                    TargetHealth::Ejected
                } else if !state.health.available(now) {
                    TargetHealth::Unhealthy
                } else {
                    TargetHealth::Healthy
                },
                ejections: state.health.ejected_total(),
            })
            .collect()
    }

    /// The group's request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Whether requests under `policy` (the route's, or else the group's
    /// `retries`) may be tried more than once, so their bodies are kept.
    pub fn retries_under(&self, policy: Option<&RetryPolicy>) -> bool {
        policy.unwrap_or(&self.default_retry).attempts > 1
    }

    /// Where a request would rather go in this group: the target a filter
    /// chose (`prefer`), and for a consistent-hash group the hash of the
    /// request's key (none when the request lacks it).
    pub fn affinity<'a>(
        &self,
        request: &http::request::Parts,
        client_ip: &str,
        prefer: Option<&'a str>,
    ) -> Affinity<'a> {
        let hash = match &self.config.lb {
            LbPolicy::ConsistentHash(key) => {
                affinity::key_hash(key, &request.headers, &request.uri, client_ip)
            }
            _ => None,
        };
        Affinity { prefer, hash }
    }

    /// Starts the group's active health checks on `runtime`, once; they end
    /// when the group is dropped.
    pub fn start_checks(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let Some(check) = self.config.health.active.clone() else {
            return;
        };
        if !self.checking.swap(true, Ordering::Relaxed) {
            runtime.spawn(checker::run(Arc::downgrade(self), check));
        }
    }

    /// Sends `request` (origin-form URI) to a target and waits for the response head.
    ///
    /// A replayable body is retried on another target when the connection fails,
    /// up to the group's retry count. `timeout` overrides the group's request timeout.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<OutgoingBody>,
        timeout: Option<Duration>,
    ) -> Result<Response<Body>, UpstreamError> {
        self.send_to(request, timeout, Affinity::default(), None)
            .await
    }

    /// [`UpstreamGroup::send`] under the group's circuit breaker, first to
    /// the target `affinity` names when it is one of the group's and
    /// available, and tried again as `retry` (else the group's `retries`)
    /// says, within the budget, while `timeout` (else the group's) lasts.
    /// Only a replayable body is tried more than once.
    pub async fn send_to(
        self: &Arc<Self>,
        request: Request<OutgoingBody>,
        timeout: Option<Duration>,
        affinity: Affinity<'_>,
        retry: Option<&RetryPolicy>,
    ) -> Result<Response<Body>, UpstreamError> {
        let timeout = timeout.unwrap_or(self.request_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let admitted = self
            .limits
            .admit(timeout)
            .await
            .map_err(|refusal| self.circuit_open(refusal))?;
        let policy = retry.unwrap_or(&self.default_retry);
        let (parts, body) = request.into_parts();
        let replay = match body {
            OutgoingBody::Replayable(bytes) => bytes,
            OutgoingBody::Streaming(b) => {
                let request = Request::from_parts(parts, b);
                let per_try = policy.per_try_timeout.map_or(timeout, |t| t.min(timeout));
                let outcome = self.attempt(request, affinity, None, per_try).await;
                self.settle(&admitted, &outcome);
                return outcome.map_err(|(e, _)| e);
            }
        };
        let mut avoid: Option<Arc<TargetState>> = None;
        let mut retry_slot = None;
        for attempt in 1..=policy.attempts {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let per_try = policy
                .per_try_timeout
                .map_or(remaining, |t| t.min(remaining));
            let request = Request::from_parts(parts.clone(), body::full(replay.clone()));
            let mut outcome = self
                .attempt(request, affinity, avoid.as_ref(), per_try)
                .await;
            self.settle(&admitted, &outcome);
            if let Err((UpstreamError::Timeout { timeout: shown, .. }, _)) = &mut outcome {
                // Say the bound that was set, not what was left of it.
                *shown = policy.per_try_timeout.map_or(timeout, |t| t.min(timeout));
            }
            let last = attempt == policy.attempts;
            let (retriable, failed) = match &outcome {
                Ok(response) => (policy.on.status(response.status().as_u16()), None),
                Err((error, target)) => (retries_on(policy, error), target.clone()),
            };
            if last || !retriable {
                return outcome.map_err(|(e, _)| e);
            }
            // Another attempt needs budget (this request's last retry gives
            // its slot back first), and time for its backoff.
            drop(retry_slot.take());
            retry_slot = match self.limits.retry(policy) {
                Some(slot) => Some(slot),
                None => return outcome.map_err(|(e, _)| e),
            };
            let backoff = backoff(policy, attempt);
            if tokio::time::Instant::now() + backoff >= deadline {
                return outcome.map_err(|(e, _)| e);
            }
            tracing::debug!(upstream = %self.name, attempt, "retrying");
            if let Some(record) = record_of(&parts.extensions) {
                record.add_retry();
            }
            avoid = failed.or_else(|| avoid.take());
            drop(outcome);
            tokio::time::sleep(backoff).await;
        }
        drop(retry_slot);
        Err(UpstreamError::Unavailable {
            upstream: self.name.to_string(),
            source: "no attempt was made".into(),
        })
    }

    /// Feeds the error-rate breaker with an attempt's outcome, and warns
    /// when it opens.
    fn settle(
        &self,
        admitted: &Admitted<'_>,
        outcome: &Result<Response<Body>, (UpstreamError, Option<Arc<TargetState>>)>,
    ) {
        let failed = match outcome {
            Ok(response) => response.status().is_server_error(),
            Err((error, _)) => matches!(
                error,
                UpstreamError::Unavailable { .. }
                    | UpstreamError::Failed { .. }
                    | UpstreamError::Timeout { .. }
            ),
        };
        if self.limits.record(failed, admitted.probe) {
            tracing::warn!(upstream = %self.name, "circuit opened: too many recent requests failed");
        }
    }

    fn circuit_open(&self, refusal: Refusal) -> UpstreamError {
        UpstreamError::CircuitOpen {
            upstream: self.name.to_string(),
            reason: refusal.reason(),
        }
    }

    /// Sends `request` over HTTP/2 (h2c with prior knowledge, or `h2` over
    /// TLS) to a target the balancer picks, and waits for the response head.
    /// Its URI gets the target's authority. No retry: the exchange may
    /// already be streaming.
    pub async fn send_h2(
        &self,
        request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, UpstreamError> {
        let target = self.choose(Affinity::default(), None)?;
        let _guard = InFlight::enter(&target.in_flight);
        let result = target.connections.send_h2(request).await;
        self.record(&target, result.as_ref().map(|r| r.status()).map_err(|_| ()));
        result.map_err(|error| match error {
            SendError::Connect { .. } => UpstreamError::Unavailable {
                upstream: self.name.to_string(),
                source: Box::new(error),
            },
            SendError::Exchange(_) | SendError::TooManyConnections { .. } => {
                UpstreamError::Failed {
                    upstream: self.name.to_string(),
                    source: Box::new(error),
                }
            }
        })
    }

    /// The target a request goes to: the one `affinity` prefers when it is
    /// in and not `avoid`, else the balancer's pick among those available.
    fn choose(
        &self,
        affinity: Affinity<'_>,
        avoid: Option<&Arc<TargetState>>,
    ) -> Result<Arc<TargetState>, UpstreamError> {
        let set = self.targets.load();
        let checks = &self.config.health;
        let now = (checks.any() || self.config.slow_start.is_some()).then(health::now_ms);
        let view = SetView {
            set: &set,
            checked_at: now.filter(|_| checks.any()),
            slow_start: self.config.slow_start.zip(now),
        };
        let avoid = avoid.and_then(|a| set.index_of(a));
        let preferred = affinity
            .prefer
            .filter(|_| avoid.is_none())
            .and_then(|p| set.addresses.iter().position(|a| a == p))
            .filter(|&i| view.available(i));
        match preferred.or_else(|| set.balancer.pick(&view, affinity.hash, avoid)) {
            Some(i) => Ok(Arc::clone(&set.targets[i])),
            None => Err(UpstreamError::NoHealthyTarget {
                upstream: self.name.to_string(),
            }),
        }
    }

    /// One attempt on one target. On a connect failure the error carries
    /// the target, meaning a retry elsewhere is safe.
    async fn attempt(
        &self,
        mut request: Request<Body>,
        affinity: Affinity<'_>,
        avoid: Option<&Arc<TargetState>>,
        timeout: Duration,
    ) -> Result<Response<Body>, (UpstreamError, Option<Arc<TargetState>>)> {
        let target = self.choose(affinity, avoid).map_err(|e| (e, None))?;
        let _guard = InFlight::enter(&target.in_flight);
        let observed = Observed::start(&mut request, &self.name, &target.address);
        let result = tokio::time::timeout(timeout, target.connections.send(request)).await;
        observed.finish(&result, &self.name, &target.address);
        match &result {
            Ok(Ok(response)) => self.record(&target, Ok(response.status())),
            // A connection our own limit refused says nothing of the target.
            Ok(Err(SendError::TooManyConnections { .. })) => {}
            Ok(Err(_)) | Err(_) => self.record(&target, Err(())),
        }
        match result {
            Ok(Ok(response)) => Ok(response),
            Err(_) => Err((
                UpstreamError::Timeout {
                    upstream: self.name.to_string(),
                    timeout,
                },
                Some(Arc::clone(&target)),
            )),
            Ok(Err(error @ SendError::Connect { .. })) => Err((
                UpstreamError::Unavailable {
                    upstream: self.name.to_string(),
                    source: Box::new(error),
                },
                Some(Arc::clone(&target)),
            )),
            Ok(Err(SendError::TooManyConnections { .. })) => Err((
                UpstreamError::CircuitOpen {
                    upstream: self.name.to_string(),
                    reason: "every connection the circuit breaker allows is open",
                },
                None,
            )),
            Ok(Err(error)) => Err((self.classify_failure(error), Some(Arc::clone(&target)))),
        }
    }

    /// Feeds passive outlier detection with an exchange's outcome: a 5xx
    /// status, or `Err` for a failed connection, exchange or timeout, counts
    /// against the target; anything else clears its run of failures.
    fn record(&self, target: &TargetState, outcome: Result<http::StatusCode, ()>) {
        let Some(detection) = &self.config.health.passive else {
            return;
        };
        match outcome {
            Ok(status) if !status.is_server_error() => target.health.record_success(),
            _ => {
                let now = health::now_ms();
                let may_eject = || {
                    let set = self.targets.load();
                    let cap = set.targets.len() * detection.max_ejected_percent as usize / 100;
                    set.ejected(now) < cap.max(1)
                };
                if let Some(Transition::Ejected(length)) =
                    target.health.record_failure(detection, now, may_eject)
                {
                    tracing::warn!(
                        upstream = %self.name,
                        target = %target.address,
                        failures = detection.failures,
                        for_ms = length.as_millis() as u64,
                        "target ejected after consecutive failures"
                    );
                }
            }
        }
    }

    /// Maps a failure after sending: an over-long or broken request body is
    /// the client's fault.
    fn classify_failure(&self, error: SendError) -> UpstreamError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(e) = source {
            if let Some(limit) = e.downcast_ref::<crate::body::BodyLimitExceeded>() {
                return UpstreamError::BodyTooLarge { limit: limit.0 };
            }
            if let Some(broken) = e.downcast_ref::<crate::body::ClientBodyError>() {
                let reason = broken.0.to_string();
                return UpstreamError::ClientBody(crate::body::ClientBodyError(reason.into()));
            }
            source = e.source();
        }
        UpstreamError::Failed {
            upstream: self.name.to_string(),
            source: Box::new(error),
        }
    }
}

/// Whether `policy` tries again after `error`.
fn retries_on(policy: &RetryPolicy, error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Unavailable { .. } => policy.on.connect_failure,
        UpstreamError::Failed { .. } => policy.on.reset,
        UpstreamError::Timeout { .. } => policy.on.timeout,
        _ => false,
    }
}

/// The wait before retry number `attempt` (1 for the first): drawn below a
/// ceiling that doubles from the base up to the maximum (full jitter).
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let ceiling = policy
        .backoff_base
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(policy.backoff_max);
    ceiling.mul_f64(fastrand::f64())
}

/// Counts a request in flight on a target for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one attempt at a target tells its request's record and trace: a
/// client span from the send to the response head, then the time it took,
/// the group and the target.
pub(super) struct Observed {
    record: Option<Arc<crate::observe::Record>>,
    span: Option<Span>,
    started: std::time::Instant,
}

impl Observed {
    /// Starts observing an attempt of `request` on `target` of `group`: its
    /// span (when the request is traced) goes into the request's
    /// `traceparent`.
    pub(super) fn start<B>(request: &mut Request<B>, group: &str, target: &str) -> Self {
        let record = record_of(request.extensions()).cloned();
        let span = (record.as_ref().and_then(|r| r.trace()))
            .map(|trace| attempt_span(trace, request, group, target));
        Self {
            record,
            span,
            started: std::time::Instant::now(),
        }
    }

    /// Ends the attempt with its `result`: the span failed on a 5xx, a
    /// timeout or a failed exchange.
    pub(super) fn finish<R, E: std::fmt::Display>(
        self,
        result: &Result<Result<Response<R>, E>, tokio::time::error::Elapsed>,
        group: &Arc<str>,
        target: &Arc<str>,
    ) {
        if let Some(span) = self.span {
            end_attempt_span(span, result);
        }
        if let Some(record) = self.record {
            record.add_upstream_time(self.started.elapsed());
            record.update(|details| {
                details.upstream = Some(group.clone());
                details.target = Some(target.clone());
            });
        }
    }
}

/// The client span of one attempt at `target` (a child of the request's
/// span), whose id the upstream receives as its parent in `traceparent`.
fn attempt_span<B>(
    trace: &RequestTrace,
    request: &mut Request<B>,
    upstream: &str,
    target: &str,
) -> Span {
    let method = request.method().clone();
    let mut span = trace.context.child(|| method.to_string(), Kind::Client);
    span.context().inject(request.headers_mut());
    span.set("http.request.method", || method.as_str());
    span.set("url.path", || request.uri().path());
    span.set("weir.upstream", || upstream);
    if span.is_recording() {
        let (host, port) = split_host_port(target);
        span.set("server.address", || host);
        span.set("network.peer.address", || host);
        if let Some(port) = port {
            span.set("server.port", || i64::from(port));
            span.set("network.peer.port", || i64::from(port));
        }
    }
    span
}

/// Ends an attempt's span with its outcome: failed on a 5xx, a timeout or
/// a failed exchange.
fn end_attempt_span<R, E: std::fmt::Display>(
    mut span: Span,
    result: &Result<Result<Response<R>, E>, tokio::time::error::Elapsed>,
) {
    match result {
        Ok(Ok(response)) => {
            let status = response.status();
            span.set("http.response.status_code", || i64::from(status.as_u16()));
            if status.is_server_error() {
                span.fail(status.as_str(), || format!("answered {status}"));
            }
        }
        Ok(Err(error)) => span.fail("connection_failed", || error.to_string()),
        Err(_) => span.fail("timeout", || "no answer within the timeout".to_owned()),
    }
    span.end();
}

/// `host:port` (or `[v6]:port`) split; the port when there is one.
fn split_host_port(address: &str) -> (&str, Option<u16>) {
    match address.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && (!host.contains(':') || host.starts_with('[')) =>
        {
            (
                host.trim_start_matches('[').trim_end_matches(']'),
                port.parse().ok(),
            )
        }
        _ => (address, None),
    }
}
