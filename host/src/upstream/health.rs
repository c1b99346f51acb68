//! One target's health: what active probes found, whether passive outlier
//! detection has ejected it and until when, and how far it is into slow start.
//!
//! Every field is an atomic so the request path reads it without a lock;
//! times are milliseconds on [`now_ms`]'s clock.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::model::{ActiveCheck, OutlierDetection};

/// Milliseconds since the first call in this process (never 0, so 0 can mean "never").
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The share of its weight a target in slow start gets at first.
const SLOW_START_FLOOR: f64 = 0.1;

/// A change of a target's state worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Active probes took it out.
    ProbedDown,
    /// Active probes brought it back.
    ProbedUp,
    /// Passive detection ejected it for this long.
    Ejected(Duration),
}

/// The health state of one target.
#[derive(Debug)]
pub struct Health {
    /// The last verdict of active probes (true when there are none).
    probed_up: AtomicBool,
    /// Consecutive probe results: positive successes, negative failures.
    probe_streak: AtomicI32,
    /// Consecutive failed requests since the last success or ejection.
    failures: AtomicU32,
    /// Ejected until then (0: never ejected).
    ejected_until: AtomicU64,
    /// Ejections so far, less those forgiven by time spent back in service.
    ejections: AtomicU32,
    /// When it last came back into service (joined, probed up, or its
    /// ejection ended); slow start counts from here.
    back_since: AtomicU64,
    /// Ejections over the target's life (for the admin API and metrics).
    ejected_total: AtomicU64,
}

impl Health {
    /// A target that has just joined its group: healthy, and at the start of
    /// slow start if the group has one.
    pub fn new() -> Self {
        Self::since(now_ms())
    }

    /// A target that was there when its group started: healthy, past slow start.
    pub fn settled() -> Self {
        Self::since(0)
    }

    fn since(back_since: u64) -> Self {
        Self {
            probed_up: AtomicBool::new(true),
            probe_streak: AtomicI32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            back_since: AtomicU64::new(back_since),
            ejected_total: AtomicU64::new(0),
        }
    }

    /// Whether requests may go to the target at `now`.
    pub fn available(&self, now: u64) -> bool {
        self.probed_up.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// Whether passive detection holds the target out at `now`.
    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Times passive detection has ejected the target.
    pub fn ejected_total(&self) -> u64 {
        self.ejected_total.load(Ordering::Relaxed)
    }

    /// The share of its weight the target gets at `now` during a slow start
    /// of `window`: from a tenth up to all of it, linearly.
    pub fn slow_start_share(&self, window: Duration, now: u64) -> f64 {
        let since = self
            .back_since
            .load(Ordering::Relaxed)
            .max(self.ejected_until.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(since) as f64;
        let window = ms(window).max(1) as f64;
        (elapsed / window).clamp(SLOW_START_FLOOR, 1.0)
    }

    /// Records an active probe's result; returns the transition it caused.
    pub fn record_probe(&self, passed: bool, check: &ActiveCheck) -> Option<Transition> {
        let next = |s: i32| match (passed, s > 0) {
            (true, true) => s.saturating_add(1),
            (true, false) => 1,
            (false, false) => s.saturating_sub(1),
            (false, true) => -1,
        };
        let streak = self
            .probe_streak
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(next(s)))
            .map_or(0, next);
        let up = self.probed_up.load(Ordering::Relaxed);
        if up && !passed && streak.unsigned_abs() >= check.unhealthy {
            self.probed_up.store(false, Ordering::Relaxed);
            return Some(Transition::ProbedDown);
        }
        if !up && passed && streak.unsigned_abs() >= check.healthy {
            self.back_since.store(now_ms(), Ordering::Relaxed);
            self.probed_up.store(true, Ordering::Relaxed);
            return Some(Transition::ProbedUp);
        }
        None
    }

    /// Records a request that succeeded (resets the run of failures).
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failed request. When the run of failures reaches the
    /// detection's threshold and `may_eject` allows it, ejects the target
    /// for a time that grows with its recent ejections.
    pub fn record_failure(
        &self,
        detection: &OutlierDetection,
        now: u64,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Transition> {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < detection.failures || self.ejected(now) || !may_eject() {
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        // Time back in service forgives one ejection per base ejection length.
        let ended = self.ejected_until.load(Ordering::Relaxed);
        let forgiven = if ended == 0 {
            0
        } else {
            now.saturating_sub(ended) / ms(detection.ejection).max(1)
        };
        let previous = u64::from(self.ejections.load(Ordering::Relaxed));
        let count = previous.saturating_sub(forgiven) + 1;
        self.ejections
            .store(u32::try_from(count).unwrap_or(u32::MAX), Ordering::Relaxed);
        let length = detection
            .ejection
            .saturating_mul(u32::try_from(count).unwrap_or(u32::MAX))
            .min(detection.max_ejection);
        self.ejected_until
            .store(now.saturating_add(ms(length)), Ordering::Relaxed);
        self.ejected_total.fetch_add(1, Ordering::Relaxed);
        Some(Transition::Ejected(length))
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ProbeKind;

    fn detection() -> OutlierDetection {
        OutlierDetection {
            failures: 3,
            ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected_percent: 50,
        }
    }

    fn check() -> ActiveCheck {
        ActiveCheck {
            kind: ProbeKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy: 2,
            unhealthy: 3,
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let health = Health::new();
        let now = now_ms();
        health.record_failure(&detection(), now, || true);
        health.record_success();
        health.record_failure(&detection(), now, || true);
        assert_eq!(health.record_failure(&detection(), now, || true), None);
        assert!(health.available(now));
        assert_eq!(
            health.record_failure(&detection(), now, || true),
            Some(Transition::Ejected(Duration::from_secs(10)))
        );
        assert!(!health.available(now + 9_999));
        assert!(health.available(now + 10_000));
    }

    #[test]
    fn ejections_grow_to_the_cap_and_are_forgiven_by_time() {
        let health = Health::new();
        let d = detection();
        let eject = |at: u64| {
            (0..3)
                .filter_map(|_| health.record_failure(&d, at, || true))
                .next()
        };
        let t0 = now_ms();
        assert_eq!(
            eject(t0),
            Some(Transition::Ejected(Duration::from_secs(10)))
        );
        let t1 = t0 + 10_000;
        assert_eq!(
            eject(t1),
            Some(Transition::Ejected(Duration::from_secs(20)))
        );
        let t2 = t1 + 20_000;
        assert_eq!(
            eject(t2),
            Some(Transition::Ejected(Duration::from_secs(25)))
        );
        // 100 s back in service forgives every ejection so far.
        let t3 = t2 + 25_000 + 100_000;
        assert_eq!(
            eject(t3),
            Some(Transition::Ejected(Duration::from_secs(10)))
        );
        assert_eq!(health.ejected_total(), 4);
    }

    #[test]
    fn the_cap_on_ejected_targets_holds_a_target_in() {
        let health = Health::new();
        let now = now_ms();
        for _ in 0..10 {
            assert_eq!(health.record_failure(&detection(), now, || false), None);
        }
        assert!(health.available(now));
    }

    #[test]
    fn probes_flip_the_target_at_their_thresholds() {
        let health = Health::new();
        let c = check();
        assert_eq!(health.record_probe(false, &c), None);
        assert_eq!(health.record_probe(false, &c), None);
        assert_eq!(health.record_probe(false, &c), Some(Transition::ProbedDown));
        assert!(!health.available(now_ms()));
        assert_eq!(health.record_probe(true, &c), None);
        assert_eq!(health.record_probe(false, &c), None);
        assert_eq!(health.record_probe(true, &c), None);
        assert_eq!(health.record_probe(true, &c), Some(Transition::ProbedUp));
        assert!(health.available(now_ms()));
    }

    #[test]
    fn slow_start_ramps_from_a_tenth_to_all() {
        let health = Health::new();
        let start = health.back_since.load(Ordering::Relaxed);
        let window = Duration::from_secs(10);
        assert!((health.slow_start_share(window, start) - 0.1).abs() < 1e-9);
        assert!((health.slow_start_share(window, start + 5_000) - 0.5).abs() < 1e-9);
        assert!((health.slow_start_share(window, start + 20_000) - 1.0).abs() < 1e-9);
    }
}
