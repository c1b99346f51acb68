//! What HTTP caching (RFC 9111, RFC 5861) says about one response: whether a
//! shared cache may keep it, for how long it is fresh, how long it may then
//! be served stale while it is refreshed, and whether it can be revalidated.

use std::time::{Duration, SystemTime};

/// The directives of one `Cache-Control` header that matter to a shared cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
}

impl CacheControl {
    /// Reads a `Cache-Control` value (directive names in any case; unknown
    /// ones and malformed numbers are ignored, as RFC 9111 §5.2 asks).
    pub fn parse(value: &str) -> Self {
        let mut cc = Self::default();
        for directive in value.split(',') {
            let (name, argument) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = argument.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-store" => cc.no_store = true,
                "no-cache" => cc.no_cache = true,
                "private" => cc.private = true,
                "public" => cc.public = true,
                "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                "max-age" => cc.max_age = seconds.or(cc.max_age),
                "s-maxage" => cc.s_maxage = seconds.or(cc.s_maxage),
                "stale-while-revalidate" => cc.stale_while_revalidate = seconds,
                _ => {}
            }
        }
        cc
    }
}

/// The response facts a decision reads.
pub struct Response<'a> {
    pub status: u16,
    pub cache_control: Option<&'a str>,
    pub expires: Option<&'a str>,
    pub date: Option<&'a str>,
    pub age: Option<&'a str>,
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    pub vary: Option<&'a str>,
    pub has_set_cookie: bool,
}

/// What the configuration adds to the rules.
pub struct Defaults {
    /// Freshness of a cacheable status whose response says nothing.
    pub ttl: Duration,
    /// Statuses kept when the response gives no freshness of its own.
    pub statuses: Vec<u16>,
    /// Staleness served while one refresh runs, unless the response says.
    pub stale_while_revalidate: Duration,
    /// How long a stale entry with a validator is kept for revalidation.
    pub revalidate_for: Duration,
}

/// How a response is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    /// Fresh for this long from when it was stored.
    pub fresh: Duration,
    /// Then served stale, refreshed in the background, for this long.
    pub stale: Duration,
    /// Kept in all this long (fresh, stale and revalidation time).
    pub keep: Duration,
    /// Its age when it arrived (the upstream's `Age`).
    pub initial_age: Duration,
    /// Lower-cased request header names the response varies on.
    pub vary: Vec<String>,
}

/// Why a response is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `no-store` or `private`.
    Forbidden,
    /// It sets a cookie.
    SetsCookie,
    /// `Vary: *`.
    VariesOnEverything,
    /// The request carried credentials and the response did not allow sharing.
    Authorized,
    /// A status kept only by explicit freshness, with none given.
    NoFreshness,
    /// Nothing to keep it for: no freshness, no staleness, no validator.
    Useless,
}

/// Whether, and how, a shared cache keeps `response` to a request that
/// did (`authorized`) or did not carry an `Authorization` header.
pub fn decide(
    response: &Response<'_>,
    authorized: bool,
    defaults: &Defaults,
    now: SystemTime,
) -> Result<Keep, Skip> {
    let cc = response
        .cache_control
        .map(CacheControl::parse)
        .unwrap_or_default();
    if cc.no_store || cc.private {
        return Err(Skip::Forbidden);
    }
    if response.has_set_cookie {
        return Err(Skip::SetsCookie);
    }
    let vary = vary_names(response.vary.unwrap_or(""));
    if vary.iter().any(|v| v == "*") {
        return Err(Skip::VariesOnEverything);
    }
    if authorized && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err(Skip::Authorized);
    }
    let explicit = if cc.no_cache {
        Some(Duration::ZERO)
    } else if let Some(s) = cc.s_maxage.or(cc.max_age) {
        Some(Duration::from_secs(s))
    } else {
        response
            .expires
            .map(|expires| expires_in(expires, response.date, now))
    };
    let fresh = match explicit {
        Some(fresh) => fresh,
        None if defaults.statuses.contains(&response.status) => defaults.ttl,
        None => return Err(Skip::NoFreshness),
    };
    let stale = if cc.must_revalidate || cc.no_cache {
        Duration::ZERO
    } else {
        cc.stale_while_revalidate
            .map_or(defaults.stale_while_revalidate, Duration::from_secs)
    };
    let validator = response.etag.is_some() || response.last_modified.is_some();
    let revalidate = if validator {
        defaults.revalidate_for
    } else {
        Duration::ZERO
    };
    let initial_age = response
        .age
        .and_then(|a| a.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let fresh = fresh.saturating_sub(initial_age);
    let keep = fresh + stale + revalidate;
    if keep.is_zero() {
        return Err(Skip::Useless);
    }
    Ok(Keep {
        fresh,
        stale,
        keep,
        initial_age,
        vary,
    })
}

/// Freshness from `Expires` (against the response's `Date`, or now); an
/// invalid date means already stale (RFC 9111 §5.3).
fn expires_in(expires: &str, date: Option<&str>, now: SystemTime) -> Duration {
    let Ok(expires) = httpdate::parse_http_date(expires) else {
        return Duration::ZERO;
    };
    let base = date
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or(now);
    expires.duration_since(base).unwrap_or(Duration::ZERO)
}

/// The header names of a `Vary` value, lower-cased, sorted and deduplicated.
pub fn vary_names(vary: &str) -> Vec<String> {
    let mut names: Vec<String> = vary
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, as
/// RFC 9110 §13.1.2 asks of a GET).
pub fn none_match(if_none_match: &str, etag: &str) -> bool {
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let etag = bare(etag);
    if_none_match
        .split(',')
        .any(|tag| tag.trim() == "*" || bare(tag) == etag)
}

/// Whether a representation last modified at `last_modified` is unchanged
/// since `if_modified_since`.
pub fn not_modified_since(if_modified_since: &str, last_modified: &str) -> bool {
    match (
        httpdate::parse_http_date(if_modified_since),
        httpdate::parse_http_date(last_modified),
    ) {
        (Ok(since), Ok(modified)) => modified <= since,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            ttl: Duration::from_secs(60),
            statuses: vec![200, 301, 404],
            stale_while_revalidate: Duration::ZERO,
            revalidate_for: Duration::from_secs(600),
        }
    }

    fn response(cache_control: Option<&'static str>) -> Response<'static> {
        Response {
            status: 200,
            cache_control,
            expires: None,
            date: None,
            age: None,
            etag: None,
            last_modified: None,
            vary: None,
            has_set_cookie: false,
        }
    }

    fn now() -> SystemTime {
        httpdate::parse_http_date("Wed, 02 Dec 2026 12:00:00 GMT").expect("a date")
    }

    #[test]
    fn reads_the_directives_a_shared_cache_obeys() {
        let cc = CacheControl::parse(
            r#"Public, max-age=10, S-MAXAGE="20", stale-while-revalidate=5, x-other=1"#,
        );
        assert!(cc.public);
        assert_eq!(
            (cc.max_age, cc.s_maxage, cc.stale_while_revalidate),
            (Some(10), Some(20), Some(5))
        );
        assert_eq!(CacheControl::parse("max-age=ten").max_age, None);
    }

    #[test]
    fn s_maxage_wins_over_max_age_over_expires_over_the_default() {
        let mut r = response(Some("max-age=10, s-maxage=20"));
        assert_eq!(
            decide(&r, false, &defaults(), now()).map(|k| k.fresh),
            Ok(Duration::from_secs(20))
        );
        r.cache_control = Some("max-age=10");
        r.expires = Some("Wed, 02 Dec 2026 12:05:00 GMT");
        assert_eq!(
            decide(&r, false, &defaults(), now()).map(|k| k.fresh),
            Ok(Duration::from_secs(10))
        );
        r.cache_control = None;
        r.date = Some("Wed, 02 Dec 2026 12:00:00 GMT");
        assert_eq!(
            decide(&r, false, &defaults(), now()).map(|k| k.fresh),
            Ok(Duration::from_secs(300))
        );
        r.expires = None;
        assert_eq!(
            decide(&r, false, &defaults(), now()).map(|k| k.fresh),
            Ok(Duration::from_secs(60))
        );
        r.status = 500;
        assert_eq!(
            decide(&r, false, &defaults(), now()),
            Err(Skip::NoFreshness)
        );
    }

    #[test]
    fn no_store_private_cookies_and_vary_star_are_not_kept() {
        assert_eq!(
            decide(&response(Some("no-store")), false, &defaults(), now()),
            Err(Skip::Forbidden)
        );
        assert_eq!(
            decide(
                &response(Some("private, max-age=9")),
                false,
                &defaults(),
                now()
            ),
            Err(Skip::Forbidden)
        );
        let mut r = response(None);
        r.has_set_cookie = true;
        assert_eq!(decide(&r, false, &defaults(), now()), Err(Skip::SetsCookie));
        let mut r = response(None);
        r.vary = Some("Accept, *");
        assert_eq!(
            decide(&r, false, &defaults(), now()),
            Err(Skip::VariesOnEverything)
        );
    }

    #[test]
    fn an_authorized_request_is_shared_only_when_the_response_allows() {
        assert_eq!(
            decide(&response(Some("max-age=9")), true, &defaults(), now()),
            Err(Skip::Authorized)
        );
        assert!(
            decide(
                &response(Some("public, max-age=9")),
                true,
                &defaults(),
                now()
            )
            .is_ok()
        );
        assert!(decide(&response(Some("s-maxage=9")), true, &defaults(), now()).is_ok());
    }

    #[test]
    fn staleness_validators_and_age_shape_how_long_it_is_kept() {
        let mut r = response(Some("max-age=100, stale-while-revalidate=30"));
        r.age = Some("40");
        let keep = decide(&r, false, &defaults(), now()).expect("kept");
        assert_eq!(keep.fresh, Duration::from_secs(60));
        assert_eq!(keep.stale, Duration::from_secs(30));
        assert_eq!(
            keep.keep,
            Duration::from_secs(90),
            "no validator: nothing to revalidate"
        );
        r.etag = Some("\"v1\"");
        r.cache_control = Some("max-age=100, must-revalidate, stale-while-revalidate=30");
        let keep = decide(&r, false, &defaults(), now()).expect("kept");
        assert_eq!(
            keep.stale,
            Duration::ZERO,
            "must-revalidate serves nothing stale"
        );
        assert_eq!(keep.keep, Duration::from_secs(60 + 600));
        let mut r = response(Some("no-cache"));
        assert_eq!(decide(&r, false, &defaults(), now()), Err(Skip::Useless));
        r.etag = Some("\"v1\"");
        assert_eq!(
            decide(&r, false, &defaults(), now()).map(|k| (k.fresh, k.keep)),
            Ok((Duration::ZERO, Duration::from_secs(600)))
        );
    }

    #[test]
    fn vary_names_are_normalised() {
        assert_eq!(
            vary_names(" Accept-Encoding, accept ,Accept-Encoding"),
            ["accept", "accept-encoding"]
        );
    }

    #[test]
    fn conditional_requests_compare_weakly_and_by_date() {
        assert!(none_match(r#""a", W/"v1""#, r#""v1""#));
        assert!(none_match("*", r#""v1""#));
        assert!(!none_match(r#""v2""#, r#""v1""#));
        assert!(not_modified_since(
            "Wed, 02 Dec 2026 12:00:00 GMT",
            "Wed, 02 Dec 2026 11:00:00 GMT"
        ));
        assert!(!not_modified_since(
            "Wed, 02 Dec 2026 10:00:00 GMT",
            "Wed, 02 Dec 2026 11:00:00 GMT"
        ));
    }
}
