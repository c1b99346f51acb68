//! `GET` requests to a registry's HTTP API (Consul, Eureka) over the
//! upstream layer's own keep-alive connection pool, with a deadline and a
//! cap on the answer's size.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;

use super::DiscoveryError;
use crate::body;
use crate::config::model::HttpEndpoint;
use crate::upstream::pool::ConnectionPool;

/// The largest answer read from a registry.
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a pooled connection may sit idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A registry's HTTP API.
pub struct Registry {
    pool: Arc<ConnectionPool>,
    base_path: String,
}

/// A registry's answer: status, headers and the whole body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Registry {
    /// The API at `endpoint`.
    pub fn new(endpoint: &HttpEndpoint) -> Result<Self, DiscoveryError> {
        let authority = endpoint
            .authority
            .parse()
            .map_err(|e| DiscoveryError::Unreachable(format!("{}: {e}", endpoint.authority)))?;
        Ok(Self {
            pool: Arc::new(ConnectionPool::new(
                authority,
                None,
                CONNECT_TIMEOUT,
                IDLE_TIMEOUT,
            )),
            base_path: endpoint.base_path.clone(),
        })
    }

    /// `GET` of `path_and_query` (after the base path) with `headers`,
    /// answered within `timeout`.
    pub async fn get(
        &self,
        path_and_query: &str,
        headers: &[(header::HeaderName, &str)],
        timeout: Duration,
    ) -> Result<Answer, DiscoveryError> {
        let uri = format!("{}{path_and_query}", self.base_path);
        let mut request = Request::get(uri.as_str())
            .header(header::USER_AGENT, "weir-discovery")
            .header(header::ACCEPT, "application/json");
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request
            .body(body::empty())
            .map_err(|e| DiscoveryError::BadAnswer(format!("request `{uri}`: {e}")))?;
        let exchange = async {
            let response = self
                .pool
                .send(request)
                .await
                .map_err(|e| DiscoveryError::Unreachable(e.to_string()))?;
            let (head, mut body) = response.into_parts();
            let mut read = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame
                    .map_err(|e| DiscoveryError::Unreachable(format!("reading the answer: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    if read.len() + data.len() > MAX_ANSWER_BYTES {
                        return Err(DiscoveryError::BadAnswer(format!(
                            "the answer to GET {uri} is over {MAX_ANSWER_BYTES} bytes"
                        )));
                    }
                    read.extend_from_slice(&data);
                }
            }
            Ok(Answer {
                status: head.status,
                headers: head.headers,
                body: Bytes::from(read),
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(DiscoveryError::Unreachable(format!(
                    "no answer to GET {uri} within {}ms",
                    timeout.as_millis()
                )))
            })
    }
}
