//! Edits of a JSON document by JSON pointer (RFC 6901): set, remove,
//! rename, move, wrap, unwrap and keep. Pointers are parsed once at
//! configure time; an edit whose place does not exist changes nothing.

use serde_json::{Map, Value};

/// A JSON pointer: the reference tokens of `/a/b~1c` (`a`, `b/c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses a pointer to a member or an element (not the whole document).
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` is not a JSON pointer (it must start with `/`, like `/user/name`)"
            ));
        };
        let mut tokens = Vec::new();
        for token in rest.split('/') {
            if token.contains('~') && token.replace("~0", "").replace("~1", "").contains('~') {
                return Err(format!(
                    "`{text}`: `~` must be followed by 0 (for `~`) or 1 (for `/`)"
                ));
            }
            tokens.push(token.replace("~1", "/").replace("~0", "~"));
        }
        Ok(Self { tokens })
    }

    /// The pointer's parent tokens and last token.
    fn split(&self) -> (&[String], &str) {
        match self.tokens.split_last() {
            Some((last, parents)) => (parents, last),
            None => (&[], ""),
        }
    }

    /// The value at the pointer.
    fn get<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        self.tokens
            .iter()
            .try_fold(doc, |value, token| child(value, token))
    }

    /// Removes the value at the pointer and returns it.
    fn take(&self, doc: &mut Value) -> Option<Value> {
        let (parents, last) = self.split();
        let parent = parents
            .iter()
            .try_fold(doc, |value, token| child_mut(value, token))?;
        match parent {
            Value::Object(map) => map.shift_remove(last),
            Value::Array(items) => {
                let at = index(last, items.len())?;
                Some(items.remove(at))
            }
            _ => None,
        }
    }

    /// Puts `new` at the pointer, making missing objects on the way;
    /// whether it could (not under a string, say).
    fn put(&self, doc: &mut Value, new: Value) -> bool {
        let (parents, last) = self.split();
        let mut value = doc;
        for token in parents {
            if let Value::Object(map) = value {
                value = map
                    .entry(token.as_str())
                    .or_insert_with(|| Value::Object(Map::new()));
            } else if let Some(next) = child_mut(value, token) {
                value = next;
            } else {
                return false;
            }
        }
        match value {
            Value::Object(map) => {
                map.insert(last.to_owned(), new);
                true
            }
            Value::Array(items) if last == "-" || last == items.len().to_string() => {
                items.push(new);
                true
            }
            Value::Array(items) => match index(last, items.len()) {
                Some(at) => {
                    items[at] = new;
                    true
                }
                None => false,
            },
            _ => false,
        }
    }
}

/// The index an array token names, if it is one within `len`.
fn index(token: &str, len: usize) -> Option<usize> {
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    token.parse().ok().filter(|at| valid && *at < len)
}

fn child<'v>(value: &'v Value, token: &str) -> Option<&'v Value> {
    match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(index(token, items.len())?),
        _ => None,
    }
}

fn child_mut<'v>(value: &'v mut Value, token: &str) -> Option<&'v mut Value> {
    match value {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => {
            let at = index(token, items.len())?;
            items.get_mut(at)
        }
        _ => None,
    }
}

/// What a `set` puts in place.
#[derive(Debug, Clone, PartialEq)]
pub enum NewValue {
    /// A JSON value as configured.
    Json(Value),
    /// The string of template `i` (see `crate::Values`).
    Template(usize),
}

/// One edit of a JSON document.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Puts a value at a pointer, making missing objects on the way.
    Set { at: Pointer, value: NewValue },
    /// Removes the value at a pointer.
    Remove(Pointer),
    /// Renames the member at a pointer, keeping it in its object and place.
    Rename { at: Pointer, to: String },
    /// Moves the value at one pointer to another.
    Move { from: Pointer, to: Pointer },
    /// Makes the document the only member `key` of a new object.
    Wrap(String),
    /// Makes member `key` of the document the document.
    Unwrap(String),
    /// Keeps only the values at these pointers (in their places).
    Keep(Vec<Pointer>),
}

impl Edit {
    /// Applies the edit to `doc`; `template(i)` is the string of template
    /// `i` for this request (`None`: a `set` of it changes nothing).
    pub fn apply(&self, doc: &mut Value, template: &dyn Fn(usize) -> Option<String>) {
        match self {
            Self::Set { at, value } => {
                let value = match value {
                    NewValue::Json(value) => value.clone(),
                    NewValue::Template(i) => match template(*i) {
                        Some(text) => Value::String(text),
                        None => return,
                    },
                };
                at.put(doc, value);
            }
            Self::Remove(at) => {
                at.take(doc);
            }
            Self::Rename { at, to } => rename(doc, at, to),
            Self::Move { from, to } => {
                if from.get(doc).is_none() || to.tokens.starts_with(&from.tokens) {
                    return;
                }
                if let Some(value) = from.take(doc) {
                    to.put(doc, value);
                }
            }
            Self::Wrap(key) => {
                let inner = std::mem::take(doc);
                let mut map = Map::new();
                map.insert(key.clone(), inner);
                *doc = Value::Object(map);
            }
            Self::Unwrap(key) => {
                if let Value::Object(map) = doc
                    && let Some(inner) = map.shift_remove(key)
                {
                    *doc = inner;
                }
            }
            Self::Keep(pointers) => {
                let mut kept = Value::Object(Map::new());
                for pointer in pointers {
                    if let Some(value) = pointer.take(doc) {
                        pointer.put(&mut kept, value);
                    }
                }
                *doc = kept;
            }
        }
    }
}

/// Renames the member at `at` to `to` in its object, where it was.
fn rename(doc: &mut Value, at: &Pointer, to: &str) {
    let (parents, last) = at.split();
    let Some(Value::Object(map)) = parents
        .iter()
        .try_fold(doc, |value, token| child_mut(value, token))
    else {
        return;
    };
    if last == to || !map.contains_key(last) {
        return;
    }
    map.shift_remove(to);
    let place = map.keys().position(|key| key == last).unwrap_or(map.len());
    if let Some(value) = map.shift_remove(last) {
        map.shift_insert(place, to.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pointer(text: &str) -> Pointer {
        Pointer::parse(text).expect("a pointer")
    }

    fn apply(edit: Edit, mut doc: Value) -> Value {
        edit.apply(&mut doc, &|_| Some("rendered".to_owned()));
        doc
    }

    #[test]
    fn pointers_unescape_their_tokens() {
        assert_eq!(pointer("/a~1b/c~0d/0").tokens, ["a/b", "c~d", "0"]);
        assert_eq!(pointer("/").tokens, [""]);
        assert!(Pointer::parse("a/b").is_err());
        assert!(Pointer::parse("").is_err());
        assert!(Pointer::parse("/a~2").is_err());
    }

    #[test]
    fn set_makes_missing_objects_and_appends_to_arrays() {
        let set = |at: &str, value: NewValue| Edit::Set {
            at: pointer(at),
            value,
        };
        let doc = json!({"a": {"b": 1}, "list": [1, 2]});
        assert_eq!(
            apply(set("/x/y", NewValue::Json(json!(true))), doc.clone()),
            json!({"a": {"b": 1}, "list": [1, 2], "x": {"y": true}})
        );
        assert_eq!(
            apply(set("/list/-", NewValue::Template(0)), doc.clone()),
            json!({"a": {"b": 1}, "list": [1, 2, "rendered"]})
        );
        assert_eq!(
            apply(set("/list/0", NewValue::Json(json!(9))), doc.clone()),
            json!({"a": {"b": 1}, "list": [9, 2]})
        );
        assert_eq!(
            apply(set("/a/b/c", NewValue::Json(json!(9))), doc.clone()),
            doc,
            "nothing goes under a number"
        );
        assert_eq!(
            apply(set("/list/7", NewValue::Json(json!(9))), doc.clone()),
            doc
        );
        let mut unchanged = doc.clone();
        Edit::Set {
            at: pointer("/z"),
            value: NewValue::Template(0),
        }
        .apply(&mut unchanged, &|_| None);
        assert_eq!(
            unchanged, doc,
            "a template with nothing to say sets nothing"
        );
    }

    #[test]
    fn remove_rename_and_move_keep_the_order_of_members() {
        let doc = json!({"id": 1, "first": "Ada", "secret": "x", "items": [{"sku": "a"}]});
        assert_eq!(
            apply(Edit::Remove(pointer("/secret")), doc.clone()).to_string(),
            r#"{"id":1,"first":"Ada","items":[{"sku":"a"}]}"#
        );
        assert_eq!(
            apply(
                Edit::Rename {
                    at: pointer("/first"),
                    to: "given_name".into()
                },
                doc.clone()
            )
            .to_string(),
            r#"{"id":1,"given_name":"Ada","secret":"x","items":[{"sku":"a"}]}"#
        );
        assert_eq!(
            apply(
                Edit::Move {
                    from: pointer("/items/0/sku"),
                    to: pointer("/sku")
                },
                doc.clone()
            )
            .to_string(),
            r#"{"id":1,"first":"Ada","secret":"x","items":[{}],"sku":"a"}"#
        );
        assert_eq!(
            apply(Edit::Remove(pointer("/nothing/here")), doc.clone()),
            doc
        );
        assert_eq!(
            apply(
                Edit::Move {
                    from: pointer("/items"),
                    to: pointer("/items/0/all")
                },
                doc.clone()
            ),
            doc,
            "a value does not move into itself"
        );
    }

    #[test]
    fn wrap_unwrap_and_keep() {
        let doc = json!({"id": 1, "user": {"name": "Ada", "email": "a@x"}, "debug": true});
        assert_eq!(
            apply(Edit::Wrap("data".into()), doc.clone()),
            json!({"data": doc.clone()})
        );
        assert_eq!(
            apply(Edit::Unwrap("user".into()), doc.clone()),
            json!({"name": "Ada", "email": "a@x"})
        );
        assert_eq!(apply(Edit::Unwrap("none".into()), doc.clone()), doc);
        assert_eq!(
            apply(
                Edit::Keep(vec![
                    pointer("/user/name"),
                    pointer("/id"),
                    pointer("/gone")
                ]),
                doc
            )
            .to_string(),
            r#"{"user":{"name":"Ada"},"id":1}"#
        );
    }
}
