//! The manifest as written: decoded field by field, references still by name.
//!
//! Leaf values (durations, sizes, regexes, matches) are checked here; anything
//! that needs the whole manifest (references, duplicate names) is left to
//! `validate`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use super::decode::{ByteSize, Decode, Diagnostics, Fields, HumanDuration, Located, mismatch};
use super::model::{
    FixedResponse, HeaderMatch, HostMatch, LbPolicy, ListenerLimits, PathMatch, PathRewrite,
    QueryMatch, RouteMatch, UpstreamTimeouts, ValueMatch,
};
use super::node::{Location, Node, Value};

/// The smallest header limit hyper's HTTP/1 parser accepts.
pub const MIN_HEADER_BYTES: u64 = 8 * 1024;

/// The top level of a manifest.
#[derive(Debug)]
pub struct RawManifest {
    pub api_version: Located<String>,
    pub listeners: Located<Vec<RawListener>>,
    pub upstreams: Vec<RawUpstream>,
    pub routes: Vec<RawRoute>,
    pub shutdown_timeout: Option<HumanDuration>,
}

impl Decode for RawManifest {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "manifest", diags)?;
        let api_version = f.required("apiVersion", diags);
        let listeners = f.required("listeners", diags);
        let upstreams = f.optional("upstreams", diags);
        let routes = f.optional("routes", diags);
        let shutdown_timeout = f.optional("shutdown_timeout", diags);
        f.finish(diags);
        Some(Self {
            api_version: api_version?,
            listeners: listeners?,
            upstreams: upstreams?.unwrap_or_default(),
            routes: routes?.unwrap_or_default(),
            shutdown_timeout: shutdown_timeout?,
        })
    }
}

/// A listener as written.
#[derive(Debug)]
pub struct RawListener {
    pub name: Located<String>,
    pub address: SocketAddr,
    pub tls: Option<RawTls>,
    pub limits: ListenerLimits,
}

impl Decode for RawListener {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "listener", diags)?;
        let name = f.required("name", diags);
        let address = f.required("address", diags);
        let tls = f.optional("tls", diags);
        let limits = f.optional("limits", diags);
        f.finish(diags);
        Some(Self {
            name: name?,
            address: address?,
            tls: tls?,
            limits: limits?.unwrap_or_default(),
        })
    }
}

/// TLS settings of a listener as written.
#[derive(Debug)]
pub struct RawTls {
    pub certificates: Located<Vec<RawCertificate>>,
}

impl Decode for RawTls {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "tls settings", diags)?;
        let certificates = f.required("certificates", diags);
        f.finish(diags);
        Some(Self {
            certificates: certificates?,
        })
    }
}

/// One certificate entry as written.
#[derive(Debug)]
pub struct RawCertificate {
    pub cert: Located<String>,
    pub key: Located<String>,
    pub server_names: Vec<Located<String>>,
}

impl Decode for RawCertificate {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "certificate", diags)?;
        let cert = f.required("cert", diags);
        let key = f.required("key", diags);
        let server_names = f.optional("server_names", diags);
        f.finish(diags);
        Some(Self {
            cert: cert?,
            key: key?,
            server_names: server_names?.unwrap_or_default(),
        })
    }
}

impl Decode for ListenerLimits {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "listener limits", diags)?;
        let defaults = ListenerLimits::default();
        let header_node = f.node("max_header_bytes");
        let max_header = f.optional::<ByteSize>("max_header_bytes", diags);
        let max_body = f.optional::<ByteSize>("max_body_bytes", diags);
        let header_read = f.optional::<HumanDuration>("header_read_timeout", diags);
        let idle = f.optional::<HumanDuration>("idle_timeout", diags);
        let max_connections = f.optional::<usize>("max_connections", diags);
        f.finish(diags);
        let max_header_bytes = match (max_header?, header_node) {
            (Some(ByteSize(n)), Some(node)) if n < MIN_HEADER_BYTES => {
                diags.error(
                    node.location,
                    format!("max_header_bytes must be at least 8KiB, found {n} bytes"),
                );
                return None;
            }
            (Some(ByteSize(n)), _) => usize::try_from(n).ok()?,
            (None, _) => defaults.max_header_bytes,
        };
        Some(Self {
            max_header_bytes,
            max_body_bytes: max_body?.map_or(defaults.max_body_bytes, |b| b.0),
            header_read_timeout: header_read?.map_or(defaults.header_read_timeout, |d| d.0),
            idle_timeout: idle?.map_or(defaults.idle_timeout, |d| d.0),
            max_connections: max_connections?.unwrap_or(defaults.max_connections),
        })
    }
}

/// An upstream group as written.
#[derive(Debug)]
pub struct RawUpstream {
    pub name: Located<String>,
    pub targets: Located<Vec<RawTarget>>,
    pub lb: LbPolicy,
    pub timeouts: UpstreamTimeouts,
    pub retries: u32,
}

impl Decode for RawUpstream {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "upstream", diags)?;
        let name = f.required("name", diags);
        let targets = f.required("targets", diags);
        let lb = f.optional("lb", diags);
        let timeouts = f.optional("timeouts", diags);
        let retries = f.optional("retries", diags);
        f.finish(diags);
        Some(Self {
            name: name?,
            targets: targets?,
            lb: lb?.unwrap_or(LbPolicy::RoundRobin),
            timeouts: timeouts?.unwrap_or_default(),
            retries: retries?.unwrap_or(0),
        })
    }
}

/// One upstream target: `host:port` or `{ address, weight }`.
#[derive(Debug)]
pub struct RawTarget {
    pub address: Located<String>,
    pub weight: u32,
}

impl Decode for RawTarget {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        if let Value::Str(_) = node.value {
            let address = Located::<String>::decode(node, diags)?;
            return check_target_address(address, diags).map(|address| Self { address, weight: 1 });
        }
        let mut f = Fields::of(node, "target", diags)?;
        let address = f.required::<Located<String>>("address", diags);
        let weight_node = f.node("weight");
        let weight = f.optional::<u32>("weight", diags);
        f.finish(diags);
        let weight = weight?.unwrap_or(1);
        if let (0, Some(n)) = (weight, weight_node) {
            diags.error(n.location, "a target's weight must be at least 1");
            return None;
        }
        Some(Self {
            address: check_target_address(address?, diags)?,
            weight,
        })
    }
}

/// Checks that a target is `host:port` with a valid port.
fn check_target_address(
    address: Located<String>,
    diags: &mut Diagnostics,
) -> Option<Located<String>> {
    let valid = address
        .value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        Some(address)
    } else {
        diags.error(
            address.location,
            format!(
                "target `{}` must be `host:port`, like `127.0.0.1:3001`",
                address.value
            ),
        );
        None
    }
}

impl Decode for LbPolicy {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        match &node.value {
            Value::Str(s) if s == "round_robin" => Some(LbPolicy::RoundRobin),
            Value::Str(s) if s == "least_request" => Some(LbPolicy::LeastRequest),
            _ => mismatch(node, "`round_robin` or `least_request`", diags),
        }
    }
}

impl Decode for UpstreamTimeouts {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "upstream timeouts", diags)?;
        let defaults = UpstreamTimeouts::default();
        let connect = f.optional::<HumanDuration>("connect", diags);
        let request = f.optional::<HumanDuration>("request", diags);
        let idle = f.optional::<HumanDuration>("idle", diags);
        f.finish(diags);
        Some(Self {
            connect: connect?.map_or(defaults.connect, |d| d.0),
            request: request?.map_or(defaults.request, |d| d.0),
            idle: idle?.map_or(defaults.idle, |d| d.0),
        })
    }
}

/// A route as written.
#[derive(Debug)]
pub struct RawRoute {
    pub location: Location,
    pub name: Located<String>,
    pub listeners: Vec<Located<String>>,
    pub matcher: RouteMatch,
    pub upstream: Option<Located<String>>,
    pub respond: Option<FixedResponse>,
    pub rewrite: RawRewrite,
    pub timeout: Option<HumanDuration>,
}

impl Decode for RawRoute {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "route", diags)?;
        let name = f.required("name", diags);
        let listeners = f.optional("listeners", diags);
        let matcher = f.optional("match", diags);
        let upstream = f.optional("upstream", diags);
        let respond = f.optional("respond", diags);
        let rewrite = f.optional("rewrite", diags);
        let timeout = f.optional("timeout", diags);
        f.finish(diags);
        Some(Self {
            location: node.location,
            name: name?,
            listeners: listeners?.unwrap_or_default(),
            matcher: matcher?.unwrap_or_default(),
            upstream: upstream?,
            respond: respond?,
            rewrite: rewrite?.unwrap_or_default(),
            timeout: timeout?,
        })
    }
}

impl Decode for RouteMatch {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "route match", diags)?;
        let hosts = f.optional("hosts", diags);
        let path = f.optional("path", diags);
        let methods = f.optional::<Vec<MethodName>>("methods", diags);
        let headers = f.optional("headers", diags);
        let query = f.optional("query", diags);
        f.finish(diags);
        Some(Self {
            hosts: hosts?.unwrap_or_default(),
            path: path?.unwrap_or_default(),
            methods: methods?
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.0)
                .collect(),
            headers: headers?.unwrap_or_default(),
            query: query?.unwrap_or_default(),
        })
    }
}

impl Decode for HostMatch {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let host = String::decode(node, diags)?.to_ascii_lowercase();
        let (suffix, name) = match host.strip_prefix('*') {
            Some(rest) => (true, rest.strip_prefix('.').unwrap_or("")),
            None => (false, host.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if name.is_empty() || !name.split('.').all(valid_label) {
            diags.error(
                node.location,
                format!("`{host}` is not a host name or a wildcard like `*.example.com`"),
            );
            return None;
        }
        Some(if suffix {
            HostMatch::Suffix(format!(".{name}"))
        } else {
            HostMatch::Exact(host)
        })
    }
}

impl Decode for PathMatch {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "path match", diags)?;
        let exact = f.optional::<Located<String>>("exact", diags);
        let prefix = f.optional::<Located<String>>("prefix", diags);
        let regex = f.optional::<Located<String>>("regex", diags);
        f.finish(diags);
        let kinds = [("exact", exact?), ("prefix", prefix?), ("regex", regex?)];
        let mut given = kinds.into_iter().filter_map(|(k, v)| v.map(|v| (k, v)));
        let Some((kind, value)) = given.next() else {
            diags.error(
                node.location,
                "a path match needs one of `exact`, `prefix` or `regex`",
            );
            return None;
        };
        if let Some((second, _)) = given.next() {
            diags.error(
                node.location,
                format!("a path match takes one kind, found both `{kind}` and `{second}`"),
            );
            return None;
        }
        match kind {
            "regex" => compile_regex(&value, diags).map(PathMatch::Regex),
            _ if !value.value.starts_with('/') => {
                diags.error(
                    value.location,
                    format!("a {kind} path must start with `/`, found `{}`", value.value),
                );
                None
            }
            "exact" => Some(PathMatch::Exact(value.value)),
            _ => Some(PathMatch::Prefix(value.value)),
        }
    }
}

/// Compiles a regex, reporting a syntax error at its location.
fn compile_regex(pattern: &Located<String>, diags: &mut Diagnostics) -> Option<Regex> {
    match Regex::new(&pattern.value) {
        Ok(re) => Some(re),
        Err(e) => {
            diags.error(pattern.location, format!("invalid regex: {e}"));
            None
        }
    }
}

/// An HTTP method name.
struct MethodName(Method);

impl Decode for MethodName {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let name = String::decode(node, diags)?;
        match Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
            Ok(m) => Some(MethodName(m)),
            Err(_) => {
                diags.error(node.location, format!("`{name}` is not an HTTP method"));
                None
            }
        }
    }
}

/// Decodes the value condition of a header or query match from its fields.
fn decode_value_match(
    f: &mut Fields<'_>,
    location: Location,
    diags: &mut Diagnostics,
) -> Option<ValueMatch> {
    let exact = f.optional::<String>("exact", diags);
    let prefix = f.optional::<String>("prefix", diags);
    let regex = f.optional::<Located<String>>("regex", diags);
    let present = f.optional::<bool>("present", diags);
    let mut found: Vec<(&str, Option<ValueMatch>)> = Vec::new();
    if let Some(v) = exact? {
        found.push(("exact", Some(ValueMatch::Exact(v))));
    }
    if let Some(v) = prefix? {
        found.push(("prefix", Some(ValueMatch::Prefix(v))));
    }
    if let Some(v) = regex? {
        found.push(("regex", compile_regex(&v, diags).map(ValueMatch::Regex)));
    }
    if let Some(p) = present? {
        let m = if p {
            ValueMatch::Present
        } else {
            ValueMatch::Absent
        };
        found.push(("present", Some(m)));
    }
    match found.len() {
        0 => {
            diags.error(
                location,
                "a value match needs one of `exact`, `prefix`, `regex` or `present`",
            );
            None
        }
        1 => found.pop().and_then(|(_, m)| m),
        _ => {
            let kinds: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
            diags.error(
                location,
                format!(
                    "a value match takes one kind, found {}",
                    kinds.join(" and ")
                ),
            );
            None
        }
    }
}

impl Decode for HeaderMatch {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "header match", diags)?;
        let name = f.required::<Located<String>>("name", diags);
        let value = decode_value_match(&mut f, node.location, diags);
        f.finish(diags);
        let name = name?;
        let header = match HeaderName::from_bytes(name.value.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                diags.error(
                    name.location,
                    format!("`{}` is not a header name", name.value),
                );
                return None;
            }
        };
        Some(Self {
            name: header,
            value: value?,
        })
    }
}

impl Decode for QueryMatch {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "query match", diags)?;
        let name = f.required("name", diags);
        let value = decode_value_match(&mut f, node.location, diags);
        f.finish(diags);
        Some(Self {
            name: name?,
            value: value?,
        })
    }
}

impl Decode for FixedResponse {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "fixed response", diags)?;
        let status = f.optional::<Located<u16>>("status", diags);
        let headers_node = f.node("headers");
        let body = f.optional::<String>("body", diags);
        f.finish(diags);
        let status = match status? {
            None => StatusCode::OK,
            Some(s) => match StatusCode::from_u16(s.value) {
                Ok(code) if (200..=599).contains(&s.value) => code,
                _ => {
                    diags.error(
                        s.location,
                        format!("{} is not a status from 200 to 599", s.value),
                    );
                    return None;
                }
            },
        };
        let headers = match headers_node {
            None => Vec::new(),
            Some(n) => decode_header_pairs(n, diags)?,
        };
        Some(Self {
            status,
            headers,
            body: Bytes::from(body?.unwrap_or_default()),
        })
    }
}

/// Decodes a `{name: value}` mapping of response headers.
fn decode_header_pairs(
    node: &Node,
    diags: &mut Diagnostics,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let Value::Map(entries) = &node.value else {
        return mismatch(node, "a mapping of header names to values", diags);
    };
    let mut pairs = Vec::with_capacity(entries.len());
    let mut ok = true;
    for (k, v) in entries {
        let name = HeaderName::from_bytes(k.scalar_text().as_bytes());
        let value = HeaderValue::from_str(&v.scalar_text());
        match (name, value, &v.value) {
            (_, _, Value::Seq(_) | Value::Map(_)) => {
                ok = false;
                mismatch::<()>(v, "a header value", diags);
            }
            (Ok(n), Ok(val), _) => pairs.push((n, val)),
            (Err(_), _, _) => {
                ok = false;
                diags.error(
                    k.location,
                    format!("`{}` is not a header name", k.scalar_text()),
                );
            }
            (_, Err(_), _) => {
                ok = false;
                diags.error(v.location, "header values must be visible ASCII");
            }
        }
    }
    ok.then_some(pairs)
}

/// Rewrites as written.
#[derive(Debug, Default)]
pub struct RawRewrite {
    pub path: Option<Located<PathRewrite>>,
    pub host: Option<String>,
}

impl Decode for RawRewrite {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "rewrite", diags)?;
        let strip = f.optional::<Located<String>>("strip_prefix", diags);
        let replace_prefix = f.optional::<Located<String>>("replace_prefix", diags);
        let replace_path = f.optional::<Located<String>>("replace_path", diags);
        let host = f.optional::<String>("host", diags);
        f.finish(diags);
        let kinds = [
            ("strip_prefix", strip?),
            ("replace_prefix", replace_prefix?),
            ("replace_path", replace_path?),
        ];
        let given: Vec<_> = kinds
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        if given.len() > 1 {
            diags.error(
                node.location,
                format!(
                    "a rewrite takes one path rewrite, found both `{}` and `{}`",
                    given[0].0, given[1].0
                ),
            );
            return None;
        }
        let path = match given.into_iter().next() {
            None => None,
            Some((_, v)) if !v.value.starts_with('/') => {
                diags.error(
                    v.location,
                    format!("a rewritten path must start with `/`, found `{}`", v.value),
                );
                return None;
            }
            Some(("strip_prefix", v)) => {
                Some(located(v.location, PathRewrite::StripPrefix(v.value)))
            }
            Some(("replace_prefix", v)) => {
                Some(located(v.location, PathRewrite::ReplacePrefix(v.value)))
            }
            Some((_, v)) => Some(located(v.location, PathRewrite::ReplacePath(v.value))),
        };
        Some(Self { path, host: host? })
    }
}

fn located<T>(location: Location, value: T) -> Located<T> {
    Located { value, location }
}
