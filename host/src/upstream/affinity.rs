//! The key a consistent-hash group hashes: a header, a cookie, a query
//! parameter or the client's address, read from the request.

use std::borrow::Cow;

use http::{HeaderMap, Uri, header};

use super::ring::hash_key;
use crate::config::model::HashKey;

/// The hash of `key` as the request carries it, or `None` when it does not.
pub fn key_hash(key: &HashKey, headers: &HeaderMap, uri: &Uri, client_ip: &str) -> Option<u64> {
    let value: Cow<'_, [u8]> = match key {
        HashKey::Header(name) => Cow::Borrowed(headers.get(name)?.as_bytes()),
        HashKey::Cookie(name) => Cow::Borrowed(cookie(headers, name)?),
        HashKey::Query(name) => Cow::Owned(
            form_urlencoded::parse(uri.query()?.as_bytes())
                .find(|(k, _)| k == name)?
                .1
                .into_owned()
                .into_bytes(),
        ),
        HashKey::ClientIp => Cow::Borrowed(client_ip.as_bytes()),
    };
    Some(hash_key(&value))
}

/// The value of cookie `name` among the request's `cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let at = pair.iter().position(|&b| b == b'=')?;
            (&pair[..at] == name.as_bytes()).then(|| &pair[at + 1..])
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    header::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn finds_a_cookie_among_several_headers_and_pairs() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            header::HeaderValue::from_static("a=1; user=ann"),
        );
        headers.append(
            header::COOKIE,
            header::HeaderValue::from_static("session=xyz"),
        );
        assert_eq!(cookie(&headers, "user"), Some(&b"ann"[..]));
        assert_eq!(cookie(&headers, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&headers, "use"), None);
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn reads_each_kind_of_key_and_misses_when_absent() {
        let uri: Uri = "/p?user=ann&x=1".parse().unwrap_or_default();
        let h = headers(&[("x-user", "ann"), ("cookie", "a=1; session=ann; b=2")]);
        let ann = Some(hash_key(b"ann"));
        let header = HashKey::Header(header::HeaderName::from_static("x-user"));
        assert_eq!(key_hash(&header, &h, &uri, "10.0.0.1"), ann);
        assert_eq!(
            key_hash(&HashKey::Cookie("session".into()), &h, &uri, ""),
            ann
        );
        assert_eq!(key_hash(&HashKey::Query("user".into()), &h, &uri, ""), ann);
        assert_eq!(key_hash(&HashKey::ClientIp, &h, &uri, "ann"), ann);
        assert_eq!(
            key_hash(&HashKey::Cookie("none".into()), &h, &uri, ""),
            None
        );
        assert_eq!(key_hash(&HashKey::Query("none".into()), &h, &uri, ""), None);
        let empty = HeaderMap::new();
        assert_eq!(key_hash(&header, &empty, &uri, ""), None);
    }
}
