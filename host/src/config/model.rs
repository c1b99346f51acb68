//! The validated manifest: the only configuration types the rest of Weir sees.
//!
//! Every reference is resolved (`UpstreamId`, `ListenerId`), every regex compiled,
//! every duration and size parsed. Built by `config::validate`; depends on nothing
//! above `config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

pub use super::admin::{Admin, AdminRole, AdminTls, AdminToken};
pub use super::consumers::{BasicAuth, Consumer, ConsumerLimit, JwtIdentity};
pub use super::discovery::{
    ConsulDiscovery, Discovery, DnsDiscovery, DnsRecord, EtcdDiscovery, EurekaDiscovery,
    FileDiscovery, HttpEndpoint, Secret,
};
pub use super::traffic::{
    ActiveCheck, CircuitBreaker, ErrorBreaker, HashKey, HealthChecks, LbPolicy, OutlierDetection,
    ProbeKind, RetryOn, RetryPolicy,
};
pub use super::websocket::WebSocket;
pub use crate::normalize::{EscapedSlashes, PathOptions};

/// Index of a listener in [`Manifest::listeners`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub usize);

/// Index of an upstream group in [`Manifest::upstreams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId(pub usize);

/// Index of a plugin in [`Manifest::plugins`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginId(pub usize);

/// Index of a route in [`Manifest::routes`]; lower ids come earlier in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub usize);

/// A whole validated manifest.
#[derive(Debug)]
pub struct Manifest {
    /// The file it was read from (used in messages).
    pub source: PathBuf,
    /// Sockets to serve on, in file order.
    pub listeners: Vec<Listener>,
    /// Upstream groups, in file order.
    pub upstreams: Vec<Upstream>,
    /// Routes, in file order (file order is the last tie-break of precedence).
    pub routes: Vec<Route>,
    /// Named Wasm plugins.
    pub plugins: Vec<Plugin>,
    /// Filters that run before every route's own, in order.
    pub global_filters: Vec<FilterRef>,
    /// Named Redis services filters may call.
    pub redis: Vec<Redis>,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// The admin API, when the manifest has one.
    pub admin: Option<Admin>,
    /// Who calls the routes, and their credentials.
    pub consumers: Vec<Consumer>,
    /// The access log's settings (read when the gateway starts).
    pub access_log: super::access_log::AccessLogConfig,
    /// Tracing's settings, when traces are on (read when the gateway starts).
    pub tracing: Option<super::tracing::TracingConfig>,
}

/// One socket Weir accepts connections on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Address to bind (port 0 picks a free port).
    pub address: SocketAddr,
    /// TLS termination; `None` serves cleartext HTTP/1.1 and h2c.
    pub tls: Option<ListenerTls>,
    /// Resource bounds for this listener's connections.
    pub limits: ListenerLimits,
    /// How request paths are normalized before routing.
    pub paths: PathOptions,
}

impl Listener {
    /// Whether `other` binds and serves its socket the same way (name, address,
    /// TLS, limits); what only the routing reads (`paths`) may differ.
    pub fn same_socket(&self, other: &Listener) -> bool {
        self.name == other.name
            && self.address == other.address
            && self.tls == other.tls
            && self.limits == other.limits
    }
}

/// Certificates a TLS listener presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Certificates in file order; one without `server_names` is the default.
    pub certificates: Vec<Certificate>,
}

/// One certificate chain and key, optionally bound to SNI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// PEM file with the certificate chain.
    pub cert: PathBuf,
    /// PEM file with the private key.
    pub key: PathBuf,
    /// SNI names this certificate answers (lower case); empty = default certificate.
    pub server_names: Vec<String>,
}

/// Per-listener bounds against oversized and slow clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Largest request head (request line + headers) accepted.
    pub max_header_bytes: usize,
    /// Largest request body accepted (413 beyond it).
    pub max_body_bytes: u64,
    /// Time a client has to send a complete request head (slowloris bound).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once. When all are taken, a new connection evicts
    /// the oldest one that has not sent a byte yet, or is closed at once.
    pub max_connections: usize,
    /// Time a new connection has to send its first byte (at most
    /// `header_read_timeout`), so that silent sockets give their slot back soon.
    pub first_byte_timeout: Duration,
    /// Connections one client may hold at once on this listener: per IPv4
    /// address, per IPv6 /64. More are closed at once; 0 means no cap.
    pub max_connections_per_client: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            first_byte_timeout: Duration::from_secs(5),
            max_connections_per_client: 1_000,
        }
    }
}

/// A named group of upstream targets with a balancing policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Unique name.
    pub name: String,
    /// Targets to balance over.
    pub targets: Vec<Target>,
    /// How a target is picked.
    pub lb: LbPolicy,
    /// Connection and request timeouts.
    pub timeouts: UpstreamTimeouts,
    /// Extra attempts for idempotent requests whose connection failed.
    pub retries: u32,
    /// What filters read as `cluster_metadata`.
    pub metadata: Metadata,
    /// TLS to the targets; `None` speaks cleartext.
    pub tls: Option<UpstreamTls>,
    /// How targets found down are taken out of rotation.
    pub health: HealthChecks,
    /// A target that comes back (or joins) ramps its share of traffic up
    /// from a tenth to all of it over this long.
    pub slow_start: Option<Duration>,
    /// Limits that fail fast, and the error-rate breaker.
    pub circuit_breaker: CircuitBreaker,
    /// The HTTP version spoken to the targets.
    pub protocol: UpstreamProtocol,
    /// Where the group learns its targets besides `targets` (which are then
    /// its targets until the source's first answer).
    pub discovery: Option<Discovery>,
}

/// The HTTP version an upstream's targets are spoken to with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 only (gRPC-Web requests then go on untranslated).
    Http1,
    /// HTTP/2 only: h2c with prior knowledge in cleartext, `h2` by ALPN
    /// over TLS (a target that does not agree is a connect failure).
    Http2,
    /// Over TLS, what the target picks by ALPN (`h2` offered first, then
    /// `http/1.1`); in cleartext, HTTP/1.1, but h2c for gRPC requests,
    /// which need HTTP/2.
    #[default]
    Auto,
}

/// TLS to an upstream's targets (the HTTP version by `protocol` and ALPN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent as SNI and verified in the certificate (default: each
    /// target's host).
    pub server_name: Option<String>,
    /// PEM file of the CA certificates that may sign the targets'
    /// certificates (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// PEM files of the client certificate chain and key (mutual TLS).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Metadata a route or an upstream carries for its filters to read (the
/// `route_metadata` and `cluster_metadata` properties): namespace → keys →
/// any value, as in Envoy's `filter_metadata`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata(pub Arc<serde_json::Map<String, serde_json::Value>>);

// JSON numbers are never NaN, so equality is total.
impl Eq for Metadata {}

/// One upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    /// Relative share of traffic (≥ 1).
    pub weight: u32,
}

/// Timeouts towards an upstream group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From sending the request to receiving the response head.
    pub request: Duration,
    /// Pooled keep-alive connections idle longer than this are closed.
    pub idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(90),
        }
    }
}

/// A route: what it matches and what it does.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// Listeners this route is served on; empty = every listener.
    pub listeners: Vec<ListenerId>,
    /// Conditions a request must meet.
    pub matcher: RouteMatch,
    /// What happens to a matched request.
    pub action: RouteAction,
    /// Rewrites applied before forwarding.
    pub rewrite: Rewrite,
    /// Overrides the upstream's request timeout.
    pub timeout: Option<Duration>,
    /// When requests are tried again (default: the upstream's `retries`
    /// on connect failure).
    pub retry: Option<RetryPolicy>,
    /// The answer when the upstream's circuit is open or no target is healthy.
    pub fallback: Option<FixedResponse>,
    /// The route's own filters, in order (after the global ones).
    pub filters: Vec<FilterRef>,
    /// What filters read as `route_metadata`.
    pub metadata: Metadata,
    /// A copy of each request (or a sample) sent to another group, whose
    /// answers are dropped.
    pub mirror: Option<Mirror>,
    /// Whether WebSocket upgrades pass, and their tunnel's limits.
    pub websocket: WebSocket,
}

/// The largest weight of one group in a route's `split`.
pub const MAX_SPLIT_WEIGHT: u32 = 1_000_000;

/// A route's requests shared between upstream groups by weight (a canary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The groups in file order, each with its weight (some may be 0; the
    /// sum is positive).
    pub groups: Vec<(UpstreamId, u32)>,
    /// What keeps one client on one group while the weights stay the same
    /// (hashed as a consistent-hash group hashes it); `None` picks at
    /// random for each request.
    pub sticky: Option<HashKey>,
}

/// Default [`Mirror::percent`].
pub const DEFAULT_MIRROR_PERCENT: u32 = 100;
/// Default [`Mirror::max_body_bytes`].
pub const DEFAULT_MIRROR_BODY_BYTES: u64 = 64 << 10;
/// Default [`Mirror::timeout`].
pub const DEFAULT_MIRROR_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`Mirror::max_in_flight`].
pub const DEFAULT_MIRROR_IN_FLIGHT: usize = 256;

/// Shadow traffic: copies of a route's requests sent, fire and forget, to
/// another upstream group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The group the copies go to.
    pub upstream: UpstreamId,
    /// The share of requests copied, 0 to 100.
    pub percent: u32,
    /// Requests with a longer body are not copied.
    pub max_body_bytes: u64,
    /// How long one copy may take, answer body included.
    pub timeout: Duration,
    /// Copies in flight at once; more are dropped (and counted).
    pub max_in_flight: usize,
}

/// A Wasm plugin: a module and the sandbox its VMs run in.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// Unique name.
    pub name: String,
    /// Where its module comes from.
    pub module: PluginModule,
    /// Linear-memory cap per VM.
    pub memory_bytes: u64,
    /// CPU time one callback may take.
    pub callback_deadline: Duration,
    /// What it may hold in the shared services, and how fast it may log.
    pub quotas: Quotas,
    /// What a failure does to the request.
    pub on_error: OnError,
    /// VMs per filter instance (default: one per worker thread).
    pub vms: Option<usize>,
    /// The Redis service its shared data is tiered onto, if any.
    pub shared_data_tier: Option<String>,
    /// The VM id (`plugin_vm_id`): plugins with the same one share shared
    /// data and queues, as Envoy's VMs of one `vm_id` do. Default: the name.
    pub vm_id: String,
    /// The VM configuration handed to `proxy_on_vm_start` (`vm_config`): a
    /// string's bytes, JSON text for anything else, empty when absent.
    pub vm_config: Bytes,
    /// Where it is written (for messages).
    pub location: crate::config::Location,
}

/// Where a plugin's module comes from.
#[derive(Debug, Clone)]
pub enum PluginModule {
    /// A `.wasm` (or `.wat`) file, read when the plugin is loaded.
    File(PathBuf),
    /// A plugin compiled into this binary (`builtin:`).
    Builtin(&'static crate::builtins::Builtin),
}

/// Default [`Quotas::metrics`].
pub const DEFAULT_METRICS: usize = 1_000;
/// Default [`Quotas::queues`].
pub const DEFAULT_QUEUES: usize = 100;
/// Default [`Quotas::queue_bytes`].
pub const DEFAULT_QUEUE_BYTES: u64 = 16 << 20;
/// Default [`Quotas::shared_data_bytes`].
pub const DEFAULT_SHARED_DATA_BYTES: u64 = 16 << 20;
/// Default [`Quotas::log_bytes_per_second`].
pub const DEFAULT_LOG_BYTES_PER_SECOND: u64 = 1 << 20;

/// What one plugin may hold and do, across all its VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quotas {
    /// Distinct metrics it may define.
    pub metrics: usize,
    /// Shared queues it may register.
    pub queues: usize,
    /// Bytes its queues may hold together (items waiting to be dequeued).
    pub queue_bytes: u64,
    /// Bytes its shared-data namespace may hold (keys, values and per-entry overhead).
    pub shared_data_bytes: u64,
    /// Log bytes per second (a token bucket holding one second's worth);
    /// messages beyond it are dropped.
    pub log_bytes_per_second: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            metrics: DEFAULT_METRICS,
            queues: DEFAULT_QUEUES,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            shared_data_bytes: DEFAULT_SHARED_DATA_BYTES,
            log_bytes_per_second: DEFAULT_LOG_BYTES_PER_SECOND,
        }
    }
}

/// What a plugin failure does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnError {
    /// Answer 503 naming the plugin.
    FailClosed,
    /// Skip the filter.
    FailOpen,
}

/// A use of a plugin with a configuration.
#[derive(Debug, Clone)]
pub struct FilterRef {
    /// The plugin.
    pub plugin: PluginId,
    /// Its configuration, handed to `proxy_on_configure`: a string's bytes,
    /// JSON text for anything else, empty when absent.
    pub config: Bytes,
    /// The root context it uses (`plugin_root_id`): its own `root_id`, else
    /// its plugin's `root_id`, else the plugin's name.
    pub root_id: String,
    /// Where it is written (for messages).
    pub location: crate::config::Location,
    /// Where each part of its `config` is written, for the plugin's own
    /// complaints about a field.
    pub config_places: super::raw::ConfigPlaces,
}

/// Conditions of a route; all must hold.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// Host patterns; empty = any host.
    pub hosts: Vec<HostMatch>,
    /// Path condition.
    pub path: PathMatch,
    /// Whether `exact` and `prefix` paths compare case-sensitively (regexes
    /// decide for themselves with `(?i)`).
    pub path_case_sensitive: bool,
    /// Allowed methods; empty = any method.
    pub methods: Vec<Method>,
    /// Header conditions.
    pub headers: Vec<HeaderMatch>,
    /// Query-parameter conditions.
    pub query: Vec<QueryMatch>,
}

impl Default for RouteMatch {
    /// Any host, any path (`prefix: /`, case-sensitive), any method.
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            path: PathMatch::default(),
            path_case_sensitive: true,
            methods: Vec::new(),
            headers: Vec::new(),
            query: Vec::new(),
        }
    }
}

/// A host pattern (lower case, no port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`; matches one or more labels.
    Suffix(String),
}

/// A path pattern.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The whole path equals this.
    Exact(String),
    /// The path starts with this at a segment boundary (`/v1` matches `/v1` and `/v1/x`, not `/v1x`).
    Prefix(String),
    /// The regex matches the whole path.
    Regex(Regex),
}

impl Default for PathMatch {
    fn default() -> Self {
        Self::Prefix("/".to_owned())
    }
}

/// A condition on one header.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Header name.
    pub name: HeaderName,
    /// Condition on its value.
    pub value: ValueMatch,
}

/// A condition on one query parameter.
#[derive(Debug, Clone)]
pub struct QueryMatch {
    /// Parameter name (after percent-decoding).
    pub name: String,
    /// Condition on its value (after percent-decoding).
    pub value: ValueMatch,
}

/// A condition on a header or query value.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Some value equals this.
    Exact(String),
    /// Some value starts with this.
    Prefix(String),
    /// The regex matches some whole value.
    Regex(Regex),
    /// It is present, with any value.
    Present,
    /// It is absent.
    Absent,
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Forward to an upstream group.
    Forward(UpstreamId),
    /// Forward to one of several upstream groups, chosen by weight.
    Split(Split),
    /// Answer with a fixed response.
    Respond(FixedResponse),
}

/// A response a route answers with by itself.
#[derive(Debug, Clone)]
pub struct FixedResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers, in file order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body.
    pub body: bytes::Bytes,
}

/// Rewrites applied to a forwarded request.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Path rewrite.
    pub path: Option<PathRewrite>,
    /// Replaces the `host` header (and `:authority`).
    pub host: Option<String>,
}

/// How the path is rewritten.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Remove this prefix when the path starts with it at a segment boundary.
    StripPrefix(String),
    /// Replace the route's matched prefix with this.
    ReplacePrefix(String),
    /// Replace the whole path (the query is kept).
    ReplacePath(String),
}

/// A named Redis service filters may call (`proxy_redis_init` / `proxy_redis_call`).
#[derive(Debug, Clone)]
pub struct Redis {
    /// Unique name (the "cluster" filters pass).
    pub name: String,
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Connect and per-command timeout.
    pub timeout: Duration,
}
