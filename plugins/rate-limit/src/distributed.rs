//! Limits counted in Redis: the Lua script (`script.lua`) that decides for
//! every limit of a key atomically on Redis's clock, the `EVALSHA` (or, when
//! Redis does not have the script yet, `EVAL`) command that runs it, and its
//! reply read back.

use std::sync::OnceLock;

use weir_sdk::RedisValue;

use crate::algorithm::{Ask, Decision, Status};
use crate::limit::{Algorithm, Limit};

/// The script.
pub const SCRIPT: &str = include_str!("script.lua");

/// The script's SHA-1, as `EVALSHA` names it.
pub fn script_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| {
        use sha1::{Digest, Sha1};
        format!("{:x}", Sha1::digest(SCRIPT.as_bytes()))
    })
}

/// What Redis granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The decision (permits, retry, each limit's status).
    pub decision: Decision,
    /// Nanoseconds a node may keep the permits before serving them.
    pub hold_ns: u64,
}

/// Why a reply is no decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// Redis does not have the script (send it with `EVAL`).
    NoScript,
    /// An error reply, or a reply of another shape.
    Failed(String),
}

/// How the command carries the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// By its SHA-1 (`EVALSHA`).
    Sha,
    /// In full (`EVAL`), which also makes Redis keep it.
    Source,
}

/// The command deciding `ask` for the limits `limits` of stored key `key`
/// (`share`: grant at most half of what is left, for leases).
pub fn command(
    carry: Carry,
    prefix: &str,
    key: &str,
    algorithm: Algorithm,
    limits: &[Limit],
    ask: Ask,
    share: bool,
) -> Vec<String> {
    let mut args = Vec::with_capacity(6 + limits.len() * 4);
    match carry {
        Carry::Sha => args.extend(["EVALSHA".to_owned(), script_sha().to_owned()]),
        Carry::Source => args.extend(["EVAL".to_owned(), SCRIPT.to_owned()]),
    }
    args.push(limits.len().to_string());
    // One hash tag for every key of a decision: one slot in a cluster.
    args.extend(
        limits
            .iter()
            .map(|l| format!("{prefix}{{{key}}}:{}", l.tag(algorithm))),
    );
    args.push(ask.want.to_string());
    args.push(ask.wait_for.to_string());
    args.push(if share { "1" } else { "0" }.to_owned());
    for limit in limits {
        let (kind, span_us, cap) = match algorithm {
            Algorithm::Gcra => ("g", limit.interval_ns / 1e3, limit.burst),
            Algorithm::SlidingWindow => ("w", limit.window_ns as f64 / 1e3, limit.quota as f64),
        };
        args.extend([kind.to_owned(), span_us.to_string(), cap.to_string()]);
    }
    args
}

/// The script's reply for `limits` limits.
pub fn read_reply(reply: &RedisValue, limits: usize) -> Result<Grant, ReplyError> {
    let items = match reply {
        RedisValue::Error(text) if text.to_ascii_lowercase().contains("noscript") => {
            return Err(ReplyError::NoScript);
        }
        RedisValue::Error(text) => return Err(ReplyError::Failed(text.clone())),
        RedisValue::Array(items) if items.len() == 3 + 2 * limits => items,
        other => return Err(ReplyError::Failed(format!("unexpected reply {other:?}"))),
    };
    let numbers: Vec<u64> = items
        .iter()
        .map(|item| item.as_int().map(|n| n.max(0) as u64))
        .collect::<Option<_>>()
        .ok_or_else(|| ReplyError::Failed("a reply that is not all integers".to_owned()))?;
    let status = numbers[3..]
        .chunks_exact(2)
        .map(|pair| Status {
            remaining: pair[0],
            reset_ns: pair[1].saturating_mul(1_000),
        })
        .collect();
    Ok(Grant {
        decision: Decision {
            granted: numbers[0],
            retry_ns: numbers[1].saturating_mul(1_000),
            status,
        },
        hold_ns: numbers[2].saturating_mul(1_000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_names_every_limit_under_one_hash_tag() {
        let limits = [
            Limit::new("10/1s".into(), 10, 1_000_000_000, 10.0),
            Limit::new("1000/1h".into(), 1000, 3_600_000_000_000, 1000.0),
        ];
        let args = command(
            Carry::Sha,
            "weir:rl:",
            "ip=1.2.3.4",
            Algorithm::Gcra,
            &limits,
            Ask::ONE,
            false,
        );
        assert_eq!(args[0], "EVALSHA");
        assert_eq!(args[1].len(), 40);
        assert_eq!(
            &args[2..],
            [
                "2",
                "weir:rl:{ip=1.2.3.4}:g100000000x10",
                "weir:rl:{ip=1.2.3.4}:g3600000000x1000",
                "1",
                "1",
                "0",
                "g",
                "100000",
                "10",
                "g",
                "3600000",
                "1000"
            ]
        );
        let eval = command(
            Carry::Source,
            "p:",
            "k",
            Algorithm::SlidingWindow,
            &limits[..1],
            Ask {
                want: 10,
                wait_for: 40,
            },
            true,
        );
        assert_eq!(eval[0], "EVAL");
        assert_eq!(eval[1], SCRIPT);
        assert_eq!(
            &eval[3..],
            ["p:{k}:w10p1000", "10", "40", "1", "w", "1000000", "10"]
        );
    }

    #[test]
    fn replies_read_as_grants_and_errors_as_what_they_are() {
        let reply = RedisValue::Array(
            [3, 0, 250_000, 7, 1_000_000]
                .into_iter()
                .map(RedisValue::Int)
                .collect(),
        );
        let grant = read_reply(&reply, 1).expect("a grant");
        assert_eq!(grant.decision.granted, 3);
        assert_eq!(grant.hold_ns, 250_000_000);
        assert_eq!(
            grant.decision.status,
            [Status {
                remaining: 7,
                reset_ns: 1_000_000_000
            }]
        );
        assert_eq!(
            read_reply(&reply, 2).map(drop),
            Err(ReplyError::Failed(format!("unexpected reply {reply:?}")))
        );
        let missing = RedisValue::Error("NOSCRIPT No matching script. Please use EVAL.".into());
        assert_eq!(read_reply(&missing, 1), Err(ReplyError::NoScript));
        let oom = RedisValue::Error("OOM command not allowed".into());
        assert_eq!(
            read_reply(&oom, 1),
            Err(ReplyError::Failed("OOM command not allowed".into()))
        );
    }
}
