//! Upstream groups: target choice, pooled keep-alive connections, timeouts and
//! retries on connect failure.
//!
//! Knows the validated config and HTTP types; knows nothing of routes or servers.

mod balancer;
mod caller;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use balancer::Balancer;
pub use caller::UpstreamCaller;

use crate::body::{self, Body};
use crate::config::model::Upstream;
use crate::error::GatewayError;

/// Why an upstream group could not be built.
#[derive(Debug, thiserror::Error)]
#[error("upstream `{upstream}` has an invalid target: {source}")]
pub struct InvalidTarget {
    /// Upstream name.
    pub upstream: String,
    /// Parse error.
    pub source: http::uri::InvalidUri,
}

/// Builds every upstream group of the manifest, in manifest order.
pub fn build_groups(upstreams: &[Upstream]) -> Result<Vec<Arc<UpstreamGroup>>, InvalidTarget> {
    upstreams
        .iter()
        .map(|u| {
            UpstreamGroup::new(u)
                .map(Arc::new)
                .map_err(|source| InvalidTarget {
                    upstream: u.name.clone(),
                    source,
                })
        })
        .collect()
}

/// One target of a group with its live load.
#[derive(Debug)]
struct TargetState {
    authority: Authority,
    in_flight: AtomicUsize,
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
    name: String,
    targets: Vec<TargetState>,
    balancer: Balancer,
    client: Client<HttpConnector, Body>,
    request_timeout: Duration,
    retries: u32,
}

impl UpstreamGroup {
    /// Builds the group and its connection pool from config.
    pub fn new(config: &Upstream) -> Result<Self, http::uri::InvalidUri> {
        let targets = config
            .targets
            .iter()
            .map(|t| {
                Ok(TargetState {
                    authority: t.address.parse()?,
                    in_flight: AtomicUsize::new(0),
                })
            })
            .collect::<Result<Vec<_>, http::uri::InvalidUri>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeouts.connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.timeouts.idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            name: config.name.clone(),
            targets,
            balancer: Balancer::new(config.lb, config.targets.iter().map(|t| t.weight).collect()),
            client,
            request_timeout: config.timeouts.request,
            retries: config.retries,
        })
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
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
    ) -> Result<Response<Incoming>, GatewayError> {
        let timeout = timeout.unwrap_or(self.request_timeout);
        let (parts, body) = request.into_parts();
        let (attempts, replay) = match body {
            OutgoingBody::Replayable(bytes) => (1 + self.retries, Some(bytes)),
            OutgoingBody::Streaming(b) => {
                let req = Request::from_parts(parts, b);
                return self.attempt(req, None, timeout).await.map_err(|(e, _)| e);
            }
        };
        let mut avoid = None;
        let mut last_error = None;
        for _ in 0..attempts {
            let body = replay.clone().map_or_else(body::empty, body::full);
            let req = Request::from_parts(parts.clone(), body);
            match self.attempt(req, avoid, timeout).await {
                Ok(response) => return Ok(response),
                Err((error, Some(failed))) => {
                    tracing::debug!(upstream = %self.name, %error, "connect failed, retrying");
                    avoid = Some(failed);
                    last_error = Some(error);
                }
                Err((error, None)) => return Err(error),
            }
        }
        Err(
            last_error.unwrap_or_else(|| GatewayError::UpstreamUnavailable {
                upstream: self.name.clone(),
                source: "no attempt was made".into(),
            }),
        )
    }

    /// One attempt on one target. On a connect failure the error carries the
    /// target index, meaning a retry is safe.
    async fn attempt(
        &self,
        mut request: Request<Body>,
        avoid: Option<usize>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, (GatewayError, Option<usize>)> {
        let index = self
            .balancer
            .pick(|i| self.targets[i].in_flight.load(Ordering::Relaxed), avoid);
        let target = &self.targets[index];
        *request.uri_mut() = absolute_uri(request.uri(), &target.authority);
        let _guard = InFlight::enter(&target.in_flight);
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Err(_) => Err((
                GatewayError::UpstreamTimeout {
                    upstream: self.name.clone(),
                    timeout,
                },
                None,
            )),
            Ok(Err(error)) if error.is_connect() => Err((
                GatewayError::UpstreamUnavailable {
                    upstream: self.name.clone(),
                    source: Box::new(error),
                },
                Some(index),
            )),
            Ok(Err(error)) => Err((self.classify_failure(error), None)),
        }
    }

    /// Maps a failure after sending: an over-long request body is the client's fault.
    fn classify_failure(&self, error: hyper_util::client::legacy::Error) -> GatewayError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(e) = source {
            if let Some(limit) = e.downcast_ref::<crate::body::BodyLimitExceeded>() {
                return GatewayError::BodyTooLarge { limit: limit.0 };
            }
            source = e.source();
        }
        GatewayError::UpstreamFailed {
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

/// `http://<authority><path and query of uri>`.
fn absolute_uri(uri: &Uri, authority: &Authority) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = uri.path_and_query().cloned();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}
