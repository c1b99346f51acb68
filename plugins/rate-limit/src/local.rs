//! Limits counted on this node: each key's states in the plugin's shared
//! data, which every VM of the plugin on the node reads and writes with
//! compare-and-swap, so a limit holds whatever the number of workers and VMs.

use std::time::Duration;

use weir_sdk::{HostError, HostResult, shared};

use crate::algorithm::{self, Ask, Decision, State};
use crate::limit::{Algorithm, Limit};

/// Bytes before the states: when the entry's time to live was last set.
const HEADER: usize = 8;

/// The CAS to write a key read as missing with: no entry has it (a new
/// entry's starts at 1), so the write is refused if another VM created the
/// key in between, and two VMs cannot both start a key afresh.
pub const ABSENT: u32 = u32::MAX;

/// How long an untouched key is worth keeping: by then every limit of it
/// is whole again, which is what a missing key reads as.
pub fn idle(algorithm: Algorithm, limits: &[Limit]) -> Duration {
    let ns = limits
        .iter()
        .map(|l| match algorithm {
            Algorithm::Gcra => l.burst * l.interval_ns,
            Algorithm::SlidingWindow => 2.0 * l.window_ns as f64,
        })
        .fold(0.0, f64::max);
    Duration::from_nanos(ns.min(86_400e9) as u64) + Duration::from_secs(1)
}

/// Takes one permit from every limit of `key` at `now` (Unix ns), retrying
/// when another VM wrote the key in between.
pub fn take(
    key: &str,
    algorithm: Algorithm,
    limits: &[Limit],
    idle: Duration,
    now: u64,
) -> HostResult<Decision> {
    loop {
        let entry = shared::get(key)?;
        let stored = entry.as_ref().and_then(|e| {
            let refreshed = u64::from_le_bytes(e.value.get(..HEADER)?.try_into().ok()?);
            let states = algorithm::decode(algorithm, limits.len(), e.value.get(HEADER..)?)?;
            Some((refreshed, states))
        });
        let (refreshed, mut states) =
            stored.unwrap_or_else(|| (0, vec![State::fresh(algorithm); limits.len()]));
        let decision = algorithm::decide(algorithm, limits, &mut states, now, Ask::ONE);
        if decision.granted == 0 {
            // Nothing taken, nothing to write.
            return Ok(decision);
        }
        // The time to live is twice the idle time, renewed once an idle time
        // has passed: a key in use never expires, an idle one goes.
        let renew = now.saturating_sub(refreshed) >= idle.as_nanos() as u64;
        let refreshed = if renew { now } else { refreshed };
        let mut value = refreshed.to_le_bytes().to_vec();
        value.extend(algorithm::encode(&states));
        match shared::set(key, &value, Some(entry.map_or(ABSENT, |e| e.cas))) {
            Ok(()) => {
                if renew {
                    shared::set_ttl(key, idle * 2)?;
                }
                return Ok(decision);
            }
            Err(HostError::CasMismatch) => continue,
            Err(error) => return Err(error),
        }
    }
}
