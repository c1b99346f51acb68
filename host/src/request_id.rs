//! The request id: kept from the client or generated, set on the upstream
//! request and on every response (errors included).

use http::header::{HeaderName, HeaderValue};

/// The request-id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-sent id kept; a longer one is replaced.
const MAX_LEN: usize = 200;

/// Keeps the client's `x-request-id` or generates one; returns its value.
pub fn ensure(headers: &mut http::HeaderMap) -> HeaderValue {
    if let Some(id) = headers
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= MAX_LEN)
    {
        return id.clone();
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    let id = HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"));
    headers.insert(REQUEST_ID, id.clone());
    id
}

/// The request id as text (ids that are not visible ASCII show as `-`).
pub fn text(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}
