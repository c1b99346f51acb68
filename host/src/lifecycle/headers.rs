//! Header hygiene on the way through: hop-by-hop headers removed, standard
//! forwarding headers added.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The `via` token Weir adds.
const VIA: &str = "1.1 weir";

/// Headers that describe one connection and must not be forwarded (RFC 9110
/// §7.6.1), and `transfer-encoding`, which each hop frames anew.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
];

/// End-to-end headers that Weir relies on, which a `connection` header cannot
/// have removed (RFC 9110 §7.6.1 lets a sender name only its own hop-by-hop
/// headers there; naming these is an attempt to strip what Weir forwards).
const PROTECTED: [&str; 3] = ["host", "content-length", "x-request-id"];

/// Removes hop-by-hop headers, including those the `connection` header names
/// (but never the [`PROTECTED`] ones).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names settles it.
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()))
    {
        return;
    }
    // Tokens such as `keep-alive` or `close` need no lookup of their own.
    let named = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| {
            !token.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(token))
                && !PROTECTED.iter().any(|h| h.eq_ignore_ascii_case(token))
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok());
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(&name.as_str()))
        .cloned()
        .chain(named)
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// What the proxy knows about the client side of a request.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide<'a> {
    /// The peer's IP address as header text.
    pub ip: &'a HeaderValue,
    /// `https` or `http`.
    pub scheme: &'a str,
    /// The host the client asked for, if any.
    pub host: Option<&'a HeaderValue>,
}

/// An IP address as header text (done once per connection: formatting is not free).
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Adds `x-forwarded-for` (appended), `x-forwarded-proto`, `x-forwarded-host` and `via`.
pub fn add_forwarding(headers: &mut HeaderMap, client: ClientSide<'_>) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let forwarded_for = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(previous) => {
            let ip = client.ip.to_str().unwrap_or("unknown");
            HeaderValue::from_str(&format!("{previous}, {ip}")).ok()
        }
        None => Some(client.ip.clone()),
    };
    if let Some(v) = forwarded_for {
        headers.insert(xff, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if client.scheme == "https" {
            "https"
        } else {
            "http"
        }),
    );
    if let Some(host) = client.host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    append_via(headers);
}

/// Appends Weir's token to `via`.
pub fn append_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, HeaderValue::from_static(VIA));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_headers_named_by_connection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn appends_to_an_existing_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        let host = HeaderValue::from_static("api.example.com");
        add_forwarding(
            &mut h,
            ClientSide {
                ip: &ip_header_value("127.0.0.2".parse().expect("addr")),
                scheme: "https",
                host: Some(&host),
            },
        );
        assert_eq!(h["x-forwarded-for"], "10.1.1.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["via"], "1.1 weir");
    }
}
