//! `/routes`, `/upstreams`, `/plugins` and `/consumers`: the running manifest's entities,
//! listed, read, put and deleted one at a time. Each change is an edit of
//! the running manifest's document applied whole through the [`Store`]
//! (one validation and build, `If-Match` honoured), so a problem names its
//! place in the whole manifest (`/routes/3/upstream`). Also the live state
//! of an upstream's targets.

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value};

use super::problem::Problem;
use super::{AdminResponse, blocking, changed, if_match, json, read_body, rejected_edit, set_etag};
use crate::config::MAX_MANIFEST_BYTES;
use crate::control::store::{EditError, Store};

/// A kind of entity of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `routes`.
    Route,
    /// `upstreams`.
    Upstream,
    /// `plugins`.
    Plugin,
    /// `consumers`.
    Consumer,
}

impl Kind {
    /// The kind a path's first segment names.
    pub fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "routes" => Some(Self::Route),
            "upstreams" => Some(Self::Upstream),
            "plugins" => Some(Self::Plugin),
            "consumers" => Some(Self::Consumer),
            _ => None,
        }
    }

    /// Its list's key in the manifest.
    pub fn key(self) -> &'static str {
        match self {
            Self::Route => "routes",
            Self::Upstream => "upstreams",
            Self::Plugin => "plugins",
            Self::Consumer => "consumers",
        }
    }

    /// One of it, as messages name it.
    pub fn singular(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Upstream => "upstream",
            Self::Plugin => "plugin",
            Self::Consumer => "consumer",
        }
    }
}

/// The entities of `kind` in `document`, in manifest order.
pub fn entries(document: &Value, kind: Kind) -> &[Value] {
    document[kind.key()].as_array().map_or(&[], Vec::as_slice)
}

/// The index of the entity named `name` among `entries`.
pub fn position(entries: &[Value], name: &str) -> Option<usize> {
    entries.iter().position(|e| e["name"] == name)
}

/// The list of `kind` in `document`, created empty when the manifest has none.
pub fn entries_mut(document: &mut Value, kind: Kind) -> Result<&mut Vec<Value>, EditError> {
    let not_a_list =
        || EditError::Conflict(format!("the manifest's `{}` is not a list", kind.key()));
    let root = document.as_object_mut().ok_or_else(not_a_list)?;
    root.entry(kind.key())
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(not_a_list)
}

/// Refuses `name` when no entity of `kind` has it.
pub fn not_found(kind: Kind, name: &str) -> EditError {
    EditError::NotFound {
        kind: kind.singular(),
        name: name.to_owned(),
    }
}

/// The running manifest as JSON, and its version.
fn running(store: &Store) -> (Value, String) {
    let (text, version) = store.current();
    (crate::config::document(&text).unwrap_or_default(), version)
}

/// `GET /{kind}`: every entity of `kind`, in manifest order.
pub fn list(store: &Store, kind: Kind) -> AdminResponse {
    let (document, version) = running(store);
    let mut response = json(
        StatusCode::OK,
        &Value::Array(entries(&document, kind).to_vec()),
    );
    set_etag(&mut response, &version);
    response
}

/// `GET /{kind}/{name}`: one entity.
pub fn get(store: &Store, kind: Kind, name: &str) -> Result<AdminResponse, Problem> {
    let (document, version) = running(store);
    let entries = entries(&document, kind);
    let found = position(entries, name)
        .ok_or_else(|| Problem::missing(&not_found(kind, name).to_string()))?;
    let mut response = json(StatusCode::OK, &entries[found]);
    set_etag(&mut response, &version);
    Ok(response)
}

/// `PUT /{kind}/{name}`: adds the entity in the body (at the end of its list)
/// or replaces the one of that name in place. 201 when added, 200 when replaced.
pub async fn put(
    store: &Arc<Store>,
    kind: Kind,
    name: &str,
    request: Request<Incoming>,
) -> Result<AdminResponse, Problem> {
    let expected = if_match(&request);
    let body = read_body(request, MAX_MANIFEST_BYTES, "the entity").await?;
    let entity = named_entity(&body, kind, name)?;
    let (sent, name) = (entity.clone(), name.to_owned());
    let edited = blocking(store, move |store| {
        store.edit(expected.as_deref(), move |document| {
            let entries = entries_mut(document, kind)?;
            match position(entries, &name) {
                Some(found) => {
                    entries[found] = sent;
                    Ok(false)
                }
                None => {
                    entries.push(sent);
                    Ok(true)
                }
            }
        })
    })
    .await?;
    let (applied, added) = edited.map_err(|e| rejected_edit(&e))?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(changed(&applied, status, Some(&entity)))
}

/// `DELETE /{kind}/{name}`: removes the entity; 204.
pub async fn delete<B>(
    store: &Arc<Store>,
    kind: Kind,
    name: &str,
    request: &Request<B>,
) -> Result<AdminResponse, Problem> {
    let expected = if_match(request);
    let name = name.to_owned();
    let edited = blocking(store, move |store| {
        store.edit(expected.as_deref(), move |document| {
            let entries = entries_mut(document, kind)?;
            let found = position(entries, &name).ok_or_else(|| not_found(kind, &name))?;
            entries.remove(found);
            Ok(())
        })
    })
    .await?;
    let (applied, ()) = edited.map_err(|e| rejected_edit(&e))?;
    Ok(changed(&applied, StatusCode::NO_CONTENT, None))
}

/// `GET /upstreams/{name}/targets`: each target of the running group with
/// its weight, requests in flight, health (`unchecked` without health
/// checks, else `healthy`, `unhealthy` or `ejected`) and ejections so far.
pub fn targets(store: &Store, name: &str) -> Result<AdminResponse, Problem> {
    let group = store
        .gateway()
        .upstream(name)
        .ok_or_else(|| Problem::missing(&not_found(Kind::Upstream, name).to_string()))?;
    let targets: Vec<Value> = group
        .target_statuses()
        .into_iter()
        .map(|t| {
            serde_json::json!({
                "address": t.address,
                "weight": t.weight,
                "in_flight": t.in_flight,
                "health": t.health.as_str(),
                "ejections": t.ejections,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &Value::Array(targets)))
}

/// The entity in a request body (JSON, or YAML), named `name`: its `name`
/// must be `name` or absent (then `name` is put first).
fn named_entity(body: &[u8], kind: Kind, name: &str) -> Result<Value, Problem> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Problem::bad_body(&format!("the {} is not UTF-8 text", kind.singular())))?;
    let Some(Value::Object(fields)) = crate::config::document(text) else {
        return Err(Problem::bad_body(&format!(
            "the body must be one {} as a JSON (or YAML) object",
            kind.singular()
        )));
    };
    match fields.get("name") {
        Some(given) if given == name => Ok(Value::Object(fields)),
        Some(given) => Err(Problem::bad_body(&format!(
            "the body names {} {given}, the path `{name}`",
            kind.singular()
        ))),
        None => {
            let mut named = Map::with_capacity(fields.len() + 1);
            named.insert("name".to_owned(), Value::String(name.to_owned()));
            named.extend(fields);
            Ok(Value::Object(named))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_an_entity_from_its_path_when_the_body_does_not() {
        let entity = named_entity(b"{ upstream: api }", Kind::Route, "orders").expect("named");
        assert_eq!(
            entity.to_string(),
            r#"{"name":"orders","upstream":"api"}"#,
            "the name comes first"
        );
        let same = named_entity(
            br#"{"name": "orders", "upstream": "api"}"#,
            Kind::Route,
            "orders",
        );
        assert_eq!(same.ok(), Some(entity));
    }

    #[test]
    fn refuses_a_body_that_names_another_entity_or_is_no_object() {
        for body in [
            &b"{ name: other }"[..],
            b"[1, 2]",
            b"just text",
            b"{ a: [ }",
        ] {
            assert!(
                named_entity(body, Kind::Route, "orders").is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn creates_a_missing_list_and_finds_entities_by_name() {
        let mut document = serde_json::json!({"routes": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(position(entries(&document, Kind::Route), "b"), Some(1));
        assert!(entries(&document, Kind::Plugin).is_empty());
        entries_mut(&mut document, Kind::Plugin)
            .expect("a list")
            .push(serde_json::json!({"name": "p"}));
        assert_eq!(document["plugins"][0]["name"], "p");
    }
}
