//! Durations in a plugin's configuration, written as the manifest writes
//! them: `<digits><unit>` with unit `ms`, `s`, `m` or `h` (`250ms`, `2s`,
//! `5m`), so a filter's `config` reads like the rest of the manifest.

use std::time::Duration;

/// Parses `<digits><unit>` (`ms`, `s`, `m` or `h`); `None` for anything
/// else, a bare number included (its unit would be a guess).
pub fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let millis = match unit {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_manifests_units_and_nothing_else() {
        assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse("0s"), Some(Duration::ZERO));
        assert_eq!(parse("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5"), None, "a bare number has no unit");
        assert_eq!(parse("1.5s"), None);
        assert_eq!(parse("s"), None);
        assert_eq!(parse("-1s"), None);
        assert_eq!(parse("2 days"), None);
        assert_eq!(parse("99999999999999999999h"), None);
    }
}
