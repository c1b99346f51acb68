//! Turns a located YAML tree into raw manifest types, collecting every error.
//!
//! Decoding never stops at the first problem: each field is decoded on its own
//! and each failure is recorded with its location, so `weir validate` can list
//! all of them at once.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::node::{Location, Node, Value};

/// One problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where it is.
    pub location: Location,
    /// What is wrong, in words.
    pub message: String,
}

/// Collects diagnostics while decoding and validating.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records a problem at `location`.
    pub fn error(&mut self, location: Location, message: impl Into<String>) {
        self.items.push(Diagnostic {
            location,
            message: message.into(),
        });
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The recorded problems, sorted by position.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items
            .sort_by_key(|d| (d.location.line, d.location.column));
        self.items
    }
}

/// A value together with the location it was read from.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The decoded value.
    pub value: T,
    /// Where it was read.
    pub location: Location,
}

/// Types that can be decoded from a [`Node`].
pub trait Decode: Sized {
    /// Decodes `node`; on failure records why in `diags` and returns `None`.
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self>;
}

impl<T: Decode> Decode for Located<T> {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        T::decode(node, diags).map(|value| Located {
            value,
            location: node.location,
        })
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let Value::Seq(items) = &node.value else {
            return mismatch(node, "a list", diags);
        };
        // Decode every item so each reports its own errors; keep the ones that
        // decoded so whole-manifest checks can still run on them (the recorded
        // errors make the manifest fail anyway).
        Some(items.iter().filter_map(|i| T::decode(i, diags)).collect())
    }
}

impl Decode for String {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) => Some(node.scalar_text()),
            _ => mismatch(node, "a string", diags),
        }
    }
}

impl Decode for bool {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => mismatch(node, "true or false", diags),
        }
    }
}

/// Decodes an integer within `T`'s range.
fn decode_int<T: TryFrom<i64>>(node: &Node, diags: &mut Diagnostics, what: &str) -> Option<T> {
    match node.value {
        Value::Int(i) => match T::try_from(i) {
            Ok(v) => Some(v),
            Err(_) => mismatch(node, what, diags),
        },
        _ => mismatch(node, what, diags),
    }
}

impl Decode for u16 {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        decode_int(node, diags, "an integer from 0 to 65535")
    }
}

impl Decode for u32 {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        decode_int(node, diags, "a non-negative integer")
    }
}

impl Decode for usize {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        decode_int(node, diags, "a non-negative integer")
    }
}

impl Decode for SocketAddr {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let text = String::decode(node, diags)?;
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                diags.error(
                    node.location,
                    format!("`{text}` is not a socket address like `0.0.0.0:8080` or `[::1]:8080`"),
                );
                None
            }
        }
    }
}

/// A duration written as a number and a unit: `250ms`, `5s`, `2m`, `1h`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl Decode for HumanDuration {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let parsed = match &node.value {
            Value::Str(s) => parse_duration(s),
            _ => None,
        };
        if parsed.is_none() {
            diags.error(
                node.location,
                format!(
                    "expected a duration like `250ms`, `5s`, `2m` or `1h`, found {}",
                    describe(node)
                ),
            );
        }
        parsed.map(HumanDuration)
    }
}

/// Shows the duration as a manifest would write it: in the largest unit that
/// divides it (`24h`, `90s`, `250ms`).
impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        let units = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")];
        match units
            .iter()
            .find(|(per, _)| millis != 0 && millis.is_multiple_of(*per))
        {
            Some((per, unit)) => write!(f, "{}{unit}", millis / per),
            None => write!(f, "{millis}ms"),
        }
    }
}

/// Parses `<digits><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
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

/// A byte size: a plain integer, or a number with `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl Decode for ByteSize {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let parsed = match &node.value {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::Str(s) => parse_size(s),
            _ => None,
        };
        if parsed.is_none() {
            diags.error(
                node.location,
                format!(
                    "expected a size like `64KiB`, `10MiB` or a number of bytes, found {}",
                    describe(node)
                ),
            );
        }
        parsed.map(ByteSize)
    }
}

/// Shows the size as a manifest would write it: `64MiB` when it is a whole
/// number of KiB, MiB or GiB, otherwise `1000 bytes`.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(30, "GiB"), (20, "MiB"), (10, "KiB")];
        let whole = |shift: &u32| self.0 != 0 && self.0.is_multiple_of(1 << shift);
        match units.iter().find(|(shift, _)| whole(shift)) {
            Some((shift, unit)) => write!(f, "{}{unit}", self.0 >> shift),
            None => write!(f, "{} bytes", self.0),
        }
    }
}

/// Parses `<digits>[ ]<unit>` with a decimal (`KB`) or binary (`KiB`) unit.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Records "expected X, found Y" and returns `None`.
pub fn mismatch<T>(node: &Node, expected: &str, diags: &mut Diagnostics) -> Option<T> {
    diags.error(
        node.location,
        format!("expected {expected}, found {}", describe(node)),
    );
    None
}

/// Describes a node for messages: scalars with their text, collections by kind.
fn describe(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => format!("`{s}`"),
        Value::Int(_) | Value::Float(_) => format!("`{}`", node.scalar_text()),
        // YAML reads unquoted yes/no/on/off/y/n as booleans: say so.
        Value::Bool(b) => format!("the boolean `{b}` (quote it if you meant text)"),
        Value::Null => "nothing".to_owned(),
        other => other.kind().to_owned(),
    }
}

/// The fields of a mapping, read one by one; unknown ones are reported by [`Fields::finish`].
pub struct Fields<'a> {
    what: &'static str,
    location: Location,
    entries: Vec<(&'a str, &'a Node, &'a Node)>,
    /// The keys asked for, in the order first asked (few: a linear search
    /// beats hashing them).
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// Starts reading `node` as the mapping describing a `what` (e.g. "route").
    pub fn of(node: &'a Node, what: &'static str, diags: &mut Diagnostics) -> Option<Self> {
        let Value::Map(map) = &node.value else {
            return mismatch(node, &format!("a mapping for the {what}"), diags);
        };
        let mut entries = Vec::with_capacity(map.len());
        for (key, value) in map {
            match &key.value {
                Value::Str(k) => entries.push((k.as_str(), key, value)),
                _ => diags.error(key.location, format!("{what} keys must be strings")),
            }
        }
        Some(Self {
            what,
            location: node.location,
            entries,
            known: Vec::new(),
        })
    }

    /// The node under `key`, if present.
    pub fn node(&mut self, key: &'static str) -> Option<&'a Node> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    /// Decodes an optional field: `Some(None)` when absent, `None` when invalid (recorded).
    pub fn optional<T: Decode>(
        &mut self,
        key: &'static str,
        diags: &mut Diagnostics,
    ) -> Option<Option<T>> {
        match self.node(key) {
            None => Some(None),
            Some(node) => T::decode(node, diags).map(Some),
        }
    }

    /// Decodes a required field, recording its absence.
    pub fn required<T: Decode>(&mut self, key: &'static str, diags: &mut Diagnostics) -> Option<T> {
        match self.node(key) {
            Some(node) => T::decode(node, diags),
            None => {
                diags.error(
                    self.location,
                    format!("missing required field `{key}` in the {}", self.what),
                );
                None
            }
        }
    }

    /// Decodes an optional field, falling back to `default` when absent or invalid
    /// (an invalid value is recorded, so the manifest is rejected all the same).
    pub fn or<T: Decode>(&mut self, key: &'static str, default: T, diags: &mut Diagnostics) -> T {
        self.optional(key, diags).flatten().unwrap_or(default)
    }

    /// Decodes an optional field that must lie in `range`: `None` when it is
    /// absent, invalid or out of range (the last two are recorded, out of
    /// range with the range allowed).
    pub fn bounded<T: Decode + PartialOrd + fmt::Display + Default>(
        &mut self,
        key: &'static str,
        range: RangeInclusive<T>,
        diags: &mut Diagnostics,
    ) -> Option<T> {
        let value = self.optional::<Located<T>>(key, diags).flatten()?;
        if range.contains(&value.value) {
            return Some(value.value);
        }
        let allowed = if *range.start() == T::default() {
            format!("at most {}", range.end())
        } else {
            format!("from {} to {}", range.start(), range.end())
        };
        diags.error(
            value.location,
            format!("{key} must be {allowed}, found {}", value.value),
        );
        None
    }

    /// Like [`Fields::bounded`], falling back to `default`.
    pub fn within<T: Decode + PartialOrd + fmt::Display + Default>(
        &mut self,
        key: &'static str,
        range: RangeInclusive<T>,
        default: T,
        diags: &mut Diagnostics,
    ) -> T {
        self.bounded(key, range, diags).unwrap_or(default)
    }

    /// Like [`Fields::within`] for a duration, falling back to `default`.
    pub fn duration(
        &mut self,
        key: &'static str,
        range: RangeInclusive<HumanDuration>,
        default: Duration,
        diags: &mut Diagnostics,
    ) -> Duration {
        self.within(key, range, HumanDuration(default), diags).0
    }

    /// Records every key that was never asked for.
    pub fn finish(self, diags: &mut Diagnostics) {
        for (key, key_node, _) in &self.entries {
            if !self.known.contains(key) {
                diags.error(
                    key_node.location,
                    format!(
                        "unknown field `{key}` in {}; expected one of: {}",
                        self.what,
                        self.known.join(", ")
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_with_units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn parses_sizes_decimal_and_binary() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64KiB"), Some(65_536));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("1TiB"), None);
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn shows_sizes_in_the_largest_whole_unit() {
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(4 << 30).to_string(), "4GiB");
        assert_eq!(ByteSize(3072).to_string(), "3KiB");
        assert_eq!(ByteSize(1536).to_string(), "1536 bytes");
        assert_eq!(ByteSize(0).to_string(), "0 bytes");
    }

    #[test]
    fn shows_durations_in_the_largest_whole_unit() {
        let shown = |ms| HumanDuration(Duration::from_millis(ms)).to_string();
        assert_eq!(shown(86_400_000), "24h");
        assert_eq!(shown(90_000), "90s");
        assert_eq!(shown(120_000), "2m");
        assert_eq!(shown(250), "250ms");
        assert_eq!(shown(0), "0ms");
    }
}
