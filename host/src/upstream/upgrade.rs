//! Upgrade requests (a WebSocket handshake) to a group: a target picked as
//! for any request, a connection of its own, and the raw response, whose
//! `101` the caller turns into a tunnel.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use super::{Affinity, InFlight, Observed, SendError, TargetState, UpstreamError, UpstreamGroup};
use crate::body;

impl UpstreamGroup {
    /// Sends the upgrade request `head` (no body; origin-form URI) to a
    /// target (`affinity` first, as in [`UpstreamGroup::send_to`]) and waits,
    /// at most `timeout` (default: the group's request timeout), for the
    /// response head. A failed connect moves on to another target, up to the
    /// group's retries: nothing was sent.
    pub async fn send_upgrade(
        self: &Arc<Self>,
        head: http::request::Parts,
        timeout: Option<Duration>,
        affinity: Affinity<'_>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let timeout = timeout.unwrap_or(self.request_timeout);
        let _admitted = self
            .limits
            .admit(timeout)
            .await
            .map_err(|refusal| self.circuit_open(refusal))?;
        let mut avoid: Option<Arc<TargetState>> = None;
        let mut last_error = None;
        for _ in 0..self.default_retry.attempts {
            let target = self.choose(affinity, avoid.as_ref())?;
            let _guard = InFlight::enter(&target.in_flight);
            let mut request = Request::from_parts(head.clone(), body::empty());
            let observed = Observed::start(&mut request, &self.name, &target.address);
            let sent =
                tokio::time::timeout(timeout, target.connections.send_upgrade(request)).await;
            observed.finish(&sent, &self.name, &target.address);
            let error = match sent {
                Ok(Ok(response)) => {
                    self.record(&target, Ok(response.status()));
                    return Ok(response);
                }
                Err(_) => {
                    self.record(&target, Err(()));
                    return Err(UpstreamError::Timeout {
                        upstream: self.name.to_string(),
                        timeout,
                    });
                }
                Ok(Err(error @ SendError::Connect { .. })) => error,
                Ok(Err(error)) => {
                    self.record(&target, Err(()));
                    return Err(UpstreamError::Failed {
                        upstream: self.name.to_string(),
                        source: Box::new(error),
                    });
                }
            };
            self.record(&target, Err(()));
            tracing::debug!(upstream = %self.name, %error, "upgrade connect failed");
            avoid = Some(Arc::clone(&target));
            last_error = Some(UpstreamError::Unavailable {
                upstream: self.name.to_string(),
                source: Box::new(error),
            });
        }
        Err(last_error.unwrap_or_else(|| UpstreamError::Unavailable {
            upstream: self.name.to_string(),
            source: "no attempt was made".into(),
        }))
    }
}
