//! Typed plugin configuration: the plugin's JSON read into its `Config`
//! type, and errors that say which field is wrong.
//!
//! A bad configuration is reported to Weir through the foreign function
//! `weir.configuration_error` (`{"pointer", "message"}`), which lets
//! `weir validate` print the reason at the YAML line of the offending field.
//! Hosts without that function (Envoy) answer NOT_FOUND; they get the reason
//! as an error log line instead.

use serde::de::DeserializeOwned;

use crate::host::{self, LogLevel};

/// Why a configuration was refused, and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// A JSON pointer (RFC 6901) to the offending value; empty for the whole.
    pub pointer: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl ConfigError {
    /// An error about the value at `pointer` (e.g. `/limits/0/rate`).
    pub fn at(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }

    /// An error about the configuration as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        Self::at("", message)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pointer.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads `bytes` (JSON; nothing at all reads as `{}`) as a `C`.
pub fn parse<C: DeserializeOwned>(bytes: &[u8]) -> Result<C, ConfigError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let result: Result<C, _> = serde_path_to_error::deserialize(&mut deserializer);
    let config = result.map_err(|error| {
        let pointer = pointer_of(error.path());
        ConfigError::at(pointer, without_position(error.inner()))
    })?;
    deserializer
        .end()
        .map_err(|error| ConfigError::new(without_position(&error)))?;
    Ok(config)
}

/// The JSON pointer of a serde path (`limits[0].rate` → `/limits/0/rate`).
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Unknown => {}
        }
    }
    pointer
}

/// serde_json's message without its " at line L column C", which points into
/// the JSON the host made of the YAML, not into anything the user wrote.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

/// Hands `error` to the host, which reports it with its place; a host that
/// does not take it (Envoy) gets it as a log line of plugin `plugin`.
pub(crate) fn report(plugin: &str, error: &ConfigError) {
    let report = serde_json::json!({ "pointer": error.pointer, "message": error.message });
    if host::call_foreign_function("weir.configuration_error", report.to_string().as_bytes())
        .is_ok()
    {
        return;
    }
    let place = if error.pointer.is_empty() {
        String::new()
    } else {
        format!(" at {}", error.pointer)
    };
    let _ = host::log(
        LogLevel::Error,
        &format!("{plugin}: invalid configuration{place}: {}", error.message),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Limit {
        rate: f64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        #[serde(default)]
        limits: Vec<Limit>,
        #[serde(default)]
        name: Option<String>,
    }

    #[test]
    fn errors_point_at_the_offending_field_without_json_positions() {
        let error = parse::<Config>(br#"{"limits": [{"rate": 1}, {"rate": "fast"}]}"#)
            .expect_err("a string rate");
        assert_eq!(error.pointer, "/limits/1/rate");
        assert_eq!(error.message, "invalid type: string \"fast\", expected f64");
        let error = parse::<Config>(br#"{"limits": [], "nmae": "x"}"#).expect_err("a typo");
        assert_eq!(error.pointer, "/nmae");
        assert!(
            error.message.starts_with("unknown field `nmae`"),
            "{}",
            error.message
        );
        let error = parse::<Config>(br#"{"limits": []} {}"#).expect_err("trailing JSON");
        assert_eq!(error.pointer, "");
        assert_eq!(error.message, "trailing characters");
    }

    #[test]
    fn no_configuration_reads_as_an_empty_object() {
        let config = parse::<Config>(b"").expect("defaults");
        assert!(config.limits.is_empty() && config.name.is_none());
    }
}
