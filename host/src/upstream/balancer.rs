//! Picking a target of an upstream group: smooth weighted round robin and
//! least-request by power of two random choices.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::model::LbPolicy;

/// Chooses target indexes for one upstream group.
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    weights: Vec<u32>,
    /// Round-robin order of target indexes, interleaved by weight.
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer over targets with `weights` (each ≥ 1).
    pub fn new(policy: LbPolicy, weights: Vec<u32>) -> Self {
        let schedule = smooth_schedule(&weights);
        Self {
            policy,
            weights,
            schedule,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks a target; `in_flight(i)` is the number of requests target `i` is serving.
    /// `avoid` names a target to skip when another exists (the one that just failed).
    pub fn pick(&self, in_flight: impl Fn(usize) -> usize, avoid: Option<usize>) -> usize {
        let n = self.weights.len();
        if n <= 1 {
            return 0;
        }
        match self.policy {
            LbPolicy::RoundRobin => {
                let len = self.schedule.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..len)
                    .map(|k| self.schedule[(start + k) % len])
                    .find(|&i| Some(i) != avoid)
                    .unwrap_or(0)
            }
            LbPolicy::LeastRequest => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                if Some(a) == avoid {
                    return b;
                }
                if Some(b) == avoid {
                    return a;
                }
                // Compare in_flight / weight without division.
                let load = |i: usize| in_flight(i) as u64 * u64::from(self.weights[other(i, a, b)]);
                if load(a) <= load(b) { a } else { b }
            }
        }
    }
}

/// The other index of the pair `(a, b)`.
fn other(i: usize, a: usize, b: usize) -> usize {
    if i == a { b } else { a }
}

/// Smooth weighted round robin (as nginx does it), unrolled once over the sum of weights.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
        else {
            break;
        };
        current[best] -= total;
        schedule.push(best);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_follows_weights_and_interleaves() {
        let b = Balancer::new(LbPolicy::RoundRobin, vec![1, 3]);
        let picks: Vec<usize> = (0..8).map(|_| b.pick(|_| 0, None)).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 6);
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 2);
        // Smooth: the light target is interleaved, not left to the end of the cycle.
        assert_eq!(&picks[..4], &[1, 0, 1, 1]);
    }

    #[test]
    fn round_robin_avoids_the_failed_target() {
        let b = Balancer::new(LbPolicy::RoundRobin, vec![1, 1, 1]);
        for _ in 0..10 {
            assert_ne!(b.pick(|_| 0, Some(1)), 1);
        }
    }

    #[test]
    fn least_request_prefers_the_idle_target() {
        let b = Balancer::new(LbPolicy::LeastRequest, vec![1, 1]);
        for _ in 0..50 {
            assert_eq!(b.pick(|i| if i == 0 { 5 } else { 0 }, None), 1);
        }
    }

    #[test]
    fn least_request_weighs_load_by_weight() {
        // Target 1 has 3 in flight but weight 4: 3/4 < 1/1.
        let b = Balancer::new(LbPolicy::LeastRequest, vec![1, 4]);
        for _ in 0..50 {
            assert_eq!(b.pick(|i| if i == 0 { 1 } else { 3 }, None), 1);
        }
    }
}
