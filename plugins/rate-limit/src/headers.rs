//! The response fields of draft-ietf-httpapi-ratelimit-headers-10 (structured
//! field lists, one member per limit): `RateLimit-Policy: "10/1s";q=10;w=1`
//! (quota `q` per window `w` seconds) and `RateLimit: "10/1s";r=3;t=1`
//! (`r` requests remaining, `t` seconds until the limit is whole again), and
//! `Retry-After` on a refusal.

use crate::algorithm::Status;
use crate::limit::Limit;

/// `RateLimit-Policy`.
pub const POLICY: &str = "ratelimit-policy";
/// `RateLimit`.
pub const RATELIMIT: &str = "ratelimit";

/// The `RateLimit-Policy` value of `limits`.
pub fn policy(limits: &[Limit]) -> String {
    limits
        .iter()
        .map(|l| format!("\"{}\";q={};w={}", l.name, l.quota, l.window_seconds()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `RateLimit` value of `limits` with their `status`.
pub fn current(limits: &[Limit], status: &[Status]) -> String {
    limits
        .iter()
        .zip(status)
        .map(|(l, s)| format!("\"{}\";r={};t={}", l.name, s.remaining, seconds(s.reset_ns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whole seconds to wait for `ns`, at least 1 (`Retry-After`).
pub fn retry_after(ns: u64) -> String {
    seconds(ns).max(1).to_string()
}

fn seconds(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_list_every_limit() {
        let limits = [
            Limit::new("10/1s".into(), 10, 1_000_000_000, 10.0),
            Limit::new("hourly".into(), 1000, 3_600_000_000_000, 1000.0),
        ];
        assert_eq!(
            policy(&limits),
            r#""10/1s";q=10;w=1, "hourly";q=1000;w=3600"#
        );
        let status = [
            Status {
                remaining: 3,
                reset_ns: 700_000_000,
            },
            Status {
                remaining: 990,
                reset_ns: 36_000_000_000,
            },
        ];
        assert_eq!(
            current(&limits, &status),
            r#""10/1s";r=3;t=1, "hourly";r=990;t=36"#
        );
        assert_eq!(retry_after(100_000_000_000), "100");
        assert_eq!(retry_after(1), "1");
        assert_eq!(retry_after(0), "1");
    }
}
