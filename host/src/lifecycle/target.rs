//! One request target: the path and host made canonical once, before routing,
//! so that routes, filters (`:path`, `:authority`) and the upstream all see
//! the same request.
//!
//! After [`canonicalize`] the URI is origin-form with a normalized path (the
//! query untouched) and the authority is in exactly one `Host` header, lower
//! case, without a trailing dot. An absolute-form URI (`GET http://a/x`) or an
//! HTTP/2 `:authority` replaces any `Host` header (RFC 9112 §3.2.2). Hop-by-hop
//! headers go here too, on receipt, so that a client's `Connection` header can
//! only name headers of its own request, never ones Weir or a filter adds later.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri, Version};

use super::headers::strip_hop_by_hop;
use crate::normalize::{self, HostError, PathError, PathOptions};

/// Why a request's target was refused (400).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The path cannot be normalized.
    #[error("invalid path: {0}")]
    Path(#[from] PathError),
    /// The host is malformed.
    #[error("invalid host: {0}")]
    Host(#[from] HostError),
    /// More than one `Host` header.
    #[error("invalid host: the request has more than one Host header")]
    SeveralHosts,
    /// HTTP/1.1 without `Host` (RFC 9112 §3.2).
    #[error("invalid host: an HTTP/1.1 request must have a Host header")]
    MissingHost,
}

/// Makes `request`'s target canonical in place (see the module doc).
pub(super) fn canonicalize<B>(
    request: &mut Request<B>,
    paths: &PathOptions,
) -> Result<(), TargetError> {
    canonicalize_host(request)?;
    let uri = request.uri();
    let path = uri.path();
    // `OPTIONS *` has no path to normalize.
    let normal = if path == "*" && uri.authority().is_none() {
        Cow::Borrowed(path)
    } else {
        normalize::normalize_path(path, paths)?
    };
    let target = match normal {
        Cow::Owned(path) => {
            let target = match uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            // Normalizing only removes and decodes characters valid in a path.
            Some(PathAndQuery::try_from(target).map_err(|_| PathError::InvalidEscape)?)
        }
        // Absolute-form or HTTP/2: keep the path and query (a cheap clone), drop the rest.
        Cow::Borrowed(_) if uri.scheme().is_some() || uri.authority().is_some() => {
            uri.path_and_query().cloned()
        }
        Cow::Borrowed(_) => None,
    };
    if let Some(target) = target {
        *request.uri_mut() = Uri::from(target);
    }
    strip_hop_by_hop(request.headers_mut());
    Ok(())
}

/// Puts the request's one authority, canonical, in its `Host` header.
fn canonicalize_host<B>(request: &mut Request<B>) -> Result<(), TargetError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(TargetError::SeveralHosts);
    }
    let (raw, from_header) = match (request.uri().authority(), header) {
        (Some(authority), _) => (authority.as_str(), false),
        (None, Some(value)) => {
            // `canonical_host` refuses every byte a host cannot hold.
            let text = std::str::from_utf8(value.as_bytes()).map_err(|_| HostError::Invalid)?;
            (text, true)
        }
        (None, None) if request.version() == Version::HTTP_11 => {
            return Err(TargetError::MissingHost);
        }
        (None, None) => return Ok(()),
    };
    let canonical = normalize::canonical_host(raw)?;
    let unchanged = match &canonical {
        Cow::Borrowed(_) if from_header => true,
        _ => header.is_some_and(|h| h.as_bytes() == canonical.as_bytes()),
    };
    if unchanged {
        return Ok(());
    }
    // Only valid host characters remain, so this cannot fail.
    let value = HeaderValue::from_str(&canonical).map_err(|_| HostError::Invalid)?;
    request.headers_mut().insert(header::HOST, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(uri);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).expect("a valid test request")
    }

    fn canonical(version: Version, uri: &str, hosts: &[&str]) -> Result<(String, String), String> {
        let mut req = request(version, uri, hosts);
        canonicalize(&mut req, &PathOptions::default()).map_err(|e| e.to_string())?;
        let host = req
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("?").to_owned())
            .unwrap_or_default();
        Ok((req.uri().to_string(), host))
    }

    #[test]
    fn absolute_form_replaces_the_host_header() {
        assert_eq!(
            canonical(Version::HTTP_11, "http://other/x?q=1", &["admin.internal"]),
            Ok(("/x?q=1".to_owned(), "other".to_owned()))
        );
        assert_eq!(
            canonical(Version::HTTP_11, "http://a/%61dmin", &["a"]),
            Ok(("/admin".to_owned(), "a".to_owned()))
        );
    }

    #[test]
    fn the_host_is_lower_cased_without_its_trailing_dot() {
        assert_eq!(
            canonical(Version::HTTP_11, "/", &["Admin.Internal.:8080"]),
            Ok(("/".to_owned(), "admin.internal:8080".to_owned()))
        );
    }

    #[test]
    fn host_problems_are_refused() {
        let refused = |uri: &str, hosts: &[&str], version| canonical(version, uri, hosts);
        assert_eq!(
            refused("/", &["a", "b"], Version::HTTP_11),
            Err(TargetError::SeveralHosts.to_string())
        );
        assert_eq!(
            refused("/", &[], Version::HTTP_11),
            Err(TargetError::MissingHost.to_string())
        );
        for bad in ["a b", "x@y", ""] {
            assert_eq!(
                refused("/", &[bad], Version::HTTP_11),
                Err(TargetError::Host(HostError::Invalid).to_string()),
                "{bad:?}"
            );
        }
        assert_eq!(
            refused("/x", &[], Version::HTTP_10),
            Ok(("/x".to_owned(), String::new())),
            "HTTP/1.0 needs no Host"
        );
    }

    #[test]
    fn the_path_is_normalized_and_the_query_kept() {
        assert_eq!(
            canonical(Version::HTTP_11, "/x/../adm%69n?a=%2e%2E", &["h"]),
            Ok(("/admin?a=%2e%2E".to_owned(), "h".to_owned()))
        );
        assert_eq!(
            canonical(Version::HTTP_11, "/admin%2F", &["h"]),
            Err(TargetError::Path(PathError::EscapedSlash).to_string())
        );
    }

    #[test]
    fn connection_cannot_remove_the_request_id_or_host() {
        let mut req = request(Version::HTTP_11, "/", &["h"]);
        let headers = req.headers_mut();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-request-id, host, content-length, x-gone"),
        );
        headers.insert("x-request-id", HeaderValue::from_static("id-1"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        headers.insert("x-gone", HeaderValue::from_static("1"));
        canonicalize(&mut req, &PathOptions::default()).expect("valid");
        let mut names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "host", "x-request-id"]);
    }
}
