//! The JSON work of an aggregation: keeping the selected fields of an
//! answer, and merging answers into one document.

use serde_json::{Map, Value};

/// A field to keep: a path of object members (`name` is `["name"]`,
/// `/address/city` is `["address", "city"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field(Vec<String>);

impl Field {
    /// Parses a top-level member name (`name`) or a JSON pointer
    /// (`/address/city`, RFC 6901 with `~0` and `~1`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must name a field (`name`) or a JSON pointer (`/a/b`)".into());
        }
        let Some(pointer) = text.strip_prefix('/') else {
            return Ok(Self(vec![text.to_owned()]));
        };
        pointer
            .split('/')
            .map(|token| {
                unescape(token)
                    .ok_or_else(|| format!("`{text}` has a `~` that is neither `~0` nor `~1`"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// A pointer token with `~1` as `/` and `~0` as `~`; `None` for another `~`.
fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next()? {
                '0' => out.push('~'),
                '1' => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// The members of `value` that `fields` name, at the same places; a field
/// `value` lacks (or that runs into something other than an object) is left
/// out. A `value` that is not an object gives `{}`.
pub fn select(value: &Value, fields: &[Field]) -> Value {
    let mut kept = Map::new();
    for Field(path) in fields {
        let Some(leaf) = path
            .iter()
            .try_fold(value, |inner, member| inner.get(member))
        else {
            continue;
        };
        let wrapped = path.iter().rev().fold(leaf.clone(), |inner, member| {
            Value::Object(Map::from_iter([(member.clone(), inner)]))
        });
        if let Value::Object(wrapped) = wrapped {
            deep_merge(&mut kept, wrapped);
        }
    }
    Value::Object(kept)
}

/// Merges `from` into `into`: members of two objects merge recursively;
/// anything else (arrays included) in `from` replaces what `into` had.
pub fn deep_merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(inner)) => deep_merge(existing, inner),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(texts: &[&str]) -> Vec<Field> {
        texts
            .iter()
            .map(|t| Field::parse(t).expect("a field"))
            .collect()
    }

    #[test]
    fn select_keeps_named_members_at_their_places() {
        let user = json!({"id": 1, "name": "Ada", "password": "x",
            "address": {"city": "London", "street": "1 Lane", "geo": {"lat": 51}},
            "a/b": {"~c": true}, "tags": [{"n": 1}]});
        assert_eq!(
            select(
                &user,
                &fields(&["name", "/address/city", "/address/geo/lat", "/a~1b/~0c"])
            ),
            json!({"name": "Ada", "address": {"city": "London", "geo": {"lat": 51}},
                "a/b": {"~c": true}})
        );
        assert_eq!(
            select(&user, &fields(&["missing", "/name/first", "/tags/0/n"])),
            json!({}),
            "absent fields, and fields through a non-object, are left out"
        );
        assert_eq!(select(&json!([1, 2]), &fields(&["name"])), json!({}));
    }

    #[test]
    fn fields_are_member_names_or_pointers() {
        assert_eq!(Field::parse("name"), Ok(Field(vec!["name".into()])));
        assert_eq!(
            Field::parse("/a~1b/~0c"),
            Ok(Field(vec!["a/b".into(), "~c".into()]))
        );
        assert!(Field::parse("").is_err());
        assert!(Field::parse("/a~2").is_err());
    }

    #[test]
    fn deep_merge_merges_objects_and_replaces_the_rest() {
        let mut into = json!({"user": {"id": 1, "name": "Ada"}, "tags": [1], "n": 1})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let from =
            json!({"user": {"name": "Ada L.", "city": "London"}, "tags": [2], "n": {"x": 1}});
        deep_merge(&mut into, from.as_object().cloned().unwrap_or_default());
        assert_eq!(
            Value::Object(into),
            json!({"user": {"id": 1, "name": "Ada L.", "city": "London"}, "tags": [2], "n": {"x": 1}})
        );
    }
}
