//! A small client of the admin API, for the `weir apply` and `weir admin`
//! commands: one request per connection, HTTP/1.1.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Why a call to the admin API failed before it had an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The admin URL is not `http://host:port`.
    #[error("`{0}` is not an admin API URL like http://127.0.0.1:9901")]
    Url(String),
    /// The connection failed.
    #[error("cannot reach the admin API at {address}: {source}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("the admin API call failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("the admin API request is invalid: {0}")]
    Request(#[from] http::Error),
}

/// An answer of the admin API.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: http::HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// A problem answer as lines a person reads: its title and detail, then
    /// each violation with its place.
    pub fn problem_text(&self) -> String {
        let problem = self.json();
        let mut lines = vec![format!(
            "{} ({}): {}",
            problem["title"].as_str().unwrap_or("error"),
            self.status.as_u16(),
            problem["detail"].as_str().unwrap_or_default()
        )];
        for error in problem["errors"].as_array().into_iter().flatten() {
            lines.push(format!(
                "  {} (line {}, column {}): {}",
                error["pointer"].as_str().unwrap_or("-"),
                error["line"],
                error["column"],
                error["detail"].as_str().unwrap_or_default()
            ));
        }
        lines.join("\n")
    }
}

/// Sends one request to the admin API at `base` (`http://host:port`).
pub async fn call(
    base: &str,
    token: Option<&str>,
    method: Method,
    path_and_query: &str,
    body: Option<(Bytes, &'static str)>,
    if_match: Option<&str>,
) -> Result<Answer, ClientError> {
    let uri: Uri = format!("{}{path_and_query}", base.trim_end_matches('/'))
        .parse()
        .map_err(|_| ClientError::Url(base.to_owned()))?;
    let authority = uri
        .authority()
        .filter(|_| uri.scheme_str() == Some("http"))
        .ok_or_else(|| ClientError::Url(base.to_owned()))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|source| ClientError::Connect {
            address: authority.to_string(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |pq| pq.as_str()))
        .header(header::HOST, authority.as_str());
    if let Some(token) = token
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        request = request.header(header::AUTHORIZATION, value);
    }
    if let Some(version) = if_match {
        request = request.header(header::IF_MATCH, format!("\"{version}\""));
    }
    let (body, content_type) = body.unwrap_or((Bytes::new(), "application/json"));
    let request = request
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}
