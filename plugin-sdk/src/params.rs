//! Query parameters and cookies: read one by name, or drop one (a
//! credential that must not travel upstream) leaving the rest as sent.

use crate::status::HostResult;
use crate::{Filter, Http};

/// The value of query parameter `name` in `path` (percent-decoded, `+` as
/// a space), the first when there are several.
pub fn query_param(path: &str, name: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

/// `path` without query parameter `name` (every occurrence); the `?` goes
/// too when nothing else is left.
pub fn without_query_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| decode(pair.split_once('=').map_or(*pair, |(k, _)| k)) != name)
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The value of cookie `name` in a `cookie` header.
pub fn cookie(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// A `cookie` header without cookie `name`; `None` when nothing is left.
pub fn without_cookie(header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k).trim() != name)
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Percent-decodes `text`, reading `+` as a space; invalid escapes stay as written.
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<F: Filter> Http<'_, F> {
    /// The request's query parameter `name` ([`query_param`]).
    pub fn query_param(&self, name: &str) -> HostResult<Option<String>> {
        Ok(self.path()?.and_then(|path| query_param(&path, name)))
    }

    /// The request's cookie `name` ([`cookie`]).
    pub fn cookie(&self, name: &str) -> HostResult<Option<String>> {
        Ok(self
            .request_header("cookie")?
            .and_then(|header| cookie(&header, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_read_decoded_and_dropped_alone() {
        let path = "/v1/items?page=2&api%5Fkey=s%20e+c&q=a%2Bb";
        assert_eq!(query_param(path, "api_key").as_deref(), Some("s e c"));
        assert_eq!(query_param(path, "q").as_deref(), Some("a+b"));
        assert_eq!(query_param(path, "missing"), None);
        assert_eq!(query_param("/no-query", "q"), None);
        assert_eq!(
            without_query_param(path, "api_key"),
            "/v1/items?page=2&q=a%2Bb"
        );
        assert_eq!(
            without_query_param("/x?api_key=1&api_key=2", "api_key"),
            "/x"
        );
        assert_eq!(without_query_param("/x", "api_key"), "/x");
    }

    #[test]
    fn cookies_are_read_and_dropped_alone() {
        let header = "theme=dark; session=\"abc\"; apikey=k1";
        assert_eq!(cookie(header, "session").as_deref(), Some("abc"));
        assert_eq!(cookie(header, "apikey").as_deref(), Some("k1"));
        assert_eq!(cookie(header, "none"), None);
        assert_eq!(
            without_cookie(header, "apikey").as_deref(),
            Some("theme=dark; session=\"abc\"")
        );
        assert_eq!(without_cookie("apikey=k1", "apikey"), None);
    }

    #[test]
    fn bad_escapes_are_kept_as_written() {
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%41"), "%zzA");
    }
}
