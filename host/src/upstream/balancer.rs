//! Picking a target of an upstream group: smooth weighted round robin,
//! least-request by power of two random choices, weighted random, and
//! consistent hashing on a ring; each skips targets that are out of rotation
//! and gives targets in slow start their reduced share.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::ring::Ring;
use crate::config::model::LbPolicy;

/// What the balancer needs to know of the targets as it picks.
pub trait TargetView {
    /// Whether target `i` may take requests now.
    fn available(&self, i: usize) -> bool;
    /// Requests target `i` is serving.
    fn in_flight(&self, i: usize) -> usize;
    /// The share of its weight target `i` gets now (below 1 in slow start).
    fn share(&self, i: usize) -> f64;
}

/// Every target available at full share, none busy (for tests and callers
/// without health state).
#[cfg(test)]
pub struct AllUp;

#[cfg(test)]
impl TargetView for AllUp {
    fn available(&self, _: usize) -> bool {
        true
    }
    fn in_flight(&self, _: usize) -> usize {
        0
    }
    fn share(&self, _: usize) -> f64 {
        1.0
    }
}

/// Chooses target indexes for one set of targets.
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    weights: Vec<u32>,
    /// Running sums of `weights`, for weighted random draws.
    cumulative: Vec<u64>,
    /// Round-robin order of target indexes, interleaved by weight.
    schedule: Vec<usize>,
    next: AtomicUsize,
    /// The hash ring, for consistent hashing.
    ring: Option<Ring>,
}

impl Balancer {
    /// A balancer over targets named `names` with `weights` (each ≥ 1).
    pub fn new(policy: LbPolicy, names: &[&str], weights: Vec<u32>) -> Self {
        let schedule = match policy {
            LbPolicy::RoundRobin => smooth_schedule(&weights),
            _ => Vec::new(),
        };
        let ring =
            matches!(policy, LbPolicy::ConsistentHash(_)).then(|| Ring::new(names, &weights));
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        Self {
            policy,
            weights,
            cumulative,
            schedule,
            next: AtomicUsize::new(0),
            ring,
        }
    }

    /// Picks an available target, or `None` when none is. `hash` is the
    /// request's key for consistent hashing. `avoid` names a target to skip
    /// when another is available (the one that just failed).
    pub fn pick(
        &self,
        view: &impl TargetView,
        hash: Option<u64>,
        avoid: Option<usize>,
    ) -> Option<usize> {
        let n = self.weights.len();
        if n <= 1 {
            return (n == 1 && view.available(0)).then_some(0);
        }
        match (&self.policy, hash, &self.ring) {
            (LbPolicy::RoundRobin, ..) => {
                let len = self.schedule.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let order = (0..len).map(|k| self.schedule[(start + k) % len]);
                self.first_eligible(order, view, avoid)
            }
            (LbPolicy::LeastRequest, ..) => self.least_request(view, avoid),
            (LbPolicy::ConsistentHash(_), Some(hash), Some(ring)) => ring
                .walk(hash)
                .find(|&i| Some(i) != avoid && view.available(i))
                .or_else(|| avoid.filter(|&i| view.available(i))),
            // Random, or a consistent-hash request without its key.
            _ => {
                let start = self.draw();
                self.first_eligible((0..n).map(|k| (start + k) % n), view, avoid)
            }
        }
    }

    /// A target drawn at random in proportion to its weight.
    fn draw(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let r = fastrand::u64(..total);
        self.cumulative.partition_point(|&sum| sum <= r)
    }

    /// The first target of `order` that is available and not `avoid`ed; one
    /// in slow start is taken with the probability of its share. Falls back
    /// to an available target slow start passed over, then to `avoid`.
    fn first_eligible(
        &self,
        order: impl Iterator<Item = usize>,
        view: &impl TargetView,
        avoid: Option<usize>,
    ) -> Option<usize> {
        let mut passed_over = None;
        for i in order {
            if Some(i) == avoid || !view.available(i) {
                continue;
            }
            let share = view.share(i);
            if share >= 1.0 || fastrand::f64() < share {
                return Some(i);
            }
            passed_over.get_or_insert(i);
        }
        passed_over.or_else(|| avoid.filter(|&i| view.available(i)))
    }

    /// Power of two choices among eligible targets: the one with fewer
    /// requests in flight per unit of (slow-start adjusted) weight.
    fn least_request(&self, view: &impl TargetView, avoid: Option<usize>) -> Option<usize> {
        let n = self.weights.len();
        let eligible = |i: usize| Some(i) != avoid && view.available(i);
        let a = fastrand::usize(..n);
        let mut b = fastrand::usize(..n - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = match (eligible(a), eligible(b)) {
            (true, true) => (a, b),
            // Some are out: choose among those that are in, from a random start.
            _ => {
                let start = fastrand::usize(..n);
                let mut found = (0..n).map(|k| (start + k) % n).filter(|&i| eligible(i));
                match (found.next(), found.next()) {
                    (Some(a), Some(b)) => (a, b),
                    (Some(a), None) => return Some(a),
                    _ => return avoid.filter(|&i| view.available(i)),
                }
            }
        };
        let weight = |i: usize| f64::from(self.weights[i]) * view.share(i);
        // Compare in_flight / weight without division.
        let load = |i: usize, other: usize| view.in_flight(i) as f64 * weight(other);
        Some(if load(a, b) <= load(b, a) { a } else { b })
    }
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
    use crate::config::model::HashKey;

    struct Down<'a>(&'a [usize]);

    impl TargetView for Down<'_> {
        fn available(&self, i: usize) -> bool {
            !self.0.contains(&i)
        }
        fn in_flight(&self, _: usize) -> usize {
            0
        }
        fn share(&self, _: usize) -> f64 {
            1.0
        }
    }

    struct Busy(Vec<usize>);

    impl TargetView for Busy {
        fn available(&self, _: usize) -> bool {
            true
        }
        fn in_flight(&self, i: usize) -> usize {
            self.0[i]
        }
        fn share(&self, _: usize) -> f64 {
            1.0
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    fn balancer(policy: LbPolicy, weights: Vec<u32>) -> Balancer {
        let names = names(weights.len());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Balancer::new(policy, &names, weights)
    }

    #[test]
    fn round_robin_follows_weights_and_interleaves() {
        let b = balancer(LbPolicy::RoundRobin, vec![1, 3]);
        let picks: Vec<usize> = (0..8).filter_map(|_| b.pick(&AllUp, None, None)).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 6);
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 2);
        // Smooth: the light target is interleaved, not left to the end of the cycle.
        assert_eq!(&picks[..4], &[1, 0, 1, 1]);
    }

    #[test]
    fn round_robin_avoids_the_failed_target() {
        let b = balancer(LbPolicy::RoundRobin, vec![1, 1, 1]);
        for _ in 0..10 {
            assert_ne!(b.pick(&AllUp, None, Some(1)), Some(1));
        }
    }

    #[test]
    fn every_policy_skips_targets_out_of_rotation_and_says_when_none_is_left() {
        let policies = [
            LbPolicy::RoundRobin,
            LbPolicy::LeastRequest,
            LbPolicy::Random,
            LbPolicy::ConsistentHash(HashKey::ClientIp),
        ];
        for policy in policies {
            let b = balancer(policy.clone(), vec![1, 2, 3]);
            for k in 0..200u64 {
                assert_eq!(
                    b.pick(&Down(&[0, 2]), Some(k * 7919), None),
                    Some(1),
                    "{policy:?}"
                );
            }
            assert_eq!(b.pick(&Down(&[0, 1, 2]), Some(1), None), None, "{policy:?}");
            // The failed target is taken again only when it is the last one in.
            assert_eq!(
                b.pick(&Down(&[0, 2]), Some(5), Some(1)),
                Some(1),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn least_request_prefers_the_idle_target() {
        let b = balancer(LbPolicy::LeastRequest, vec![1, 1]);
        for _ in 0..50 {
            assert_eq!(b.pick(&Busy(vec![5, 0]), None, None), Some(1));
        }
    }

    #[test]
    fn least_request_weighs_load_by_weight() {
        // Target 1 has 3 in flight but weight 4: 3/4 < 1/1.
        let b = balancer(LbPolicy::LeastRequest, vec![1, 4]);
        for _ in 0..50 {
            assert_eq!(b.pick(&Busy(vec![1, 3]), None, None), Some(1));
        }
    }

    #[test]
    fn random_follows_weights() {
        let b = balancer(LbPolicy::Random, vec![1, 3]);
        let heavy = (0..20_000)
            .filter(|_| b.pick(&AllUp, None, None) == Some(1))
            .count();
        assert!((14_000..16_000).contains(&heavy), "{heavy} of 20000");
    }

    #[test]
    fn consistent_hash_keeps_a_key_on_its_target_and_moves_it_when_that_one_is_out() {
        let b = balancer(
            LbPolicy::ConsistentHash(HashKey::ClientIp),
            vec![1, 1, 1, 1],
        );
        for key in 0..500u64 {
            let hash = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let home = b.pick(&AllUp, Some(hash), None);
            assert_eq!(b.pick(&AllUp, Some(hash), None), home);
            let Some(home) = home else {
                panic!("no target")
            };
            let moved = b.pick(&Down(&[home]), Some(hash), None);
            assert!(moved.is_some_and(|m| m != home));
        }
    }

    #[test]
    fn slow_start_lowers_a_targets_share() {
        struct Ramping;
        impl TargetView for Ramping {
            fn available(&self, _: usize) -> bool {
                true
            }
            fn in_flight(&self, _: usize) -> usize {
                0
            }
            fn share(&self, i: usize) -> f64 {
                if i == 0 { 0.1 } else { 1.0 }
            }
        }
        let b = balancer(LbPolicy::RoundRobin, vec![1, 1]);
        let ramping = (0..10_000)
            .filter(|_| b.pick(&Ramping, None, None) == Some(0))
            .count();
        // Half the turns are target 0's, and a tenth of those are taken.
        assert!((300..800).contains(&ramping), "{ramping} of 10000");
    }
}
