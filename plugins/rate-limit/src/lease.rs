//! Leased mode's pool: the permits this node took from Redis in batches
//! and not yet served, shared by the plugin's VMs on the node (shared data,
//! compare-and-swap), and the refusal Redis last gave, so that requests are
//! served or refused here without a Redis round trip until the pool is
//! empty or the refusal is over. Permits unused when their lease ends are
//! dropped, never given back: the count across nodes can only fall short
//! of the limit, never pass it.
//!
//! The pool is refilled early: once half a lease is used, or (GCRA) half
//! the pool's time is gone, one request claims the refill in the pool's
//! entry and asks Redis for another lease (half used) or for what tops the
//! pool up to a lease (half its time gone), while the others go
//! on being served from what is left. A claim lasts at most [`CLAIM_NS`],
//! so a claimant that never stores its reply blocks no refill for longer.

use std::time::Duration;

use weir_sdk::{HostError, HostResult, shared};

use crate::algorithm::{Decision, Status};
use crate::distributed::Grant;
use crate::limit::Algorithm;
use crate::local::ABSENT;

/// The longest a refusal is repeated here without asking Redis again (it is
/// repeated until the permits are due back, a long wait included, but Redis
/// is asked at least this often).
const REFUSAL_KEPT_NS: u64 = 60_000_000_000;

/// How long a claim on a pool's refill holds unless its claimant stores the
/// reply or lets the claim go first.
pub const CLAIM_NS: u64 = 1_000_000_000;

/// Words of a stored pool before its limits.
const HEADER_WORDS: usize = 6;

/// A pool as shared data keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Pool {
    /// Permits left.
    permits: u64,
    /// When they lapse (Unix ns).
    expires_ns: u64,
    /// From when a request claims the refill even with permits left (Unix ns).
    refill_at_ns: u64,
    /// Until when a claim on the refill holds (Unix ns; in the past: none).
    claimed_until_ns: u64,
    /// Until when requests are refused here (Unix ns).
    refused_until_ns: u64,
    /// When Redis said permits are back (Unix ns), for `Retry-After`.
    retry_at_ns: u64,
    /// Each limit's remaining permits in Redis and when it is whole again
    /// (Unix ns), as of the last reply.
    limits: Vec<(u64, u64)>,
}

impl Pool {
    fn encode(&self) -> Vec<u8> {
        let mut words = vec![
            self.permits,
            self.expires_ns,
            self.refill_at_ns,
            self.claimed_until_ns,
            self.refused_until_ns,
            self.retry_at_ns,
        ];
        for (remaining, reset_at) in &self.limits {
            words.extend([*remaining, *reset_at]);
        }
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn decode(bytes: &[u8], limits: usize) -> Option<Self> {
        if bytes.len() != (HEADER_WORDS + 2 * limits) * 8 {
            return None;
        }
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Some(Self {
            permits: words[0],
            expires_ns: words[1],
            refill_at_ns: words[2],
            claimed_until_ns: words[3],
            refused_until_ns: words[4],
            retry_at_ns: words[5],
            limits: words[HEADER_WORDS..]
                .chunks_exact(2)
                .map(|p| (p[0], p[1]))
                .collect(),
        })
    }

    /// The limits' status at `now`, with `extra` permits still held here.
    fn status(&self, now: u64, extra: u64) -> Vec<Status> {
        self.limits
            .iter()
            .map(|(remaining, reset_at)| Status {
                remaining: remaining + extra,
                reset_ns: reset_at.saturating_sub(now),
            })
            .collect()
    }

    /// Whether the pool has a permit to serve at `now`.
    fn live(&self, now: u64) -> bool {
        self.permits > 0 && now < self.expires_ns
    }

    /// Whether a request may claim the refill at `now`: no other claim
    /// holds, and Redis is not refusing (it would refuse the refill too).
    fn claimable(&self, now: u64) -> bool {
        now >= self.claimed_until_ns && now >= self.refused_until_ns
    }

    /// Whether the pool wants refilling at `now`, for leases of `lease`:
    /// empty or lapsed, half a lease or less left, or half its time gone.
    fn refill_due(&self, lease: u64, now: u64) -> bool {
        !self.live(now) || self.permits.saturating_mul(2) <= lease || now >= self.refill_at_ns
    }

    /// Adds the permits `grant` brought at `now` beyond the `taken` its
    /// request keeps, and moves the lapse and the next refill accordingly.
    fn add(&mut self, algorithm: Algorithm, grant: &Grant, taken: u64, now: u64) {
        let granted = grant.decision.granted;
        let spare = granted.saturating_sub(taken);
        if spare == 0 {
            return;
        }
        let lease_end = now.saturating_add(grant.hold_ns);
        let held = self.permits;
        self.expires_ns = match algorithm {
            _ if held == 0 => lease_end,
            // Each permit must be served in the fixed window it was
            // counted in: the earlier window's end.
            Algorithm::SlidingWindow => self.expires_ns.min(lease_end),
            // As long as a lease of all the permits held would last (each
            // the time one takes to accrue), and no shorter than before:
            // serving a permit later than granted never adds to the count,
            // and a refill only tops the pool up to a lease.
            Algorithm::Gcra => {
                let each = u128::from(grant.hold_ns) / u128::from(granted);
                let life = each * u128::from(held.saturating_add(granted));
                let end = now.saturating_add(u64::try_from(life).unwrap_or(u64::MAX));
                self.expires_ns.max(end)
            }
        };
        self.permits = held.saturating_add(spare);
        self.refill_at_ns = match algorithm {
            Algorithm::Gcra => now.saturating_add(self.expires_ns.saturating_sub(now) / 2),
            // A refill would lapse at the same window's end: none by time.
            Algorithm::SlidingWindow => self.expires_ns,
        };
    }

    /// How long shared data keeps the entry: until nothing in it matters.
    fn ttl(&self, now: u64) -> Duration {
        let until = self
            .expires_ns
            .max(self.refused_until_ns)
            .max(self.claimed_until_ns);
        Duration::from_nanos(until.saturating_sub(now)) + Duration::from_secs(1)
    }
}

/// A claim on a pool's refill, known by its expiry (a later claim's is later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim(u64);

/// The refill a request claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    /// The claim, for [`store`] or [`release`].
    pub claim: Claim,
    /// The permits to ask Redis for.
    pub want: u64,
}

/// What the pool answers a request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// A permit from the pool, or a refusal Redis gave not long ago.
    Here(Decision),
    /// A permit from the pool, and this request claimed the refill: it asks
    /// Redis for the permits that top the pool up to a lease.
    Refilling(Decision, Refill),
    /// Nothing here: ask Redis for this request's permit, and with a claim
    /// for a lease (the request takes one of it, the pool the rest); without
    /// one (another request is refilling), for that permit alone.
    AskRedis(Option<Refill>),
}

/// What a change to a pool leaves it as.
enum Change<T> {
    /// Unchanged: nothing to write.
    Kept(T),
    /// Changed: write it back.
    Made(T),
}

/// Reads pool `key` (empty when missing), lets `change` edit it and writes
/// it back when changed, unless another VM wrote in between: then again.
fn update<T>(
    key: &str,
    limits: usize,
    mut change: impl FnMut(&mut Pool) -> Change<T>,
) -> HostResult<(Pool, T)> {
    loop {
        let entry = shared::get(key)?;
        let mut pool = entry
            .as_ref()
            .and_then(|e| Pool::decode(&e.value, limits))
            .unwrap_or_default();
        let out = match change(&mut pool) {
            Change::Kept(out) => return Ok((pool, out)),
            Change::Made(out) => out,
        };
        let cas = entry.as_ref().map_or(ABSENT, |e| e.cas);
        match shared::set(key, &pool.encode(), Some(cas)) {
            Ok(()) => return Ok((pool, out)),
            Err(HostError::CasMismatch) => continue,
            Err(error) => return Err(error),
        }
    }
}

/// Serves one request from pool `key` (of leases of `lease` permits) at
/// `now` if it can, and claims the refill when it is due and unclaimed.
pub fn take(key: &str, limits: usize, lease: u64, now: u64) -> HostResult<Served> {
    let (pool, served) = update(key, limits, |pool| {
        let permit = pool.live(now).then(|| {
            pool.permits -= 1;
            Decision {
                granted: 1,
                retry_ns: 0,
                status: pool.status(now, pool.permits),
            }
        });
        if permit.is_none() && now < pool.refused_until_ns {
            return Change::Kept(Served::Here(Decision {
                granted: 0,
                retry_ns: pool.retry_at_ns.saturating_sub(now).max(1),
                status: pool.status(now, 0),
            }));
        }
        let claim = (pool.claimable(now) && pool.refill_due(lease, now)).then(|| {
            pool.claimed_until_ns = now.saturating_add(CLAIM_NS);
            Claim(pool.claimed_until_ns)
        });
        match (permit, claim) {
            (Some(permit), None) => Change::Made(Served::Here(permit)),
            (Some(permit), Some(claim)) => {
                // Half a lease used: a whole lease more, so the pool holds at
                // most one and a half and a lease costs one round trip. Due
                // by time only: what tops it up to a lease, so a node that
                // serves less than a lease per lease time never stockpiles.
                let want = if pool.permits.saturating_mul(2) <= lease {
                    lease
                } else {
                    lease.saturating_sub(pool.permits).max(1)
                };
                Change::Made(Served::Refilling(permit, Refill { claim, want }))
            }
            (None, Some(claim)) => {
                Change::Made(Served::AskRedis(Some(Refill { claim, want: lease })))
            }
            (None, None) => Change::Kept(Served::AskRedis(None)),
        }
    })?;
    // A live pool's entry outlives any claim; an empty one's must last as
    // long as its claim.
    if matches!(served, Served::AskRedis(Some(_))) {
        shared::set_ttl(key, pool.ttl(now))?;
    }
    Ok(served)
}

/// Puts what Redis answered at `now` into pool `key` of `algorithm`'s
/// limits: the permits granted beyond the `taken` the request keeps (1, or
/// 0 when the pool served it), or the refusal; lets the request's `claim`
/// go. Returns the grant's decision with the limits' status as of now.
pub fn store(
    key: &str,
    algorithm: Algorithm,
    grant: &Grant,
    taken: u64,
    claim: Option<Claim>,
    now: u64,
) -> HostResult<Decision> {
    let decision = &grant.decision;
    let limits: Vec<(u64, u64)> = decision
        .status
        .iter()
        .map(|s| (s.remaining, now.saturating_add(s.reset_ns)))
        .collect();
    let (pool, ()) = update(key, limits.len(), |pool| {
        if !pool.live(now) {
            // Lapsed permits are dropped.
            pool.permits = 0;
            pool.expires_ns = 0;
        }
        if decision.granted == 0 {
            pool.refused_until_ns = now + decision.retry_ns.min(REFUSAL_KEPT_NS);
            pool.retry_at_ns = now + decision.retry_ns;
        } else {
            pool.refused_until_ns = 0;
            pool.retry_at_ns = 0;
            pool.add(algorithm, grant, taken, now);
        }
        if claim == Some(Claim(pool.claimed_until_ns)) {
            pool.claimed_until_ns = 0;
        }
        pool.limits.clone_from(&limits);
        Change::Made(())
    })?;
    shared::set_ttl(key, pool.ttl(now))?;
    let mut decision = decision.clone();
    decision.status = pool.status(now, pool.permits);
    Ok(decision)
}

/// Lets `claim` on pool `key` go (its request got no grant to store), if
/// it still holds.
pub fn release(key: &str, limits: usize, claim: Claim) -> HostResult<()> {
    update(key, limits, |pool| {
        if claim == Claim(pool.claimed_until_ns) {
            pool.claimed_until_ns = 0;
            Change::Made(())
        } else {
            Change::Kept(())
        }
    })
    .map(drop)
}
