//! What the gateway tells its operators about the requests it serves. A
//! [`Record`] follows each request; the layers it passes fill it in, and
//! once its response has been sent (or has failed) the [`Observer`]
//! settles it into the [`Metrics`], the [`AccessLog`] and, when traces
//! are on, the request's span for the [`Tracer`].
//!
//! Knows no other module of the gateway: the layers above call into it.

pub mod access_log;
pub mod metrics;
pub mod otlp;
mod record;
pub mod reloads;
pub mod route_stats;
pub mod trace;

pub use access_log::AccessLog;
pub use metrics::{Format, Metrics, SpanCounters};
pub use record::{Details, Flag, Record, TlsSession};
pub use reloads::{Reload, Reloads};
pub use route_stats::{RouteStats, RouteTotals};
pub use trace::Tracer;

/// A share of requests kept (logged, or traced when new), decided by a
/// 64-bit hash of each: kept when it falls below the share of the hash space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample(u64);

impl Sample {
    /// Keeps `share` of the requests (0.0 none, 1.0 and above every one).
    pub fn new(share: f64) -> Self {
        Self(if share >= 1.0 {
            u64::MAX
        } else if share <= 0.0 {
            0
        } else {
            // A share of the hash space; the precision lost is far below a request.
            (share * u64::MAX as f64) as u64
        })
    }

    /// Whether the request whose hash `hash` gives is kept; the hash is not
    /// computed when every request is.
    pub fn keeps(self, hash: impl FnOnce() -> u64) -> bool {
        self.0 == u64::MAX || hash() < self.0
    }
}

/// The record of the request `extensions` belong to, if it has one (the
/// lifecycle puts it there on arrival; outgoing requests keep it).
pub fn record_of(extensions: &http::Extensions) -> Option<&std::sync::Arc<Record>> {
    extensions.get::<std::sync::Arc<Record>>()
}

/// The sinks a gateway's requests are settled into.
#[derive(Debug, Default)]
pub struct Observer {
    /// The gateway's metrics.
    pub metrics: Metrics,
    /// Each route's request and error totals (the status page's rates).
    pub routes: RouteTotals,
    /// The last reloads, applied or refused.
    pub reloads: Reloads,
    access_log: Option<AccessLog>,
    tracer: Option<Tracer>,
}

impl Observer {
    /// An observer over `metrics`, writing `access_log` if it is given.
    pub fn new(metrics: Metrics, access_log: Option<AccessLog>) -> Self {
        Self {
            metrics,
            routes: RouteTotals::default(),
            reloads: Reloads::default(),
            access_log,
            tracer: None,
        }
    }

    /// Traces requests with `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// The tracer, when traces are on.
    pub fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_ref()
    }

    /// Counts and logs a request whose response is done.
    pub fn settle(&self, record: &std::sync::Arc<Record>) {
        // One clock read for both: the request is done now.
        let elapsed = record.elapsed();
        let status = self.metrics.count(record, elapsed);
        if let Some(log) = &self.access_log {
            log.log(record, status, elapsed);
        }
        record.end_span();
    }

    /// Writes the access log's waiting lines and exports the waiting
    /// spans now, the spans `within` at most (at shutdown).
    pub async fn flush(&self, within: std::time::Duration) {
        if let Some(log) = &self.access_log {
            log.flush();
        }
        if let Some(tracer) = &self.tracer {
            tracer.flush(within).await;
        }
    }

    /// Asks the access log to reopen its file (after rotation).
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
    }
}
