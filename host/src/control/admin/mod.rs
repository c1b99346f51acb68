//! The admin API: a listener of its own (the manifest's `admin:`), JSON in
//! and out, RFC 9457 problems for every error, bearer tokens with roles.
//!
//! | endpoint | role | what |
//! |---|---|---|
//! | `GET /healthz` | none | the process serves |
//! | `GET /readyz` | none | config and plugins loaded, not draining, not joining a cluster; the cluster's state |
//! | `GET /config` | read | the running manifest (JSON; `?format=yaml` for its text), with its version as `ETag` |
//! | `PUT /config` | admin | a whole manifest (YAML or JSON), applied as one change; `If-Match` honoured |
//! | `POST /config/validate` | read | checks a manifest as `weir validate` does |
//! | `GET /openapi.json` | read | this API described |

mod auth;
pub mod client;
mod problem;

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
use self::problem::Problem;
use super::cluster::{ClusterStatus, Outcome};
use super::store::{Applied, ChangeError, Store};
use crate::config::MAX_MANIFEST_BYTES;

/// The OpenAPI description served at `/openapi.json`.
const OPENAPI: &str = include_str!("openapi.json");

/// A response of the admin API.
type AdminResponse = Response<Full<Bytes>>;

/// Binds the admin API's address.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves the admin API on `listener` until the returned task is aborted.
pub fn serve(listener: TcpListener, store: Arc<Store>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin API: accept failed");
                    continue;
                }
            };
            let store = store.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let store = store.clone();
                    async move { Ok::<_, Infallible>(handle(&store, request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "admin API: connection ended with an error");
                }
            });
        }
    })
}

/// Answers one admin request.
async fn handle(store: &Arc<Store>, request: Request<Incoming>) -> AdminResponse {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let needs = match (method.clone(), path.as_str()) {
        (Method::GET, "/healthz" | "/readyz") => None,
        (Method::PUT, _) | (Method::DELETE, _) => Some(Access::Admin),
        _ => Some(Access::Read),
    };
    if let Some(needs) = needs
        && let Err(problem) = auth::check(&store.tokens(), request.headers(), needs)
    {
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
        (_, "/healthz" | "/readyz" | "/config" | "/openapi.json") => {
            Err(Problem::method_not_allowed(&path))
        }
        (_, "/config/validate") => Err(Problem::method_not_allowed(&path)),
        _ => Err(Problem::not_found(&path)),
    };
    result.unwrap_or_else(|problem| problem.response())
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
    let if_match = request
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned());
    let text: Arc<str> = read_manifest_body(request).await?.into();
    let (blocking, sent) = (store.clone(), text.clone());
    let applied = tokio::task::spawn_blocking(move || blocking.apply(&sent, if_match.as_deref()))
        .await
        .map_err(|e| Problem::internal(&e.to_string()))?;
    match applied {
        Ok(applied) => {
            let (_, version) = store.current();
            let mut body = match applied {
                Applied::Swapped(generation) => {
                    tracing::info!(generation, cause = "admin API", "manifest applied");
                    serde_json::json!({"applied": true, "generation": generation, "version": version})
                }
                Applied::Unchanged => serde_json::json!({"applied": false, "version": version}),
            };
            if let (Some(cluster), Applied::Swapped(_)) = (store.cluster(), applied) {
                body["cluster_version"] = cluster_version(cluster, &text).await?.into();
            }
            let mut response = json(StatusCode::OK, &body);
            set_etag(&mut response, &version);
            Ok(response)
        }
        Err(error) => {
            tracing::warn!(
                cause = "admin API",
                "change rejected; the running config stays:\n{error}"
            );
            Err(Problem::from_change(&error, &text))
        }
    }
}

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

async fn validate_config(
    store: &Arc<Store>,
    request: Request<Incoming>,
) -> Result<AdminResponse, Problem> {
    let text: Arc<str> = read_manifest_body(request).await?.into();
    let (blocking, sent) = (store.clone(), text.clone());
    let checked = tokio::task::spawn_blocking(move || blocking.validate(&sent))
        .await
        .map_err(|e| Problem::internal(&e.to_string()))?;
    match checked {
        Ok(()) => Ok(json(StatusCode::OK, &serde_json::json!({"valid": true}))),
        Err(error) => Err(Problem::from_change(&error, &text)),
    }
}

/// A manifest sent in a request body: UTF-8, at most [`MAX_MANIFEST_BYTES`].
async fn read_manifest_body(request: Request<Incoming>) -> Result<String, Problem> {
    let limit = usize::try_from(MAX_MANIFEST_BYTES).unwrap_or(usize::MAX);
    let body = Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map_err(|e| Problem::bad_body(&format!("the manifest could not be read: {e}")))?
        .to_bytes();
    String::from_utf8(body.to_vec())
        .map_err(|_| Problem::bad_body("the manifest is not UTF-8 text"))
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
            ChangeError::VersionMismatch { .. } => Problem::precondition_failed(&error.to_string()),
            ChangeError::FileChanged { .. } | ChangeError::AdminMoved => {
                Problem::conflict(&error.to_string())
            }
            ChangeError::Build(_) => Problem::unprocessable("build-failed", &error.to_string()),
            ChangeError::Task(_) | ChangeError::Write { .. } => {
                Problem::internal(&error.to_string())
            }
        }
    }
}
