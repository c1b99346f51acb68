//! What a limit is counted per: the request's key, made of parts (client IP,
//! consumer, a header, a JWT claim, the route) in the configured order.

use weir_sdk::net::Cidr;
use weir_sdk::{Filter, HostResult, Http};

/// The property jwt-auth writes a verified token's claims to (JSON).
pub const CLAIMS: [&str; 2] = ["weir", "jwt_claims"];

/// Longest part kept as written; a longer one is replaced by its digest so
/// that keys stay short.
const MAX_PART: usize = 128;

/// One part of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// The client's IP, through the trusted proxies.
    Ip,
    /// The consumer an auth filter identified (empty when none).
    Consumer,
    /// The route's name.
    Route,
    /// A request header's value (empty when absent).
    Header(String),
    /// A claim of the verified JWT: a top-level name, or a JSON pointer
    /// (`/org/id`) into the claims (empty when absent).
    Claim(String),
}

impl Part {
    /// Reads `text`: `ip`, `consumer`, `route`, `header:NAME` or `claim:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let part = match text.split_once(':') {
            None => match text {
                "ip" => Self::Ip,
                "consumer" => Self::Consumer,
                "route" => Self::Route,
                _ => return Err(format!("unknown key part `{text}`: {}", Self::HELP)),
            },
            Some(("header", name)) if !name.trim().is_empty() => {
                Self::Header(name.trim().to_ascii_lowercase())
            }
            Some(("claim", name)) if !name.trim().is_empty() => Self::Claim(name.trim().to_owned()),
            Some(_) => return Err(format!("`{text}`: {}", Self::HELP)),
        };
        Ok(part)
    }

    /// What a part may be.
    const HELP: &'static str = "a part is `ip`, `consumer`, `route`, `header:NAME` or `claim:NAME`";
}

/// A configured key: its parts and the proxies trusted for the client IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The parts, in order.
    pub parts: Vec<Part>,
    /// Proxies whose `x-forwarded-for` is believed.
    pub trusted: Vec<Cidr>,
}

impl Key {
    /// Whether the consumer is part of the key (then a consumer's own limits apply).
    pub fn has_consumer(&self) -> bool {
        self.parts.contains(&Part::Consumer)
    }

    /// The request's key: each part as `name=value`, separated by `|`,
    /// a value longer than 128 bytes (or with a separator in it) as its
    /// SHA-1 digest.
    pub fn of<F: Filter>(&self, http: &Http<'_, F>, consumer: Option<&str>) -> HostResult<String> {
        let mut key = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                key.push('|');
            }
            let (label, value) = match part {
                Part::Ip => (
                    "ip",
                    http.client_ip(&self.trusted)?
                        .map(|ip| ip.to_string())
                        .unwrap_or_default(),
                ),
                Part::Consumer => ("consumer", consumer.unwrap_or_default().to_owned()),
                Part::Route => {
                    let route = http.property(&["route_name"])?.unwrap_or_default();
                    ("route", String::from_utf8_lossy(&route).into_owned())
                }
                Part::Header(name) => ("header", http.request_header(name)?.unwrap_or_default()),
                Part::Claim(name) => ("claim", claim(http.property(&CLAIMS)?.as_deref(), name)),
            };
            key.push_str(label);
            key.push('=');
            push_value(&mut key, &value);
        }
        Ok(key)
    }
}

/// Appends `value`, or its digest when it is long or holds a separator.
fn push_value(key: &mut String, value: &str) {
    if value.len() <= MAX_PART && !value.contains(['|', '\n', '{', '}']) {
        key.push_str(value);
        return;
    }
    use sha1::{Digest, Sha1};
    key.push_str(&format!("#{:x}", Sha1::digest(value.as_bytes())));
}

/// Claim `name` (a top-level name, or a JSON pointer) of `claims` (JSON),
/// as text: a string as it is, anything else as JSON; empty when missing.
fn claim(claims: Option<&[u8]>, name: &str) -> String {
    let Some(claims) = claims.and_then(|c| serde_json::from_slice::<serde_json::Value>(c).ok())
    else {
        return String::new();
    };
    let value = if name.starts_with('/') {
        claims.pointer(name)
    } else {
        claims.get(name)
    };
    match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_read_from_their_names() {
        assert_eq!(Part::parse("ip"), Ok(Part::Ip));
        assert_eq!(
            Part::parse("header:X-Api-Key"),
            Ok(Part::Header("x-api-key".into()))
        );
        assert_eq!(
            Part::parse("claim:/org/id"),
            Ok(Part::Claim("/org/id".into()))
        );
        assert!(Part::parse("header:").is_err());
        assert!(Part::parse("cookie:x").is_err());
        assert!(Part::parse("user").is_err());
    }

    #[test]
    fn claims_read_by_name_or_pointer() {
        let claims = br#"{"sub": "ada", "tier": 2, "org": {"id": "acme"}}"#;
        assert_eq!(claim(Some(claims), "sub"), "ada");
        assert_eq!(claim(Some(claims), "tier"), "2");
        assert_eq!(claim(Some(claims), "/org/id"), "acme");
        assert_eq!(claim(Some(claims), "missing"), "");
        assert_eq!(claim(None, "sub"), "");
        assert_eq!(claim(Some(b"not json"), "sub"), "");
    }

    #[test]
    fn long_values_and_separators_become_digests() {
        let mut key = String::new();
        push_value(&mut key, "short");
        assert_eq!(key, "short");
        let mut long = String::new();
        push_value(&mut long, &"x".repeat(500));
        assert_eq!(long.len(), 41);
        assert!(long.starts_with('#'));
        let mut forged = String::new();
        push_value(&mut forged, "a|route=b");
        assert!(forged.starts_with('#'), "a value cannot fake another part");
    }
}
