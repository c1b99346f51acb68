//! Leased mode's pool: the permits this node took from Redis in batches
//! and not yet served, shared by the plugin's VMs on the node (shared data,
//! compare-and-swap), and the refusal Redis last gave, so that requests are
//! served or refused here without a Redis round trip until the pool is
//! empty or the refusal is over. Permits unused when their lease ends are
//! dropped, never given back: the count across nodes can only fall short
//! of the limit, never pass it.

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

/// A pool as shared data keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Pool {
    /// Permits left.
    permits: u64,
    /// When they lapse (Unix ns).
    expires_ns: u64,
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
            self.refused_until_ns,
            self.retry_at_ns,
        ];
        for (remaining, reset_at) in &self.limits {
            words.extend([*remaining, *reset_at]);
        }
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn decode(bytes: &[u8], limits: usize) -> Option<Self> {
        if bytes.len() != (4 + 2 * limits) * 8 {
            return None;
        }
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Some(Self {
            permits: words[0],
            expires_ns: words[1],
            refused_until_ns: words[2],
            retry_at_ns: words[3],
            limits: words[4..].chunks_exact(2).map(|p| (p[0], p[1])).collect(),
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
}

/// What the pool answers a request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// A permit from the pool, or a refusal Redis gave not long ago.
    Here(Decision),
    /// Neither: ask Redis.
    AskRedis,
}

/// Serves one request from pool `key` at `now` if it can.
pub fn take(key: &str, limits: usize, now: u64) -> HostResult<Served> {
    loop {
        let Some(entry) = shared::get(key)? else {
            return Ok(Served::AskRedis);
        };
        let Some(mut pool) = Pool::decode(&entry.value, limits) else {
            return Ok(Served::AskRedis);
        };
        if pool.permits > 0 && now < pool.expires_ns {
            pool.permits -= 1;
            match shared::set(key, &pool.encode(), Some(entry.cas)) {
                Ok(()) => {
                    return Ok(Served::Here(Decision {
                        granted: 1,
                        retry_ns: 0,
                        status: pool.status(now, pool.permits),
                    }));
                }
                Err(HostError::CasMismatch) => continue,
                Err(error) => return Err(error),
            }
        }
        if now < pool.refused_until_ns {
            return Ok(Served::Here(Decision {
                granted: 0,
                retry_ns: pool.retry_at_ns.saturating_sub(now).max(1),
                status: pool.status(now, 0),
            }));
        }
        return Ok(Served::AskRedis);
    }
}

/// Puts what Redis answered at `now` into pool `key` of `algorithm`'s
/// limits: the permits granted beyond the one this request takes, or the
/// refusal. Returns the decision for this request.
pub fn store(key: &str, algorithm: Algorithm, grant: &Grant, now: u64) -> HostResult<Decision> {
    let decision = &grant.decision;
    let spare = decision.granted.saturating_sub(1);
    let limits: Vec<(u64, u64)> = decision
        .status
        .iter()
        .map(|s| (s.remaining, now.saturating_add(s.reset_ns)))
        .collect();
    loop {
        let entry = shared::get(key)?;
        let current = entry
            .as_ref()
            .and_then(|e| Pool::decode(&e.value, limits.len()))
            .filter(|p| p.permits > 0 && now < p.expires_ns);
        let lease_end = now.saturating_add(grant.hold_ns);
        let pool = if decision.granted == 0 {
            Pool {
                permits: current.as_ref().map_or(0, |p| p.permits),
                expires_ns: current.as_ref().map_or(0, |p| p.expires_ns),
                refused_until_ns: now + decision.retry_ns.min(REFUSAL_KEPT_NS),
                retry_at_ns: now + decision.retry_ns,
                limits: limits.clone(),
            }
        } else {
            // Two leases' permits in one pool: a sliding window's lapse
            // with the earlier lease (each must be served in the fixed
            // window it was counted in); GCRA permits with the later one
            // (serving one later than granted never adds to the count).
            let (held, expires_ns) = match (&current, algorithm) {
                (Some(p), Algorithm::Gcra) => (p.permits, p.expires_ns.max(lease_end)),
                (Some(p), Algorithm::SlidingWindow) => (p.permits, p.expires_ns.min(lease_end)),
                (None, _) => (0, lease_end),
            };
            Pool {
                permits: held + spare,
                expires_ns,
                refused_until_ns: 0,
                retry_at_ns: 0,
                limits: limits.clone(),
            }
        };
        let cas = entry.as_ref().map_or(ABSENT, |e| e.cas);
        match shared::set(key, &pool.encode(), Some(cas)) {
            Ok(()) => {
                let until = pool.expires_ns.max(pool.refused_until_ns);
                let ttl = Duration::from_nanos(until.saturating_sub(now)) + Duration::from_secs(1);
                shared::set_ttl(key, ttl)?;
                let mut decision = decision.clone();
                decision.status = pool.status(now, pool.permits);
                return Ok(decision);
            }
            Err(HostError::CasMismatch) => continue,
            Err(error) => return Err(error),
        }
    }
}
