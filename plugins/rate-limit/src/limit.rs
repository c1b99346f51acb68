//! One limit (`10 per 1s`) in the units the algorithms work in, and the
//! durations a configuration writes (`500ms`, `1s`, `1m`, `1h`, `1d`).

use weir_sdk::consumers;

/// Nanoseconds in a second.
pub const SECOND_NS: f64 = 1e9;

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// The generic cell rate algorithm: a token bucket kept as one
    /// timestamp (the theoretical arrival time). `requests` per `per`
    /// sustained, `burst` at once.
    Gcra,
    /// A sliding window counter: the current fixed window's count plus the
    /// previous one's, weighted by how much of it the sliding window still
    /// covers, stays within `requests`.
    SlidingWindow,
}

/// A limit, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// Its name in the `RateLimit-Policy` and `RateLimit` fields.
    pub name: String,
    /// Requests allowed per window (the policy's quota).
    pub quota: u64,
    /// The window, in nanoseconds.
    pub window_ns: u64,
    /// GCRA: the bucket's size (requests allowed at once).
    pub burst: f64,
    /// GCRA: nanoseconds between two tokens (`window / quota`).
    pub interval_ns: f64,
}

impl Limit {
    /// `quota` requests per `window_ns`, a burst of `burst` (GCRA).
    pub fn new(name: String, quota: u64, window_ns: u64, burst: f64) -> Self {
        Self {
            name,
            quota,
            window_ns,
            burst,
            interval_ns: window_ns as f64 / quota as f64,
        }
    }

    /// The shorthand `rate` tokens per second and a bucket of `burst`: one
    /// GCRA limit named `default` whose policy reads as `burst` requests
    /// per the time the bucket takes to fill.
    pub fn shorthand(rate: f64, burst: f64) -> Self {
        let interval_ns = SECOND_NS / rate;
        Self {
            name: "default".to_owned(),
            quota: burst.floor().max(1.0) as u64,
            window_ns: (burst * interval_ns).min(u64::MAX as f64) as u64,
            burst,
            interval_ns,
        }
    }

    /// A consumer's own limit (`requests` per `per_ms`), its burst the whole quota.
    pub fn of_consumer(limit: &consumers::Limit) -> Self {
        let quota = u64::from(limit.requests.max(1));
        let window_ns = limit.per_ms.max(1).saturating_mul(1_000_000);
        let name = format!("{quota}/{}", duration_text(window_ns));
        Self::new(name, quota, window_ns, quota as f64)
    }

    /// The part of a stored key that tells this limit's state from another
    /// limit's under the same request key (so two routes with the same key
    /// and the same limit share it, and a changed limit starts afresh).
    pub fn tag(&self, algorithm: Algorithm) -> String {
        match algorithm {
            Algorithm::Gcra => format!("g{:.0}x{}", self.interval_ns, self.burst),
            Algorithm::SlidingWindow => format!("w{}p{}", self.quota, self.window_ns / 1_000_000),
        }
    }

    /// Whole seconds of the window, at least 1 (the policy's `w`).
    pub fn window_seconds(&self) -> u64 {
        (self.window_ns as f64 / SECOND_NS).ceil().max(1.0) as u64
    }
}

/// Why a duration was refused.
pub const DURATION_HELP: &str =
    "must be a duration such as `500ms`, `1s`, `10m`, `1h` or `1d`, or a number of seconds";

/// `text` (`500ms`, `1s`, `1.5m`, `1h`, `1d`) in nanoseconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 1e6,
        "s" | "" => 1e9,
        "m" => 60e9,
        "h" => 3_600e9,
        "d" => 86_400e9,
        _ => return None,
    };
    seconds_ns(number * scale / 1e9)
}

/// `seconds` in nanoseconds, when positive and finite.
pub fn seconds_ns(seconds: f64) -> Option<u64> {
    let ns = seconds * 1e9;
    (ns.is_finite() && ns >= 1.0 && ns < u64::MAX as f64).then_some(ns as u64)
}

/// `ns` the way a person writes it: `1s`, `500ms`, `1h`.
pub fn duration_text(ns: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
    ];
    for (size, unit) in UNITS {
        if ns >= size && ns.is_multiple_of(size) {
            return format!("{}{unit}", ns / size);
        }
    }
    format!("{}ms", ns as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("1s"), Some(1_000_000_000));
        assert_eq!(parse_duration("1.5m"), Some(90_000_000_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000_000_000));
        assert_eq!(parse_duration("2d"), Some(172_800_000_000_000));
        assert_eq!(parse_duration("3"), Some(3_000_000_000));
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(duration_text(3_600_000_000_000), "1h");
        assert_eq!(duration_text(1_500_000_000), "1500ms");
    }

    #[test]
    fn the_shorthand_is_a_gcra_limit_of_the_same_bucket() {
        let limit = Limit::shorthand(0.01, 3.0);
        assert_eq!(limit.interval_ns, 100e9);
        assert_eq!((limit.quota, limit.window_seconds()), (3, 300));
        assert_eq!(limit.tag(Algorithm::Gcra), "g100000000000x3");
        let ten = Limit::new("10/1s".into(), 10, 1_000_000_000, 10.0);
        assert_eq!(ten.interval_ns, 1e8);
        assert_eq!(ten.tag(Algorithm::SlidingWindow), "w10p1000");
    }
}
