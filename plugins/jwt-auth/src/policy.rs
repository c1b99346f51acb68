//! What a route asks of a verified token (scopes, claims with given values)
//! and which claims go upstream as headers.

use serde_json::{Map, Value};

use crate::refusal::Refusal;

type Claims = Map<String, Value>;

/// Where a claim is: a top-level name, or a JSON Pointer into the claims
/// (`/realm_access/roles`) when it starts with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(String);

impl ClaimPath {
    /// The path `text` names; an error for an empty one.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text == "/" {
            return Err("names no claim".into());
        }
        Ok(Self(text.to_owned()))
    }

    /// The claim's value in `claims`, if it has one.
    pub fn find<'a>(&self, claims: &'a Claims) -> Option<&'a Value> {
        match self.0.strip_prefix('/') {
            Some(_) => {
                let (first, rest) = match self.0[1..].split_once('/') {
                    Some((first, rest)) => (first, format!("/{rest}")),
                    None => (&self.0[1..], String::new()),
                };
                let first = first.replace("~1", "/").replace("~0", "~");
                let top = claims.get(&first)?;
                if rest.is_empty() {
                    Some(top)
                } else {
                    top.pointer(&rest)
                }
            }
            None => claims.get(&self.0),
        }
        .filter(|v| !v.is_null())
    }

    /// The path as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The values a required claim may have.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// Any value (the claim must be present).
    Any,
    /// One of these: the claim equals one, or (an array) holds one.
    OneOf(Vec<Value>),
}

impl Accepted {
    /// The values configuration `value` accepts: `null` any, a scalar that
    /// one, a list any of those.
    pub fn parse(value: &Value) -> Result<Self, String> {
        let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
        match value {
            Value::Null => Ok(Self::Any),
            Value::Array(values) if !values.is_empty() && values.iter().all(scalar) => {
                Ok(Self::OneOf(values.clone()))
            }
            v if scalar(v) => Ok(Self::OneOf(vec![v.clone()])),
            _ => Err(
                "must be null (any value), a string, number or boolean, or a list of them".into(),
            ),
        }
    }

    fn admits(&self, claim: &Value) -> bool {
        let Self::OneOf(accepted) = self else {
            return true;
        };
        match claim {
            Value::Array(items) => items.iter().any(|item| accepted.contains(item)),
            value => accepted.contains(value),
        }
    }
}

/// A route's requirements on a verified token.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    /// Scopes the token must all have (in `scope` or `scp`).
    pub scopes: Vec<String>,
    /// Claims it must have, with the values accepted.
    pub claims: Vec<(ClaimPath, Accepted)>,
}

impl Requirements {
    /// Whether `claims` meet the requirements; the first unmet one.
    pub fn check(&self, claims: &Claims) -> Result<(), Refusal> {
        if !self.scopes.is_empty() {
            let granted = scopes(claims);
            if let Some(missing) = self.scopes.iter().find(|s| !granted.contains(&s.as_str())) {
                return Err(Refusal::Scope(missing.clone()));
            }
        }
        for (path, accepted) in &self.claims {
            match path.find(claims) {
                Some(value) if accepted.admits(value) => {}
                _ => return Err(Refusal::Claim(path.as_str().to_owned())),
            }
        }
        Ok(())
    }
}

/// The scopes a token grants: `scope` (space-separated, RFC 8693 / RFC 9068)
/// and `scp` (a list or a space-separated string, as some providers send).
fn scopes(claims: &Claims) -> Vec<&str> {
    let mut all = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(text)) => all.extend(text.split_ascii_whitespace()),
            Some(Value::Array(items)) => all.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    all
}

/// A claim as a header value: strings as they are, numbers and booleans as
/// JSON, lists of scalars joined with `,`, objects (and mixed lists) as
/// JSON; `None` for a value that cannot be a header (a control character).
pub fn header_value(value: &Value) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    let text = match value {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map_or_else(|| value.to_string(), |items| items.join(",")),
        other => scalar(other).unwrap_or_else(|| other.to_string()),
    };
    (!text.chars().any(|c| c.is_control())).then_some(text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Claims {
        match value {
            Value::Object(map) => map,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn claim_paths_are_names_or_json_pointers() {
        let c = claims(
            json!({"email": "a@b", "realm_access": {"roles": ["x"]}, "a/b": 1,
            "https://example.com/tenant": "acme"}),
        );
        let find = |p: &str| ClaimPath::parse(p).ok().and_then(|p| p.find(&c).cloned());
        assert_eq!(find("email"), Some(json!("a@b")));
        assert_eq!(find("/realm_access/roles"), Some(json!(["x"])));
        assert_eq!(find("/a~1b"), Some(json!(1)));
        assert_eq!(find("https://example.com/tenant"), Some(json!("acme")));
        assert_eq!(find("/realm_access/missing"), None);
        assert!(ClaimPath::parse("").is_err());
    }

    #[test]
    fn requirements_need_every_scope_and_an_accepted_value_of_each_claim() {
        let required = Requirements {
            scopes: vec!["read".into(), "write".into()],
            claims: vec![
                (ClaimPath::parse("email").unwrap(), Accepted::Any),
                (
                    ClaimPath::parse("/roles").unwrap(),
                    Accepted::parse(&json!(["admin", "editor"])).unwrap(),
                ),
            ],
        };
        let ok =
            claims(json!({"scope": "read write", "email": "a@b", "roles": ["viewer", "editor"]}));
        assert_eq!(required.check(&ok), Ok(()));
        let scp = claims(json!({"scp": ["write", "read"], "email": "a@b", "roles": "admin"}));
        assert_eq!(required.check(&scp), Ok(()));
        let no_write = claims(json!({"scope": "read", "email": "a@b", "roles": "admin"}));
        assert_eq!(
            required.check(&no_write),
            Err(Refusal::Scope("write".into()))
        );
        let viewer = claims(json!({"scope": "read write", "email": "a@b", "roles": ["viewer"]}));
        assert_eq!(
            required.check(&viewer),
            Err(Refusal::Claim("/roles".into()))
        );
        let no_email = claims(json!({"scope": "read write", "email": null, "roles": "admin"}));
        assert_eq!(
            required.check(&no_email),
            Err(Refusal::Claim("email".into()))
        );
        assert!(Accepted::parse(&json!({"a": 1})).is_err());
        assert!(Accepted::parse(&json!([])).is_err());
    }

    #[test]
    fn claims_become_header_values() {
        assert_eq!(header_value(&json!("ada")).as_deref(), Some("ada"));
        assert_eq!(header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(header_value(&json!(["a", "b"])).as_deref(), Some("a,b"));
        assert_eq!(
            header_value(&json!({"k": 1})).as_deref(),
            Some(r#"{"k":1}"#)
        );
        assert_eq!(header_value(&json!("a\nb")), None);
    }
}
