//! A group's circuit breaking: slots for requests in flight (with a bounded
//! queue of pending ones), a budget for retries in flight, and the
//! error-rate breaker that opens on a window's failures, lets one probe
//! through when half-open and closes when it succeeds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::health::now_ms;
use crate::config::model::{CircuitBreaker, ErrorBreaker, RetryPolicy};

/// Why a request was refused by the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_requests` are in flight and `max_pending` wait already.
    Requests,
    /// `max_requests` stayed in flight until the request's time ran out.
    PendingTimedOut,
    /// The error-rate breaker is open.
    ErrorRate,
}

impl Refusal {
    /// The reason, for the error message.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Requests => "too many requests in flight and pending",
            Self::PendingTimedOut => "no request slot freed in time",
            Self::ErrorRate => "too many recent requests failed",
        }
    }
}

/// The live limits of one group.
pub struct Limits {
    requests: Semaphore,
    max_requests: usize,
    max_pending: usize,
    pending: AtomicUsize,
    max_retries: usize,
    retries: Arc<AtomicUsize>,
    /// Connections open to the group's targets (shared with their pools).
    pub connections: Arc<Semaphore>,
    errors: Option<Mutex<ErrorWindow>>,
}

/// A request's place among those in flight; also says whether it is the
/// error-rate breaker's half-open probe.
pub struct Admitted<'a> {
    _slot: SemaphorePermit<'a>,
    /// Whether this request's outcome decides a half-open breaker.
    pub probe: bool,
}

/// A retry in flight, counted against the budget until dropped.
pub struct RetrySlot(Arc<AtomicUsize>);

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limits {
    /// The limits `config` sets.
    pub fn new(config: &CircuitBreaker) -> Self {
        Self {
            requests: Semaphore::new(config.max_requests),
            max_requests: config.max_requests,
            max_pending: config.max_pending,
            pending: AtomicUsize::new(0),
            max_retries: config.max_retries,
            retries: Arc::new(AtomicUsize::new(0)),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            errors: config
                .errors
                .clone()
                .map(|c| Mutex::new(ErrorWindow::new(c))),
        }
    }

    /// Admits a request: a free slot, or one freed within `wait` while it
    /// is among the pending; and a breaker that is not open.
    pub async fn admit(&self, wait: Duration) -> Result<Admitted<'_>, Refusal> {
        let slot = match self.requests.try_acquire() {
            Ok(slot) => slot,
            Err(_) => {
                let queued = self.pending.fetch_add(1, Ordering::Relaxed);
                let _leave = Leave(&self.pending);
                if queued >= self.max_pending {
                    return Err(Refusal::Requests);
                }
                let acquire = self.requests.acquire();
                match tokio::time::timeout(wait, acquire).await {
                    Ok(Ok(slot)) => slot,
                    _ => return Err(Refusal::PendingTimedOut),
                }
            }
        };
        let probe = match &self.errors {
            None => false,
            Some(window) => lock(window).admit(now_ms()).ok_or(Refusal::ErrorRate)?,
        };
        Ok(Admitted { _slot: slot, probe })
    }

    /// A slot for one more retry, if neither the budget (`policy`'s share of
    /// the requests in flight, or its minimum) nor `max_retries` is spent.
    pub fn retry(&self, policy: &RetryPolicy) -> Option<RetrySlot> {
        let in_flight = self.max_requests - self.requests.available_permits();
        let budget = (in_flight * policy.budget_percent as usize / 100)
            .max(policy.budget_min as usize)
            .min(self.max_retries);
        let taken = self
            .retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r < budget).then_some(r + 1)
            });
        taken.is_ok().then(|| RetrySlot(Arc::clone(&self.retries)))
    }

    /// The error-rate breaker's state now: `closed` (also with no
    /// breaker), `open` or `half_open`.
    pub fn circuit(&self) -> &'static str {
        let Some(window) = &self.errors else {
            return "closed";
        };
        match lock(window).state {
            State::Closed => "closed",
            State::Open { until } if now_ms() < until => "open",
            State::Open { .. } | State::HalfOpen { .. } => "half_open",
        }
    }

    /// Feeds the error-rate breaker with an exchange's outcome; returns
    /// whether it opened.
    pub fn record(&self, failed: bool, probe: bool) -> bool {
        self.errors
            .as_ref()
            .is_some_and(|w| lock(w).record(now_ms(), failed, probe))
    }
}

fn lock(window: &Mutex<ErrorWindow>) -> MutexGuard<'_, ErrorWindow> {
    // The window stays consistent even if a holder panicked.
    window
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes a request off the pending count when it leaves the queue.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Buckets the window is counted in.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: u64,
    },
    /// A probe went through at `since`; another may go if it never reports
    /// within the open time.
    HalfOpen {
        since: u64,
    },
}

/// The error-rate breaker's state and its window of outcomes.
struct ErrorWindow {
    config: ErrorBreaker,
    state: State,
    /// Requests and failures per bucket, and the bucket each slot holds.
    counts: [(u64, u32, u32); BUCKETS],
}

impl ErrorWindow {
    fn new(config: ErrorBreaker) -> Self {
        Self {
            config,
            state: State::Closed,
            counts: [(0, 0, 0); BUCKETS],
        }
    }

    fn bucket_ms(&self) -> u64 {
        (u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX) / BUCKETS as u64).max(1)
    }

    fn open_ms(&self) -> u64 {
        u64::try_from(self.config.open_for.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a request may go at `now`: `Some(true)` for the half-open
    /// probe, `Some(false)` while closed, `None` while open.
    fn admit(&mut self, now: u64) -> Option<bool> {
        match self.state {
            State::Closed => Some(false),
            State::Open { until } if now < until => None,
            State::HalfOpen { since } if now < since.saturating_add(self.open_ms()) => None,
            State::Open { .. } | State::HalfOpen { .. } => {
                self.state = State::HalfOpen { since: now };
                Some(true)
            }
        }
    }

    /// Counts an outcome; returns whether the breaker opened.
    fn record(&mut self, now: u64, failed: bool, probe: bool) -> bool {
        if probe {
            self.counts = [(0, 0, 0); BUCKETS];
            if failed {
                self.state = State::Open {
                    until: now.saturating_add(self.open_ms()),
                };
                return true;
            }
            self.state = State::Closed;
            return false;
        }
        if self.state != State::Closed {
            return false;
        }
        let bucket = now / self.bucket_ms();
        let slot = &mut self.counts[(bucket % BUCKETS as u64) as usize];
        if slot.0 != bucket {
            *slot = (bucket, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u32::from(failed);
        let oldest = bucket.saturating_sub(BUCKETS as u64 - 1);
        let (requests, failures) = self
            .counts
            .iter()
            .filter(|(b, ..)| *b >= oldest)
            .fold((0u64, 0u64), |(r, f), (_, rs, fs)| {
                (r + u64::from(*rs), f + u64::from(*fs))
            });
        if requests >= u64::from(self.config.min_requests)
            && failures * 100 >= u64::from(self.config.percent) * requests
        {
            self.state = State::Open {
                until: now.saturating_add(self.open_ms()),
            };
            self.counts = [(0, 0, 0); BUCKETS];
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> ErrorWindow {
        ErrorWindow::new(ErrorBreaker {
            percent: 50,
            min_requests: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        })
    }

    #[test]
    fn opens_at_the_rate_fails_fast_half_opens_and_closes_on_a_good_probe() {
        let mut w = window();
        let t = 1_000_000;
        assert!(!w.record(t, true, false));
        assert!(!w.record(t, false, false));
        assert!(
            !w.record(t, false, false),
            "3 requests are under the minimum"
        );
        assert!(w.record(t, true, false), "2 of 4 failed");
        assert_eq!(w.admit(t + 4_999), None);
        assert_eq!(w.admit(t + 5_000), Some(true), "one probe");
        assert_eq!(w.admit(t + 5_001), None, "only one");
        assert!(!w.record(t + 5_002, false, true));
        assert_eq!(w.admit(t + 5_003), Some(false));
    }

    #[test]
    fn a_failed_probe_opens_again_and_a_lost_one_is_replaced() {
        let mut w = window();
        let t = 1_000_000;
        for _ in 0..4 {
            w.record(t, true, false);
        }
        assert_eq!(w.admit(t + 5_000), Some(true));
        assert!(w.record(t + 5_010, true, true));
        assert_eq!(w.admit(t + 10_009), None);
        assert_eq!(w.admit(t + 10_010), Some(true));
        // That probe never reports: after the open time another may go.
        assert_eq!(w.admit(t + 15_009), None);
        assert_eq!(w.admit(t + 15_010), Some(true));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut w = window();
        let t = 1_000_000;
        w.record(t, true, false);
        w.record(t, true, false);
        w.record(t, true, false);
        // Ten seconds on, those three are out of the window.
        assert!(!w.record(t + 10_000, true, false));
        assert!(!w.record(t + 10_000, false, false));
        assert!(!w.record(t + 10_000, false, false));
        assert!(!w.record(t + 10_000, false, false), "1 of 4 failed");
    }

    #[tokio::test]
    async fn requests_past_the_slots_wait_in_a_bounded_queue() {
        let limits = Limits::new(&CircuitBreaker {
            max_requests: 1,
            max_pending: 1,
            ..CircuitBreaker::default()
        });
        let first = limits.admit(Duration::from_secs(1)).await;
        assert!(first.is_ok());
        let waiting = limits.admit(Duration::from_millis(50));
        let (waited, refused) = tokio::join!(waiting, async {
            tokio::task::yield_now().await;
            limits.admit(Duration::from_secs(1)).await
        });
        assert_eq!(waited.err(), Some(Refusal::PendingTimedOut));
        assert_eq!(refused.err(), Some(Refusal::Requests));
        drop(first);
        assert!(limits.admit(Duration::from_millis(50)).await.is_ok());
    }

    #[test]
    fn the_retry_budget_is_a_share_of_requests_in_flight_or_its_minimum() {
        let limits = Limits::new(&CircuitBreaker::default());
        let policy = RetryPolicy {
            budget_percent: 20,
            budget_min: 2,
            ..RetryPolicy::default()
        };
        let a = limits.retry(&policy);
        let b = limits.retry(&policy);
        assert!(a.is_some() && b.is_some());
        assert!(
            limits.retry(&policy).is_none(),
            "the minimum of two is spent"
        );
        drop(a);
        assert!(limits.retry(&policy).is_some());
    }
}
