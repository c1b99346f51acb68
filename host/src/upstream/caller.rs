//! Filter callouts (`proxy_http_call`) sent through the manifest's upstream
//! groups, with their balancing and timeouts.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;

use super::{Directory, OutgoingBody};
use crate::body::Body;
use crate::observe::trace::{self, Kind, Span};
use crate::services::http_call::{
    CallRejected, CallRequest, CallResponse, HttpCaller, PendingCall,
};

/// The largest callout response body read (bigger answers fail the call).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Sends callouts to the running config's upstream groups by name.
pub struct UpstreamCaller {
    pub(super) directory: Arc<Directory>,
}

impl UpstreamCaller {
    /// A caller over the groups `directory` holds at the time of each call.
    pub fn new(directory: Arc<Directory>) -> Self {
        Self { directory }
    }
}

impl HttpCaller for UpstreamCaller {
    fn call(&self, call: CallRequest) -> Result<PendingCall, CallRejected> {
        let group = self
            .directory
            .get(&call.upstream)
            .ok_or_else(|| CallRejected::UnknownUpstream(call.upstream.clone()))?;
        let mut request = build_request(&call)?;
        let mut span = callout_span(&mut request, &call.upstream);
        Ok(Box::pin(async move {
            let sent = group.send(request, call.timeout).await;
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    let error = error.to_string();
                    if let Some(mut span) = span.take() {
                        span.fail("callout_failed", || error.clone());
                        span.end();
                    }
                    return Err(error);
                }
            };
            let (parts, body) = response.into_parts();
            if let Some(mut span) = span.take() {
                let status = parts.status;
                span.set("http.response.status_code", || i64::from(status.as_u16()));
                if status.is_server_error() {
                    span.fail(status.as_str(), || format!("answered {status}"));
                }
                span.end();
            }
            let (body, trailers) = read_response_body(body).await?;
            let trailers = trailers.map(|t| pairs(t.iter())).unwrap_or_default();
            let mut headers = vec![(
                b":status".to_vec(),
                parts.status.as_str().as_bytes().to_vec(),
            )];
            headers.extend(pairs(parts.headers.iter()));
            Ok(CallResponse {
                headers,
                body,
                trailers,
            })
        }))
    }
}

/// The client span of a callout sent from the filter callback running on
/// this thread, when that callback is traced; the callout carries it as
/// its `traceparent`. The span ends when the answer's head arrives.
pub(super) fn callout_span<B>(request: &mut Request<B>, upstream: &str) -> Option<Span> {
    let current = trace::current()?;
    let method = request.method().clone();
    let mut span = (current.context).child(|| format!("callout {upstream}"), Kind::Client);
    span.context().inject(request.headers_mut());
    span.set("http.request.method", || method.as_str());
    span.set("url.path", || request.uri().path());
    if let Some(host) = (request.headers().get(http::header::HOST)).and_then(|h| h.to_str().ok()) {
        span.set("server.address", || host);
    }
    span.set("weir.upstream", || upstream);
    span.set("weir.plugin", || &*current.plugin);
    Some(span)
}

/// Reads a callout's whole response body and trailers, failing past [`MAX_RESPONSE_BYTES`].
async fn read_response_body(mut body: Body) -> Result<(Bytes, Option<HeaderMap>), String> {
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame.map_err(|e| e.to_string())?.into_data() {
            Ok(chunk) if data.len() + chunk.len() > MAX_RESPONSE_BYTES => {
                return Err(format!(
                    "the response body exceeds {MAX_RESPONSE_BYTES} bytes"
                ));
            }
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok((data.freeze(), trailers))
}

fn pairs<'a>(
    iter: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    iter.map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// The upstream request for a callout: `:method`, `:path` and `:authority` are required.
fn build_request(call: &CallRequest) -> Result<Request<OutgoingBody>, CallRejected> {
    let pseudo = |name: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
            .ok_or_else(|| CallRejected::BadRequest(format!("missing `{name}`")))
    };
    let bad = |what: &str| CallRejected::BadRequest(format!("invalid `{what}`"));
    let method = Method::from_bytes(pseudo(":method")?).map_err(|_| bad(":method"))?;
    let uri = Uri::try_from(pseudo(":path")?).map_err(|_| bad(":path"))?;
    let authority =
        HeaderValue::from_bytes(pseudo(":authority")?).map_err(|_| bad(":authority"))?;
    let mut request = Request::new(OutgoingBody::Replayable(Bytes::clone(&call.body)));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(http::header::HOST, authority);
    for (name, value) in &call.headers {
        if name.starts_with(':') {
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(name))?;
        let value = HeaderValue::from_bytes(value).map_err(|_| bad(name.as_str()))?;
        headers.append(name, value);
    }
    Ok(request)
}
