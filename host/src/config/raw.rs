//! The manifest as written: decoded field by field, references still by name.
//!
//! Leaf values (durations, sizes, regexes, matches) are checked here; anything
//! that needs the whole manifest (references, duplicate names) is left to
//! `validate`. An entity decodes whenever its name does: a bad field is
//! recorded and replaced by its default, so the whole-manifest checks still run
//! and every problem is reported in one go.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use super::decode::{ByteSize, Decode, Diagnostics, Fields, HumanDuration, Located, mismatch};
use super::model::{
    CircuitBreaker, DEFAULT_MIRROR_BODY_BYTES, DEFAULT_MIRROR_IN_FLIGHT, DEFAULT_MIRROR_PERCENT,
    DEFAULT_MIRROR_TIMEOUT, EscapedSlashes, FixedResponse, HeaderMatch, HealthChecks, HostMatch,
    LbPolicy, ListenerLimits, MAX_SPLIT_WEIGHT, Metadata, PathMatch, PathOptions, PathRewrite,
    QueryMatch, RetryPolicy, RouteMatch, Target, UpstreamProtocol, UpstreamTimeouts, ValueMatch,
};
use super::node::{Location, Node, Value};
use super::traffic::SLOW_START;
use crate::builtins::{self, Builtin};

// The allowed range of every numeric setting, each documented in
// `docs/manifest.md` beside its default.

/// A request head: hyper's HTTP/1 parser needs at least 8KiB; a head over
/// 1MiB is an attack, not a request.
pub const HEADER_BYTES: RangeInclusive<ByteSize> = ByteSize(8 << 10)..=ByteSize(1 << 20);
/// A request body: up to 1TiB (bodies are streamed; a retry or a filter that
/// buffers one holds it in memory).
pub const BODY_BYTES: RangeInclusive<ByteSize> = ByteSize(0)..=ByteSize(1 << 40);
/// Every timeout: up to a day (a longer wait is a typo; much longer would
/// overflow the clock).
pub const TIMEOUT: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::ZERO)..=HumanDuration(Duration::from_secs(24 * 3600));
/// Connections one listener serves at once (each costs a file descriptor).
pub const CONNECTIONS: RangeInclusive<usize> = 1..=1_000_000;
/// `max_connections_per_client`: `0` is no cap.
pub const CONNECTIONS_PER_CLIENT: RangeInclusive<usize> = 0..=1_000_000;
/// Extra attempts of an idempotent request on another target.
pub const RETRIES: RangeInclusive<u32> = 0..=10;
/// A plugin VM's linear memory: wasm32 addresses at most 4GiB.
pub const PLUGIN_MEMORY: RangeInclusive<ByteSize> = ByteSize(1 << 20)..=ByteSize(4 << 30);
/// CPU time of one callback: at least one epoch tick; beyond a minute the
/// worker it runs on has stalled every other request.
pub const CALLBACK_DEADLINE: RangeInclusive<HumanDuration> =
    HumanDuration(Duration::from_millis(1))..=HumanDuration(Duration::from_secs(60));
/// VMs per filter (each holds up to the plugin's memory).
pub const VMS: RangeInclusive<usize> = 1..=1024;
/// Metrics one plugin may define.
pub const METRICS: RangeInclusive<usize> = 0..=100_000;
/// Shared queues one plugin may register.
pub const QUEUES: RangeInclusive<usize> = 0..=10_000;
/// Bytes a plugin's queues, or its shared data, may hold.
pub const SHARED_BYTES: RangeInclusive<ByteSize> = ByteSize(0)..=ByteSize(4 << 30);
/// Plugin log output per second.
pub const LOG_BYTES_PER_SECOND: RangeInclusive<ByteSize> = ByteSize(0)..=ByteSize(1 << 30);

/// The top level of a manifest.
#[derive(Debug)]
pub struct RawManifest {
    pub api_version: Option<Located<String>>,
    pub listeners: Option<Vec<RawListener>>,
    pub upstreams: Vec<RawUpstream>,
    pub routes: Vec<RawRoute>,
    pub shutdown_timeout: Option<HumanDuration>,
    pub plugins: Vec<RawPlugin>,
    pub global_filters: Vec<RawFilter>,
    pub redis: Vec<RawRedis>,
    pub admin: Option<super::admin::RawAdmin>,
    pub consumers: Vec<Located<super::consumers::Consumer>>,
    pub access_log: Option<super::access_log::AccessLogConfig>,
    pub tracing: Option<super::tracing::TracingConfig>,
}

impl Decode for RawManifest {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        if let Value::Null = node.value {
            diags.error(node.location, "the manifest is empty");
            return None;
        }
        let mut f = Fields::of(node, "manifest", diags)?;
        require_entries(
            f.node("listeners"),
            "at least one listener is required",
            diags,
        );
        let manifest = Self {
            api_version: f.required("apiVersion", diags),
            listeners: f.required("listeners", diags),
            upstreams: f.or("upstreams", Vec::new(), diags),
            routes: f.or("routes", Vec::new(), diags),
            shutdown_timeout: f.bounded("shutdown_timeout", TIMEOUT, diags),
            plugins: f.or("plugins", Vec::new(), diags),
            global_filters: f.or("global_filters", Vec::new(), diags),
            redis: f.or("redis", Vec::new(), diags),
            admin: f.optional("admin", diags).flatten(),
            consumers: f.or("consumers", Vec::new(), diags),
            access_log: f.optional("access_log", diags).flatten(),
            tracing: f.optional("tracing", diags).flatten(),
        };
        f.finish(diags);
        Some(manifest)
    }
}

/// Records `message` when `list` is present and an empty list. (Checked on the
/// node: after decoding, entries that failed are gone and emptiness means nothing.)
fn require_entries(list: Option<&Node>, message: &str, diags: &mut Diagnostics) {
    if let Some(node) = list
        && matches!(&node.value, Value::Seq(items) if items.is_empty())
    {
        diags.error(node.location, message);
    }
}

/// A listener as written.
#[derive(Debug)]
pub struct RawListener {
    pub name: Located<String>,
    pub address: Option<SocketAddr>,
    pub tls: Option<RawTls>,
    pub limits: ListenerLimits,
    pub paths: PathOptions,
}

impl Decode for RawListener {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "listener", diags)?;
        let name = f.required("name", diags);
        let address = f.required("address", diags);
        let tls = f.optional("tls", diags).flatten();
        let limits = f.or("limits", ListenerLimits::default(), diags);
        let paths = f.or("paths", PathOptions::default(), diags);
        f.finish(diags);
        Some(Self {
            name: name?,
            address,
            tls,
            limits,
            paths,
        })
    }
}

/// TLS settings of a listener as written.
#[derive(Debug)]
pub struct RawTls {
    pub certificates: Vec<RawCertificate>,
}

impl Decode for RawTls {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "TLS settings", diags)?;
        require_entries(
            f.node("certificates"),
            "a TLS listener needs at least one certificate",
            diags,
        );
        let certificates = f.required("certificates", diags);
        f.finish(diags);
        Some(Self {
            certificates: certificates.unwrap_or_default(),
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
        let server_names = f.or("server_names", Vec::new(), diags);
        f.finish(diags);
        Some(Self {
            cert: cert?,
            key: key?,
            server_names,
        })
    }
}

impl Decode for ListenerLimits {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "listener limits", diags)?;
        let defaults = ListenerLimits::default();
        let first_byte = f
            .optional::<Located<HumanDuration>>("first_byte_timeout", diags)
            .flatten();
        let header = ByteSize(defaults.max_header_bytes as u64);
        let mut limits = Self {
            max_header_bytes: usize::try_from(
                f.within("max_header_bytes", HEADER_BYTES, header, diags).0,
            )
            .unwrap_or(defaults.max_header_bytes),
            max_body_bytes: f
                .within(
                    "max_body_bytes",
                    BODY_BYTES,
                    ByteSize(defaults.max_body_bytes),
                    diags,
                )
                .0,
            header_read_timeout: f.duration(
                "header_read_timeout",
                TIMEOUT,
                defaults.header_read_timeout,
                diags,
            ),
            idle_timeout: f.duration("idle_timeout", TIMEOUT, defaults.idle_timeout, diags),
            max_connections: f.within(
                "max_connections",
                CONNECTIONS,
                defaults.max_connections,
                diags,
            ),
            first_byte_timeout: defaults.first_byte_timeout,
            max_connections_per_client: f.within(
                "max_connections_per_client",
                CONNECTIONS_PER_CLIENT,
                defaults.max_connections_per_client,
                diags,
            ),
        };
        limits.first_byte_timeout =
            first_byte_timeout(first_byte, limits.header_read_timeout, diags);
        f.finish(diags);
        Some(limits)
    }
}

/// The first-byte timeout as written (more than 0, at most the header read
/// timeout), or else the default, shortened to the header read timeout.
fn first_byte_timeout(
    written: Option<Located<HumanDuration>>,
    header_read_timeout: std::time::Duration,
    diags: &mut Diagnostics,
) -> std::time::Duration {
    let default = ListenerLimits::default()
        .first_byte_timeout
        .min(header_read_timeout);
    let Some(timeout) = written else {
        return default;
    };
    if timeout.value.0.is_zero() {
        diags.error(timeout.location, "first_byte_timeout must be more than 0ms");
        default
    } else if timeout.value.0 > header_read_timeout {
        diags.error(
            timeout.location,
            format!(
                "first_byte_timeout must not be longer than header_read_timeout ({header_read_timeout:?}), found {:?}",
                timeout.value.0
            ),
        );
        default
    } else {
        timeout.value.0
    }
}

/// An upstream group as written.
#[derive(Debug)]
pub struct RawUpstream {
    pub name: Located<String>,
    pub targets: Option<Vec<RawTarget>>,
    pub lb: LbPolicy,
    pub timeouts: UpstreamTimeouts,
    pub retries: u32,
    pub metadata: Metadata,
    pub tls: Option<RawUpstreamTls>,
    pub health: HealthChecks,
    pub slow_start: Option<HumanDuration>,
    pub circuit_breaker: CircuitBreaker,
    pub protocol: UpstreamProtocol,
    pub discovery: Option<super::discovery::Discovery>,
}

/// TLS to an upstream's targets, as written.
#[derive(Debug)]
pub struct RawUpstreamTls {
    pub server_name: Option<Located<String>>,
    pub ca: Option<Located<String>>,
    pub cert: Option<Located<String>>,
    pub key: Option<Located<String>>,
}

impl Decode for RawUpstreamTls {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "upstream TLS settings", diags)?;
        let tls = Self {
            server_name: f.optional("server_name", diags).flatten(),
            ca: f.optional("ca", diags).flatten(),
            cert: f.optional("cert", diags).flatten(),
            key: f.optional("key", diags).flatten(),
        };
        f.finish(diags);
        if tls.cert.is_some() != tls.key.is_some() {
            diags.error(
                node.location,
                "a client certificate needs both `cert` and `key`".to_owned(),
            );
            return None;
        }
        Some(tls)
    }
}

impl Decode for RawUpstream {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "upstream", diags)?;
        let name = f.required("name", diags);
        // With discovery, `targets` are optional: the targets until its first answer.
        let discovered = f.node("discovery").is_some();
        if !discovered {
            require_entries(
                f.node("targets"),
                "an upstream needs at least one target",
                diags,
            );
        }
        let upstream = RawUpstream {
            name: Located {
                value: String::new(),
                location: node.location,
            },
            targets: if discovered {
                f.optional("targets", diags)
                    .map(|targets| targets.unwrap_or_default())
            } else {
                f.required("targets", diags)
            },
            lb: {
                let (lb, hash_on) = (f.node("lb"), f.node("hash_on"));
                LbPolicy::decode_with_key(lb, hash_on, node, diags)
            },
            timeouts: f.or("timeouts", UpstreamTimeouts::default(), diags),
            retries: f.within("retries", RETRIES, 0, diags),
            metadata: f.or("metadata", Metadata::default(), diags),
            tls: f.optional("tls", diags).flatten(),
            health: f.or("health", HealthChecks::default(), diags),
            slow_start: f.bounded("slow_start", SLOW_START, diags),
            circuit_breaker: f.or("circuit_breaker", CircuitBreaker::default(), diags),
            protocol: f.or("protocol", UpstreamProtocol::Auto, diags),
            discovery: f.optional("discovery", diags).flatten(),
        };
        f.finish(diags);
        Some(Self {
            name: name?,
            ..upstream
        })
    }
}

/// One upstream target: `host:port` or `{ address, weight }`.
#[derive(Debug)]
pub struct RawTarget {
    pub address: String,
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
        let weight = f.optional::<Located<u32>>("weight", diags).flatten();
        f.finish(diags);
        if let Some(w) = &weight
            && !(1..=MAX_WEIGHT).contains(&w.value)
        {
            diags.error(
                w.location,
                format!(
                    "a target's weight must be from 1 to {MAX_WEIGHT}, found {}",
                    w.value
                ),
            );
        }
        Some(Self {
            address: check_target_address(address?, diags)?,
            weight: weight.map_or(1, |w| w.value.clamp(1, MAX_WEIGHT)),
        })
    }
}

impl RawTarget {
    /// The validated target.
    pub fn into_target(self) -> Target {
        Target {
            address: self.address,
            weight: self.weight,
        }
    }
}

/// The largest target weight (keeps the round-robin schedule small).
const MAX_WEIGHT: u32 = 1000;

/// Checks that a target is `host:port`: a DNS name, an IPv4 address or a
/// bracketed IPv6 address, and a port from 1 to 65535.
fn check_target_address(address: Located<String>, diags: &mut Diagnostics) -> Option<String> {
    let text = &address.value;
    let problem = match text.rsplit_once(':') {
        None => Some("it has no `:port`".to_owned()),
        Some((host, port)) => {
            let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => {
                    !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                }
            };
            if !host_ok {
                Some(format!(
                    "`{host}` is not a host name, IPv4 address or [IPv6] address"
                ))
            } else if !port.parse::<u16>().is_ok_and(|p| p > 0) {
                Some(format!("the port `{port}` is not from 1 to 65535"))
            } else {
                None
            }
        }
    };
    match problem {
        None => Some(address.value),
        Some(why) => {
            diags.error(
                address.location,
                format!("target `{text}` must be `host:port` (like `127.0.0.1:3001`): {why}"),
            );
            None
        }
    }
}

impl Decode for PathOptions {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "path options", diags)?;
        let defaults = PathOptions::default();
        let options = Self {
            merge_slashes: f.or("merge_slashes", defaults.merge_slashes, diags),
            escaped_slashes: f.or("escaped_slashes", defaults.escaped_slashes, diags),
        };
        f.finish(diags);
        Some(options)
    }
}

impl Decode for EscapedSlashes {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        match &node.value {
            Value::Str(s) if s == "reject" => Some(EscapedSlashes::Reject),
            Value::Str(s) if s == "keep" => Some(EscapedSlashes::Keep),
            Value::Str(s) if s == "decode" => Some(EscapedSlashes::Decode),
            _ => mismatch(node, "`reject`, `keep` or `decode`", diags),
        }
    }
}

impl Decode for UpstreamProtocol {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        match &node.value {
            Value::Str(s) if s == "http1" => Some(Self::Http1),
            Value::Str(s) if s == "http2" => Some(Self::Http2),
            Value::Str(s) if s == "auto" => Some(Self::Auto),
            _ => mismatch(node, "`http1`, `http2` or `auto`", diags),
        }
    }
}

impl Decode for UpstreamTimeouts {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "upstream timeouts", diags)?;
        let defaults = UpstreamTimeouts::default();
        let mut timeout = |key, default| f.within(key, TIMEOUT, HumanDuration(default), diags).0;
        let timeouts = Self {
            connect: timeout("connect", defaults.connect),
            request: timeout("request", defaults.request),
            idle: timeout("idle", defaults.idle),
        };
        f.finish(diags);
        Some(timeouts)
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
    /// `Some(None)` when `split` is present but invalid.
    pub split: Option<Option<RawSplit>>,
    pub sticky: Option<Located<super::traffic::HashKey>>,
    /// `Some(None)` when `respond` is present but invalid.
    pub respond: Option<Option<FixedResponse>>,
    pub rewrite: RawRewrite,
    pub timeout: Option<HumanDuration>,
    pub retry: Option<RetryPolicy>,
    pub fallback: Option<FixedResponse>,
    pub filters: Vec<RawFilter>,
    pub metadata: Metadata,
    pub mirror: Option<RawMirror>,
    pub websocket: super::websocket::WebSocket,
}

impl Decode for RawRoute {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "route", diags)?;
        let name = f.required("name", diags);
        let respond_given = f.node("respond").is_some();
        let split_given = f.node("split").is_some();
        let route = RawRoute {
            location: node.location,
            name: Located {
                value: String::new(),
                location: node.location,
            },
            listeners: f.or("listeners", Vec::new(), diags),
            matcher: f.or("match", RouteMatch::default(), diags),
            upstream: f.optional("upstream", diags).flatten(),
            split: split_given.then(|| f.optional("split", diags).flatten()),
            sticky: f.optional("sticky", diags).flatten(),
            respond: respond_given.then(|| f.optional("respond", diags).flatten()),
            rewrite: f.or("rewrite", RawRewrite::default(), diags),
            timeout: f.bounded("timeout", TIMEOUT, diags),
            retry: f.optional("retry", diags).flatten(),
            fallback: f.optional("fallback", diags).flatten(),
            filters: f.or("filters", Vec::new(), diags),
            metadata: f.or("metadata", Metadata::default(), diags),
            mirror: f.optional("mirror", diags).flatten(),
            websocket: f.or("websocket", Default::default(), diags),
        };
        f.finish(diags);
        Some(Self {
            name: name?,
            ..route
        })
    }
}

/// A route's `split` as written: its groups by name, with their weights.
#[derive(Debug)]
pub struct RawSplit {
    pub location: Location,
    /// The entries that decoded.
    pub groups: Vec<RawSplitGroup>,
    /// Whether every entry decoded (else their weights say nothing as a whole).
    pub complete: bool,
}

impl Decode for RawSplit {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let written = match &node.value {
            Value::Seq(items) if items.is_empty() => {
                diags.error(node.location, "a split needs at least one upstream");
                return None;
            }
            Value::Seq(items) => items.len(),
            _ => 0,
        };
        let groups: Vec<RawSplitGroup> = Vec::decode(node, diags)?;
        Some(Self {
            location: node.location,
            complete: groups.len() == written,
            groups,
        })
    }
}

/// One group of a `split` as written.
#[derive(Debug)]
pub struct RawSplitGroup {
    pub upstream: Located<String>,
    pub weight: u32,
}

impl Decode for RawSplitGroup {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "split entry", diags)?;
        let upstream = f.required("upstream", diags);
        let weight = f.required::<Located<u32>>("weight", diags);
        f.finish(diags);
        let weight = weight?;
        if weight.value > MAX_SPLIT_WEIGHT {
            diags.error(
                weight.location,
                format!(
                    "weight must be at most {MAX_SPLIT_WEIGHT}, found {}",
                    weight.value
                ),
            );
            return None;
        }
        Some(Self {
            upstream: upstream?,
            weight: weight.value,
        })
    }
}

/// The copies a mirror may hold in flight: each holds up to its
/// `max_body_bytes`.
pub const MIRROR_IN_FLIGHT: RangeInclusive<usize> = 1..=100_000;
/// The body a mirror copies: up to 64MiB (it is held until the copy is sent).
pub const MIRROR_BODY_BYTES: RangeInclusive<ByteSize> = ByteSize(0)..=ByteSize(64 << 20);

/// A route's `mirror` as written.
#[derive(Debug)]
pub struct RawMirror {
    pub upstream: Located<String>,
    pub percent: u32,
    pub max_body_bytes: u64,
    pub timeout: std::time::Duration,
    pub max_in_flight: usize,
}

impl Decode for RawMirror {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "mirror", diags)?;
        let upstream = f.required("upstream", diags);
        let mirror = Self {
            upstream: Located {
                value: String::new(),
                location: node.location,
            },
            percent: f.within("percent", 0..=100, DEFAULT_MIRROR_PERCENT, diags),
            max_body_bytes: f
                .within(
                    "max_body_bytes",
                    MIRROR_BODY_BYTES,
                    ByteSize(DEFAULT_MIRROR_BODY_BYTES),
                    diags,
                )
                .0,
            timeout: f.duration("timeout", TIMEOUT, DEFAULT_MIRROR_TIMEOUT, diags),
            max_in_flight: f.within(
                "max_in_flight",
                MIRROR_IN_FLIGHT,
                DEFAULT_MIRROR_IN_FLIGHT,
                diags,
            ),
        };
        f.finish(diags);
        Some(Self {
            upstream: upstream?,
            ..mirror
        })
    }
}

/// `metadata`: a mapping of namespaces, each a mapping of keys to any value.
impl Decode for Metadata {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let Value::Map(namespaces) = &node.value else {
            return mismatch(node, "a mapping of namespaces", diags);
        };
        let mut metadata = serde_json::Map::new();
        let mut valid = true;
        for (namespace, keys) in namespaces {
            if !matches!(keys.value, Value::Map(_)) {
                diags.error(
                    keys.location,
                    format!(
                        "metadata namespace `{}` must be a mapping of keys to values, found {}",
                        namespace.scalar_text(),
                        keys.value.kind()
                    ),
                );
                valid = false;
                continue;
            }
            let mut keys = keys.to_json();
            keys.sort_all_objects();
            metadata.insert(namespace.scalar_text(), keys);
        }
        // Sorted, as before serde_json kept insertion order: filters read
        // the same bytes however the manifest orders its keys.
        metadata.sort_keys();
        valid.then(|| Metadata(std::sync::Arc::new(metadata)))
    }
}

impl Decode for RouteMatch {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "route match", diags)?;
        let hosts = f.or("hosts", Vec::new(), diags);
        let path = f.or("path", PathCondition::default(), diags);
        let matcher = Self {
            hosts,
            path: path.matcher,
            path_case_sensitive: path.case_sensitive,
            methods: f
                .or::<Vec<MethodName>>("methods", Vec::new(), diags)
                .into_iter()
                .map(|m| m.0)
                .collect(),
            headers: f.or("headers", Vec::new(), diags),
            query: f.or("query", Vec::new(), diags),
        };
        f.finish(diags);
        Some(matcher)
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
        if name.contains(':') {
            diags.error(
                node.location,
                format!("host pattern `{host}` must not have a port; hosts match on the name only"),
            );
            return None;
        }
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

/// Picks the single kind given among `kinds`, recording none-given and several-given.
fn one_kind<T>(
    kinds: Vec<(&'static str, Option<T>)>,
    location: Location,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<(&'static str, T)> {
    let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    let mut given: Vec<(&'static str, T)> = kinds
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    match given.len() {
        0 => {
            let options: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            diags.error(
                location,
                format!("{what} needs one of {}", options.join(", ")),
            );
            None
        }
        1 => given.pop(),
        _ => {
            let found: Vec<String> = given.iter().map(|(k, _)| format!("`{k}`")).collect();
            diags.error(
                location,
                format!("{what} takes one kind, found both {}", found.join(" and ")),
            );
            None
        }
    }
}

/// A route's path condition as written: the pattern and how it compares.
struct PathCondition {
    matcher: PathMatch,
    case_sensitive: bool,
}

impl Default for PathCondition {
    fn default() -> Self {
        Self {
            matcher: PathMatch::default(),
            case_sensitive: true,
        }
    }
}

impl Decode for PathCondition {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "path match", diags)?;
        let case_sensitive = f.or("case_sensitive", true, diags);
        let kinds = vec![
            (
                "exact",
                f.optional::<Located<String>>("exact", diags).flatten(),
            ),
            (
                "prefix",
                f.optional::<Located<String>>("prefix", diags).flatten(),
            ),
            (
                "regex",
                f.optional::<Located<String>>("regex", diags).flatten(),
            ),
        ];
        f.finish(diags);
        let (kind, value) = one_kind(kinds, node.location, "a path match", diags)?;
        let matcher = match kind {
            "regex" => compile_regex(&value, diags).map(PathMatch::Regex),
            _ if !value.value.starts_with('/') => {
                diags.error(
                    value.location,
                    format!(
                        "the `{kind}` path must start with `/`, found `{}`",
                        value.value
                    ),
                );
                None
            }
            _ if !is_normal_path(kind, &value, diags) => None,
            "exact" => Some(PathMatch::Exact(value.value)),
            _ => Some(PathMatch::Prefix(value.value)),
        }?;
        Some(Self {
            matcher,
            case_sensitive,
        })
    }
}

/// Whether a route's `exact` or `prefix` path is written as requests look
/// after normalization (else it could never match); records why not.
fn is_normal_path(kind: &str, path: &Located<String>, diags: &mut Diagnostics) -> bool {
    // The loosest listener settings: a path valid under them can match somewhere.
    let loosest = PathOptions {
        merge_slashes: false,
        escaped_slashes: EscapedSlashes::Keep,
    };
    let reason = match crate::normalize::normalize_path(&path.value, &loosest) {
        Ok(std::borrow::Cow::Borrowed(_)) => return true,
        Ok(std::borrow::Cow::Owned(normal)) => format!(
            "is not in normal form; requests are routed by their normalized path, so write `{normal}`"
        ),
        Err(error) => format!("can never match: {error}"),
    };
    diags.error(
        path.location,
        format!("the `{kind}` path `{}` {reason}", path.value),
    );
    false
}

/// Compiles a regex, reporting a syntax error on one line at its location.
fn compile_regex(pattern: &Located<String>, diags: &mut Diagnostics) -> Option<Regex> {
    match Regex::new(&pattern.value) {
        Ok(re) => Some(re),
        Err(e) => {
            let text = e.to_string();
            let reason = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map_or(text.as_str(), |l| l.trim().trim_start_matches("error: "));
            diags.error(
                pattern.location,
                format!("invalid regex `{}`: {reason}", pattern.value),
            );
            None
        }
    }
}

/// An HTTP method name.
struct MethodName(Method);

impl Decode for MethodName {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let name = String::decode(node, diags)?;
        if name.is_empty() {
            diags.error(node.location, "an HTTP method must not be empty");
            return None;
        }
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
    let regex = f
        .optional::<Located<String>>("regex", diags)
        .flatten()
        .map(|r| compile_regex(&r, diags).map(ValueMatch::Regex));
    let kinds = vec![
        (
            "exact",
            f.optional("exact", diags)
                .flatten()
                .map(|v| Some(ValueMatch::Exact(v))),
        ),
        (
            "prefix",
            f.optional("prefix", diags)
                .flatten()
                .map(|v| Some(ValueMatch::Prefix(v))),
        ),
        ("regex", regex),
        (
            "present",
            f.optional::<bool>("present", diags).flatten().map(|p| {
                Some(if p {
                    ValueMatch::Present
                } else {
                    ValueMatch::Absent
                })
            }),
        ),
    ];
    one_kind(kinds, location, "a value match", diags).and_then(|(_, m)| m)
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
        let headers = f.node("headers").map(|n| decode_header_pairs(n, diags));
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
        Some(Self {
            status,
            headers: headers.unwrap_or(Some(Vec::new()))?,
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
        let kinds = vec![
            (
                "strip_prefix",
                f.optional::<Located<String>>("strip_prefix", diags)
                    .flatten(),
            ),
            (
                "replace_prefix",
                f.optional::<Located<String>>("replace_prefix", diags)
                    .flatten(),
            ),
            (
                "replace_path",
                f.optional::<Located<String>>("replace_path", diags)
                    .flatten(),
            ),
        ];
        let host = f.optional::<String>("host", diags).flatten();
        f.finish(diags);
        let path = if kinds.iter().all(|(_, v)| v.is_none()) {
            None
        } else {
            let (kind, v) = one_kind(kinds, node.location, "a path rewrite", diags)?;
            if !v.value.starts_with('/') {
                diags.error(
                    v.location,
                    format!("`{kind}` must start with `/`, found `{}`", v.value),
                );
                return None;
            }
            let rule = match kind {
                "strip_prefix" => PathRewrite::StripPrefix(v.value),
                "replace_prefix" => PathRewrite::ReplacePrefix(v.value),
                _ => PathRewrite::ReplacePath(v.value),
            };
            Some(Located {
                value: rule,
                location: v.location,
            })
        };
        Some(Self { path, host })
    }
}

/// Default linear-memory cap of a plugin's VMs.
pub const DEFAULT_PLUGIN_MEMORY: u64 = 64 << 20;
/// Default CPU deadline of one callback.
pub const DEFAULT_CALLBACK_DEADLINE: std::time::Duration = std::time::Duration::from_millis(100);

/// A plugin as written.
#[derive(Debug)]
pub struct RawPlugin {
    pub name: Located<String>,
    /// Its module; `None` when it names none, both, or an unknown built-in
    /// (recorded).
    pub module: Option<RawModule>,
    pub memory: u64,
    pub callback_deadline: std::time::Duration,
    pub quotas: super::model::Quotas,
    pub on_error: super::model::OnError,
    pub vms: Option<usize>,
    pub shared_data_tier: Option<Located<String>>,
    /// `vm_config` as bytes (`Node::to_configuration`); empty when absent.
    pub vm_config: Bytes,
    /// The root id of filters that name none.
    pub root_id: Option<Located<String>>,
    /// Its VM id, when it names one.
    pub vm_id: Option<Located<String>>,
}

impl Decode for RawPlugin {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "plugin", diags)?;
        let name = f.required::<Located<String>>("name", diags);
        let file = f.node("file").map(|n| Located::<String>::decode(n, diags));
        let builtin = f
            .node("builtin")
            .map(|n| Located::<String>::decode(n, diags));
        let limits = f.optional::<PluginLimitsRaw>("limits", diags).flatten();
        let on_error = f.or("on_error", super::model::OnError::FailClosed, diags);
        let vms = f.bounded("vms", VMS, diags);
        let shared_data_tier = f.optional("shared_data_tier", diags).flatten();
        let vm_config = configuration(f.node("vm_config"));
        let root_id = f.optional("root_id", diags).flatten();
        let vm_id = f.optional("vm_id", diags).flatten();
        f.finish(diags);
        let limits = limits.unwrap_or(PluginLimitsRaw {
            memory: DEFAULT_PLUGIN_MEMORY,
            callback_deadline: DEFAULT_CALLBACK_DEADLINE,
            quotas: super::model::Quotas::default(),
        });
        let name = name?;
        let module = match (file, builtin) {
            (Some(file), None) => file.map(RawModule::File),
            (None, Some(builtin)) => builtin.and_then(|b| known_builtin(b, diags)),
            (Some(_), Some(_)) => {
                diags.error(
                    node.location,
                    format!(
                        "plugin `{}` has both `file` and `builtin`; pick one",
                        name.value
                    ),
                );
                None
            }
            (None, None) => {
                diags.error(
                    node.location,
                    format!("plugin `{}` needs `file` or `builtin`", name.value),
                );
                None
            }
        };
        Some(Self {
            name,
            module,
            memory: limits.memory,
            callback_deadline: limits.callback_deadline,
            quotas: limits.quotas,
            on_error,
            vms,
            shared_data_tier,
            vm_config,
            root_id,
            vm_id,
        })
    }
}

/// Where a plugin's module comes from, as written.
#[derive(Debug)]
pub enum RawModule {
    /// `file:`, not yet resolved against the manifest's directory.
    File(Located<String>),
    /// `builtin:`, a plugin compiled into this binary.
    Builtin(&'static Builtin),
}

/// The built-in `name` names; an unknown one is recorded with the names known.
fn known_builtin(name: Located<String>, diags: &mut Diagnostics) -> Option<RawModule> {
    if let Some(builtin) = builtins::find(&name.value) {
        return Some(RawModule::Builtin(builtin));
    }
    diags.error(
        name.location,
        format!(
            "unknown built-in plugin `{}`; this Weir has: {}",
            name.value,
            builtins::names()
        ),
    );
    None
}

/// A plugin's `limits` as written: the sandbox (memory, deadline) and the
/// quotas on what it may hold in the shared services.
struct PluginLimitsRaw {
    memory: u64,
    callback_deadline: std::time::Duration,
    quotas: super::model::Quotas,
}

impl Decode for PluginLimitsRaw {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "plugin limits", diags)?;
        let memory = f.within(
            "memory",
            PLUGIN_MEMORY,
            ByteSize(DEFAULT_PLUGIN_MEMORY),
            diags,
        );
        let deadline = f.within(
            "callback_deadline",
            CALLBACK_DEADLINE,
            HumanDuration(DEFAULT_CALLBACK_DEADLINE),
            diags,
        );
        let defaults = super::model::Quotas::default();
        let metrics = f.within("metrics", METRICS, defaults.metrics, diags);
        let queues = f.within("queues", QUEUES, defaults.queues, diags);
        let mut bytes = |key, range, default| f.within(key, range, ByteSize(default), diags).0;
        let quotas = super::model::Quotas {
            metrics,
            queues,
            queue_bytes: bytes("queue_bytes", SHARED_BYTES, defaults.queue_bytes),
            shared_data_bytes: bytes(
                "shared_data_bytes",
                SHARED_BYTES,
                defaults.shared_data_bytes,
            ),
            log_bytes_per_second: bytes(
                "log_bytes_per_second",
                LOG_BYTES_PER_SECOND,
                defaults.log_bytes_per_second,
            ),
        };
        f.finish(diags);
        Some(Self {
            memory: memory.0,
            callback_deadline: deadline.0,
            quotas,
        })
    }
}

impl Decode for super::model::OnError {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        match &node.value {
            Value::Str(s) if s == "fail_closed" => Some(Self::FailClosed),
            Value::Str(s) if s == "fail_open" => Some(Self::FailOpen),
            _ => mismatch(node, "`fail_closed` or `fail_open`", diags),
        }
    }
}

/// A filter (plugin use) as written.
#[derive(Debug)]
pub struct RawFilter {
    pub plugin: Located<String>,
    /// `config` as bytes (`Node::to_configuration`); empty when absent.
    pub config: Bytes,
    /// Where each part of `config` is written (empty when absent).
    pub config_places: ConfigPlaces,
    /// Its own root id, if it names one.
    pub root_id: Option<Located<String>>,
}

impl Decode for RawFilter {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "filter", diags)?;
        let plugin = f.required("plugin", diags);
        let config = configuration(f.node("config"));
        let config_places = f
            .node("config")
            .map_or_else(ConfigPlaces::default, |n| ConfigPlaces::new(n.places()));
        let root_id = f.optional("root_id", diags).flatten();
        f.finish(diags);
        Some(Self {
            plugin: plugin?,
            config,
            config_places,
            root_id,
        })
    }
}

/// Where each part of a filter's `config` is written, so that a plugin's
/// complaint about a field (a JSON pointer) is reported at the field's line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigPlaces(std::sync::Arc<[(String, Location)]>);

impl ConfigPlaces {
    fn new(places: Vec<(String, Location)>) -> Self {
        Self(places.into())
    }

    /// Where `pointer` is written: the deepest written part of it (a missing
    /// field is reported at its parent); `None` when `config` is absent.
    pub fn locate(&self, pointer: &str) -> Option<Location> {
        let mut pointer = pointer;
        loop {
            if let Some((_, at)) = self.0.iter().find(|(p, _)| p == pointer) {
                return Some(*at);
            }
            pointer = &pointer[..pointer.rfind('/')?];
        }
    }
}

/// A configuration field (`config`, `vm_config`) as the bytes the filter
/// receives; empty when the field is absent.
fn configuration(node: Option<&Node>) -> Bytes {
    node.map_or_else(Bytes::new, Node::to_configuration)
}

/// Default timeout of a Redis service.
pub const DEFAULT_REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A Redis service as written.
#[derive(Debug)]
pub struct RawRedis {
    pub name: Located<String>,
    pub url: Option<String>,
    pub timeout: std::time::Duration,
}

impl Decode for RawRedis {
    fn decode(node: &Node, diags: &mut Diagnostics) -> Option<Self> {
        let mut f = Fields::of(node, "Redis service", diags)?;
        let name = f.required("name", diags);
        let url = f.required::<Located<String>>("url", diags);
        let timeout = f.duration("timeout", TIMEOUT, DEFAULT_REDIS_TIMEOUT, diags);
        f.finish(diags);
        let url = url.and_then(|u| {
            if u.value.starts_with("redis://") {
                Some(u.value)
            } else {
                diags.error(
                    u.location,
                    format!(
                        "a Redis url must start with `redis://`, found `{}`",
                        u.value
                    ),
                );
                None
            }
        });
        Some(Self {
            name: name?,
            url,
            timeout,
        })
    }
}
