//! The status page: one HTML page, its script and its style sheet, built
//! into the binary (no build step, nothing fetched from elsewhere). The
//! script reads `/status` and redraws every few seconds.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderValue};

use super::{AdminResponse, with_type};

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");
const ICON: &str = include_str!("ui/favicon.svg");

/// What the page may load: its own files only.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether `path` is the page or one of its files (a browser asks for
/// credentials there: its 401 challenges for Basic).
pub fn is_page(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The page or file at `path`; `None` when there is none.
pub fn asset(path: &str) -> Option<AdminResponse> {
    let (body, content_type) = match path {
        "/ui" | "/ui/" => (PAGE, "text/html; charset=utf-8"),
        "/ui/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/ui/style.css" => (STYLE, "text/css; charset=utf-8"),
        "/ui/favicon.svg" => (ICON, "image/svg+xml"),
        _ => return None,
    };
    let mut response = with_type(
        StatusCode::OK,
        Bytes::from_static(body.as_bytes()),
        content_type,
    );
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

/// `GET /`: the page's address.
pub fn redirect() -> AdminResponse {
    let mut response = with_type(StatusCode::FOUND, Bytes::new(), "text/plain");
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui"));
    response
}
