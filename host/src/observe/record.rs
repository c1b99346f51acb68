//! One request's [`Record`]: what the access log and the metrics need of it,
//! filled in by the layers the request passes through and settled once its
//! response has been sent (or failed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Uri};

use super::trace::{RequestTrace, Value};

/// Something unusual that happened to a request, for the access log's
/// `flags` (as Envoy's response flags) and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Flag {
    /// No route matched (or the method was not allowed).
    NoRoute = 1,
    /// The upstream did not answer within the timeout.
    UpstreamTimeout = 1 << 1,
    /// The upstream could not be reached, or its connection failed
    /// (before or during the response).
    UpstreamFailed = 1 << 2,
    /// A filter failed (trap, deadline, memory): the request failed, or went
    /// on without it when the filter fails open.
    PluginFailed = 1 << 3,
    /// A filter refused the request with 429.
    RateLimited = 1 << 4,
    /// The upstream's circuit breaker refused the request.
    CircuitOpen = 1 << 5,
    /// Every target of the upstream was out of rotation.
    NoHealthyUpstream = 1 << 6,
    /// The client went away before the response was sent.
    ClientAbort = 1 << 7,
}

impl Flag {
    /// Every flag, in the order the access log lists them.
    pub const ALL: [Flag; 8] = [
        Flag::NoRoute,
        Flag::UpstreamTimeout,
        Flag::UpstreamFailed,
        Flag::PluginFailed,
        Flag::RateLimited,
        Flag::CircuitOpen,
        Flag::NoHealthyUpstream,
        Flag::ClientAbort,
    ];

    /// Its name in the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::NoRoute => "no_route",
            Flag::UpstreamTimeout => "upstream_timeout",
            Flag::UpstreamFailed => "upstream_failed",
            Flag::PluginFailed => "plugin_failed",
            Flag::RateLimited => "rate_limited",
            Flag::CircuitOpen => "circuit_open",
            Flag::NoHealthyUpstream => "no_healthy_upstream",
            Flag::ClientAbort => "client_abort",
        }
    }
}

/// The TLS a request arrived over.
#[derive(Debug, Clone)]
pub struct TlsSession {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The server name the client asked for, if it sent one.
    pub sni: Option<Arc<str>>,
}

/// What is learned of a request on its way: names cloned cheaply (`Arc`).
#[derive(Debug, Default, Clone)]
pub struct Details {
    /// The route it matched.
    pub route: Option<Arc<str>>,
    /// That route's totals, which the request adds itself to when settled.
    pub route_stats: Option<Arc<super::RouteStats>>,
    /// The upstream group it went to.
    pub upstream: Option<Arc<str>>,
    /// The target (`host:port`) of the last attempt.
    pub target: Option<Arc<str>>,
    /// The consumer an auth filter resolved the caller to.
    pub consumer: Option<String>,
    /// The status the client was sent (0 before the head is ready).
    pub status: u16,
}

/// One request, as the layers it passes through saw it.
#[derive(Debug)]
pub struct Record {
    started: Instant,
    at: SystemTime,
    /// The request's id (`x-request-id`).
    pub request_id: HeaderValue,
    /// Its method.
    pub method: Method,
    /// Its target as the client sent it (shares the request's bytes).
    uri: Uri,
    /// The client's address.
    pub client: SocketAddr,
    /// The listener it arrived on.
    pub listener: Arc<str>,
    /// Its TLS session, if it came over TLS.
    pub tls: Option<TlsSession>,
    details: Mutex<Details>,
    plugin_nanos: AtomicU64,
    upstream_nanos: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    retries: AtomicU32,
    flags: AtomicU32,
    trace: Option<Box<RequestTrace>>,
}

impl Record {
    /// A record of a request that arrives now.
    pub fn new(
        request_id: HeaderValue,
        method: Method,
        uri: Uri,
        client: SocketAddr,
        listener: Arc<str>,
        tls: Option<TlsSession>,
    ) -> Self {
        Self {
            started: Instant::now(),
            at: SystemTime::now(),
            request_id,
            method,
            uri,
            client,
            listener,
            tls,
            details: Mutex::default(),
            plugin_nanos: AtomicU64::new(0),
            upstream_nanos: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            retries: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            trace: None,
        }
    }

    /// Its path as the client sent it.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The record of a traced request.
    pub fn with_trace(mut self, trace: RequestTrace) -> Self {
        self.trace = Some(Box::new(trace));
        self
    }

    /// The request's trace, when traces are on.
    pub fn trace(&self) -> Option<&RequestTrace> {
        self.trace.as_deref()
    }

    /// Ends the request's span, when it is traced and sampled, with what
    /// the record says of the request: failed on a 5xx or an upstream or
    /// filter failure.
    pub fn end_span(&self) {
        let Some(trace) = self.trace.as_deref().filter(|t| t.context.sampled) else {
            return;
        };
        let details = self.details();
        let name = match &details.route {
            Some(route) => format!("{} {route}", self.method),
            None => self.method.to_string(),
        };
        let mut attributes = vec![
            ("http.request.method", Value::from(self.method.as_str())),
            ("url.path", Value::from(self.path())),
            ("client.address", Value::from(self.client.ip().to_string())),
            ("client.port", Value::Int(self.client.port().into())),
            (
                "weir.request_id",
                Value::from(self.request_id.to_str().unwrap_or("-")),
            ),
            ("weir.listener", Value::from(&*self.listener)),
        ];
        if details.status != 0 {
            attributes.push((
                "http.response.status_code",
                Value::Int(details.status.into()),
            ));
        }
        if let Some(route) = &details.route {
            attributes.push(("http.route", Value::from(&**route)));
        }
        if let Some(upstream) = &details.upstream {
            attributes.push(("weir.upstream", Value::from(&**upstream)));
        }
        let failure = [
            Flag::UpstreamTimeout,
            Flag::UpstreamFailed,
            Flag::PluginFailed,
        ]
        .into_iter()
        .find(|flag| self.has(*flag));
        let error = if details.status >= 500 {
            Some((
                details.status.to_string(),
                format!("answered {}", details.status),
            ))
        } else {
            failure.map(|flag| (flag.as_str().to_owned(), flag.as_str().replace('_', " ")))
        };
        trace.end(name, attributes, error);
    }

    /// When the request arrived (wall clock).
    pub fn arrived_at(&self) -> SystemTime {
        self.at
    }

    /// How long since it arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Changes what is known of the request.
    pub fn update(&self, change: impl FnOnce(&mut Details)) {
        change(&mut self.lock());
    }

    /// Reads what is known of the request now, without copying it.
    pub fn inspect<T>(&self, read: impl FnOnce(&Details) -> T) -> T {
        read(&self.lock())
    }

    /// What is known of the request now.
    pub fn details(&self) -> Details {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Details> {
        // Plain data: consistent even if a holder panicked.
        self.details
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `flag`.
    pub fn flag(&self, flag: Flag) {
        self.flags.fetch_or(flag as u32, Ordering::Relaxed);
    }

    /// Whether `flag` is marked.
    pub fn has(&self, flag: Flag) -> bool {
        self.flags.load(Ordering::Relaxed) & flag as u32 != 0
    }

    /// The flags marked, in the order of [`Flag::ALL`].
    pub fn flags(&self) -> impl Iterator<Item = Flag> + '_ {
        let bits = self.flags.load(Ordering::Relaxed);
        Flag::ALL.into_iter().filter(move |f| bits & *f as u32 != 0)
    }

    /// Adds time spent in filters.
    pub fn add_plugin_time(&self, time: Duration) {
        self.plugin_nanos.fetch_add(nanos(time), Ordering::Relaxed);
    }

    /// Adds time spent waiting for the upstream (to its response head).
    pub fn add_upstream_time(&self, time: Duration) {
        self.upstream_nanos
            .fetch_add(nanos(time), Ordering::Relaxed);
    }

    /// Time spent in filters so far.
    pub fn plugin_time(&self) -> Duration {
        Duration::from_nanos(self.plugin_nanos.load(Ordering::Relaxed))
    }

    /// Time spent waiting for the upstream so far.
    pub fn upstream_time(&self) -> Duration {
        Duration::from_nanos(self.upstream_nanos.load(Ordering::Relaxed))
    }

    /// Counts request body bytes read from the client.
    pub fn add_bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts response body bytes handed to the client's connection.
    pub fn add_bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts an attempt beyond the first at the upstream.
    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Attempts beyond the first so far.
    pub fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Request body bytes read so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Response body bytes sent so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }
}

fn nanos(time: Duration) -> u64 {
    u64::try_from(time.as_nanos()).unwrap_or(u64::MAX)
}
