//! The canonical form of a request's path and host, computed once before
//! routing, so that what the routes and filters check is what is forwarded.
//!
//! A path is normalized in this order (RFC 3986 and Envoy's `normalize_path`,
//! `merge_slashes` and `path_with_escaped_slashes_action` are the models):
//!
//! 1. Percent-escapes of unreserved characters (`A–Z a–z 0–9 - . _ ~`) are
//!    decoded (`/%61dmin` → `/admin`); every other escape is kept, with its hex
//!    digits in upper case (`%3b` → `%3B`). A `%` not followed by two hex
//!    digits is refused.
//! 2. Escaped slashes and backslashes (`%2F`, `%5C`), a literal backslash and
//!    an escaped NUL (`%00`) get the listener's [`EscapedSlashes`] action:
//!    refused (the default), kept as they are, or decoded to `/` (a NUL is
//!    never decoded: it cannot be sent on).
//! 3. Dot segments are removed (`/x/../admin` → `/admin`, `/./a` → `/a`,
//!    `/..` → `/`); this runs after decoding, so `%2e%2e` counts.
//! 4. With `merge_slashes`, runs of `/` become one (`//admin` → `/admin`).
//!
//! The query is not touched. Knows nothing of HTTP messages or the rest of
//! Weir: it maps text to text (the manifest's validation uses it too, to
//! insist that route paths are written in normal form).

use std::borrow::Cow;

/// How a listener normalizes request paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Runs of `/` become one.
    pub merge_slashes: bool,
    /// What `%2F`, `%5C`, `\` and `%00` in a path get.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathOptions {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// The action for escaped slashes, backslashes and NULs in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// 400: backends disagree on what they mean.
    Reject,
    /// Forwarded as they are (escapes in upper case); routes see them escaped.
    Keep,
    /// `%2F`, `%5C` and `\` become `/` before routing; `%00` is still refused.
    Decode,
}

/// Why a request path cannot be normalized (the request is refused with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("the path has an invalid percent-escape")]
    InvalidEscape,
    /// `%2F`, `%5C` or `\` on a listener that refuses them.
    #[error("the path contains an escaped slash or a backslash, which this listener refuses")]
    EscapedSlash,
    /// `%00`.
    #[error("the path contains an escaped NUL (%00)")]
    Nul,
    /// Not origin-form (`/…`).
    #[error("the path must start with `/`")]
    NotAbsolute,
}

/// Why a `Host` (or `:authority`) value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Empty, or a character that no host name or IP literal contains.
    #[error("the host is not a valid host name, IP address or port")]
    Invalid,
}

/// The normalized form of `path`; borrowed when it is already normal (the
/// common case, found in one pass without allocating).
pub fn normalize_path<'p>(path: &'p str, options: &PathOptions) -> Result<Cow<'p, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path.as_bytes(), options.merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes(), options.escaped_slashes)?;
    let normal = remove_dot_segments(&decoded, options.merge_slashes);
    Ok(if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    })
}

/// Whether `path` has nothing to normalize: no escape, no backslash, no dot
/// segment and (when merging) no `//`. May say no for a normal path (`/.well-known`).
fn is_normal(path: &[u8], merge_slashes: bool) -> bool {
    let mut previous = 0u8;
    for &b in path {
        match b {
            b'%' | b'\\' => return false,
            b'.' if previous == b'/' => return false,
            b'/' if previous == b'/' && merge_slashes => return false,
            _ => {}
        }
        previous = b;
    }
    true
}

/// Step 1 and 2: escapes decoded or kept in upper case, slashes per `action`.
fn decode(path: &[u8], action: EscapedSlashes) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'\\' {
            match action {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Keep => out.push(b'\\'),
                EscapedSlashes::Decode => out.push(b'/'),
            }
            i += 1;
            continue;
        }
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            path.get(i + 1).copied().and_then(hex_value),
            path.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::InvalidEscape);
        };
        let value = hi << 4 | lo;
        match value {
            b'/' | b'\\' => match action {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Keep => push_escape(&mut out, value),
                EscapedSlashes::Decode => out.push(b'/'),
            },
            0 => match action {
                EscapedSlashes::Keep => push_escape(&mut out, 0),
                EscapedSlashes::Reject | EscapedSlashes::Decode => return Err(PathError::Nul),
            },
            v if is_unreserved(v) => out.push(v),
            v => push_escape(&mut out, v),
        }
        i += 3;
    }
    Ok(out)
}

/// Steps 3 and 4 over a decoded path (which starts with `/`).
fn remove_dot_segments(path: &[u8], merge_slashes: bool) -> String {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            b"." => trailing_slash = last,
            b".." => {
                kept.pop();
                trailing_slash = last;
            }
            b"" if last => trailing_slash = true,
            b"" if merge_slashes => {}
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in &kept {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    // Only ASCII escapes were decoded (unreserved characters), so the bytes
    // are as valid UTF-8 as the input was.
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut Vec<u8>, value: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[
        b'%',
        HEX[usize::from(value >> 4)],
        HEX[usize::from(value & 0xf)],
    ]);
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The canonical form of a `Host` value (`name[:port]`): lower case, without a
/// trailing dot on the name (`Admin.Internal.:8080` → `admin.internal:8080`).
/// Refuses what no host contains: spaces, `@` (user info), `/`, empty labels,
/// a port that is not a number.
pub fn canonical_host(host: &str) -> Result<Cow<'_, str>, HostError> {
    if host.starts_with('[') {
        return canonical_ip_literal(host);
    }
    // One pass over the name (host label characters, no empty label, and
    // whether anything needs changing), stopping at the port's `:`.
    let bytes = host.as_bytes();
    let mut upper = false;
    let mut previous = HostChar::Dot;
    let mut name_end = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        let class = HOST_CHARS[usize::from(b)];
        match class {
            HostChar::Label => {}
            HostChar::Upper => upper = true,
            HostChar::Dot if previous == HostChar::Dot => return Err(HostError::Invalid),
            HostChar::Dot => {}
            HostChar::Colon => {
                name_end = i;
                break;
            }
            HostChar::Invalid => return Err(HostError::Invalid),
        }
        previous = class;
    }
    let (name, port) = host.split_at(name_end);
    if name.is_empty() || !valid_port(port) {
        return Err(HostError::Invalid);
    }
    let trailing_dot = previous == HostChar::Dot;
    if !upper && !trailing_dot {
        return Ok(Cow::Borrowed(host));
    }
    let mut canonical = name[..name.len() - usize::from(trailing_dot)].to_ascii_lowercase();
    canonical.push_str(port);
    Ok(Cow::Owned(canonical))
}

/// What a byte of a `Host` value is, for the one-pass scan.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HostChar {
    /// Lower-case letter, digit, `-`, `_`, `~`.
    Label,
    /// Upper-case letter.
    Upper,
    Dot,
    Colon,
    Invalid,
}

/// [`HostChar`] of every byte.
static HOST_CHARS: [HostChar; 256] = {
    let mut table = [HostChar::Invalid; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = match c {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => HostChar::Label,
            b'A'..=b'Z' => HostChar::Upper,
            b'.' => HostChar::Dot,
            b':' => HostChar::Colon,
            _ => HostChar::Invalid,
        };
        b += 1;
    }
    table
};

/// `[v6]` or `[v6]:port`, lower-cased.
fn canonical_ip_literal(host: &str) -> Result<Cow<'_, str>, HostError> {
    let end = host.find(']').ok_or(HostError::Invalid)?;
    let (literal, port) = host.split_at(end + 1);
    let inner = &literal[1..end];
    let valid = !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    if !valid || !valid_port(port) {
        return Err(HostError::Invalid);
    }
    Ok(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// Nothing, or `:` and one to five digits.
fn valid_port(port: &str) -> bool {
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => {
            (1..=5).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(escaped_slashes: EscapedSlashes) -> PathOptions {
        PathOptions {
            merge_slashes: true,
            escaped_slashes,
        }
    }

    fn normal(path: &str) -> Result<String, PathError> {
        normalize_path(path, &PathOptions::default()).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in ["/", "/a/b", "/a/b/", "/v1/users/7", "/a.b/c", "/x;y=1"] {
            let out = normalize_path(path, &PathOptions::default()).expect("valid");
            assert!(matches!(out, Cow::Borrowed(p) if p == path), "{path}");
        }
        let out = normalize_path("/.well-known/x", &PathOptions::default()).expect("valid");
        assert!(
            matches!(out, Cow::Borrowed(_)),
            "rescanned, still unchanged"
        );
    }

    #[test]
    fn dot_segments_are_removed_after_decoding() {
        let cases = [
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/x/../../admin", "/admin"),
            ("/%2e/admin", "/admin"),
            ("/x/%2e%2e/admin", "/admin"),
            ("/x/%2E%2E/admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/.", "/"),
            ("/a/..b/c", "/a/..b/c"),
            ("/a/.b", "/a/.b"),
        ];
        for (path, expected) in cases {
            assert_eq!(normal(path).as_deref(), Ok(expected), "{path}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(normal("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(normal("/adm%69n/secret").as_deref(), Ok("/admin/secret"));
        assert_eq!(normal("/a%7e%2d%5F").as_deref(), Ok("/a~-_"));
        assert_eq!(normal("/a%20b%3b").as_deref(), Ok("/a%20b%3B"));
        assert_eq!(normal("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
    }

    #[test]
    fn slashes_merge_unless_turned_off() {
        assert_eq!(normal("//admin").as_deref(), Ok("/admin"));
        assert_eq!(normal("/a///b//").as_deref(), Ok("/a/b/"));
        let keep = PathOptions {
            merge_slashes: false,
            ..PathOptions::default()
        };
        let out = normalize_path("//admin/./x", &keep).expect("valid");
        assert_eq!(out, "//admin/x");
    }

    #[test]
    fn escaped_slashes_follow_the_listener_action() {
        for path in ["/admin%2F", "/%2fadmin", "/x/..%2fadmin", "/a%5Cb", "/a\\b"] {
            assert_eq!(normal(path), Err(PathError::EscapedSlash), "{path}");
        }
        let keep = options(EscapedSlashes::Keep);
        assert_eq!(
            normalize_path("/x/..%2fadmin", &keep).as_deref(),
            Ok("/x/..%2Fadmin")
        );
        assert_eq!(normalize_path("/a\\b", &keep).as_deref(), Ok("/a\\b"));
        let decode = options(EscapedSlashes::Decode);
        assert_eq!(
            normalize_path("/x/..%2fadmin", &decode).as_deref(),
            Ok("/admin")
        );
        assert_eq!(normalize_path("/a%5C..%5Cb", &decode).as_deref(), Ok("/b"));
    }

    #[test]
    fn nul_and_broken_escapes_are_refused() {
        assert_eq!(normal("/admin%00"), Err(PathError::Nul));
        assert_eq!(
            normalize_path("/admin%00", &options(EscapedSlashes::Decode)),
            Err(PathError::Nul)
        );
        assert_eq!(
            normalize_path("/admin%00", &options(EscapedSlashes::Keep)).as_deref(),
            Ok("/admin%00")
        );
        for path in ["/a%", "/a%2", "/a%zz", "/a%%41"] {
            assert_eq!(normal(path), Err(PathError::InvalidEscape), "{path}");
        }
        assert_eq!(normal("*"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn hosts_are_lower_cased_without_a_trailing_dot() {
        let cases = [
            ("admin.internal", "admin.internal"),
            ("Admin.Internal", "admin.internal"),
            ("admin.internal.", "admin.internal"),
            ("admin.internal.:8080", "admin.internal:8080"),
            ("localhost:80", "localhost:80"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:8080", "[::1]:8080"),
            ("[FE80::1]", "[fe80::1]"),
        ];
        for (host, expected) in cases {
            assert_eq!(canonical_host(host).as_deref(), Ok(expected), "{host}");
        }
        assert!(matches!(canonical_host("a.b:1"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn invalid_hosts_are_refused() {
        for host in [
            "", "a b", "x@y", "a/b", "a..b", ".a", "a:", "a:port", "a:123456", "[::1", "[]",
            "[::1]x", "[zz]", "a:1:2", "%61",
        ] {
            assert_eq!(canonical_host(host), Err(HostError::Invalid), "{host:?}");
        }
    }
}
