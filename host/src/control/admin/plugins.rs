//! Plugin modules through the admin API: an `application/wasm` upload is
//! stored as the plugin's next version ([`Versions`]) and the plugin's
//! `file` pointed at it (in place of a `builtin` it ran); the change is applied whole, so a module that does
//! not compile, imports what Weir lacks or fails `on_configure` is rejected
//! (and its stored version removed) while the running one stays. Versions
//! are listed, and a rollback points `file` at an earlier one.

use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::entities::{Kind, entries, entries_mut, not_found, position};
use super::problem::Problem;
use super::{AdminResponse, blocking, changed, if_match, json, read_body, rejected_edit, set_etag};
use crate::config::MAX_PLUGIN_BYTES;
use crate::control::store::{ChangeError, EditError, Store};
use crate::control::versions::{Version, Versions};

/// Whether a `PUT /plugins/{name}` sends a module rather than a plugin entry.
pub fn is_upload<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/wasm"))
}

/// The stored versions of plugin `name`, or a 400 problem for a name that
/// cannot name a directory.
fn versions_of(store: &Store, name: &str) -> Result<Versions, Problem> {
    Versions::of(store.base_dir(), name).map_err(|e| Problem::bad_body(&e.to_string()))
}

/// `PUT /plugins/{name}` with `content-type: application/wasm`: stores the
/// module as the next version and runs it; the plugin is created (with
/// defaults) when the manifest has none of that name. 201 with the version.
pub async fn upload(
    store: &Arc<Store>,
    name: &str,
    request: Request<Incoming>,
) -> Result<AdminResponse, Problem> {
    let versions = versions_of(store, name)?;
    let expected = if_match(&request);
    let module = read_body(request, MAX_PLUGIN_BYTES, "the module").await?;
    let plugin = name.to_owned();
    let stored = versions.clone();
    let uploaded = blocking(store, move |store| -> Result<_, ChangeError> {
        let number = stored.add(&module).map_err(|source| EditError::Io {
            path: stored.dir().to_path_buf(),
            source,
        })?;
        let file = stored.file(number);
        let edited = store.edit(expected.as_deref(), |document| {
            point_at(document, &plugin, &file, true)
        });
        if edited.is_err() {
            // A rejected upload leaves no version behind.
            let _ = stored.remove(number);
        }
        edited.map(|(applied, ())| (applied, number))
    })
    .await?;
    let (applied, number) = uploaded.map_err(|e| rejected_edit(&e))?;
    let version = listed(&versions, number)?;
    let body = serde_json::json!({
        "plugin": name,
        "version": describe(&version, true),
    });
    Ok(changed(&applied, StatusCode::CREATED, Some(&body)))
}

/// `GET /plugins/{name}/versions`: every uploaded version, oldest first,
/// with which one runs. 404 when the manifest has no such plugin and none
/// was uploaded.
pub async fn versions(store: &Arc<Store>, name: &str) -> Result<AdminResponse, Problem> {
    let versions = versions_of(store, name)?;
    let (text, version) = store.current();
    let document = crate::config::document(&text).unwrap_or_default();
    let plugins = entries(&document, Kind::Plugin);
    let running = position(plugins, name)
        .and_then(|i| plugins[i]["file"].as_str())
        .and_then(|file| versions.number_of(file));
    let listing = versions.clone();
    let stored = blocking(store, move |_| listing.list())
        .await?
        .map_err(|e| Problem::internal(&format!("cannot list the versions of `{name}`: {e}")))?;
    if stored.is_empty() && position(plugins, name).is_none() {
        return Err(Problem::missing(&not_found(Kind::Plugin, name).to_string()));
    }
    let body: Vec<Value> = stored
        .iter()
        .map(|v| describe(v, Some(v.number) == running))
        .collect();
    let mut response = json(StatusCode::OK, &Value::Array(body));
    set_etag(&mut response, &version);
    Ok(response)
}

/// `POST /plugins/{name}/rollback[?version=n]`: runs version `n`, or the
/// highest version below the running one. 200 with both numbers.
pub async fn rollback<B>(
    store: &Arc<Store>,
    name: &str,
    request: &Request<B>,
) -> Result<AdminResponse, Problem> {
    let versions = versions_of(store, name)?;
    let expected = if_match(request);
    let wanted = match query_version(request.uri().query()) {
        Ok(wanted) => wanted,
        Err(value) => {
            return Err(Problem::bad_body(&format!(
                "`version` must be a version number, not `{value}`"
            )));
        }
    };
    let name = name.to_owned();
    let edited = blocking(store, move |store| {
        store.edit(expected.as_deref(), |document| {
            let plugins = entries(document, Kind::Plugin);
            let found = position(plugins, &name).ok_or_else(|| not_found(Kind::Plugin, &name))?;
            let running = plugins[found]["file"]
                .as_str()
                .and_then(|file| versions.number_of(file));
            let stored = versions.list().map_err(|source| EditError::Io {
                path: versions.dir().to_path_buf(),
                source,
            })?;
            let target = pick(&stored, running, wanted, &name)?;
            point_at(document, &name, &versions.file(target), false)?;
            Ok((running, target))
        })
    })
    .await?;
    let (applied, (from, to)) = edited.map_err(|e| rejected_edit(&e))?;
    let body = serde_json::json!({"previous": from, "version": to});
    Ok(changed(&applied, StatusCode::OK, Some(&body)))
}

/// The version a rollback runs: `wanted` if stored, else the highest below `running`.
fn pick(
    stored: &[Version],
    running: Option<u64>,
    wanted: Option<u64>,
    name: &str,
) -> Result<u64, EditError> {
    if let Some(wanted) = wanted {
        return stored
            .iter()
            .any(|v| v.number == wanted)
            .then_some(wanted)
            .ok_or_else(|| EditError::NotFound {
                kind: "plugin version",
                name: format!("{name}/{wanted}"),
            });
    }
    let running = running.ok_or_else(|| {
        EditError::Conflict(format!(
            "plugin `{name}` does not run an uploaded version; name one with `?version=`"
        ))
    })?;
    stored
        .iter()
        .rev()
        .map(|v| v.number)
        .find(|&n| n < running)
        .ok_or_else(|| {
            EditError::Conflict(format!(
                "plugin `{name}` runs version {running}; no version before it is stored"
            ))
        })
}

/// Points plugin `name`'s `file` at `file`, keeping its other settings (a
/// `builtin` it ran is replaced by the `file`, in its place); with `create`,
/// adds the plugin (with defaults) when there is none.
fn point_at(document: &mut Value, name: &str, file: &str, create: bool) -> Result<(), EditError> {
    let plugins = entries_mut(document, Kind::Plugin)?;
    match position(plugins, name) {
        Some(found) => {
            let fields = plugins[found]
                .as_object_mut()
                .ok_or_else(|| EditError::Conflict(format!("plugin `{name}` is not a mapping")))?;
            let file = Value::String(file.to_owned());
            if fields.contains_key("file") {
                fields.insert("file".to_owned(), file);
            } else {
                *fields = std::mem::take(fields)
                    .into_iter()
                    .map(|(key, value)| match key.as_str() {
                        "builtin" => ("file".to_owned(), file.clone()),
                        _ => (key, value),
                    })
                    .collect();
                fields.entry("file").or_insert(file);
            }
            Ok(())
        }
        None if create => {
            plugins.push(serde_json::json!({"name": name, "file": file}));
            Ok(())
        }
        None => Err(not_found(Kind::Plugin, name)),
    }
}

/// The `version` of a query string: `Ok(None)` when absent, `Err` with the
/// value when it is not a number.
fn query_version(query: Option<&str>) -> Result<Option<u64>, String> {
    let value = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find_map(|(key, value)| (key == "version").then_some(value));
    match value {
        None => Ok(None),
        Some(value) => value.parse().map(Some).map_err(|_| value.into_owned()),
    }
}

/// Version `number` as listed now (it was just stored).
fn listed(versions: &Versions, number: u64) -> Result<Version, Problem> {
    versions
        .list()
        .ok()
        .and_then(|all| all.into_iter().find(|v| v.number == number))
        .ok_or_else(|| Problem::internal(&format!("version {number} vanished after its upload")))
}

/// A version as the API shows it.
fn describe(version: &Version, running: bool) -> Value {
    serde_json::json!({
        "version": version.number,
        "size": version.size,
        "sha256": version.sha256,
        "uploaded": version.uploaded.map(httpdate::fmt_http_date),
        "running": running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(numbers: &[u64]) -> Vec<Version> {
        numbers
            .iter()
            .map(|&number| Version {
                number,
                size: 0,
                sha256: String::new(),
                uploaded: None,
            })
            .collect()
    }

    #[test]
    fn rolls_back_to_the_highest_version_below_the_running_one() {
        let all = stored(&[1, 2, 4, 5]);
        assert_eq!(pick(&all, Some(5), None, "p").ok(), Some(4));
        assert_eq!(pick(&all, Some(4), None, "p").ok(), Some(2));
        assert_eq!(pick(&all, Some(4), Some(5), "p").ok(), Some(5));
        assert!(matches!(
            pick(&all, Some(1), None, "p"),
            Err(EditError::Conflict(_))
        ));
        assert!(matches!(
            pick(&all, None, None, "p"),
            Err(EditError::Conflict(_))
        ));
        assert!(matches!(
            pick(&all, Some(5), Some(3), "p"),
            Err(EditError::NotFound { .. })
        ));
    }

    #[test]
    fn reads_the_version_of_a_query() {
        assert_eq!(query_version(None), Ok(None));
        assert_eq!(query_version(Some("a=b")), Ok(None));
        assert_eq!(query_version(Some("a=b&version=3")), Ok(Some(3)));
        assert_eq!(query_version(Some("version=x")), Err("x".to_owned()));
    }

    #[test]
    fn points_a_plugin_at_a_file_keeping_its_settings() {
        let mut document = serde_json::json!({
            "plugins": [{"name": "p", "file": "old.wasm", "on_error": "fail_open"}]
        });
        point_at(&mut document, "p", "new.wasm", false).expect("points");
        assert_eq!(
            document["plugins"][0],
            serde_json::json!({"name": "p", "file": "new.wasm", "on_error": "fail_open"})
        );
        assert!(point_at(&mut document, "q", "q.wasm", false).is_err());
        document["plugins"][0] = serde_json::json!({"name": "p", "builtin": "jwt-auth", "vms": 1});
        point_at(&mut document, "p", "up.wasm", false).expect("points");
        assert_eq!(
            serde_json::to_string(&document["plugins"][0])
                .ok()
                .as_deref(),
            Some(r#"{"name":"p","file":"up.wasm","vms":1}"#),
            "the uploaded file takes the built-in's place"
        );
        point_at(&mut document, "q", "q.wasm", true).expect("creates");
        assert_eq!(
            document["plugins"][1],
            serde_json::json!({"name": "q", "file": "q.wasm"})
        );
    }
}
