//! The request and response files of `weir plugin test`: an HTTP/1.1 message
//! as text (start line, headers, blank line, body), with LF or CRLF line
//! ends. A malformed file is refused with the line at fault.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// Why a message file cannot be read as HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct MessageError {
    /// The line at fault, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// A request as the filter's request headers phase sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMessage {
    /// `:method`.
    pub method: String,
    /// `:path` (path and query).
    pub path: String,
    /// `:authority`: the target's host in absolute form, else the `Host` header.
    pub authority: String,
    /// `:scheme`: the absolute-form target's, else `http`.
    pub scheme: String,
    /// The headers, without `Host` (filters see it as `:authority`, as in the gateway).
    pub headers: HeaderMap,
    /// The body (empty: the request has none).
    pub body: Bytes,
}

/// What the upstream answers in a test.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseMessage {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Default for ResponseMessage {
    /// `HTTP/1.1 200 OK` with no headers and no body.
    fn default() -> Self {
        Self {
            status: 200,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }
}

/// Reads a request: `METHOD target HTTP/1.1`, headers, a blank line, the body.
/// The target is origin-form (`/path?query`) or absolute-form
/// (`https://host/path`).
pub fn parse_request(text: &[u8]) -> Result<RequestMessage, MessageError> {
    let message = split(text)?;
    let (line, start) = message.start;
    let fail = |reason: String| MessageError { line, reason };
    let [method, target, version] = words(&start).ok_or_else(|| {
        fail(format!(
            "expected a request line `METHOD /path HTTP/1.1`, found `{start}`"
        ))
    })?;
    Method::from_bytes(method.as_bytes())
        .map_err(|_| fail(format!("`{method}` is not an HTTP method")))?;
    check_version(version).map_err(fail)?;
    let (scheme, authority, path) = if target.starts_with('/') {
        ("http".to_owned(), None, target.to_owned())
    } else {
        let uri: http::Uri = target
            .parse()
            .map_err(|_| fail(format!("`{target}` is not a request target")))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(fail(format!(
                "the target `{target}` must start with `/` or be an absolute URL"
            )));
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        (scheme.to_owned(), Some(authority.to_string()), path)
    };
    let mut headers = message.headers;
    let host = headers.remove(http::header::HOST);
    let authority = match (authority, host) {
        (Some(authority), _) => authority,
        (None, Some(host)) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
        (None, None) => String::new(),
    };
    Ok(RequestMessage {
        method: method.to_owned(),
        path,
        authority,
        scheme,
        headers,
        body: message.body,
    })
}

/// Reads a response: `HTTP/1.1 STATUS [reason]`, headers, a blank line, the body.
pub fn parse_response(text: &[u8]) -> Result<ResponseMessage, MessageError> {
    let message = split(text)?;
    let (line, start) = message.start;
    let fail = |reason: String| MessageError { line, reason };
    let mut parts = start.splitn(3, ' ');
    let (version, status) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    check_version(version).map_err(|_| {
        fail(format!(
            "expected a status line `HTTP/1.1 200 OK`, found `{start}`"
        ))
    })?;
    let status = status
        .parse::<u16>()
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| fail(format!("`{status}` is not a status code")))?;
    Ok(ResponseMessage {
        status,
        headers: message.headers,
        body: message.body,
    })
}

/// A message cut into its parts.
struct Split {
    /// The start line and its number.
    start: (usize, String),
    headers: HeaderMap,
    body: Bytes,
}

/// Splits `text` into start line, headers and body. With a `Content-Length`
/// the body is that many bytes (what follows is ignored); without one it is
/// everything after the blank line.
fn split(text: &[u8]) -> Result<Split, MessageError> {
    let mut lines = Lines {
        text,
        at: 0,
        line: 0,
    };
    let start = loop {
        let Some(line) = lines.next() else {
            return Err(MessageError {
                line: lines.line.max(1),
                reason: "the file is empty: expected a start line".into(),
            });
        };
        // Blank lines before the start line are tolerated, as RFC 9112 allows.
        if !line.is_empty() {
            break (lines.line, utf8(line, lines.line)?.to_owned());
        }
    };
    let mut headers = HeaderMap::new();
    let mut content_length = None;
    while let Some(line) = lines.next() {
        if line.is_empty() {
            break;
        }
        let number = lines.line;
        let fail = |reason: String| MessageError {
            line: number,
            reason,
        };
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err(fail(
                "a header line starts with whitespace (folded headers are not allowed)".into(),
            ));
        }
        let text = utf8(line, number)?;
        let Some((name, value)) = text.split_once(':') else {
            return Err(fail(format!("expected `name: value`, found `{text}`")));
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| fail(format!("`{name}` is not a header name")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| fail(format!("the value of `{name}` is not a header value")))?;
        if name == http::header::CONTENT_LENGTH {
            let length = value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| fail("content-length is not a number".into()))?;
            content_length = Some((length, number));
        }
        headers.append(name, value);
    }
    let rest = &text[lines.at.min(text.len())..];
    let body = match content_length {
        Some((length, _)) if length <= rest.len() => &rest[..length],
        Some((length, line)) => {
            return Err(MessageError {
                line,
                reason: format!(
                    "content-length is {length} but the body has {} bytes",
                    rest.len()
                ),
            });
        }
        None => rest,
    };
    Ok(Split {
        start,
        headers,
        body: Bytes::copy_from_slice(body),
    })
}

/// The lines of a message's head, LF or CRLF, counted from 1.
struct Lines<'a> {
    text: &'a [u8],
    /// Where the next line starts.
    at: usize,
    /// The number of the line last returned.
    line: usize,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.text.get(self.at..).filter(|r| !r.is_empty())?;
        self.line += 1;
        let (line, used) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], end + 1),
            None => (rest, rest.len()),
        };
        self.at += used;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

fn utf8(line: &[u8], number: usize) -> Result<&str, MessageError> {
    std::str::from_utf8(line).map_err(|_| MessageError {
        line: number,
        reason: "the line is not UTF-8 text".into(),
    })
}

/// Exactly three words separated by single spaces.
fn words(line: &str) -> Option<[&str; 3]> {
    let mut parts = line.split(' ');
    let words = [parts.next()?, parts.next()?, parts.next()?];
    (parts.next().is_none() && words.iter().all(|w| !w.is_empty())).then_some(words)
}

fn check_version(version: &str) -> Result<(), String> {
    match version {
        "HTTP/1.1" | "HTTP/1.0" => Ok(()),
        other => Err(format!("`{other}` is not HTTP/1.1 or HTTP/1.0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_request_with_crlf_or_lf_line_ends() {
        for text in [
            "POST /login?next=%2F HTTP/1.1\r\nHost: api.example\r\nX-User: ann\r\n\r\nhello",
            "POST /login?next=%2F HTTP/1.1\nHost: api.example\nX-User: ann\n\nhello",
        ] {
            let request = parse_request(text.as_bytes()).expect("parses");
            assert_eq!(request.method, "POST");
            assert_eq!(request.path, "/login?next=%2F");
            assert_eq!(request.authority, "api.example");
            assert_eq!(request.scheme, "http");
            assert_eq!(
                request.headers.get("x-user").map(|v| v.as_bytes()),
                Some(&b"ann"[..])
            );
            assert!(request.headers.get("host").is_none(), "Host is :authority");
            assert_eq!(request.body, "hello");
        }
    }

    #[test]
    fn an_absolute_target_gives_scheme_and_authority() {
        let request = parse_request(b"GET https://a.example:8443/x HTTP/1.1\n").expect("parses");
        assert_eq!(
            (
                request.scheme.as_str(),
                request.authority.as_str(),
                request.path.as_str()
            ),
            ("https", "a.example:8443", "/x")
        );
        assert!(request.body.is_empty());
    }

    #[test]
    fn content_length_cuts_the_body_and_must_be_met() {
        let text = "PUT / HTTP/1.1\nContent-Length: 2\n\nhi\n";
        assert_eq!(parse_request(text.as_bytes()).expect("parses").body, "hi");
        let short = "PUT / HTTP/1.1\nHost: h\nContent-Length: 9\n\nhi\n";
        let error = parse_request(short.as_bytes()).expect_err("too short");
        assert_eq!(error.line, 3, "{error}");
    }

    #[test]
    fn names_the_line_of_a_malformed_request() {
        let cases: [(&str, usize, &str); 6] = [
            ("", 1, "empty"),
            ("GET /\n", 1, "request line"),
            ("GET / HTTP/2\n", 1, "HTTP/1.1"),
            (
                "GET / HTTP/1.1\nHost: a\nno colon here\n\n",
                3,
                "name: value",
            ),
            ("GET / HTTP/1.1\nBad Name: x\n", 2, "not a header name"),
            ("GET / HTTP/1.1\nA: b\n  folded\n", 3, "folded"),
        ];
        for (text, line, reason) in cases {
            let error = parse_request(text.as_bytes()).expect_err(text);
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(error.reason.contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn reads_a_response() {
        let response =
            parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope")
                .expect("parses");
        assert_eq!(response.status, 404);
        assert_eq!(response.body, "nope");
        assert!(response.headers.contains_key("content-type"));
        let error = parse_response(b"HTTP/1.1 OK\n").expect_err("no status");
        assert_eq!(error.line, 1);
    }
}
