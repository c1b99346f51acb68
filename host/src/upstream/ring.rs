//! A consistent-hash ring (Ketama style): each target owns points on a
//! 64-bit circle in proportion to its weight, placed by hashing its address,
//! so a key's target depends only on the addresses in the set. Adding or
//! removing a target moves only the keys whose points it takes or held.

use xxhash_rust::xxh3::xxh3_64;

/// Points per unit of weight.
const POINTS_PER_WEIGHT: u64 = 160;
/// The most points a ring holds, however many targets and weights.
const MAX_POINTS: u64 = 160_000;

/// Points on the circle, sorted, each naming a target index.
#[derive(Debug)]
pub struct Ring {
    points: Vec<(u64, usize)>,
    targets: usize,
}

impl Ring {
    /// A ring over targets `names` (their addresses) with `weights`.
    pub fn new(names: &[&str], weights: &[u32]) -> Self {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let per_weight = (MAX_POINTS / total.max(1)).clamp(1, POINTS_PER_WEIGHT);
        let mut points = Vec::new();
        for (index, (name, &weight)) in names.iter().zip(weights).enumerate() {
            for k in 0..u64::from(weight) * per_weight {
                points.push((xxh3_64(format!("{name}#{k}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Self {
            points,
            targets: names.len(),
        }
    }

    /// The targets in the order a key hashed to `hash` tries them: the owner
    /// of the first point at or after it, then each next distinct owner
    /// around the circle.
    pub fn walk(&self, hash: u64) -> Walk<'_> {
        Walk {
            ring: self,
            position: self.points.partition_point(|&(point, _)| point < hash),
            steps: 0,
            first: None,
            seen: Vec::new(),
        }
    }
}

/// Hashes a request's key onto the ring's circle.
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Distinct targets around the ring from a key's position.
pub struct Walk<'a> {
    ring: &'a Ring,
    position: usize,
    steps: usize,
    /// The key's own target.
    first: Option<usize>,
    /// Targets already yielded, kept only once the first has been passed
    /// over (so the common walk of one step allocates nothing).
    seen: Vec<usize>,
}

impl Iterator for Walk<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let len = self.ring.points.len();
        if self.steps == 0 {
            let &(_, target) = self.ring.points.get(self.position % len.max(1))?;
            self.steps = 1;
            self.first = Some(target);
            return self.first;
        }
        if let Some(first) = self.first.take() {
            self.seen.push(first);
        }
        while self.steps < len && self.seen.len() < self.ring.targets {
            let (_, target) = self.ring.points[(self.position + self.steps) % len];
            self.steps += 1;
            if !self.seen.contains(&target) {
                self.seen.push(target);
                return Some(target);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(ring: &Ring, keys: u64) -> Vec<Option<usize>> {
        (0..keys)
            .map(|k| ring.walk(hash_key(&k.to_le_bytes())).next())
            .collect()
    }

    #[test]
    fn a_new_target_takes_its_share_and_moves_no_other_key() {
        let before = Ring::new(&["a:1", "b:1", "c:1", "d:1"], &[1, 1, 1, 1]);
        let after = Ring::new(&["a:1", "b:1", "c:1", "d:1", "e:1"], &[1, 1, 1, 1, 1]);
        let (old, new) = (owners(&before, 20_000), owners(&after, 20_000));
        let moved: Vec<_> = old.iter().zip(&new).filter(|(o, n)| o != n).collect();
        // Every moved key went to the new target, and it took about a fifth.
        assert!(moved.iter().all(|(_, n)| **n == Some(4)));
        assert!(
            (3_000..5_000).contains(&moved.len()),
            "{} moved",
            moved.len()
        );
    }

    #[test]
    fn weights_set_the_shares() {
        let ring = Ring::new(&["a:1", "b:1"], &[1, 3]);
        let heavy = owners(&ring, 20_000)
            .iter()
            .filter(|o| **o == Some(1))
            .count();
        assert!((13_500..16_500).contains(&heavy), "{heavy} of 20000");
    }

    #[test]
    fn a_walk_visits_every_target_once() {
        let ring = Ring::new(&["a:1", "b:1", "c:1"], &[1, 2, 1]);
        let mut visited: Vec<usize> = ring.walk(42).collect();
        visited.sort_unstable();
        assert_eq!(visited, [0, 1, 2]);
    }
}
