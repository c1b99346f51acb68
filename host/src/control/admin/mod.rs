//! The admin API: a listener of its own (the manifest's `admin:`), JSON in
//! and out, RFC 9457 problems for every error, bearer tokens with roles.
//!
//! | endpoint | role | what |
//! |---|---|---|
//! | `GET /healthz` | none | the process serves |
//! | `GET /readyz` | none | config and plugins loaded, not draining |
//! | `GET /config` | read | the running manifest (JSON; `?format=yaml` for its text), with its version as `ETag` |
//! | `PUT /config` | admin | a whole manifest (YAML or JSON), applied as one change; `If-Match` honoured |
//! | `POST /config/validate` | read | checks a manifest as `weir validate` does |
//! | `GET /openapi.json` | read | this API described |
//! | `GET /routes`, `/upstreams`, `/plugins` | read | the entities, in manifest order |
//! | `GET /{kind}/{name}` | read | one entity |
//! | `PUT /{kind}/{name}` | admin | adds or replaces one entity; the whole manifest is applied |
//! | `DELETE /{kind}/{name}` | admin | removes one entity; the whole manifest is applied |
//! | `PUT /plugins/{name}` as `application/wasm` | admin | uploads a module as the plugin's next version |
//! | `GET /plugins/{name}/versions` | read | the uploaded versions, and which one runs |
//! | `POST /plugins/{name}/rollback` | admin | runs the version before the running one (or `?version=n`) |
//! | `GET /upstreams/{name}/targets` | read | each target's weight and requests in flight |
//! | `DELETE /cache?key=…` (or `prefix=…`, `route=…`) | admin | purges cached responses (the `cache` built-in's) here and in Redis, which tells the other nodes |
//! | `GET /builtins` | read | the plugins built into the binary, with their config schemas (not under `/plugins`, where a plugin may be called `builtin`) |
//! | `GET /metrics` | read | every metric, Prometheus text (OpenMetrics on request) |
//! | `GET /status` | read | what the status page shows, as JSON ([`status`]) |
//! | `GET /ui` (and `/`, which redirects there) | read | the status page ([`ui`]) |
//!
//! A token is sent as `Authorization: Bearer <token>`, or as the password of
//! `Authorization: Basic` (any user name) for browsers, which `/ui` asks
//! for with a Basic challenge.
//!
//! With `admin.tls` the listener speaks HTTPS; with `admin.tls.client_ca` it
//! also requires a client certificate that CA issued (mutual TLS), checked
//! before any request is read. Tokens, when configured, are still required.
//!
//! Entity handlers live in [`entities`], plugin uploads in [`plugins`].

mod auth;
pub mod client;
mod entities;
mod plugins;
mod problem;
mod status;
mod ui;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use self::auth::Access;
use self::entities::Kind;
use self::problem::Problem;
use super::cluster::{ClusterStatus, Outcome};
use super::store::{Applied, ChangeError, EditError, Store};
use crate::config::MAX_MANIFEST_BYTES;
use crate::config::model::Admin;
use crate::observe::Format;
use crate::server::tls::{self, TlsError};
use crate::services::response_cache::Purge;

/// The OpenAPI description served at `/openapi.json`.
const OPENAPI: &str = include_str!("openapi.json");

/// A response of the admin API.
type AdminResponse = Response<Full<Bytes>>;

/// The admin API's socket, bound, and its TLS settings, loaded.
pub struct Listener {
    socket: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Why the admin API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address cannot be bound.
    #[error("the admin API cannot bind {address}: {source}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate, key or client CA cannot be loaded.
    #[error("the admin API's TLS settings cannot be loaded: {0}")]
    Tls(#[from] TlsError),
}

impl Listener {
    /// The address it listens on (the port the system chose for `:0`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Whether it speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Loads the admin API's TLS settings and binds its address.
pub async fn bind(admin: &Admin) -> Result<Listener, BindError> {
    let tls = admin
        .tls
        .as_ref()
        .map(tls::admin_server_config)
        .transpose()?;
    let socket = TcpListener::bind(admin.address)
        .await
        .map_err(|source| BindError::Bind {
            address: admin.address,
            source,
        })?;
    Ok(Listener {
        socket,
        tls: tls.map(tokio_rustls::TlsAcceptor::from),
    })
}

/// Serves the admin API on `listener` until the returned task is aborted;
/// on a TLS listener each connection's handshake (and client certificate
/// check) comes first.
/// Also samples the routes' request totals for `/status` every
/// [`status::SAMPLE_EVERY`].
pub fn serve(listener: Listener, store: Arc<Store>) -> JoinHandle<()> {
    let rates = Arc::new(status::RateHistory::default());
    let sampled = store.clone();
    let sampler = rates.clone();
    let sampling = async move { sampler.run(sampled.gateway()).await };
    let accepting = async move {
        loop {
            let (stream, peer) = match listener.socket.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin API: accept failed");
                    continue;
                }
            };
            let admin = Context {
                store: store.clone(),
                rates: rates.clone(),
            };
            let acceptor = listener.tls.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => serve_connection(stream, admin).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => serve_connection(stream, admin).await,
                        Err(error) => {
                            tracing::warn!(%peer, %error, "admin API: TLS handshake refused");
                        }
                    },
                }
            });
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            () = accepting => {}
            () = sampling => {}
        }
    })
}

/// What every admin request is answered from.
#[derive(Clone)]
struct Context {
    store: Arc<Store>,
    rates: Arc<status::RateHistory>,
}

/// Serves the admin requests of one connection.
async fn serve_connection<S>(stream: S, admin: Context)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(handle(&admin, request).await) }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "admin API: connection ended with an error");
    }
}

/// Answers one admin request.
async fn handle(admin: &Context, request: Request<Incoming>) -> AdminResponse {
    let store = &admin.store;
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let needs = match (&method, path.as_str()) {
        (&Method::GET, "/healthz" | "/readyz" | "/") => None,
        (&Method::PUT | &Method::DELETE, _) => Some(Access::Admin),
        (&Method::POST, p) if p.ends_with("/rollback") => Some(Access::Admin),
        _ => Some(Access::Read),
    };
    if let Some(needs) = needs
        && let Err(problem) = auth::check(&store.tokens(), request.headers(), needs)
    {
        // Browsers answer only a Basic challenge: the page and what it reads.
        if ui::is_page(&path) || path == "/status" {
            return problem.challenge_basic().response();
        }
        return problem.response();
    }
    let result = match (method, path.as_str()) {
        (Method::GET, "/healthz") => Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        (Method::GET, "/readyz") => Ok(ready(store)),
        (Method::GET, "/config") => Ok(get_config(store, request.uri().query())),
        (Method::PUT, "/config") => put_config(store, request).await,
        (Method::POST, "/config/validate") => validate_config(store, request).await,
        (Method::GET, "/openapi.json") => Ok(with_type(
            StatusCode::OK,
            Bytes::from_static(OPENAPI.as_bytes()),
            "application/json",
        )),
        (Method::GET, "/builtins") => Ok(builtins()),
        (Method::GET, "/metrics") => Ok(metrics(store, request.headers())),
        (Method::GET, "/status") => Ok(json(
            StatusCode::OK,
            &status::document(store.gateway(), &admin.rates),
        )),
        (Method::GET, "/") => Ok(ui::redirect()),
        (Method::GET, p) if ui::is_page(p) => ui::asset(p).ok_or_else(|| Problem::not_found(p)),
        (Method::DELETE, "/cache") => purge_cache(store, request.uri().query()).await,
        (
            _,
            "/healthz" | "/readyz" | "/config" | "/openapi.json" | "/builtins" | "/cache"
            | "/metrics" | "/status" | "/" | "/ui",
        ) => Err(Problem::method_not_allowed(&path)),
        (_, "/config/validate") => Err(Problem::method_not_allowed(&path)),
        _ => route_entity(store, request, &path).await,
    };
    result.unwrap_or_else(|problem| problem.response())
}

/// `GET /metrics`: every metric in the Prometheus text format, or in
/// OpenMetrics when the scraper's `Accept` names it.
fn metrics(store: &Store, headers: &http::HeaderMap) -> AdminResponse {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let text = store.gateway().metrics(format);
    with_type(StatusCode::OK, Bytes::from(text), format.content_type())
}

/// `DELETE /cache?key=…` (or `?prefix=…`, `?route=…`): purges cached
/// responses here and in the Redis services the cache uses.
async fn purge_cache(store: &Store, query: Option<&str>) -> Result<AdminResponse, Problem> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let purge = match params.as_slice() {
        [(name, value)] if !value.is_empty() => match name.as_str() {
            "key" => Some(Purge::Key(value.clone())),
            "prefix" => Some(Purge::Prefix(value.clone())),
            "route" => Some(Purge::route(value)),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| {
        Problem::bad_request("give exactly one of `key`, `prefix` or `route`, not empty")
    })?;
    let (memory, redis) = store.gateway().purge_responses(&purge).await;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "purged": { "memory": memory, "redis": redis } }),
    ))
}

/// `GET /builtins`: what `weir plugins list` prints, with each schema.
fn builtins() -> AdminResponse {
    let list: Vec<serde_json::Value> = crate::builtins::all()
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.name,
                "version": b.version,
                "description": b.description,
                "size": b.module.len(),
                "sha256": b.sha256(),
                "schema": serde_json::from_str::<serde_json::Value>(b.schema)
                    .unwrap_or(serde_json::Value::Null),
            })
        })
        .collect();
    json(StatusCode::OK, &serde_json::Value::Array(list))
}

/// Answers the endpoints under `/routes`, `/upstreams`, `/plugins` and `/consumers`.
async fn route_entity(
    store: &Arc<Store>,
    request: Request<Incoming>,
    path: &str,
) -> Result<AdminResponse, Problem> {
    let mut segments = path.trim_start_matches('/').split('/');
    let kind = segments
        .next()
        .and_then(Kind::from_segment)
        .ok_or_else(|| Problem::not_found(path))?;
    let name = match segments.next() {
        None => None,
        Some(raw) => Some(
            percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .ok()
                .filter(|name| !name.is_empty())
                .ok_or_else(|| Problem::not_found(path))?
                .into_owned(),
        ),
    };
    let method = request.method().clone();
    match (kind, name, segments.next(), segments.next()) {
        (_, None, None, None) if method == Method::GET => Ok(entities::list(store, kind)),
        (_, Some(name), None, None) => match method {
            Method::GET => entities::get(store, kind, &name),
            Method::PUT if kind == Kind::Plugin && plugins::is_upload(&request) => {
                plugins::upload(store, &name, request).await
            }
            Method::PUT => entities::put(store, kind, &name, request).await,
            Method::DELETE => entities::delete(store, kind, &name, &request).await,
            _ => Err(Problem::method_not_allowed(path)),
        },
        (Kind::Plugin, Some(name), Some("versions"), None) if method == Method::GET => {
            plugins::versions(store, &name).await
        }
        (Kind::Plugin, Some(name), Some("rollback"), None) if method == Method::POST => {
            plugins::rollback(store, &name, &request).await
        }
        (Kind::Upstream, Some(name), Some("targets"), None) if method == Method::GET => {
            entities::targets(store, &name)
        }
        (_, None, None, None)
        | (Kind::Plugin, Some(_), Some("versions" | "rollback"), None)
        | (Kind::Upstream, Some(_), Some("targets"), None) => {
            Err(Problem::method_not_allowed(path))
        }
        _ => Err(Problem::not_found(path)),
    }
}

/// Ready unless draining, or still joining its cluster; a clustered node
/// reports where it stands (`cluster`), ready or not.
fn ready(store: &Store) -> AdminResponse {
    let cluster = store.cluster();
    let mut body = if store.draining() {
        serde_json::json!({"ready": false, "reason": "draining"})
    } else if cluster.is_some_and(|c| !c.ready()) {
        serde_json::json!({"ready": false, "reason": "joining the cluster"})
    } else {
        serde_json::json!({"ready": true, "generation": store.gateway().generation()})
    };
    if let Some(cluster) = cluster {
        body["cluster"] = cluster.to_json();
    }
    let status = if body["ready"] == true {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &body)
}

/// The running manifest: as JSON, or (`?format=yaml`) as the text it was written in.
fn get_config(store: &Store, query: Option<&str>) -> AdminResponse {
    let (text, version) = store.current();
    let yaml = query.is_some_and(|q| q.split('&').any(|p| p == "format=yaml"));
    let mut response = if yaml {
        with_type(
            StatusCode::OK,
            Bytes::from(text.as_bytes().to_vec()),
            "application/yaml",
        )
    } else {
        let document = crate::config::document(&text).unwrap_or_default();
        json(StatusCode::OK, &document)
    };
    set_etag(&mut response, &version);
    response
}

async fn put_config(
    store: &Arc<Store>,
    request: Request<Incoming>,
) -> Result<AdminResponse, Problem> {
    let expected = if_match(&request);
    let text: Arc<str> = read_manifest_body(request).await?.into();
    let sent = text.clone();
    let applied = blocking(store, move |store| {
        store.apply(&sent, expected.as_deref(), super::ADMIN_API)
    })
    .await?;
    match applied {
        Ok(applied) => {
            let mut body = match &applied {
                Applied::Swapped {
                    generation,
                    version,
                } => {
                    serde_json::json!({"applied": true, "generation": generation, "version": version})
                }
                Applied::Unchanged { version } => {
                    serde_json::json!({"applied": false, "version": version})
                }
            };
            if let (Some(cluster), Applied::Swapped { .. }) = (store.cluster(), &applied) {
                body["cluster_version"] = cluster_version(cluster, &text).await?.into();
            }
            Ok(changed(&applied, StatusCode::OK, Some(&body)))
        }
        Err(error) => Err(rejected(&error, &text)),
    }
}

/// Runs `work` on the store in a blocking task (changes compile plugins
/// and start VMs).
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    work: impl FnOnce(&Store) -> T + Send + 'static,
) -> Result<T, Problem> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| Problem::internal(&e.to_string()))
}

/// The answer to a change that was applied: `body` (none: 204) with the
/// running version as `ETag`. Logs the swap.
fn changed(
    applied: &Applied,
    status: StatusCode,
    body: Option<&serde_json::Value>,
) -> AdminResponse {
    if let Applied::Swapped { generation, .. } = applied {
        tracing::info!(generation, cause = "admin API", "manifest applied");
    }
    let mut response = match body {
        Some(body) => json(status, body),
        None => with_type(StatusCode::NO_CONTENT, Bytes::new(), "application/json"),
    };
    set_etag(&mut response, applied.version());
    response
}

/// The problem a rejected change of manifest `text` answers with, logged.
fn rejected(error: &ChangeError, text: &str) -> Problem {
    tracing::warn!(
        cause = "admin API",
        "change rejected; the running config stays:\n{error}"
    );
    Problem::from_change(error, text)
}

/// The problem a rejected entity edit answers with, logged. An invalid
/// manifest an edit produced carries its own text (`ChangeError::Edited`),
/// which its problems' places refer to.
fn rejected_edit(error: &ChangeError) -> Problem {
    rejected(error, "")
}

/// The version an `If-Match` header names, without its quotes.
/// How long a change waits to hear whether it was published: a round with
/// Redis takes one command, or fails within its timeout.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The cluster version a change to manifest `text` that ran here became
/// (`None`: not published yet, Redis being unreachable); a conflict when
/// another node's change won.
async fn cluster_version(cluster: &ClusterStatus, text: &str) -> Result<Option<u64>, Problem> {
    match cluster.outcome(text, PUBLISH_WAIT).await {
        Some(Outcome::Published(n)) => Ok(Some(n)),
        Some(Outcome::Lost(n)) => Err(Problem::conflict(&format!(
            "another node published version {n} of the cluster's config first; \
             this change was not published, and this node runs version {n} now"
        ))),
        Some(Outcome::Unpublished) | None => Ok(None),
    }
}

fn if_match<B>(request: &Request<B>) -> Option<String> {
    request
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned())
}

async fn validate_config(
    store: &Arc<Store>,
    request: Request<Incoming>,
) -> Result<AdminResponse, Problem> {
    let text: Arc<str> = read_manifest_body(request).await?.into();
    let sent = text.clone();
    match blocking(store, move |store| store.validate(&sent)).await? {
        Ok(()) => Ok(json(StatusCode::OK, &serde_json::json!({"valid": true}))),
        Err(error) => Err(Problem::from_change(&error, &text)),
    }
}

/// A manifest sent in a request body: UTF-8, at most [`MAX_MANIFEST_BYTES`].
async fn read_manifest_body(request: Request<Incoming>) -> Result<String, Problem> {
    let body = read_body(request, MAX_MANIFEST_BYTES, "the manifest").await?;
    String::from_utf8(body.to_vec())
        .map_err(|_| Problem::bad_body("the manifest is not UTF-8 text"))
}

/// A request body of at most `limit` bytes; `what` names it in problems.
async fn read_body(request: Request<Incoming>, limit: u64, what: &str) -> Result<Bytes, Problem> {
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let body = Limited::new(request.into_body(), cap)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Problem::too_large(&format!("{what} is larger than {limit} bytes"))
            } else {
                Problem::bad_body(&format!("{what} could not be read: {e}"))
            }
        })?;
    Ok(body.to_bytes())
}

fn set_etag(response: &mut AdminResponse, version: &str) {
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

/// A JSON response.
fn json(status: StatusCode, body: &serde_json::Value) -> AdminResponse {
    with_type(status, Bytes::from(body.to_string()), "application/json")
}

fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> AdminResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl Problem {
    /// The problem a rejected change of manifest `text` answers with.
    fn from_change(error: &ChangeError, text: &str) -> Self {
        match error {
            ChangeError::Config(crate::config::ConfigError::Invalid { diagnostics, .. }) => {
                Problem::invalid_config(diagnostics, text)
            }
            ChangeError::Config(_) => {
                Problem::unprocessable("unreadable-config", &error.to_string())
            }
            ChangeError::Edited { text, source } => Problem::from_change(source, text),
            ChangeError::VersionMismatch { .. } => Problem::precondition_failed(&error.to_string()),
            ChangeError::FileChanged { .. }
            | ChangeError::AdminMoved
            | ChangeError::Edit(EditError::Conflict(_)) => Problem::conflict(&error.to_string()),
            ChangeError::Edit(EditError::NotFound { .. }) => Problem::missing(&error.to_string()),
            ChangeError::Build(crate::gateway::StartError::Plugins { errors, .. }) => {
                let diagnostics: Vec<crate::config::Diagnostic> = errors
                    .iter()
                    .map(|e| crate::config::Diagnostic {
                        location: e.location(),
                        message: e.to_string(),
                    })
                    .collect();
                Problem::plugins_failed(&diagnostics, text)
            }
            ChangeError::Build(_) => Problem::unprocessable("build-failed", &error.to_string()),
            ChangeError::Task(_)
            | ChangeError::Write { .. }
            | ChangeError::Edit(EditError::Io { .. } | EditError::Emit(_)) => {
                Problem::internal(&error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_description_names_every_endpoint_and_method() {
        let description: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let paths = description["paths"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut described: Vec<String> = paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().cloned().unwrap_or_default();
                methods
                    .keys()
                    .filter(|m| *m != "parameters")
                    .map(|m| format!("{} {path}", m.to_uppercase()))
                    .collect::<Vec<_>>()
            })
            .collect();
        described.sort();
        let mut served: Vec<String> = [
            "GET /healthz",
            "GET /readyz",
            "GET /config",
            "PUT /config",
            "POST /config/validate",
            "GET /openapi.json",
            "GET /builtins",
            "GET /metrics",
            "GET /status",
            "GET /ui",
            "GET /",
            "DELETE /cache",
            "GET /upstreams/{name}/targets",
            "GET /plugins/{name}/versions",
            "POST /plugins/{name}/rollback",
        ]
        .map(str::to_owned)
        .to_vec();
        for kind in ["routes", "upstreams", "plugins", "consumers"] {
            served.extend([
                format!("GET /{kind}"),
                format!("GET /{kind}/{{name}}"),
                format!("PUT /{kind}/{{name}}"),
                format!("DELETE /{kind}/{{name}}"),
            ]);
        }
        served.sort_unstable();
        assert_eq!(described, served);
    }
}
