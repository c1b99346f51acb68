//! Matches requests to routes; depends only on `config::model` and `http` (knows nothing of hyper or servers).
//!
//! [`Router::new`] builds an index over the validated route conditions once;
//! [`Router::find`] picks the route for a [`RequestView`]. [`matches`] checks
//! a single route's conditions without an index; the router always returns the
//! same route as filtering every route with [`matches`] and taking the best by
//! the precedence below.
//!
//! # Conditions
//!
//! A route matches when *all* of its conditions hold:
//!
//! - **Host.** The request host (from `Host` or `:authority`) is compared
//!   ASCII case-insensitively with any `:port` suffix removed (`[::1]:8080` becomes
//!   `[::1]`). An exact pattern (`api.example.com`) must equal it. A wildcard
//!   (`*.example.com`) matches one or more labels in front of the suffix:
//!   `a.example.com` and `a.b.example.com` match, `example.com` does not. A route
//!   without host patterns matches any host, and requests without a host.
//! - **Path.** The path is compared in its normalized form (see
//!   [`crate::normalize`]; the lifecycle normalizes it before routing), without
//!   the query. `exact` must equal the whole path. `prefix` matches when the path
//!   equals it or continues after it with `/`, `;` (path parameters), `.` (an
//!   extension) or `%` (an escaped character): `/admin` matches `/admin`,
//!   `/admin/x`, `/admin;jsessionid=1`, `/admin.json` and `/admin%20`, but not
//!   `/adminx` or `/admin-panel`. Backends that ignore path parameters,
//!   extensions or trailing whitespace serve `/admin` for those, so its route
//!   must see them. A prefix ending in `/` matches any path that starts with it;
//!   `/` matches every path. `regex` must match the *whole* path (it is anchored
//!   at both ends; `/a|/ab` matches `/ab`). With `path_case_sensitive: false`,
//!   `exact` and `prefix` compare ASCII case-insensitively and the regex is
//!   compiled case-insensitive.
//! - **Methods.** An empty list allows any method; otherwise the request method
//!   must be listed (`HEAD` is not implied by `GET`).
//! - **Headers.** Every header condition must hold. A header may occur several
//!   times: `exact`, `prefix` and `regex` (whole value) hold when *any* of its
//!   values satisfies them (values that are not valid UTF-8 never do);
//!   `present` holds when it occurs at least once, `absent` when it does not occur.
//! - **Query.** The raw query is split on `&` into parameters and each at its
//!   first `=` into name and value (a parameter without `=` has the value `""`;
//!   empty parameters are skipped). Names and values are percent-decoded and `+`
//!   becomes a space; invalid `%` escapes are kept literally and bytes that are
//!   not UTF-8 are replaced with U+FFFD. The conditions then work like header
//!   conditions over all values of the named parameter.
//!
//! # Precedence
//!
//! When several routes match, the winner is decided by, in this order:
//!
//! 1. **Host specificity.** A route matching by an exact host beats one matching
//!    by a wildcard, and a longer wildcard suffix (`*.b.example.com`) beats a
//!    shorter one (`*.example.com`); both beat a route without host patterns. A
//!    route with several host patterns ranks by the best one that matches the
//!    request's host.
//! 2. **Path specificity.** An exact path beats a prefix, a longer prefix beats a
//!    shorter one, and a prefix beats a regex.
//! 3. **File order.** The route listed first wins.
//!
//! A more specific host therefore beats a more specific path. Method, header and
//! query conditions only filter routes; they do not rank them. To version an API
//! by header, list the route with the `accept-version: 2` condition *before* the
//! default route with the same path.

use std::borrow::Cow;
use std::collections::HashMap;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use crate::config::model::{
    HeaderMatch, HostMatch, PathMatch, QueryMatch, RouteId, RouteMatch, ValueMatch,
};

/// What the router looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// From the `Host` header or `:authority`; may contain a port and upper case.
    pub host: Option<&'a str>,
    /// The path only, without the query, as received (not decoded).
    pub path: &'a str,
    /// The raw query string, without the `?`.
    pub query: Option<&'a str>,
    /// The request method.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// Whether all conditions of `m` hold for `req`.
///
/// This is the unindexed check the [`Router`] agrees with. It compiles the
/// anchored form of any regex in `m` on every call, so it is meant for tests
/// and occasional use, not for the request path; use a [`Router`] there.
pub fn matches(m: &RouteMatch, req: &RequestView<'_>) -> bool {
    let compiled = CompiledMatch::new(m);
    let host = req.host.map(normalize_host);
    compiled.host_rank(host.as_deref()).is_some()
        && compiled.path_matches(req.path)
        && compiled.method_matches(req.method)
        && compiled.rest_matches(req)
}

/// Picks the route for a request; built once per manifest.
#[derive(Debug)]
pub struct Router {
    /// Every route, sorted by id; buckets refer to routes by index in here.
    routes: Vec<Entry>,
    /// Routes by exact host pattern.
    exact_hosts: HashMap<Box<str>, PathIndex, KeyHash>,
    /// Routes by wildcard suffix (`.example.com`).
    suffix_hosts: HashMap<Box<str>, PathIndex, KeyHash>,
    /// Some suffix does not start with `.`, so suffixes must be looked up at
    /// every character boundary of the host, not only at label boundaries.
    suffix_anywhere: bool,
    /// Routes without host patterns.
    any_host: PathIndex,
}

impl Router {
    /// Builds the index; `routes` in file order (RouteId order).
    pub fn new<'a>(routes: impl IntoIterator<Item = (RouteId, &'a RouteMatch)>) -> Router {
        let mut list: Vec<(RouteId, &RouteMatch)> = routes.into_iter().collect();
        // Already in id order when called as documented; a stable sort keeps it cheap then.
        list.sort_by_key(|(id, _)| *id);

        let mut router = Router {
            routes: Vec::with_capacity(list.len()),
            exact_hosts: HashMap::default(),
            suffix_hosts: HashMap::default(),
            suffix_anywhere: false,
            any_host: PathIndex::default(),
        };
        for (index, (id, m)) in list.into_iter().enumerate() {
            let matcher = CompiledMatch::new(m);
            if matcher.hosts.is_empty() {
                router
                    .any_host
                    .insert(index, &matcher.path, matcher.case_sensitive);
            }
            for host in &matcher.hosts {
                let bucket = match host {
                    HostMatch::Exact(h) => router.exact_hosts.entry(h.as_str().into()).or_default(),
                    HostMatch::Suffix(s) => {
                        if !s.starts_with('.') {
                            router.suffix_anywhere = true;
                        }
                        router.suffix_hosts.entry(s.as_str().into()).or_default()
                    }
                };
                bucket.insert(index, &matcher.path, matcher.case_sensitive);
            }
            router.routes.push(Entry { id, matcher });
        }
        router
    }

    /// The best route for the request, or None.
    pub fn find(&self, request: &RequestView<'_>) -> Option<RouteId> {
        let mut found = None;
        self.visit_host_tiers(request.host, |index| {
            found = self.search(index, request);
            found.is_some()
        });
        found
    }

    /// Hands `visit` the host tiers that apply to `host`, best first (its exact
    /// host, its wildcard suffixes longest first, then the routes without
    /// hosts), until it returns true.
    fn visit_host_tiers(&self, host: Option<&str>, mut visit: impl FnMut(&PathIndex) -> bool) {
        if let Some(raw) = host {
            let host = normalize_host(raw);
            let host = host.as_ref();
            if self.exact_hosts.get(host).is_some_and(&mut visit) {
                return;
            }
            if !self.suffix_hosts.is_empty() {
                // Longest suffix first: cut the host at increasing positions.
                let cuts = host.char_indices().skip(1).map(|(i, c)| (i, c == '.'));
                let cuts = cuts.chain(std::iter::once((host.len(), false)));
                for (cut, at_dot) in cuts {
                    if !(at_dot || self.suffix_anywhere) || cut == 0 {
                        continue;
                    }
                    if self.suffix_hosts.get(&host[cut..]).is_some_and(&mut visit) {
                        return;
                    }
                }
            }
        }
        visit(&self.any_host);
    }

    /// Number of routes indexed.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The best route in one host tier: exact path, then prefixes longest first,
    /// then regexes; file order within each group.
    fn search(&self, index: &PathIndex, req: &RequestView<'_>) -> Option<RouteId> {
        let mut found = None;
        self.candidates(index, req.path, |group| {
            found = self.first_matching(group, req, true);
            found.is_some()
        });
        found
    }

    /// Hands `visit` the groups of routes whose host tier is `index` and whose
    /// path matches `path`, best first (exact, prefixes longest first, regexes),
    /// until it returns true. Routes within a group are in file order.
    fn candidates(&self, index: &PathIndex, path: &str, mut visit: impl FnMut(&[usize]) -> bool) {
        // Case-insensitive patterns are keyed in lower case; the path is lowered
        // only when such a pattern exists and the path has upper case in it.
        let lowered = (index.has_caseless && path.bytes().any(|b| b.is_ascii_uppercase()))
            .then(|| path.to_ascii_lowercase());
        let caseless_path = lowered.as_deref().unwrap_or(path);
        let exact = [
            index.exact.get(path),
            index.caseless(&index.exact_caseless, caseless_path),
        ];
        if self.visit_pair(exact, &mut visit) {
            return;
        }
        if index.longest_prefix > 0 {
            for prefix in PrefixCandidates::new(path) {
                if prefix.len() > index.longest_prefix {
                    continue;
                }
                let groups = [
                    index.prefix.get(prefix),
                    index.caseless(&index.prefix_caseless, &caseless_path[..prefix.len()]),
                ];
                if self.visit_pair(groups, &mut visit) {
                    return;
                }
            }
        }
        for &i in &index.regex {
            if self.routes[i].matcher.path_matches(path) && visit(std::slice::from_ref(&i)) {
                return;
            }
        }
    }

    /// Visits the case-sensitive and the case-insensitive group of one pattern
    /// as one group in file order (both are sorted; most of the time one is absent).
    fn visit_pair(
        &self,
        groups: [Option<&Vec<usize>>; 2],
        visit: &mut impl FnMut(&[usize]) -> bool,
    ) -> bool {
        match groups {
            [None, None] => false,
            [Some(one), None] | [None, Some(one)] => visit(one),
            [Some(a), Some(b)] => {
                let mut merged: Vec<usize> = a.iter().chain(b).copied().collect();
                merged.sort_unstable();
                visit(&merged)
            }
        }
    }

    /// The first route of `group` (whose host and path already match) whose
    /// other conditions hold, its methods checked only if `check_method`.
    fn first_matching(
        &self,
        group: &[usize],
        req: &RequestView<'_>,
        check_method: bool,
    ) -> Option<RouteId> {
        group.iter().find_map(|&i| {
            let entry = &self.routes[i];
            let method_ok = !check_method || entry.matcher.method_matches(req.method);
            (method_ok && entry.matcher.rest_matches(req)).then_some(entry.id)
        })
    }

    /// When no route matches `request`: the methods of the routes that would
    /// match it with another method (for `405` and its `Allow` header), in
    /// the order first seen. Empty when no route matches it by host, path,
    /// headers and query either. Walks the same index as [`Router::find`].
    pub fn allowed_methods(&self, request: &RequestView<'_>) -> Vec<Method> {
        let mut allowed: Vec<Method> = Vec::new();
        self.visit_host_tiers(request.host, |index| {
            self.candidates(index, request.path, |group| {
                for &i in group {
                    let matcher = &self.routes[i].matcher;
                    if matcher.rest_matches(request) {
                        for method in &matcher.methods {
                            if !allowed.contains(method) {
                                allowed.push(method.clone());
                            }
                        }
                    }
                }
                false
            });
            false
        });
        allowed
    }
}

/// One indexed route.
#[derive(Debug)]
struct Entry {
    id: RouteId,
    matcher: CompiledMatch,
}

/// The routes of one host tier, by path pattern; vectors hold route indices in id order.
#[derive(Debug, Default)]
struct PathIndex {
    exact: HashMap<Box<str>, Vec<usize>, KeyHash>,
    prefix: HashMap<Box<str>, Vec<usize>, KeyHash>,
    /// Case-insensitive patterns, keyed in lower case.
    exact_caseless: HashMap<Box<str>, Vec<usize>, KeyHash>,
    prefix_caseless: HashMap<Box<str>, Vec<usize>, KeyHash>,
    has_caseless: bool,
    /// Length of the longest prefix key (shorter candidates are skipped
    /// cheaply; 0 when there is none).
    longest_prefix: usize,
    regex: Vec<usize>,
}

impl PathIndex {
    /// `map`'s group for `key`, looked up only when some pattern is
    /// case-insensitive (each lookup hashes the path again).
    fn caseless<'i>(
        &self,
        map: &'i HashMap<Box<str>, Vec<usize>, KeyHash>,
        key: &str,
    ) -> Option<&'i Vec<usize>> {
        if self.has_caseless {
            map.get(key)
        } else {
            None
        }
    }

    fn insert(&mut self, index: usize, path: &CompiledPath, case_sensitive: bool) {
        let key = |p: &str| -> Box<str> {
            if case_sensitive {
                p.into()
            } else {
                p.to_ascii_lowercase().into()
            }
        };
        self.has_caseless |= !case_sensitive;
        let group = match path {
            CompiledPath::Exact(p) if case_sensitive => self.exact.entry(key(p)).or_default(),
            CompiledPath::Exact(p) => self.exact_caseless.entry(key(p)).or_default(),
            CompiledPath::Prefix(p) => {
                self.longest_prefix = self.longest_prefix.max(p.len().max(1));
                let map = if case_sensitive {
                    &mut self.prefix
                } else {
                    &mut self.prefix_caseless
                };
                map.entry(key(p)).or_default()
            }
            CompiledPath::Regex(_) => &mut self.regex,
        };
        // A route listing the same host twice lands here twice; once is enough.
        if group.last() != Some(&index) {
            group.push(index);
        }
    }
}

/// The candidate prefixes a path can match, longest first: the whole path,
/// then the path cut before every boundary character (`/ ; . %`), and for a
/// `/` also cut after it. For `/a/b.c` these are `/a/b.c`, `/a/b`, `/a/`, `/a`,
/// `/`, and `` (the empty string).
struct PrefixCandidates<'p> {
    path: &'p str,
    /// Slashes at or after this position have been handled.
    end: usize,
    /// A candidate length queued after the one just returned.
    pending: Option<usize>,
    /// Length of the last candidate returned (candidates strictly shrink).
    last: Option<usize>,
}

impl<'p> PrefixCandidates<'p> {
    fn new(path: &'p str) -> Self {
        Self {
            path,
            end: path.len(),
            pending: Some(path.len()),
            last: None,
        }
    }
}

impl<'p> Iterator for PrefixCandidates<'p> {
    type Item = &'p str;

    fn next(&mut self) -> Option<&'p str> {
        loop {
            let len = match self.pending.take() {
                Some(len) => len,
                None => {
                    let cut = self.path.as_bytes()[..self.end]
                        .iter()
                        .rposition(|&b| is_prefix_boundary(b))?;
                    self.end = cut;
                    if self.path.as_bytes()[cut] == b'/' {
                        // `…/` (prefix ending in a slash), then `…` (next char is a slash).
                        self.pending = Some(cut);
                        cut + 1
                    } else {
                        cut
                    }
                }
            };
            if self.last.is_some_and(|last| len >= last) {
                continue;
            }
            self.last = Some(len);
            // `len` is at an ASCII boundary byte or the end, so it is a char boundary.
            return self.path.get(..len);
        }
    }
}

/// A route's conditions with regexes anchored for whole-string matching.
#[derive(Debug)]
struct CompiledMatch {
    hosts: Vec<HostMatch>,
    path: CompiledPath,
    case_sensitive: bool,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, CompiledValue)>,
    query: Vec<(String, CompiledValue)>,
}

#[derive(Debug)]
enum CompiledPath {
    Exact(String),
    Prefix(String),
    /// Anchored; `None` when the anchored form did not compile (never matches).
    Regex(Option<Regex>),
}

#[derive(Debug)]
enum CompiledValue {
    Exact(String),
    Prefix(String),
    /// Anchored; `None` when the anchored form did not compile (never matches).
    Regex(Option<Regex>),
    Present,
    Absent,
}

impl CompiledMatch {
    fn new(m: &RouteMatch) -> Self {
        let path = match &m.path {
            PathMatch::Exact(p) => CompiledPath::Exact(p.clone()),
            PathMatch::Prefix(p) => CompiledPath::Prefix(p.clone()),
            PathMatch::Regex(r) if m.path_case_sensitive => CompiledPath::Regex(anchored(r)),
            PathMatch::Regex(r) => CompiledPath::Regex(anchored_caseless(r)),
        };
        let headers = m
            .headers
            .iter()
            .map(|HeaderMatch { name, value }| (name.clone(), CompiledValue::new(value)))
            .collect();
        let query = m
            .query
            .iter()
            .map(|QueryMatch { name, value }| (name.clone(), CompiledValue::new(value)))
            .collect();
        Self {
            hosts: m.hosts.clone(),
            path,
            case_sensitive: m.path_case_sensitive,
            methods: m.methods.clone(),
            headers,
            query,
        }
    }

    /// The precedence rank of the best host pattern matching `host` (normalised),
    /// lower is better; `None` when the route does not match the host.
    fn host_rank(&self, host: Option<&str>) -> Option<(u8, usize)> {
        if self.hosts.is_empty() {
            return Some((2, 0));
        }
        let host = host?;
        self.hosts
            .iter()
            .filter_map(|pattern| match pattern {
                HostMatch::Exact(h) => (h == host).then_some((0, 0)),
                HostMatch::Suffix(s) => (host.len() > s.len() && host.ends_with(s.as_str()))
                    .then_some((1, usize::MAX - s.len())),
            })
            .min()
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            CompiledPath::Exact(p) if self.case_sensitive => path == p,
            CompiledPath::Exact(p) => path.eq_ignore_ascii_case(p),
            CompiledPath::Prefix(p) => prefix_matches(p, path, self.case_sensitive),
            CompiledPath::Regex(r) => r.as_ref().is_some_and(|r| r.is_match(path)),
        }
    }

    fn method_matches(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    /// Header and query conditions (everything but host, path and method).
    fn rest_matches(&self, req: &RequestView<'_>) -> bool {
        self.headers.iter().all(|(name, cond)| {
            let values = req.headers.get_all(name).iter();
            cond.holds(values.map(|v| std::str::from_utf8(v.as_bytes()).ok()))
        }) && self
            .query
            .iter()
            .all(|(name, cond)| cond.holds(query_values(req.query, name).map(Some)))
    }
}

impl CompiledValue {
    fn new(value: &ValueMatch) -> Self {
        match value {
            ValueMatch::Exact(s) => Self::Exact(s.clone()),
            ValueMatch::Prefix(s) => Self::Prefix(s.clone()),
            ValueMatch::Regex(r) => Self::Regex(anchored(r)),
            ValueMatch::Present => Self::Present,
            ValueMatch::Absent => Self::Absent,
        }
    }

    /// Whether the condition holds over all values of a header or parameter;
    /// `None` stands for a value that is not UTF-8.
    fn holds<S: AsRef<str>>(&self, mut values: impl Iterator<Item = Option<S>>) -> bool {
        let satisfies = |v: &str| match self {
            Self::Exact(s) => v == s,
            Self::Prefix(s) => v.starts_with(s.as_str()),
            Self::Regex(r) => r.as_ref().is_some_and(|r| r.is_match(v)),
            Self::Present | Self::Absent => true,
        };
        match self {
            Self::Present => values.next().is_some(),
            Self::Absent => values.next().is_none(),
            _ => values.any(|v| v.is_some_and(|v| satisfies(v.as_ref()))),
        }
    }
}

/// Compiles `r` so that it only matches whole strings.
///
/// Wrapping as `\A(?:…)\z` keeps the meaning of the pattern (inline flags set
/// inside the group end with it). Should the pattern end in a `(?x)` comment,
/// which would swallow the closing `)`, a newline ends the comment first.
/// `None` (the route never matches) only if neither form compiles, e.g. past
/// the size limit.
fn anchored(r: &Regex) -> Option<Regex> {
    anchored_with(r, "")
}

/// [`anchored`], matching ASCII and Unicode letters case-insensitively.
fn anchored_caseless(r: &Regex) -> Option<Regex> {
    anchored_with(r, "(?i)")
}

fn anchored_with(r: &Regex, flags: &str) -> Option<Regex> {
    let pattern = r.as_str();
    Regex::new(&format!(r"\A{flags}(?:{pattern})\z"))
        .or_else(|_| Regex::new(&format!("\\A{flags}(?:{pattern}\n)\\z")))
        .ok()
}

/// `Prefix(p)` semantics: equal, or `p` followed by a boundary character, or
/// `p` ending in `/` and starting the path.
fn prefix_matches(prefix: &str, path: &str, case_sensitive: bool) -> bool {
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let starts = if case_sensitive {
        head == prefix
    } else {
        head.eq_ignore_ascii_case(prefix)
    };
    starts
        && (path.len() == prefix.len()
            || prefix.ends_with('/')
            || path
                .as_bytes()
                .get(prefix.len())
                .is_some_and(|&b| is_prefix_boundary(b)))
}

/// Characters after which a prefix may end: `/`, `;` (path parameters), `.`
/// (an extension) and `%` (an escaped character).
fn is_prefix_boundary(b: u8) -> bool {
    matches!(b, b'/' | b';' | b'.' | b'%')
}

/// Lower-cases the host and removes a `:port` suffix; allocates only for upper case.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = if host.starts_with('[') {
        // IPv6 literal: `[::1]:8080` → `[::1]`.
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) if !port.contains(':') => name,
            _ => host,
        }
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The decoded values of every query parameter whose decoded name is `name`.
fn query_values<'q>(query: Option<&'q str>, name: &str) -> impl Iterator<Item = Cow<'q, str>> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(move |pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(n) == name).then(|| percent_decode(v))
        })
}

/// Percent-decodes a query component and turns `+` into a space. Invalid escapes
/// are kept literally; bytes that are not UTF-8 become U+FFFD. Borrows when there
/// is nothing to decode.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The index maps hash with FxHash: their keys come only from the configuration
/// and requests only look keys up, so a client cannot grow a collision chain,
/// and SipHash's DoS resistance would buy nothing while doubling lookup time.
type KeyHash = rustc_hash::FxBuildHasher;

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn host(pattern: &str) -> HostMatch {
        match pattern.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
            None => HostMatch::Exact(pattern.to_owned()),
        }
    }

    fn exact(p: &str) -> PathMatch {
        PathMatch::Exact(p.to_owned())
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.to_owned())
    }

    fn regex(r: &str) -> PathMatch {
        PathMatch::Regex(Regex::new(r).expect("test regex"))
    }

    fn route(hosts: &[&str], path: PathMatch) -> RouteMatch {
        RouteMatch {
            hosts: hosts.iter().map(|h| host(h)).collect(),
            path,
            ..RouteMatch::default()
        }
    }

    /// An owned request a [`RequestView`] borrows from.
    #[derive(Debug, Clone)]
    struct Req {
        host: Option<String>,
        path: String,
        query: Option<String>,
        method: Method,
        headers: HeaderMap,
    }

    impl Req {
        fn new(host: Option<&str>, path: &str) -> Self {
            Self {
                host: host.map(str::to_owned),
                path: path.to_owned(),
                query: None,
                method: Method::GET,
                headers: HeaderMap::new(),
            }
        }

        fn query(mut self, q: &str) -> Self {
            self.query = Some(q.to_owned());
            self
        }

        fn method(mut self, m: Method) -> Self {
            self.method = m;
            self
        }

        fn header(mut self, name: &'static str, value: &[u8]) -> Self {
            let value = HeaderValue::from_bytes(value).expect("test header value");
            self.headers.append(HeaderName::from_static(name), value);
            self
        }

        fn view(&self) -> RequestView<'_> {
            RequestView {
                host: self.host.as_deref(),
                path: &self.path,
                query: self.query.as_deref(),
                method: &self.method,
                headers: &self.headers,
            }
        }
    }

    fn router(routes: &[RouteMatch]) -> Router {
        Router::new(routes.iter().enumerate().map(|(i, m)| (RouteId(i), m)))
    }

    /// Test-local host normalisation (independent of the module's).
    fn naive_host(host: &str) -> String {
        let host = host.to_lowercase();
        if host.starts_with('[') {
            return host
                .split_inclusive(']')
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        match host.matches(':').count() {
            1 => host.split(':').next().unwrap_or_default().to_owned(),
            _ => host,
        }
    }

    /// The precedence key, computed without the index.
    fn naive_key(m: &RouteMatch, req: &RequestView<'_>) -> (u8, usize, u8, usize) {
        let (h0, h1) = if m.hosts.is_empty() {
            (2, 0)
        } else {
            let h = naive_host(req.host.unwrap_or_default());
            m.hosts
                .iter()
                .filter_map(|p| match p {
                    HostMatch::Exact(e) if *e == h => Some((0, 0)),
                    HostMatch::Suffix(s) if h.ends_with(s.as_str()) && h.len() > s.len() => {
                        Some((1, usize::MAX - s.len()))
                    }
                    _ => None,
                })
                .min()
                .unwrap_or((3, 0))
        };
        let (p0, p1) = match &m.path {
            PathMatch::Exact(_) => (0, 0),
            PathMatch::Prefix(p) => (1, usize::MAX - p.len()),
            PathMatch::Regex(_) => (2, 0),
        };
        (h0, h1, p0, p1)
    }

    /// Whether `pattern` matches the whole of `text`, anchored here with `^…$`
    /// (the module anchors with `\A…\z` in `anchored`). A pattern ending in a
    /// verbose-mode comment would swallow `)$`; a newline ends the comment.
    fn naive_whole_match(pattern: &Regex, text: &str) -> bool {
        let p = pattern.as_str();
        Regex::new(&format!("^(?:{p})$"))
            .or_else(|_| Regex::new(&format!("^(?:{p}\n)$")))
            .is_ok_and(|r| r.is_match(text))
    }

    /// `+` → space, `%XY` → that byte, anything else literal; then lossy UTF-8.
    fn naive_decode(component: &str) -> String {
        let bytes = component.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (b'+', _) => {
                    out.push(b' ');
                    i += 1;
                }
                (other, _) => {
                    out.push(other);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Whether a header or query condition holds over `values` (`None`: not UTF-8).
    fn naive_holds(condition: &ValueMatch, values: &[Option<String>]) -> bool {
        let some = |f: &dyn Fn(&str) -> bool| values.iter().flatten().any(|v| f(v));
        match condition {
            ValueMatch::Present => !values.is_empty(),
            ValueMatch::Absent => values.is_empty(),
            ValueMatch::Exact(e) => some(&|v| v == e),
            ValueMatch::Prefix(p) => some(&|v| v.starts_with(p.as_str())),
            ValueMatch::Regex(r) => some(&|v| naive_whole_match(r, v)),
        }
    }

    /// The conditions of `m`, checked from the raw route spec as the module
    /// documentation states them, sharing no code with `CompiledMatch`.
    fn naive_matches(m: &RouteMatch, req: &RequestView<'_>) -> bool {
        let host_ok = m.hosts.is_empty()
            || req.host.is_some_and(|h| {
                let h = naive_host(h);
                m.hosts.iter().any(|p| match p {
                    HostMatch::Exact(e) => *e == h,
                    HostMatch::Suffix(s) => h.len() > s.len() && h.ends_with(s.as_str()),
                })
            });
        let path = req.path;
        let path_ok = match &m.path {
            PathMatch::Exact(e) if !m.path_case_sensitive => {
                e.to_lowercase() == path.to_lowercase()
            }
            PathMatch::Exact(e) => path == e,
            PathMatch::Prefix(p) => {
                let (p, path) = if m.path_case_sensitive {
                    (p.clone(), path.to_owned())
                } else {
                    (p.to_lowercase(), path.to_lowercase())
                };
                let dir = format!("{}/", p.strip_suffix('/').unwrap_or(&p));
                path == p
                    || path.starts_with(&dir)
                    || [";", ".", "%"]
                        .iter()
                        .any(|b| path.starts_with(&format!("{p}{b}")))
            }
            PathMatch::Regex(r) if !m.path_case_sensitive => naive_whole_match(
                &Regex::new(&format!("(?i){}", r.as_str())).expect("regex"),
                path,
            ),
            PathMatch::Regex(r) => naive_whole_match(r, path),
        };
        let method_ok = m.methods.is_empty() || m.methods.iter().any(|x| x == req.method);
        let headers_ok = m.headers.iter().all(|HeaderMatch { name, value }| {
            let values: Vec<Option<String>> = req
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8(v.as_bytes().to_vec()).ok())
                .collect();
            naive_holds(value, &values)
        });
        let params: Vec<(String, String)> = req
            .query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.find('=') {
                Some(at) => (naive_decode(&p[..at]), naive_decode(&p[at + 1..])),
                None => (naive_decode(p), String::new()),
            })
            .collect();
        let query_ok = m.query.iter().all(|QueryMatch { name, value }| {
            let values: Vec<Option<String>> = params
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| Some(v.clone()))
                .collect();
            naive_holds(value, &values)
        });
        host_ok && path_ok && method_ok && headers_ok && query_ok
    }

    /// The route the documented rules pick, by filtering every route with
    /// [`naive_matches`] and ranking by [`naive_key`]: the oracle for the index.
    fn naive(routes: &[RouteMatch], req: &RequestView<'_>) -> Option<usize> {
        routes
            .iter()
            .enumerate()
            .filter(|(_, m)| naive_matches(m, req))
            .min_by_key(|(i, m)| (naive_key(m, req), *i))
            .map(|(i, _)| i)
    }

    /// The router's choice, checked against the naive matcher.
    fn find(routes: &[RouteMatch], req: &Req) -> Option<usize> {
        let found = router(routes).find(&req.view()).map(|id| id.0);
        assert_eq!(
            found,
            naive(routes, &req.view()),
            "router and naive matcher disagree for {req:?}"
        );
        found
    }

    #[test]
    fn prefix_matches_at_segment_boundary_only() {
        let routes = [route(&[], prefix("/v1"))];
        for path in ["/v1", "/v1/", "/v1/x", "/v1/x/y"] {
            assert_eq!(find(&routes, &Req::new(None, path)), Some(0), "{path}");
        }
        for path in ["/v1x", "/v", "/", "/v2/v1", "v1"] {
            assert_eq!(find(&routes, &Req::new(None, path)), None, "{path}");
        }
        let slash = [route(&[], prefix("/v1/"))];
        assert_eq!(find(&slash, &Req::new(None, "/v1/x")), Some(0));
        assert_eq!(find(&slash, &Req::new(None, "/v1")), None);
        let root = [route(&[], prefix("/"))];
        assert_eq!(find(&root, &Req::new(None, "/anything/at/all")), Some(0));
    }

    #[test]
    fn exact_host_beats_wildcard() {
        let routes = [
            route(&["*.example.com"], exact("/users")),
            route(&["api.example.com"], prefix("/")),
        ];
        // A more specific host beats a more specific path.
        assert_eq!(
            find(&routes, &Req::new(Some("api.example.com"), "/users")),
            Some(1)
        );
        assert_eq!(
            find(&routes, &Req::new(Some("web.example.com"), "/users")),
            Some(0)
        );
        assert_eq!(
            find(&routes, &Req::new(Some("example.com"), "/users")),
            None
        );
    }

    #[test]
    fn longer_wildcard_beats_shorter() {
        let routes = [
            route(&["*.example.com"], prefix("/")),
            route(&["*.b.example.com"], prefix("/")),
        ];
        assert_eq!(
            find(&routes, &Req::new(Some("x.b.example.com"), "/")),
            Some(1)
        );
        assert_eq!(
            find(&routes, &Req::new(Some("y.x.b.example.com"), "/")),
            Some(1)
        );
        assert_eq!(
            find(&routes, &Req::new(Some("b.example.com"), "/")),
            Some(0)
        );
        assert_eq!(
            find(&routes, &Req::new(Some("a.example.com"), "/")),
            Some(0)
        );
        assert_eq!(find(&routes, &Req::new(Some("example.com"), "/")), None);
        assert_eq!(find(&routes, &Req::new(None, "/")), None);
    }

    #[test]
    fn exact_path_beats_prefix_beats_regex() {
        let routes = [
            route(&[], regex("/v[0-9]+/.*")),
            route(&[], prefix("/v1")),
            route(&[], prefix("/v1/users")),
            route(&[], exact("/v1/users/me")),
        ];
        assert_eq!(find(&routes, &Req::new(None, "/v1/users/me")), Some(3));
        assert_eq!(find(&routes, &Req::new(None, "/v1/users/you")), Some(2));
        assert_eq!(find(&routes, &Req::new(None, "/v1/orders")), Some(1));
        assert_eq!(find(&routes, &Req::new(None, "/v2/orders")), Some(0));
        assert_eq!(find(&routes, &Req::new(None, "/v2")), None);
    }

    #[test]
    fn header_route_listed_first_wins_for_versioning() {
        let mut v2 = route(&[], prefix("/api"));
        v2.headers.push(HeaderMatch {
            name: HeaderName::from_static("accept-version"),
            value: ValueMatch::Exact("2".to_owned()),
        });
        let default = route(&[], prefix("/api"));
        let routes = [v2.clone(), default.clone()];
        let req = Req::new(None, "/api/items");
        assert_eq!(
            find(&routes, &req.clone().header("accept-version", b"2")),
            Some(0)
        );
        assert_eq!(
            find(&routes, &req.clone().header("accept-version", b"1")),
            Some(1)
        );
        // Any of several values may satisfy the condition.
        let both = req
            .clone()
            .header("accept-version", b"1")
            .header("accept-version", b"2");
        assert_eq!(find(&routes, &both), Some(0));
        assert_eq!(find(&routes, &req), Some(1));
        // Listed after the default route, the versioned route is never chosen.
        let reversed = [default, v2];
        assert_eq!(
            find(&reversed, &req.header("accept-version", b"2")),
            Some(0)
        );
    }

    #[test]
    fn query_match_decodes_percent_escapes() {
        let mut m = route(&[], prefix("/"));
        m.query.push(QueryMatch {
            name: "a b".to_owned(),
            value: ValueMatch::Exact("x/y".to_owned()),
        });
        let routes = [m];
        let req = Req::new(None, "/");
        for q in [
            "a+b=x%2Fy",
            "a%20b=x%2fy",
            "z=1&a%20b=nope&a+b=x/y",
            "&&a+b=x%2Fy&",
        ] {
            assert_eq!(find(&routes, &req.clone().query(q)), Some(0), "{q}");
        }
        for q in ["a+b=x%252Fy", "ab=x/y", "a+b", ""] {
            assert_eq!(find(&routes, &req.clone().query(q)), None, "{q}");
        }
        assert_eq!(find(&routes, &req), None);

        // Invalid escapes stay literal; a name without '=' has the value "".
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
        let values: Vec<_> = query_values(Some("flag&v=1"), "flag").collect();
        assert_eq!(values, [""]);
    }

    #[test]
    fn absent_header_condition() {
        let mut m = route(&[], prefix("/"));
        m.headers.push(HeaderMatch {
            name: HeaderName::from_static("x-debug"),
            value: ValueMatch::Absent,
        });
        let routes = [m];
        let req = Req::new(None, "/");
        assert_eq!(find(&routes, &req), Some(0));
        assert_eq!(find(&routes, &req.clone().header("x-debug", b"")), None);
        assert_eq!(find(&routes, &req.clone().header("x-debug", b"\xff")), None);
        assert_eq!(find(&routes, &req.header("x-other", b"1")), Some(0));
    }

    #[test]
    fn non_utf8_header_values_never_satisfy_value_conditions() {
        let mut m = route(&[], prefix("/"));
        m.headers.push(HeaderMatch {
            name: HeaderName::from_static("x-tag"),
            value: ValueMatch::Prefix("caf".to_owned()),
        });
        let routes = [m];
        let req = Req::new(None, "/");
        assert_eq!(
            find(&routes, &req.clone().header("x-tag", b"caf\xff")),
            None
        );
        // Valid UTF-8 outside visible ASCII is still compared.
        assert_eq!(
            find(&routes, &req.clone().header("x-tag", "café".as_bytes())),
            Some(0)
        );
        assert_eq!(
            find(
                &routes,
                &req.header("x-tag", b"caf\xff").header("x-tag", b"cafe")
            ),
            Some(0)
        );
    }

    #[test]
    fn host_port_is_ignored() {
        let routes = [
            route(&["api.example.com", "[::1]"], prefix("/")),
            route(&[], exact("/open")),
        ];
        for host in [
            "api.example.com",
            "api.example.com:8443",
            "API.Example.COM:80",
            "[::1]:8080",
            "[::1]",
        ] {
            assert_eq!(find(&routes, &Req::new(Some(host), "/")), Some(0), "{host}");
        }
        assert_eq!(
            find(&routes, &Req::new(Some("other.example.com:8443"), "/")),
            None
        );
        // Routes without hosts match requests without a host; others do not.
        assert_eq!(find(&routes, &Req::new(None, "/")), None);
        assert_eq!(find(&routes, &Req::new(None, "/open")), Some(1));
        assert_eq!(normalize_host("Api.Example.com:1"), "api.example.com");
        assert!(matches!(
            normalize_host("api.example.com:1"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn regex_must_match_whole_path() {
        // Leftmost-first search finds "/a" in "/ab"; the anchored regex must still match.
        let alternation = [route(&[], regex("/a|/ab"))];
        assert_eq!(find(&alternation, &Req::new(None, "/ab")), Some(0));
        assert_eq!(find(&alternation, &Req::new(None, "/abc")), None);
        let versioned = [route(&[], regex("/v[0-9]+"))];
        assert_eq!(find(&versioned, &Req::new(None, "/v12")), Some(0));
        assert_eq!(find(&versioned, &Req::new(None, "/v1/x")), None);
        assert_eq!(find(&versioned, &Req::new(None, "/x/v1")), None);
        // Inline flags and trailing verbose-mode comments stay inside the group.
        let verbose = [route(&[], regex("(?x) /v [0-9]+ # version"))];
        assert_eq!(find(&verbose, &Req::new(None, "/v2")), Some(0));
        assert_eq!(find(&verbose, &Req::new(None, "/v2/x")), None);
    }

    #[test]
    fn method_filters() {
        let mut get = route(&[], exact("/x"));
        get.methods = vec![Method::GET];
        let mut post_put = route(&[], exact("/x"));
        post_put.methods = vec![Method::POST, Method::PUT];
        let any = route(&[], prefix("/"));
        let routes = [get, post_put, any];
        let req = Req::new(None, "/x");
        assert_eq!(find(&routes, &req.clone().method(Method::GET)), Some(0));
        assert_eq!(find(&routes, &req.clone().method(Method::PUT)), Some(1));
        // HEAD is not implied by GET.
        assert_eq!(find(&routes, &req.clone().method(Method::HEAD)), Some(2));
        assert_eq!(find(&routes, &req.method(Method::DELETE)), Some(2));
    }

    #[test]
    fn prefix_candidates_longest_first() {
        let all: Vec<_> = PrefixCandidates::new("/a/b/c").collect();
        assert_eq!(all, ["/a/b/c", "/a/b/", "/a/b", "/a/", "/a", "/", ""]);
        let all: Vec<_> = PrefixCandidates::new("/a//b/").collect();
        assert_eq!(all, ["/a//b/", "/a//b", "/a//", "/a/", "/a", "/", ""]);
        let all: Vec<_> = PrefixCandidates::new("/a;x/b.c%20").collect();
        assert_eq!(
            all,
            [
                "/a;x/b.c%20",
                "/a;x/b.c",
                "/a;x/b",
                "/a;x/",
                "/a;x",
                "/a",
                "/",
                ""
            ]
        );
        assert_eq!(PrefixCandidates::new("").collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn a_prefix_covers_parameters_extensions_and_escapes() {
        let routes = [route(&[], prefix("/admin")), route(&[], prefix("/"))];
        for path in [
            "/admin",
            "/admin/x",
            "/admin;x",
            "/admin.",
            "/admin.json",
            "/admin%20",
        ] {
            assert_eq!(find(&routes, &Req::new(None, path)), Some(0), "{path}");
        }
        for path in ["/adminx", "/admin-panel", "/admin_", "/admin~"] {
            assert_eq!(find(&routes, &Req::new(None, path)), Some(1), "{path}");
        }
    }

    #[test]
    fn caseless_routes_match_any_case_in_file_order() {
        let caseless = |path: PathMatch| RouteMatch {
            path_case_sensitive: false,
            ..route(&[], path)
        };
        let routes = [
            caseless(prefix("/Admin")),
            route(&[], exact("/ADMIN/x")),
            caseless(exact("/admin/X")),
            caseless(regex("/reg[a-z]+")),
            route(&[], prefix("/other")),
        ];
        assert_eq!(find(&routes, &Req::new(None, "/ADMIN")), Some(0));
        assert_eq!(find(&routes, &Req::new(None, "/aDmIn/y")), Some(0));
        assert_eq!(find(&routes, &Req::new(None, "/ADMIN/x")), Some(1));
        assert_eq!(find(&routes, &Req::new(None, "/admin/x")), Some(2));
        assert_eq!(find(&routes, &Req::new(None, "/REGEX")), Some(3));
        assert_eq!(find(&routes, &Req::new(None, "/other")), Some(4));
    }

    #[test]
    fn allowed_methods_come_from_routes_matching_all_but_the_method() {
        let with_methods = |path: PathMatch, methods: &[Method]| RouteMatch {
            methods: methods.to_vec(),
            ..route(&[], path)
        };
        let routes = [
            with_methods(prefix("/users"), &[Method::GET, Method::HEAD]),
            with_methods(exact("/users/new"), &[Method::POST, Method::GET]),
            with_methods(prefix("/other"), &[Method::DELETE]),
        ];
        let router = router(&routes);
        let req = Req::new(None, "/users/new").method(Method::PUT);
        assert_eq!(router.find(&req.view()), None);
        assert_eq!(
            router.allowed_methods(&req.view()),
            [Method::POST, Method::GET, Method::HEAD]
        );
        let req = Req::new(None, "/nowhere").method(Method::PUT);
        assert!(router.allowed_methods(&req.view()).is_empty());

        let wildcard = RouteMatch {
            methods: vec![Method::GET],
            ..route(&["*.example.com"], prefix("/w"))
        };
        let router = super::tests::router(&[wildcard]);
        let req = Req::new(Some("a.b.example.com"), "/w").method(Method::PUT);
        assert_eq!(router.allowed_methods(&req.view()), [Method::GET]);
        let req = Req::new(Some("example.com"), "/w").method(Method::PUT);
        assert!(router.allowed_methods(&req.view()).is_empty());
    }

    #[test]
    fn len_counts_routes() {
        assert!(router(&[]).is_empty());
        let routes = [
            route(&["a.example.com", "*.example.com"], prefix("/")),
            route(&[], prefix("/")),
        ];
        assert_eq!(router(&routes).len(), 2);
    }

    // ----- property: the index agrees with the naive matcher -----

    const SEGMENTS: &[&str] = &[
        "", "v1", "v2", "users", "x", "a", "ab", "A", "Users", "a.b", "x;y", "a%20",
    ];

    fn path_strategy(max_segments: usize) -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop::sample::select(SEGMENTS), 0..=max_segments),
            any::<bool>(),
        )
            .prop_map(|(segments, trailing)| {
                let mut path = format!("/{}", segments.join("/"));
                if trailing && !path.ends_with('/') {
                    path.push('/');
                }
                path
            })
    }

    fn value_strategy() -> impl Strategy<Value = ValueMatch> {
        prop_oneof![
            prop::sample::select(&["1", "2"][..]).prop_map(|v| ValueMatch::Exact(v.to_owned())),
            Just(ValueMatch::Prefix("1".to_owned())),
            Just(ValueMatch::Regex(Regex::new("[12]").expect("test regex"))),
            Just(ValueMatch::Present),
            Just(ValueMatch::Absent),
        ]
    }

    fn route_strategy() -> impl Strategy<Value = RouteMatch> {
        let hosts = prop::collection::vec(
            prop::sample::select(
                &[
                    "a.example.com",
                    "b.example.com",
                    "*.example.com",
                    "*.b.example.com",
                ][..],
            ),
            0..3,
        );
        let regexes = &[
            "/v[0-9]+/.*",
            "/a|/ab",
            "/users(/.*)?",
            "/v1|/v1/users",
            ".*",
            "/x",
            "/(v1|v2)/?",
        ][..];
        let path = prop_oneof![
            path_strategy(3).prop_map(PathMatch::Exact),
            path_strategy(3).prop_map(PathMatch::Prefix),
            prop::sample::select(regexes)
                .prop_map(|r| PathMatch::Regex(Regex::new(r).expect("test regex"))),
        ];
        let methods = prop::collection::vec(
            prop::sample::select(&[Method::GET, Method::HEAD, Method::POST][..]),
            0..3,
        );
        let header = prop::option::weighted(0.3, value_strategy());
        let query = prop::option::weighted(
            0.3,
            (prop::sample::select(&["v", "a b"][..]), value_strategy()),
        );
        let case_sensitive = prop::bool::weighted(0.7);
        (hosts, (path, case_sensitive), methods, header, query).prop_map(
            |(hosts, (path, path_case_sensitive), methods, header, query)| RouteMatch {
                hosts: hosts.iter().map(|h| host(h)).collect(),
                path,
                path_case_sensitive,
                methods,
                headers: header
                    .map(|value| HeaderMatch {
                        name: HeaderName::from_static("accept-version"),
                        value,
                    })
                    .into_iter()
                    .collect(),
                query: query
                    .map(|(name, value)| QueryMatch {
                        name: name.to_owned(),
                        value,
                    })
                    .into_iter()
                    .collect(),
            },
        )
    }

    fn request_strategy() -> impl Strategy<Value = Req> {
        let hosts = &[
            None,
            Some("a.example.com"),
            Some("A.EXAMPLE.COM:8080"),
            Some("b.example.com"),
            Some("b.example.com:"),
            Some("x.b.example.com"),
            Some("X.B.Example.Com:1"),
            Some("c.a.b.example.com"),
            Some("example.com"),
            Some("other.org"),
            Some("[::1]:80"),
        ][..];
        let queries = &[
            None,
            Some("v=2"),
            Some("v=1&v=2"),
            Some("v=%32"),
            Some("v=21"),
            Some("v"),
            Some("a+b=1"),
            Some("a%20b=2&v=1"),
        ][..];
        let values = prop::collection::vec(
            prop::sample::select(vec![&b"1"[..], b"2", b"1.5", b"21", b"\xff2"]),
            0..3,
        );
        (
            prop::sample::select(hosts),
            path_strategy(4),
            prop::sample::select(queries),
            prop::sample::select(&[Method::GET, Method::HEAD, Method::POST][..]),
            values,
        )
            .prop_map(|(host, path, query, method, values)| {
                let mut req = Req::new(host, &path).method(method);
                req.query = query.map(str::to_owned);
                values
                    .into_iter()
                    .fold(req, |req, v| req.header("accept-version", v))
            })
    }

    /// How a client may spell `path` differently without changing what it
    /// names: unreserved characters escaped (either hex case), `./` and
    /// `x/../` inserted, slashes doubled.
    fn spelling_strategy(path: String) -> impl Strategy<Value = (String, String)> {
        let n = path.len();
        prop::collection::vec((0..4u8, any::<bool>()), n).prop_map(move |choices| {
            let mut out = String::new();
            // Characters of an escape already in the path stay as they are.
            let mut escape_left = 0;
            for (c, (choice, upper)) in path.chars().zip(choices) {
                if c == '%' || escape_left > 0 {
                    escape_left = if c == '%' { 2 } else { escape_left - 1 };
                    out.push(c);
                    continue;
                }
                match (c, choice) {
                    ('/', 1) => out.push_str("/./"),
                    ('/', 2) => out.push_str("/zz/../"),
                    ('/', 3) => out.push_str("//"),
                    (c, 1 | 2) if c.is_ascii_alphanumeric() => {
                        let escaped = format!("%{:02x}", c as u32);
                        out.push_str(&if upper {
                            escaped.to_uppercase()
                        } else {
                            escaped
                        });
                    }
                    (c, _) => out.push(c),
                }
            }
            (path.clone(), out)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn spellings_of_one_path_normalize_alike_and_pick_the_same_route(
            routes in prop::collection::vec(route_strategy(), 1..30),
            (canonical, spelled) in path_strategy(4).prop_flat_map(spelling_strategy),
        ) {
            let options = crate::normalize::PathOptions::default();
            let normal = crate::normalize::normalize_path(&canonical, &options)
                .expect("generated paths are valid");
            let respelled = crate::normalize::normalize_path(&spelled, &options)
                .expect("a respelling is valid");
            prop_assert_eq!(&normal, &respelled, "{} and {}", canonical, spelled);
            let again = crate::normalize::normalize_path(&normal, &options).expect("valid");
            prop_assert_eq!(&again, &normal, "normalizing is idempotent");
            let router = router(&routes);
            let find = |path: &str| router.find(&Req::new(None, path).view());
            prop_assert_eq!(find(&normal), find(&respelled));
        }

        #[test]
        fn router_agrees_with_naive_matcher(
            routes in prop::collection::vec(route_strategy(), 1..40),
            requests in prop::collection::vec(request_strategy(), 1..6),
        ) {
            let router = router(&routes);
            prop_assert_eq!(router.len(), routes.len());
            for req in &requests {
                let found = router.find(&req.view()).map(|id| id.0);
                prop_assert_eq!(found, naive(&routes, &req.view()), "request {:?}", req);
                for (i, m) in routes.iter().enumerate() {
                    prop_assert_eq!(
                        matches(m, &req.view()),
                        naive_matches(m, &req.view()),
                        "route {} {:?}, request {:?}", i, m, req
                    );
                }
            }
        }
    }
}
