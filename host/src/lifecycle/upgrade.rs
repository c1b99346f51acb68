//! WebSocket upgrades: the handshake through the route's filters to the
//! upstream, and the tunnel that follows a `101`.
//!
//! An HTTP/1.1 `Upgrade: websocket` request, or an HTTP/2 extended CONNECT
//! with `:protocol websocket` (RFC 8441), is recognised on arrival, before
//! hop-by-hop headers go. Both reach the filters as the HTTP/1.1 handshake
//! (`GET` with `connection: upgrade` and `upgrade: websocket`), as in Envoy,
//! so a filter can tell an upgrade and refuse it like any request. The
//! upstream always gets the HTTP/1.1 handshake, on a connection of its own.
//! Its `101` becomes a response carrying a [`Tunnel`] (a `101` for an
//! HTTP/1.1 client, a `200` for an HTTP/2 one); any other answer goes back as
//! a normal response. The server joins the tunnel to the client's side of the
//! connection once the switch is written ([`take_tunnel`]).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use super::Connection;
use super::error::RequestError;
use super::forward;
use super::headers::{self, strip_hop_by_hop};
use super::snapshot::{Destination, RouteEntry};
use crate::body::{self, Body};
use crate::request_id;
use crate::tunnel::{self, Ending};
use crate::upstream::UpstreamError;

/// The GUID a server hashes with the key into `sec-websocket-accept` (RFC 6455 §1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

/// How a client asked for a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upgrade {
    /// HTTP/1.1 `GET` with `Upgrade: websocket` and `Connection: upgrade`.
    Http1,
    /// HTTP/2 extended CONNECT with `:protocol websocket` (RFC 8441).
    ExtendedConnect,
}

impl Upgrade {
    /// The status the client is told the switch succeeded with.
    fn switched(self) -> StatusCode {
        match self {
            Self::Http1 => StatusCode::SWITCHING_PROTOCOLS,
            Self::ExtendedConnect => StatusCode::OK,
        }
    }
}

/// Whether `request` asks for a WebSocket; an extended CONNECT is made the
/// `GET` it stands for, so routes match it by that method.
pub(super) fn detect<B>(request: &mut Request<B>) -> Option<Upgrade> {
    if request.method() == Method::CONNECT {
        let protocol = request.extensions().get::<hyper::ext::Protocol>()?;
        if !protocol.as_str().eq_ignore_ascii_case("websocket") {
            return None;
        }
        request.extensions_mut().remove::<hyper::ext::Protocol>();
        *request.method_mut() = Method::GET;
        return Some(Upgrade::ExtendedConnect);
    }
    let headers = request.headers();
    let upgrade = headers.get(header::UPGRADE)?;
    let asks = request.version() == Version::HTTP_11
        && request.method() == Method::GET
        && has_token(std::iter::once(upgrade), "websocket")
        && has_token(headers.get_all(header::CONNECTION).iter(), "upgrade");
    asks.then_some(Upgrade::Http1)
}

/// Whether a comma-separated list header holds `token` (ASCII case ignored).
fn has_token<'a>(values: impl Iterator<Item = &'a HeaderValue>, token: &str) -> bool {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the route lets the upgrade through: it must allow WebSockets, and
/// the handshake must have no body.
pub(super) fn admit(entry: &RouteEntry, has_body: bool) -> Result<(), RequestError> {
    if !entry.route.websocket.enabled {
        return Err(RequestError::WebSocketNotAllowed {
            route: entry.route.name.clone(),
        });
    }
    if has_body {
        return Err(RequestError::BadRequest {
            reason: "a WebSocket handshake must not have a body".to_owned(),
        });
    }
    Ok(())
}

/// Puts back the handshake's hop-by-hop headers (removed on arrival), so
/// filters see the request as the HTTP/1.1 handshake.
pub(super) fn restore_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Sends the handshake where the route goes and answers the client: the
/// switch with a [`Tunnel`] attached, or the upstream's refusal as it is.
pub(super) async fn exchange(
    entry: &RouteEntry,
    destination: Destination<'_>,
    mut parts: http::request::Parts,
    kind: Upgrade,
    prefer: Option<&str>,
    conn: &Connection,
    client_host: Option<HeaderValue>,
) -> Result<Response<Body>, RequestError> {
    let group = match destination {
        Destination::Respond(fixed) => return Ok(forward::fixed_response(fixed)),
        Destination::Upstream(group) => group,
    };
    forward::prepare_upstream(&mut parts, &entry.route, conn, client_host, true)?;
    parts.method = Method::GET;
    restore_headers(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    // Over HTTP/2 there is no key (RFC 8441 §5): Weir makes one for its own handshake.
    let key = (kind == Upgrade::ExtendedConnect).then(|| {
        let key = BASE64.encode(fastrand::u128(..).to_be_bytes());
        // Base64 is always a valid header value.
        let value = HeaderValue::from_str(&key).unwrap_or(HeaderValue::from_static(""));
        parts.headers.insert(SEC_WEBSOCKET_KEY, value);
        parts
            .headers
            .entry(SEC_WEBSOCKET_VERSION)
            .or_insert(HeaderValue::from_static("13"));
        key
    });
    let affinity = group.affinity(&parts, conn.client_ip.to_str().unwrap_or_default(), prefer);
    let mut response = group
        .send_upgrade(parts, entry.route.timeout, affinity)
        .await?;
    let failed = |reason: String| {
        RequestError::Upstream(UpstreamError::Failed {
            upstream: group.name().to_owned(),
            source: reason.into(),
        })
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, incoming) = response.into_parts();
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        headers::append_via(&mut parts.headers);
        return Ok(Response::from_parts(parts, body::boxed(incoming)));
    }
    if let Some(key) = key
        && response
            .headers()
            .get(SEC_WEBSOCKET_ACCEPT)
            .map(|v| v.as_bytes())
            != Some(accept_for(&key).as_bytes())
    {
        return Err(failed(
            "the upstream's sec-websocket-accept does not match the key".to_owned(),
        ));
    }
    let upgrading = hyper::upgrade::on(&mut response);
    let timeout = entry.route.timeout.unwrap_or(group.request_timeout());
    let upstream = match tokio::time::timeout(timeout, upgrading).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(error)) => return Err(failed(format!("the upgrade failed: {error}"))),
        Err(_) => return Err(failed("the upgrade did not complete".to_owned())),
    };
    let (mut parts, _) = response.into_parts();
    parts.version = Version::HTTP_11;
    parts.status = kind.switched();
    strip_hop_by_hop(&mut parts.headers);
    match kind {
        Upgrade::Http1 => restore_headers(&mut parts.headers),
        Upgrade::ExtendedConnect => {
            parts.headers.remove(SEC_WEBSOCKET_ACCEPT);
        }
    }
    headers::append_via(&mut parts.headers);
    let settings = &entry.route.websocket;
    let tunnel = Tunnel {
        upstream: TokioIo::new(upstream),
        limits: tunnel::Limits {
            idle_timeout: settings.idle_timeout,
            max_message_bytes: settings.max_message_bytes,
        },
        route: entry.route.name.clone(),
        request_id: None,
    };
    parts.extensions.insert(PendingTunnel {
        tunnel: Arc::new(Mutex::new(Some(tunnel))),
        status: kind.switched(),
    });
    Ok(Response::from_parts(parts, body::empty()))
}

/// `sec-websocket-accept` for `key`: base64 of the SHA-1 of key and GUID.
fn accept_for(key: &str) -> String {
    use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
    let hash = digest(
        &SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    BASE64.encode(hash.as_ref())
}

/// The upstream's side of a switched connection, waiting for the client's.
pub struct Tunnel {
    upstream: TokioIo<Upgraded>,
    limits: tunnel::Limits,
    route: String,
    /// The handshake's `x-request-id`, for the log.
    request_id: Option<HeaderValue>,
}

impl Tunnel {
    /// Carries the tunnel between `client` (the client's side, once the switch
    /// is written) and the upstream until it ends; `stop` ends it early.
    pub async fn run(self, client: impl tunnel::Io, stop: impl Future<Output = ()>) {
        let report = tunnel::splice(client, self.upstream, self.limits, stop).await;
        let (to_upstream, to_client) = (report.to_upstream, report.to_client);
        let request_id = self.request_id.as_ref().map_or("-", request_id::text);
        match report.ending {
            Ok(Ending::TooBig { side, size }) => tracing::info!(
                %request_id, route = %self.route, ?side, size, limit = self.limits.max_message_bytes,
                to_upstream, to_client, "WebSocket closed: message over the limit"
            ),
            Ok(ending) => tracing::debug!(
                %request_id, route = %self.route, ?ending, to_upstream, to_client, "WebSocket closed"
            ),
            Err(error) => tracing::debug!(
                %request_id, route = %self.route, %error, to_upstream, to_client, "WebSocket broke"
            ),
        }
    }
}

/// A tunnel attached to the response that switches to it.
#[derive(Clone)]
struct PendingTunnel {
    tunnel: Arc<Mutex<Option<Tunnel>>>,
    /// The status the switch has; a filter that changed it called the switch off.
    status: StatusCode,
}

/// The tunnel `response` switches to, if it does; the server runs it once
/// the response is written. A response whose status a filter changed
/// switches to nothing (the upstream's side is closed).
pub fn take_tunnel(response: &mut Response<Body>) -> Option<Tunnel> {
    let pending = response.extensions_mut().remove::<PendingTunnel>()?;
    if response.status() != pending.status {
        return None;
    }
    let mut slot = pending
        .tunnel
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut tunnel = slot.take()?;
    tunnel.request_id = response.headers().get(request_id::REQUEST_ID).cloned();
    Some(tunnel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder()
            .version(version)
            .method(method)
            .uri("/ws");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("a valid test request")
    }

    #[test]
    fn recognises_the_http1_handshake_only() {
        let ws = [
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
        ];
        let mut r = request(Version::HTTP_11, Method::GET, &ws);
        assert_eq!(detect(&mut r), Some(Upgrade::Http1));
        // h2c upgrades, a missing connection token and other methods are not WebSockets.
        let h2c = [("upgrade", "h2c"), ("connection", "upgrade")];
        assert_eq!(
            detect(&mut request(Version::HTTP_11, Method::GET, &h2c)),
            None
        );
        assert_eq!(
            detect(&mut request(Version::HTTP_11, Method::GET, &ws[..1])),
            None
        );
        assert_eq!(
            detect(&mut request(Version::HTTP_11, Method::POST, &ws)),
            None
        );
        assert_eq!(
            detect(&mut request(Version::HTTP_10, Method::GET, &ws)),
            None
        );
    }

    #[test]
    fn makes_an_extended_connect_a_get() {
        let mut r = request(Version::HTTP_2, Method::CONNECT, &[]);
        r.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(detect(&mut r), Some(Upgrade::ExtendedConnect));
        assert_eq!(r.method(), Method::GET);
        // A plain CONNECT stays what it is.
        let mut plain = request(Version::HTTP_2, Method::CONNECT, &[]);
        assert_eq!(detect(&mut plain), None);
        assert_eq!(plain.method(), Method::CONNECT);
    }

    #[test]
    fn computes_the_accept_of_rfc_6455() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
