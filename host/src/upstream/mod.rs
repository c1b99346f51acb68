//! Upstream groups: target choice, pooled keep-alive connections, timeouts and
//! retries on connect failure.
//!
//! Knows the validated config and HTTP types; knows nothing of routes or servers.

mod balancer;
mod caller;
mod directory;
mod grpc;
mod h2;
mod pool;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};

pub use balancer::Balancer;
pub use caller::UpstreamCaller;
pub use directory::{Directory, Groups, build as build_groups};
pub use pool::{ConnectionPool, SendError};

use crate::body::{self, Body, BoxError};
use crate::config::model::Upstream;
use crate::error::{Fault, HttpError};

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

impl HttpError for UpstreamError {
    fn status(&self) -> http::StatusCode {
        match self {
            Self::Unavailable { .. } | Self::Failed { .. } => http::StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => http::StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientBody(_) => http::StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "upstream_unavailable",
            Self::Timeout { .. } => "upstream_timeout",
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

/// One target of a group: its connections and its live load.
struct TargetState {
    pool: Arc<ConnectionPool>,
    /// The shared HTTP/2 connection gRPC callouts use.
    h2: h2::H2Connection,
    in_flight: AtomicUsize,
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
}

/// A request body as the upstream layer sees it.
pub enum OutgoingBody {
    /// A body that can be sent once.
    Streaming(Body),
    /// A fully read body that can be sent again on retry.
    Replayable(Bytes),
}

/// A live upstream group.
pub struct UpstreamGroup {
    config: Upstream,
    name: String,
    targets: Vec<TargetState>,
    /// The targets' addresses, as configured, in `targets`' order.
    addresses: Arc<[String]>,
    balancer: Balancer,
    request_timeout: Duration,
    retries: u32,
}

impl UpstreamGroup {
    /// Builds the group and its connection pool from config.
    pub fn new(config: &Upstream) -> Result<Self, GroupError> {
        let tls = config
            .tls
            .as_ref()
            .map(tls::UpstreamConnector::new)
            .transpose()?
            .map(Arc::new);
        let targets = config
            .targets
            .iter()
            .map(|t| {
                let authority: Authority = t.address.parse()?;
                Ok(TargetState {
                    h2: h2::H2Connection::new(authority.clone(), config.timeouts.connect),
                    pool: Arc::new(ConnectionPool::new(
                        authority,
                        tls.clone(),
                        config.timeouts.connect,
                        config.timeouts.idle,
                    )),
                    in_flight: AtomicUsize::new(0),
                })
            })
            .collect::<Result<Vec<_>, GroupError>>()?;
        Ok(Self {
            config: config.clone(),
            name: config.name.clone(),
            targets,
            addresses: config.targets.iter().map(|t| t.address.clone()).collect(),
            balancer: Balancer::new(config.lb, config.targets.iter().map(|t| t.weight).collect()),
            request_timeout: config.timeouts.request,
            retries: config.retries,
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

    /// The addresses of the group's targets, as configured.
    pub fn addresses(&self) -> Arc<[String]> {
        self.addresses.clone()
    }

    /// Each target's address, weight and requests in flight, in configured order.
    pub fn target_statuses(&self) -> Vec<TargetStatus> {
        (self.config.targets.iter())
            .zip(&self.targets)
            .map(|(config, state)| TargetStatus {
                address: config.address.clone(),
                weight: config.weight,
                in_flight: state.in_flight.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The group's request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Extra attempts this group makes for idempotent requests.
    pub fn retries(&self) -> u32 {
        self.retries
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
        self.send_to(request, timeout, None).await
    }

    /// [`UpstreamGroup::send`], first to the target at address `prefer` when
    /// it is one of the group's (a filter's choice); a retry, or an address
    /// the group does not have, goes where the balancer picks.
    pub async fn send_to(
        self: &Arc<Self>,
        request: Request<OutgoingBody>,
        timeout: Option<Duration>,
        prefer: Option<&str>,
    ) -> Result<Response<Body>, UpstreamError> {
        let timeout = timeout.unwrap_or(self.request_timeout);
        let prefer = prefer.and_then(|p| self.addresses.iter().position(|a| a == p));
        let (parts, body) = request.into_parts();
        let (attempts, replay) = match body {
            OutgoingBody::Replayable(bytes) => (1 + self.retries, Some(bytes)),
            OutgoingBody::Streaming(b) => {
                let req = Request::from_parts(parts, b);
                return self
                    .attempt(req, prefer, None, timeout)
                    .await
                    .map_err(|(e, _)| e);
            }
        };
        let mut avoid = None;
        let mut last_error = None;
        for _ in 0..attempts {
            let body = replay.clone().map_or_else(body::empty, body::full);
            let req = Request::from_parts(parts.clone(), body);
            match self.attempt(req, prefer, avoid, timeout).await {
                Ok(response) => return Ok(response),
                Err((error, Some(failed))) => {
                    tracing::debug!(upstream = %self.name, %error, "connect failed, retrying");
                    avoid = Some(failed);
                    last_error = Some(error);
                }
                Err((error, None)) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| UpstreamError::Unavailable {
            upstream: self.name.clone(),
            source: "no attempt was made".into(),
        }))
    }

    /// Sends `request` over HTTP/2 with prior knowledge to a target the
    /// balancer picks, and waits for the response head. Its URI gets the
    /// target's authority. No retry: the exchange may already be streaming.
    pub async fn send_h2(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, UpstreamError> {
        let index = self
            .balancer
            .pick(|i| self.targets[i].in_flight.load(Ordering::Relaxed), None);
        let target = &self.targets[index];
        let _guard = InFlight::enter(&target.in_flight);
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(target.h2.target().clone());
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        target.h2.send(request).await.map_err(|error| match error {
            SendError::Connect { .. } => UpstreamError::Unavailable {
                upstream: self.name.clone(),
                source: Box::new(error),
            },
            SendError::Exchange(_) => UpstreamError::Failed {
                upstream: self.name.clone(),
                source: Box::new(error),
            },
        })
    }

    /// One attempt on one target: `prefer` unless it is the one to `avoid`,
    /// else the balancer's pick. On a connect failure the error carries the
    /// target index, meaning a retry is safe.
    async fn attempt(
        &self,
        request: Request<Body>,
        prefer: Option<usize>,
        avoid: Option<usize>,
        timeout: Duration,
    ) -> Result<Response<Body>, (UpstreamError, Option<usize>)> {
        let index = match prefer {
            Some(i) if avoid.is_none() => i,
            _ => self
                .balancer
                .pick(|i| self.targets[i].in_flight.load(Ordering::Relaxed), avoid),
        };
        let target = &self.targets[index];
        let _guard = InFlight::enter(&target.in_flight);
        match tokio::time::timeout(timeout, target.pool.send(request)).await {
            Ok(Ok(response)) => Ok(response),
            Err(_) => Err((
                UpstreamError::Timeout {
                    upstream: self.name.clone(),
                    timeout,
                },
                None,
            )),
            Ok(Err(error @ SendError::Connect { .. })) => Err((
                UpstreamError::Unavailable {
                    upstream: self.name.clone(),
                    source: Box::new(error),
                },
                Some(index),
            )),
            Ok(Err(error)) => Err((self.classify_failure(error), None)),
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
            upstream: self.name.clone(),
            source: Box::new(error),
        }
    }
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
