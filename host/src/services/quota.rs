//! Per-plugin quotas on what a plugin may hold in the shared services (metrics,
//! queues, shared data) and how fast it may log, with the log's token bucket
//! and the rate limit on the warning a quota hit produces.
//!
//! Pure accounting: knows no wasmtime. The manifest's `limits:` fills a
//! [`Quotas`] (a validated config type); the services enforce it and answer
//! [`QuotaExceeded`]; the host calls turn that into the ABI's status.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::config::model::Quotas;

/// How long a quota stays quiet after it was warned about.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// One of the quotas, named as the manifest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// `metrics`.
    Metrics = 0,
    /// `queues`.
    Queues = 1,
    /// `queue_bytes`.
    QueueBytes = 2,
    /// `shared_data_bytes`.
    SharedDataBytes = 3,
    /// `log_bytes_per_second`.
    LogRate = 4,
}

impl Quota {
    /// The manifest field.
    pub fn name(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Queues => "queues",
            Self::QueueBytes => "queue_bytes",
            Self::SharedDataBytes => "shared_data_bytes",
            Self::LogRate => "log_bytes_per_second",
        }
    }

    /// Its value in `quotas`.
    pub fn limit(self, quotas: &Quotas) -> u64 {
        match self {
            Self::Metrics => quotas.metrics as u64,
            Self::Queues => quotas.queues as u64,
            Self::QueueBytes => quotas.queue_bytes,
            Self::SharedDataBytes => quotas.shared_data_bytes,
            Self::LogRate => quotas.log_bytes_per_second,
        }
    }
}

/// A plugin asked for more than its quota allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("over its `{}` quota", quota.name())]
pub struct QuotaExceeded {
    /// Which quota.
    pub quota: Quota,
}

impl From<Quota> for QuotaExceeded {
    fn from(quota: Quota) -> Self {
        Self { quota }
    }
}

/// A token bucket of log bytes: refills at the rate, holds one second's worth.
#[derive(Debug)]
pub struct LogBucket {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl LogBucket {
    /// A full bucket refilling at `bytes_per_second`.
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            rate: bytes_per_second,
            state: Mutex::new((bytes_per_second as f64, Instant::now())),
        }
    }

    /// Takes `bytes` tokens if there are that many now; `false` means drop the message.
    pub fn take(&self, bytes: usize) -> bool {
        self.take_at(bytes, Instant::now())
    }

    fn take_at(&self, bytes: usize, now: Instant) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        let rate = self.rate as f64;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(rate);
        *last = now;
        let cost = bytes as f64;
        if cost <= *tokens {
            *tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// When each quota of one plugin was last warned about, so a plugin that keeps
/// hitting a quota produces one warning per [`WARN_INTERVAL`], not a flood.
#[derive(Debug)]
pub struct Warnings {
    epoch: Instant,
    /// Per quota: milliseconds after `epoch` of the last warning, plus one (0 = never).
    last: [AtomicU64; 5],
}

impl Default for Warnings {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last: Default::default(),
        }
    }
}

impl Warnings {
    /// Whether to warn about `quota` now (and if so, starts its quiet interval).
    pub fn should_warn(&self, quota: Quota) -> bool {
        self.should_warn_at(quota, Instant::now())
    }

    fn should_warn_at(&self, quota: Quota, now: Instant) -> bool {
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let interval = WARN_INTERVAL.as_millis() as u64;
        let slot = &self.last[quota as usize];
        slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            (last == 0 || now_ms.saturating_sub(last) >= interval).then_some(now_ms)
        })
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_bucket_holds_one_second_and_refills_at_the_rate() {
        let bucket = LogBucket::new(1000);
        let start = Instant::now();
        assert!(bucket.take_at(600, start));
        assert!(bucket.take_at(400, start));
        assert!(!bucket.take_at(1, start), "empty");
        let later = start + Duration::from_millis(250);
        assert!(!bucket.take_at(251, later), "250 bytes came back, not 251");
        assert!(bucket.take_at(250, later));
        let much_later = later + Duration::from_secs(60);
        assert!(
            !bucket.take_at(1001, much_later),
            "never more than one second's worth"
        );
        assert!(bucket.take_at(1000, much_later));
    }

    #[test]
    fn a_quota_is_warned_about_once_per_interval() {
        let warnings = Warnings::default();
        let start = Instant::now();
        assert!(warnings.should_warn_at(Quota::QueueBytes, start));
        assert!(!warnings.should_warn_at(Quota::QueueBytes, start + Duration::from_secs(1)));
        assert!(
            warnings.should_warn_at(Quota::Metrics, start),
            "each quota has its own interval"
        );
        assert!(warnings.should_warn_at(Quota::QueueBytes, start + WARN_INTERVAL));
    }
}
