//! A route's requests shared between upstream groups by weight (`split`):
//! each request is placed at a point of the weights' range, at random or,
//! when the route is sticky, by the hash of its key, and goes to the group
//! whose share holds that point.
//!
//! The shares lie side by side in file order, so while the weights stay the
//! same a key always lands on the same group, and when a later group's
//! weight grows at the expense of an earlier one (a canary going from 5% to
//! 50%), the keys already on it stay there.

use std::sync::Arc;

use http::{HeaderMap, Uri};

use crate::config::model::HashKey;
use crate::upstream::{UpstreamGroup, key_hash};

/// The groups of a split with their shares, ready to choose from.
pub struct Split {
    /// The groups in file order, each with the end of its share (a running
    /// sum of the weights: group `i` holds the points from the end of
    /// `i - 1` to below its own).
    groups: Vec<(Arc<UpstreamGroup>, u64)>,
    /// The sum of the weights (more than 0).
    total: u64,
    sticky: Option<HashKey>,
}

impl Split {
    /// Its upstream groups, in file order.
    pub fn groups(&self) -> impl Iterator<Item = &Arc<UpstreamGroup>> {
        self.groups.iter().map(|(group, _)| group)
    }

    /// A split over `groups` with their weights (the sum must be positive;
    /// `config::validate` checks it).
    pub fn new(groups: Vec<(Arc<UpstreamGroup>, u32)>, sticky: Option<HashKey>) -> Self {
        let mut total = 0u64;
        let groups = groups
            .into_iter()
            .map(|(group, weight)| {
                total += u64::from(weight);
                (group, total)
            })
            .collect();
        Self {
            groups,
            total: total.max(1),
            sticky,
        }
    }

    /// The group a request (its `headers` and `uri`) from `client_ip` goes to.
    pub fn choose(&self, headers: &HeaderMap, uri: &Uri, client_ip: &str) -> &Arc<UpstreamGroup> {
        let sticky = (self.sticky.as_ref()).and_then(|key| key_hash(key, headers, uri, client_ip));
        let point = match sticky {
            Some(hash) => scale(hash, self.total),
            None => fastrand::u64(..self.total),
        };
        self.at(point)
    }

    /// The group whose share holds `point` (below `total`).
    fn at(&self, point: u64) -> &Arc<UpstreamGroup> {
        let found = self.groups.iter().find(|(_, end)| point < *end);
        // The last share ends at `total`, so a point below it is always found.
        let (group, _) = found.unwrap_or_else(|| &self.groups[self.groups.len() - 1]);
        group
    }
}

/// `hash` scaled down to a point below `total`, evenly (multiply and shift,
/// which unlike `%` keeps every point's share the same).
fn scale(hash: u64, total: u64) -> u64 {
    ((u128::from(hash) * u128::from(total)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::hash_key;

    #[test]
    fn spreads_keys_evenly_over_the_range() {
        let mut buckets = [0u32; 10];
        for i in 0..100_000 {
            let point = scale(hash_key(format!("user-{i}").as_bytes()), 10);
            buckets[point as usize] += 1;
        }
        for count in buckets {
            assert!((9_500..=10_500).contains(&count), "{buckets:?}");
        }
    }
}
