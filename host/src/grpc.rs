//! What every layer needs to know of gRPC's wire form: which requests are
//! gRPC or gRPC-Web (by `content-type`), the status codes and the mapping
//! from an HTTP status to one, `grpc-message` encoding, and `grpc-timeout`.
//!
//! Knows HTTP types only; imports no other layer.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// The gRPC status header.
pub const GRPC_STATUS: &str = "grpc-status";
/// The gRPC status message header.
pub const GRPC_MESSAGE: &str = "grpc-message";
/// The call's deadline, as the client sent it.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// gRPC status codes Weir answers with.
pub mod code {
    /// Not an error.
    pub const OK: u32 = 0;
    /// Unknown error (an HTTP status with no better mapping).
    pub const UNKNOWN: u32 = 2;
    /// The deadline expired before the call completed.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// The caller may not do this.
    pub const PERMISSION_DENIED: u32 = 7;
    /// A resource (a size limit) was exhausted.
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// The method is not implemented (no route).
    pub const UNIMPLEMENTED: u32 = 12;
    /// An internal error (a malformed request).
    pub const INTERNAL: u32 = 13;
    /// The service is unavailable (down, overloaded, rate limited).
    pub const UNAVAILABLE: u32 = 14;
    /// The caller is not authenticated.
    pub const UNAUTHENTICATED: u32 = 16;
}

/// The kind of gRPC a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// gRPC over HTTP/2 (`application/grpc`, `application/grpc+proto`, …).
    Grpc,
    /// gRPC-Web (`application/grpc-web…`); `text` when base64-encoded
    /// (`application/grpc-web-text…`).
    Web {
        /// Whether the body is base64 text.
        text: bool,
    },
}

impl Kind {
    /// The kind of gRPC `headers`' `content-type` announces, if any.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(header::CONTENT_TYPE)?.as_bytes();
        let rest = strip_prefix_ignore_case(value, b"application/grpc")?;
        if let Some(web) = strip_prefix_ignore_case(rest, b"-web") {
            return match strip_prefix_ignore_case(web, b"-text") {
                Some(text) if ends_type(text) => Some(Self::Web { text: true }),
                _ if ends_type(web) => Some(Self::Web { text: false }),
                _ => None,
            };
        }
        ends_type(rest).then_some(Self::Grpc)
    }
}

/// The media type's name ends here (then a `+suffix` or parameters may follow).
fn ends_type(rest: &[u8]) -> bool {
    matches!(rest.first(), None | Some(b'+' | b';' | b' '))
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// The gRPC status for an HTTP status, as Envoy maps it, except that a
/// gateway timeout (504) is `DEADLINE_EXCEEDED`, which is what a client's
/// deadline handling looks for, and a body over the limit (413) is
/// `RESOURCE_EXHAUSTED`.
pub fn status_for(http: StatusCode) -> u32 {
    match http.as_u16() {
        200 => code::OK,
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        413 => code::RESOURCE_EXHAUSTED,
        429 | 502 | 503 => code::UNAVAILABLE,
        504 => code::DEADLINE_EXCEEDED,
        _ => code::UNKNOWN,
    }
}

/// What `grpc-message` percent-encodes: controls, non-ASCII and `%`.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// `message` as a `grpc-message` value (percent-encoded as gRPC specifies).
pub fn message_value(message: &str) -> HeaderValue {
    let encoded = utf8_percent_encode(message, MESSAGE_ESCAPES).to_string();
    // Only visible ASCII is left.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Sets the headers of a trailers-only gRPC answer: `grpc-status` (and
/// `grpc-message` when there is one), and `content-type` for `kind`.
pub fn set_status(headers: &mut HeaderMap, kind: Kind, status: u32, message: &str) {
    headers.insert(header::CONTENT_TYPE, content_type(kind));
    headers.insert(GRPC_STATUS, HeaderValue::from(status));
    if !message.is_empty() {
        headers.insert(GRPC_MESSAGE, message_value(message));
    }
}

/// The plain content type of `kind`.
pub fn content_type(kind: Kind) -> HeaderValue {
    HeaderValue::from_static(match kind {
        Kind::Grpc => "application/grpc",
        Kind::Web { text: false } => "application/grpc-web",
        Kind::Web { text: true } => "application/grpc-web-text",
    })
}

/// The deadline a `grpc-timeout` value gives (`1..=8` digits and a unit of
/// `H`, `M`, `S`, `m`, `u` or `n`); `None` when malformed.
pub fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `timeout` as a `grpc-timeout` value, in the finest unit that fits in
/// eight digits (rounded up, so the upstream never gets more time).
pub fn timeout_value(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let (amount, unit) = units
        .iter()
        .map(|&(size, unit)| (nanos.div_ceil(size), unit))
        .find(|&(amount, _)| amount <= MAX)
        .unwrap_or((MAX, 'H'));
    HeaderValue::from_str(&format!("{amount}{unit}"))
        .unwrap_or_else(|_| HeaderValue::from_static("99999999H"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(content_type: &'static str) -> Option<Kind> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Kind::of(&headers)
    }

    #[test]
    fn tells_grpc_and_grpc_web_by_content_type() {
        assert_eq!(kind("application/grpc"), Some(Kind::Grpc));
        assert_eq!(kind("application/grpc+proto"), Some(Kind::Grpc));
        assert_eq!(kind("Application/GRPC;charset=x"), Some(Kind::Grpc));
        assert_eq!(
            kind("application/grpc-web"),
            Some(Kind::Web { text: false })
        );
        assert_eq!(
            kind("application/grpc-web+proto"),
            Some(Kind::Web { text: false })
        );
        assert_eq!(
            kind("application/grpc-web-text+proto"),
            Some(Kind::Web { text: true })
        );
        assert_eq!(kind("application/grpcx"), None);
        assert_eq!(kind("application/grpc-webby"), None);
        assert_eq!(kind("application/json"), None);
        assert_eq!(Kind::of(&HeaderMap::new()), None);
    }

    #[test]
    fn maps_http_statuses_as_envoy_does_but_timeouts_to_deadline_exceeded() {
        let cases = [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (502, 14),
            (503, 14),
            (504, 4),
            (500, 2),
        ];
        for (http, grpc) in cases {
            let status = StatusCode::from_u16(http).expect("status");
            assert_eq!(status_for(status), grpc, "{http}");
        }
    }

    #[test]
    fn percent_encodes_the_message() {
        assert_eq!(message_value("100% sûr\n"), "100%25 s%C3%BBr%0A");
    }

    #[test]
    fn parses_and_writes_timeouts() {
        let parse = |s: &'static str| parse_timeout(&HeaderValue::from_static(s));
        assert_eq!(parse("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse("123456789S"), None);
        assert_eq!(parse("m"), None);
        assert_eq!(parse("10x"), None);
        assert_eq!(parse("-1S"), None);
        assert_eq!(timeout_value(Duration::from_nanos(1_500)), "1500n");
        assert_eq!(timeout_value(Duration::from_millis(250)), "250000u");
        assert_eq!(timeout_value(Duration::from_secs(30)), "30000000u");
        assert_eq!(timeout_value(Duration::from_secs(3600)), "3600000m");
        assert_eq!(timeout_value(Duration::from_secs(86_400)), "86400000m");
        assert_eq!(timeout_value(Duration::from_secs(200_000)), "200000S");
    }
}
