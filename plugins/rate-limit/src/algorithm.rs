//! The decision for one key: how many permits every limit of the key can
//! grant now, taken from all of them at once, or how long to wait. GCRA and
//! the sliding window counter, on a node's clock in nanoseconds.
//!
//! `script.lua` is the same arithmetic for Redis (on Redis's clock, in
//! microseconds); a change here is a change there.

use crate::limit::{Algorithm, Limit};

/// Slack for float rounding when counting whole permits.
const EPSILON: f64 = 1e-9;

/// One limit's state as a key keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// GCRA: the theoretical arrival time of the next request (Unix ns);
    /// at or before now, the bucket is full.
    Gcra {
        /// The theoretical arrival time.
        tat_ns: u64,
    },
    /// Sliding window: the fixed window's index (`now / window`), its count
    /// and the previous window's count.
    Window {
        /// The fixed window's index.
        index: u64,
        /// Requests counted in it.
        current: u64,
        /// Requests counted in the window before it.
        previous: u64,
    },
}

impl State {
    /// The state of a key never seen (or forgotten): nothing counted.
    pub fn fresh(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Gcra => Self::Gcra { tat_ns: 0 },
            Algorithm::SlidingWindow => Self::Window {
                index: 0,
                current: 0,
                previous: 0,
            },
        }
    }

    /// Bytes per limit in [`encode`].
    const SIZE: usize = 24;
}

/// `states` as stored: three little-endian u64 per limit.
pub fn encode(states: &[State]) -> Vec<u8> {
    let mut out = Vec::with_capacity(states.len() * State::SIZE);
    for state in states {
        let words = match *state {
            State::Gcra { tat_ns } => [tat_ns, 0, 0],
            State::Window {
                index,
                current,
                previous,
            } => [index, current, previous],
        };
        for word in words {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
    out
}

/// `count` states of `algorithm` read back; `None` when `bytes` are not that.
pub fn decode(algorithm: Algorithm, count: usize, bytes: &[u8]) -> Option<Vec<State>> {
    if bytes.len() != count * State::SIZE {
        return None;
    }
    let word = |chunk: &[u8], at: usize| {
        let mut raw = [0; 8];
        raw.copy_from_slice(&chunk[at * 8..at * 8 + 8]);
        u64::from_le_bytes(raw)
    };
    Some(
        bytes
            .chunks_exact(State::SIZE)
            .map(|chunk| match algorithm {
                Algorithm::Gcra => State::Gcra {
                    tat_ns: word(chunk, 0),
                },
                Algorithm::SlidingWindow => State::Window {
                    index: word(chunk, 0),
                    current: word(chunk, 1),
                    previous: word(chunk, 2),
                },
            })
            .collect(),
    )
}

/// What a limit tells the client after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Permits left now.
    pub remaining: u64,
    /// Nanoseconds until the limit is whole again (GCRA: the bucket full;
    /// sliding window: the current window over).
    pub reset_ns: u64,
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Permits granted (0: refused).
    pub granted: u64,
    /// When refused: nanoseconds until the permits waited for are there.
    pub retry_ns: u64,
    /// Each limit's status after the decision, in the limits' order.
    pub status: Vec<Status>,
}

/// What a decision asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// The most permits to grant.
    pub want: u64,
    /// When none can be granted, the permits to time the retry for.
    pub wait_for: u64,
}

impl Ask {
    /// One permit, for one request.
    pub const ONE: Self = Self {
        want: 1,
        wait_for: 1,
    };
}

/// One limit read at `now`: its state brought up to date and what it can grant.
struct Reading {
    state: State,
    available: u64,
}

fn read(algorithm: Algorithm, limit: &Limit, state: State, now: u64) -> Reading {
    match (algorithm, state) {
        (Algorithm::Gcra, State::Gcra { tat_ns }) => {
            let tat = tat_ns.max(now);
            let room = limit.burst * limit.interval_ns - (tat - now) as f64;
            Reading {
                state: State::Gcra { tat_ns: tat },
                available: whole(room / limit.interval_ns),
            }
        }
        (
            Algorithm::SlidingWindow,
            State::Window {
                index,
                current,
                previous,
            },
        ) => {
            let now_index = now / limit.window_ns;
            let (current, previous) = if index == now_index {
                (current, previous)
            } else if index + 1 == now_index {
                (0, current)
            } else {
                (0, 0)
            };
            let estimate = previous as f64 * (1.0 - elapsed(limit, now)) + current as f64;
            Reading {
                state: State::Window {
                    index: now_index,
                    current,
                    previous,
                },
                available: whole(limit.quota as f64 - estimate),
            }
        }
        // A state of the other algorithm (never stored under the same tag).
        (_, _) => read(algorithm, limit, State::fresh(algorithm), now),
    }
}

/// The share of the current fixed window gone by at `now`, in [0, 1).
fn elapsed(limit: &Limit, now: u64) -> f64 {
    (now % limit.window_ns) as f64 / limit.window_ns as f64
}

/// The whole permits in `x`, none below 0.
fn whole(x: f64) -> u64 {
    if x <= 0.0 {
        0
    } else {
        (x + EPSILON).floor() as u64
    }
}

/// Grants up to `ask.want` permits from every limit of `limits` at once
/// (`states` in the same order, updated in place) at `now` (Unix ns).
pub fn decide(
    algorithm: Algorithm,
    limits: &[Limit],
    states: &mut [State],
    now: u64,
    ask: Ask,
) -> Decision {
    let readings: Vec<Reading> = limits
        .iter()
        .zip(states.iter())
        .map(|(limit, state)| read(algorithm, limit, *state, now))
        .collect();
    let granted = readings
        .iter()
        .map(|r| r.available)
        .min()
        .unwrap_or(0)
        .min(ask.want);
    let mut retry_ns = 0;
    let mut status = Vec::with_capacity(limits.len());
    for ((limit, reading), state) in limits.iter().zip(&readings).zip(states.iter_mut()) {
        let (next, reset_ns, wait_ns) = match reading.state {
            State::Gcra { tat_ns } => {
                let tat = tat_ns + (granted as f64 * limit.interval_ns) as u64;
                // Wait until `need` tokens fit: tat + need·T − burst·T ≤ now.
                let need = (ask.wait_for as f64).min(limit.burst);
                let ready = tat as f64 + (need - limit.burst) * limit.interval_ns;
                let wait = (ready - now as f64).max(0.0) as u64;
                (State::Gcra { tat_ns: tat }, tat - now, wait)
            }
            State::Window {
                index,
                current,
                previous,
            } => {
                let current = current + granted;
                let window_end = (index + 1) * limit.window_ns - now;
                let wait = window_wait(limit, now, current, previous, ask.wait_for);
                let next = State::Window {
                    index,
                    current,
                    previous,
                };
                (next, window_end, wait)
            }
        };
        if granted > 0 {
            *state = next;
        } else {
            retry_ns = retry_ns.max(wait_ns);
        }
        status.push(Status {
            remaining: reading.available - granted,
            reset_ns,
        });
    }
    Decision {
        granted,
        retry_ns,
        status,
    }
}

/// Nanoseconds until a sliding window with `current` and `previous` counts
/// has room for `need` more permits.
fn window_wait(limit: &Limit, now: u64, current: u64, previous: u64, need: u64) -> u64 {
    let quota = limit.quota as f64;
    let need = (need as f64).min(quota);
    let window = limit.window_ns as f64;
    let into = (now % limit.window_ns) as f64;
    let (current, previous) = (current as f64, previous as f64);
    let wait = if current + need > quota {
        // Not in this window: in the next one, this window's count decays
        // until current·(1 − f) + need ≤ quota.
        window - into + window * (1.0 - (quota - need) / current).max(0.0)
    } else if previous > 0.0 {
        // previous·(1 − f) + current + need ≤ quota.
        window * (1.0 - (quota - need - current) / previous) - into
    } else {
        0.0
    };
    wait.max(0.0).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    /// A time at the start of a second (and of a 10 s window).
    const T0: u64 = 1_700_000_000 * SECOND;

    fn ten_per_second() -> Limit {
        Limit::new("10/1s".into(), 10, SECOND, 10.0)
    }

    fn take(algorithm: Algorithm, limits: &[Limit], states: &mut [State], now: u64) -> Decision {
        decide(algorithm, limits, states, now, Ask::ONE)
    }

    #[test]
    fn gcra_grants_the_burst_then_one_per_interval() {
        let limits = [ten_per_second()];
        let mut states = [State::fresh(Algorithm::Gcra)];
        for left in (0..10).rev() {
            let decision = take(Algorithm::Gcra, &limits, &mut states, T0);
            assert_eq!(decision.granted, 1);
            assert_eq!(decision.status[0].remaining, left);
        }
        let refused = take(Algorithm::Gcra, &limits, &mut states, T0);
        assert_eq!(refused.granted, 0);
        assert_eq!(refused.retry_ns, SECOND / 10, "the next token in 100 ms");
        assert_eq!(refused.status[0].reset_ns, SECOND, "full again in 1 s");
        let later = take(Algorithm::Gcra, &limits, &mut states, T0 + SECOND / 10);
        assert_eq!(later.granted, 1);
        assert_eq!(later.status[0].remaining, 0);
    }

    #[test]
    fn gcra_counts_a_long_run_as_burst_plus_rate() {
        let limits = [ten_per_second()];
        let mut states = [State::fresh(Algorithm::Gcra)];
        let mut granted = 0;
        // A request every millisecond for 10 s.
        for ms in 0..10_000 {
            granted += take(Algorithm::Gcra, &limits, &mut states, T0 + ms * 1_000_000).granted;
        }
        assert_eq!(granted, 10 + 100 - 1, "burst, then one per 100 ms");
    }

    #[test]
    fn the_sliding_window_weighs_the_previous_window() {
        let limits = [ten_per_second()];
        let mut states = [State::fresh(Algorithm::SlidingWindow)];
        let granted: u64 = (0..15)
            .map(|_| take(Algorithm::SlidingWindow, &limits, &mut states, T0).granted)
            .sum();
        assert_eq!(granted, 10);
        let refused = take(
            Algorithm::SlidingWindow,
            &limits,
            &mut states,
            T0 + SECOND / 2,
        );
        assert_eq!(refused.granted, 0);
        // In the next window, 10·(1 − f) + 1 ≤ 10 from f = 0.1.
        assert_eq!(refused.retry_ns, SECOND / 2 + SECOND / 10);
        assert_eq!(refused.status[0].reset_ns, SECOND / 2);
        // A quarter into the next window, 10·0.75 = 7.5 counted: two fit.
        let at = T0 + SECOND + SECOND / 4;
        let granted: u64 = (0..5)
            .map(|_| take(Algorithm::SlidingWindow, &limits, &mut states, at).granted)
            .sum();
        assert_eq!(granted, 2);
        // Two windows later nothing is counted.
        let fresh = take(
            Algorithm::SlidingWindow,
            &limits,
            &mut states,
            T0 + 3 * SECOND,
        );
        assert_eq!(fresh.status[0].remaining, 9);
    }

    #[test]
    fn several_limits_grant_only_what_every_one_allows() {
        let limits = [
            ten_per_second(),
            Limit::new("15/1h".into(), 15, 3_600 * SECOND, 15.0),
        ];
        for algorithm in [Algorithm::Gcra, Algorithm::SlidingWindow] {
            let mut states = [State::fresh(algorithm), State::fresh(algorithm)];
            let mut granted = 0;
            for second in 0..5 {
                for _ in 0..20 {
                    granted += take(algorithm, &limits, &mut states, T0 + second * SECOND).granted;
                }
            }
            assert_eq!(granted, 15, "{algorithm:?}: the hourly limit binds");
            let refused = take(algorithm, &limits, &mut states, T0 + 5 * SECOND);
            assert!(
                refused.retry_ns > 60 * SECOND,
                "{algorithm:?}: wait for the hour"
            );
            assert_eq!(refused.status[1].remaining, 0);
        }
    }

    #[test]
    fn a_batch_takes_what_is_there_and_a_refusal_waits_for_the_batch() {
        let limits = [ten_per_second()];
        let mut states = [State::fresh(Algorithm::Gcra)];
        let ask = Ask {
            want: 4,
            wait_for: 4,
        };
        let batches: Vec<u64> = (0..4)
            .map(|_| decide(Algorithm::Gcra, &limits, &mut states, T0, ask).granted)
            .collect();
        assert_eq!(batches, [4, 4, 2, 0]);
        let refused = decide(Algorithm::Gcra, &limits, &mut states, T0, ask);
        assert_eq!(
            refused.retry_ns,
            4 * SECOND / 10,
            "until four tokens are back"
        );
    }

    #[test]
    fn states_round_trip_and_a_foreign_length_reads_as_none() {
        let states = [
            State::Window {
                index: 7,
                current: 3,
                previous: 9,
            },
            State::Window {
                index: 1,
                current: 0,
                previous: 2,
            },
        ];
        let bytes = encode(&states);
        assert_eq!(
            decode(Algorithm::SlidingWindow, 2, &bytes),
            Some(states.to_vec())
        );
        assert_eq!(decode(Algorithm::SlidingWindow, 3, &bytes), None);
    }
}
