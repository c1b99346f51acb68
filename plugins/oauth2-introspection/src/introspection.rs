//! RFC 7662 on the wire: the introspection request for a token, and the
//! authorization server's answer reduced to what the policy reads.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weir_sdk::CallRequest;

use crate::config::Policy;

/// The introspection request for `token` (RFC 7662 §2.1): a form POST with
/// the gateway's client credentials in HTTP Basic.
pub fn request(policy: &Policy, token: &str) -> CallRequest {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token);
    if let Some(hint) = &policy.token_type_hint {
        form.append_pair("token_type_hint", hint);
    }
    CallRequest::post(&policy.path, form.finish())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .header("authorization", &policy.authorization)
        .timeout(policy.timeout)
}

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    /// The body is not a JSON object.
    #[error("the answer is not a JSON object")]
    NotJson,
    /// `active` is missing or not a boolean.
    #[error("the answer has no boolean `active`")]
    NoActive,
    /// `exp` is not a number.
    #[error("the answer's `exp` is not a number")]
    BadExp,
}

/// What the authorization server said about a token: `active`, `exp`, and
/// the members the policy reads (none for an inactive token). This is what
/// the cache keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Whether the token is active.
    pub active: bool,
    /// When it expires, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// The members kept, as the server sent them.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub members: Map<String, Value>,
}

impl Answer {
    /// The answer `body` (an introspection response), keeping only the
    /// members `keep` names.
    pub fn parse<'a>(body: &[u8], keep: impl Iterator<Item = &'a str>) -> Result<Self, BadAnswer> {
        let mut all: Map<String, Value> =
            serde_json::from_slice(body).map_err(|_| BadAnswer::NotJson)?;
        let active = all
            .get("active")
            .and_then(Value::as_bool)
            .ok_or(BadAnswer::NoActive)?;
        if !active {
            // RFC 7662 §2.2: nothing else of an inactive token is to be trusted.
            return Ok(Self::inactive());
        }
        let exp = match all.get("exp") {
            None | Some(Value::Null) => None,
            Some(exp) => Some(
                exp.as_f64()
                    .filter(|s| *s >= 0.0)
                    .ok_or(BadAnswer::BadExp)? as u64,
            ),
        };
        let mut members = Map::new();
        for name in keep {
            if let Some(value) = all.remove(name) {
                members.insert(name.to_owned(), value);
            }
        }
        Ok(Self {
            active,
            exp,
            members,
        })
    }

    /// An inactive token's answer.
    pub fn inactive() -> Self {
        Self {
            active: false,
            exp: None,
            members: Map::new(),
        }
    }

    /// Whether the token is active at `now` (seconds): active and not past
    /// its `exp`.
    pub fn active_at(&self, now: u64) -> bool {
        self.active && self.exp.is_none_or(|exp| now < exp)
    }

    /// String member `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.members.get(name).and_then(Value::as_str)
    }

    /// The token's scopes: `scope` split at spaces (RFC 7662), or a JSON
    /// array of strings, as some servers send.
    pub fn scopes(&self) -> Vec<&str> {
        match self.members.get("scope") {
            Some(Value::String(scope)) => scope.split_ascii_whitespace().collect(),
            Some(Value::Array(scopes)) => scopes.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// Member `name` as a header value: a string as it is, an array of
    /// strings joined by spaces, anything else as its JSON text; `None` when
    /// it is absent or holds a control character (no header can carry it).
    pub fn header_value(&self, name: &str) -> Option<String> {
        let text = match self.members.get(name)? {
            Value::Null => return None,
            Value::String(text) => text.clone(),
            Value::Array(items) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        };
        (!text.chars().any(char::is_control)).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Answer, BadAnswer> {
        Answer::parse(body.as_bytes(), ["sub", "scope", "aud"].into_iter())
    }

    #[test]
    fn keeps_only_the_members_read() {
        let answer = parse(
            r#"{"active": true, "exp": 1700000060, "sub": "ada", "scope": "a b",
                "aud": ["x", "y"], "username": "secret-ish"}"#,
        )
        .expect("readable");
        assert_eq!(answer.exp, Some(1_700_000_060));
        assert_eq!(answer.text("sub"), Some("ada"));
        assert_eq!(answer.scopes(), ["a", "b"]);
        assert_eq!(answer.header_value("aud").as_deref(), Some("x y"));
        assert!(!answer.members.contains_key("username"));
    }

    #[test]
    fn an_inactive_answer_keeps_nothing_and_a_past_exp_is_inactive() {
        let inactive = parse(r#"{"active": false, "sub": "ada"}"#).expect("readable");
        assert_eq!(inactive, Answer::inactive());
        let answer = parse(r#"{"active": true, "exp": 100}"#).expect("readable");
        assert!(answer.active_at(99));
        assert!(!answer.active_at(100));
        assert!(
            parse(r#"{"active": true}"#)
                .expect("readable")
                .active_at(u64::MAX)
        );
    }

    #[test]
    fn refuses_answers_without_a_boolean_active() {
        assert_eq!(parse("<html>"), Err(BadAnswer::NotJson));
        assert_eq!(parse("[]"), Err(BadAnswer::NotJson));
        assert_eq!(parse(r#"{"sub": "ada"}"#), Err(BadAnswer::NoActive));
        assert_eq!(parse(r#"{"active": "true"}"#), Err(BadAnswer::NoActive));
        assert_eq!(
            parse(r#"{"active": true, "exp": "soon"}"#),
            Err(BadAnswer::BadExp)
        );
    }

    #[test]
    fn header_values_never_carry_control_characters() {
        let answer =
            parse(r#"{"active": true, "sub": "ada\r\nx-admin: 1", "scope": 7}"#).expect("readable");
        assert_eq!(answer.header_value("sub"), None);
        assert_eq!(answer.header_value("scope").as_deref(), Some("7"));
        assert_eq!(answer.header_value("aud"), None);
    }
}
