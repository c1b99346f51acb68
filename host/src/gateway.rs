//! Starting and stopping a whole gateway: own the long-lived parts (the Wasm
//! runtime, services, upstream groups), build the config snapshot from them,
//! start the workers with their own socket of every listener, reload, and
//! drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::Manifest;
use crate::config::access_log::AccessLogPath;
use crate::config::model::Listener;
use crate::config::tracing::TracingConfig;
use crate::lifecycle::{Chain, ListenerGauges, MirrorCounts, Proxy, Snapshot};
use crate::observe::access_log::{self, AccessLog, AccessLogError};
use crate::observe::{Format, Metrics, Observer, Reload, RouteStats, Tracer, otlp, trace};
use crate::services::response_cache::{self, Purge};
use crate::services::{RedisService, RedisServices, Services};
use crate::snapshot::{self, BuildError, MissingGroup, Started};
use crate::upstream::{self, Directory, InvalidUpstream, UpstreamCaller};
use crate::wasm::{FilterInstance, LoadError, Runtime, VmUsage};

/// One problem per line, each with its place in the manifest.
fn list(manifest: &std::path::Path, errors: &[BuildError]) -> String {
    errors
        .iter()
        .map(|e| {
            let at = e.location();
            format!("{}:{}:{}: {e}", manifest.display(), at.line, at.column)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How long shutdown waits for the last spans to reach the collector.
const SPANS_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// The observer of a gateway starting with `manifest`: its metrics at
/// generation 1 (with the plugins' metrics and the upstream groups' state
/// read at each scrape), the access log and the tracer the manifest asks for.
fn observer(
    manifest: &Manifest,
    options: &Options,
    services: &Services,
    directory: &Arc<Directory>,
) -> Result<Observer, StartError> {
    let mut metrics = Metrics::new();
    metrics.set_generation(1);
    metrics.register_collector(Box::new(services.metrics.collector()));
    metrics.register_collector(Box::new(services.plugin_health.collector()));
    metrics.register_collector(Box::new(upstream::UpstreamMetrics(directory.clone())));
    let config = &manifest.access_log;
    let access_log = if config.enabled && !options.without_access_log {
        let settings = access_log::Settings {
            destination: match &config.path {
                AccessLogPath::Stdout => access_log::Destination::Stdout,
                AccessLogPath::File(path) => access_log::Destination::File(path.clone()),
            },
            sample: f64::from(config.percent) / 100.0,
            buffer: config.buffer,
        };
        Some(AccessLog::start(&settings, metrics.access_log_dropped())?)
    } else {
        None
    };
    let tracer = match &manifest.tracing {
        Some(config) => Some(tracer(config, &metrics).map_err(StartError::TraceExporter)?),
        None => None,
    };
    let observer = Observer::new(metrics, access_log);
    Ok(match tracer {
        Some(tracer) => observer.with_tracer(tracer),
        None => observer,
    })
}

/// The tracer for `config`, its spans counted in `metrics`, with its exporter started.
fn tracer(config: &TracingConfig, metrics: &Metrics) -> std::io::Result<Tracer> {
    let settings = otlp::Settings {
        endpoint: config.otlp.endpoint.to_string(),
        service_name: config.service_name.clone(),
        batch: config.otlp.batch,
        queue: config.otlp.queue,
        flush_interval: config.otlp.flush_interval,
        timeout: config.otlp.timeout,
    };
    let counters = metrics.spans();
    let dropped = counters.dropped.clone();
    let spans = otlp::start(settings, counters)?;
    let sample = f64::from(config.sample_percent) / 100.0;
    Ok(Tracer::new(&trace::Settings { sample }, spans, dropped))
}

/// `chains` with every filter callback timed into `metrics`.
fn timed(chains: Vec<Chain>, metrics: &Metrics) -> Vec<Chain> {
    chains
        .into_iter()
        .map(|chain| chain.timed(metrics))
        .collect()
}

/// Options for starting a gateway.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where wasmtime caches compiled plugin code (none = no disk cache).
    pub cache_dir: Option<std::path::PathBuf>,
    /// Worker threads, each with its own runtime, sockets, VMs and upstream
    /// connections (default: one per core).
    pub workers: Option<usize>,
    /// VMs per filter instance for plugins that do not set `vms` (default: one
    /// per worker, so each worker has its own).
    pub vms: Option<usize>,
    /// Bytes the response cache holds in memory (default
    /// [`response_cache::DEFAULT_MAX_BYTES`]).
    pub response_cache_bytes: Option<u64>,
    /// Starts without the access log whatever the manifest says (gateways
    /// run inside another program, such as tests, that owns its output).
    pub without_access_log: bool,
}

impl Options {
    /// How many workers to run (at least one).
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(crate::worker::default_count)
            .max(1)
    }
}

/// Loads every plugin and starts every filter of `manifest` with `services`:
/// the chain of each route, in manifest order (what `weir validate` runs to
/// check plugins, and what `Gateway::start` serves with).
pub fn build_chains(
    manifest: &Manifest,
    options: &Options,
    services: &Arc<Services>,
) -> Result<Vec<Chain>, StartError> {
    build_chains_over(manifest, options, services, &Started::default()).map(|(chains, _)| chains)
}

/// [`build_chains`], taking over the filters of `running` that did not change.
fn build_chains_over(
    manifest: &Manifest,
    options: &Options,
    services: &Arc<Services>,
    running: &Started,
) -> Result<(Vec<Chain>, Started), StartError> {
    // Filters check the consumers they name against the manifest being built.
    services.consumers.stage(&manifest.consumers);
    if manifest.plugins.is_empty() {
        return Ok((Vec::new(), Started::default()));
    }
    let runtime = Runtime::shared(options.cache_dir.clone())?;
    let vms = options.vms.unwrap_or_else(|| options.worker_count());
    snapshot::chains(manifest, &runtime, vms, services, running).map_err(|errors| {
        StartError::Plugins {
            manifest: manifest.source.clone(),
            errors,
        }
    })
}
use crate::server::certs::{CertificateReloads, ListenerCerts};
use crate::server::{self, tls::TlsError, workers::WorkerError};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error("listener `{listener}` cannot bind {address}: {source}")]
    Bind {
        /// Listener name.
        listener: String,
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A listener's TLS settings could not be loaded.
    #[error("listener `{listener}`: {source}")]
    Tls {
        /// Listener name.
        listener: String,
        /// What failed.
        source: TlsError,
    },
    /// The worker threads could not start.
    #[error(transparent)]
    Workers(#[from] WorkerError),
    /// An upstream group could not be built.
    #[error(transparent)]
    Upstream(#[from] InvalidUpstream),
    /// The Wasm runtime could not start.
    #[error(transparent)]
    Runtime(#[from] LoadError),
    /// Plugins or filters could not be set up (every problem is listed as
    /// `file:line:column: reason`).
    #[error("{}", list(manifest, errors))]
    Plugins {
        /// The manifest file.
        manifest: std::path::PathBuf,
        /// Every problem.
        errors: Vec<BuildError>,
    },
    /// The snapshot could not be assembled.
    #[error(transparent)]
    Snapshot(#[from] MissingGroup),
    /// The access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    /// The trace exporter could not start.
    #[error("cannot start the trace exporter: {0}")]
    TraceExporter(std::io::Error),
    /// A reload changed a listener (name, address, TLS or limits), which needs a restart.
    #[error("the listeners differ from the running ones; listeners change only with a restart")]
    ListenersChanged,
}

/// Watches the certificate files of `certificates` until `shutdown`; none
/// when there are none, or when watching fails (logged: a manifest reload
/// or SIGHUP still reloads them).
fn watch_certificates(
    certificates: &[Arc<ListenerCerts>],
    shutdown: &watch::Sender<bool>,
) -> Option<notify::RecommendedWatcher> {
    if certificates.is_empty() {
        return None;
    }
    match server::certs::watch(certificates.to_vec(), shutdown.subscribe()) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, "cannot watch the TLS certificate files; they reload on SIGHUP only");
            None
        }
    }
}

/// The parts of a gateway that outlive any one config: a reload builds the
/// new snapshot from them and keeps them.
struct Owned {
    options: Options,
    services: Arc<Services>,
    directory: Arc<Directory>,
    /// The listeners as configured (bound at start; a reload may not change them).
    listeners: Vec<Listener>,
    /// The certificates of the TLS listeners, reloaded from their files.
    certificates: Vec<Arc<ListenerCerts>>,
    /// Reloads `certificates` when their files change (while it lives).
    _certificate_watcher: Option<notify::RecommendedWatcher>,
    /// The last build that was swapped in (held while the next one builds).
    build: std::sync::Mutex<Build>,
    /// The filter instances the running build uses, for the status page
    /// (apart from `build`, which a reload holds while it compiles).
    instances: std::sync::Mutex<Vec<Arc<FilterInstance>>>,
}

impl Owned {
    fn lock_instances(&self) -> std::sync::MutexGuard<'_, Vec<Arc<FilterInstance>>> {
        self.instances
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running build: its generation and the filters it started.
struct Build {
    generation: u64,
    started: Started,
}

/// A serving gateway: its workers, and what stops them.
pub struct Gateway {
    proxy: Arc<Proxy>,
    owned: Owned,
    addresses: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    tracker: TaskTracker,
    shutdown_timeout: Duration,
    /// Taken by the shutdown that stops them.
    workers: std::sync::Mutex<Option<server::workers::Workers>>,
    worker_count: usize,
}

impl Gateway {
    /// Binds every listener of `manifest` and starts serving, with default options.
    pub async fn start(manifest: Manifest) -> Result<Self, StartError> {
        Self::start_with(manifest, &Options::default()).await
    }

    /// Binds every listener of `manifest`, loads its plugins and starts serving.
    pub async fn start_with(manifest: Manifest, options: &Options) -> Result<Self, StartError> {
        let groups = Arc::new(upstream::build_groups(
            &manifest.upstreams,
            &Default::default(),
        )?);
        let directory = Arc::new(Directory::new());
        directory.publish(groups.clone());
        let redis = RedisServices::new(manifest.redis.iter().map(|r| {
            let service = RedisService {
                url: r.url.clone(),
                timeout: r.timeout,
            };
            (r.name.clone(), service)
        }));
        let tiers = manifest
            .plugins
            .iter()
            .filter_map(|p| Some((p.vm_id.clone(), p.shared_data_tier.clone()?)));
        let caller = Arc::new(UpstreamCaller::new(directory.clone()));
        let cache_bytes = options
            .response_cache_bytes
            .unwrap_or(response_cache::DEFAULT_MAX_BYTES);
        let services = Services::new(caller.clone(), caller, redis)
            .with_tiers(tiers)
            .with_response_cache(cache_bytes);
        let observer = Arc::new(observer(&manifest, options, &services, &directory)?);
        let (chains, started) =
            build_chains_over(&manifest, options, &services, &Started::default())?;
        let chains = timed(chains, &observer.metrics);
        services.consumers.publish();
        let snapshot = snapshot::assemble(&manifest, 1, chains, &groups, &observer.routes)?;
        let instances = started.instances();
        let runtimes = server::workers::Runtimes::build(options.worker_count())?;
        let mut listeners: Vec<Vec<server::Listener>> =
            (0..runtimes.len()).map(|_| Vec::new()).collect();
        let mut addresses = Vec::with_capacity(manifest.listeners.len());
        let mut certificates = Vec::new();
        for config in &manifest.listeners {
            let tls = match &config.tls {
                Some(tls) => {
                    let tls_error = |source| StartError::Tls {
                        listener: config.name.clone(),
                        source,
                    };
                    let provider = server::tls::provider();
                    let loaded =
                        ListenerCerts::load(&config.name, tls, provider).map_err(tls_error)?;
                    let loaded = Arc::new(loaded);
                    certificates.push(loaded.clone());
                    let server = server::tls::server_config(loaded).map_err(tls_error)?;
                    Some(TlsAcceptor::from(server))
                }
                None => None,
            };
            let limits = Arc::new(config.limits.clone());
            let slots = Arc::new(server::slots::Slots::new(&config.limits));
            let name: Arc<str> = config.name.as_str().into();
            let gauges = ListenerGauges::new(&observer.metrics, &name);
            // Worker 0 binds the configured address (port 0 picks a port); the
            // others bind the address it got, beside it.
            let mut address = config.address;
            for (worker, own) in listeners.iter_mut().enumerate() {
                let bind_error = |source| StartError::Bind {
                    listener: config.name.clone(),
                    address,
                    source,
                };
                let socket = runtimes
                    .enter(worker, || server::bind(address))
                    .map_err(bind_error)?;
                address = socket.local_addr().map_err(bind_error)?;
                own.push(server::Listener {
                    name: name.clone(),
                    socket,
                    tls: tls.clone(),
                    limits: limits.clone(),
                    slots: slots.clone(),
                    gauges: gauges.clone(),
                });
            }
            tracing::info!(listener = %config.name, %address, tls = tls.is_some(), workers = runtimes.len(), "listening");
            addresses.push((config.name.clone(), address));
        }
        let shutdown_timeout = manifest.shutdown_timeout;
        let proxy = Arc::new(Proxy::new(snapshot, observer));
        let (shutdown, _) = watch::channel(false);
        let certificate_watcher = watch_certificates(&certificates, &shutdown);
        let tracker = TaskTracker::new();
        let workers = runtimes.run(listeners, &proxy, &tracker, &shutdown)?;
        let owned = Owned {
            options: options.clone(),
            services,
            directory,
            listeners: manifest.listeners.clone(),
            certificates,
            _certificate_watcher: certificate_watcher,
            build: std::sync::Mutex::new(Build {
                generation: 1,
                started,
            }),
            instances: std::sync::Mutex::new(instances),
        };
        Ok(Self {
            proxy,
            owned,
            addresses,
            shutdown,
            tracker,
            shutdown_timeout,
            worker_count: workers.len(),
            workers: std::sync::Mutex::new(Some(workers)),
        })
    }

    /// The generation of the config snapshot new requests are served with.
    pub fn generation(&self) -> u64 {
        self.proxy.snapshot().generation()
    }

    /// Serves `manifest` from now on: builds its whole snapshot (upstream
    /// groups, plugins, filters) off the request path, with the runtime and
    /// services this gateway owns, and swaps it in only if every part built.
    /// Requests in flight finish on the snapshot they started with; upstream
    /// groups whose configuration is unchanged keep their connections and
    /// balancer state. Returns the new generation. Blocks while plugins
    /// compile and start: call it from a blocking task.
    pub fn reload(&self, manifest: &Manifest) -> Result<u64, StartError> {
        self.reload_because(manifest, "reload")
    }

    /// [`Gateway::reload`], remembering `cause` (what asked for it) in the
    /// recent reloads.
    pub fn reload_because(
        &self,
        manifest: &Manifest,
        cause: &'static str,
    ) -> Result<u64, StartError> {
        let outcome = self.rebuild(manifest);
        let observer = self.proxy.observer();
        let generation = self.generation();
        observer.metrics.reloaded(outcome.is_ok(), generation);
        let refused = outcome.as_ref().err().map(ToString::to_string);
        observer.reloads.push(generation, cause, refused.as_deref());
        outcome
    }

    /// Counts and remembers a reload refused before it reached the gateway
    /// (its manifest did not validate).
    pub fn reload_refused(&self, cause: &'static str, reason: &str) {
        let observer = self.proxy.observer();
        let generation = self.generation();
        observer.metrics.reloaded(false, generation);
        observer.reloads.push(generation, cause, Some(reason));
    }

    /// The last reloads, applied or refused, oldest first.
    pub fn reloads(&self) -> Vec<Reload> {
        self.proxy.observer().reloads.list()
    }

    /// The config snapshot new requests are served with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.proxy.snapshot()
    }

    /// The running upstream groups, by name.
    pub fn upstreams(&self) -> Arc<upstream::Groups> {
        self.owned.directory.current()
    }

    /// Each running filter's plugin name and what its VMs hold now, in no
    /// particular order.
    pub fn plugin_usage(&self) -> Vec<(String, VmUsage)> {
        let instances = self.owned.lock_instances().clone();
        (instances.iter())
            .map(|instance| (instance.plugin_name().to_owned(), instance.usage()))
            .collect()
    }

    /// Every route's request and error totals so far.
    pub fn route_totals(&self) -> Vec<Arc<RouteStats>> {
        self.proxy.observer().routes.all()
    }

    /// Builds and swaps in `manifest`'s snapshot: [`Gateway::reload`]'s work.
    fn rebuild(&self, manifest: &Manifest) -> Result<u64, StartError> {
        let same_listeners = manifest.listeners.len() == self.owned.listeners.len()
            && (manifest.listeners.iter())
                .zip(&self.owned.listeners)
                .all(|(new, running)| new.same_socket(running));
        if !same_listeners {
            return Err(StartError::ListenersChanged);
        }
        // One build at a time, so generations follow the order of swaps.
        let mut build = self
            .owned
            .build
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let groups = Arc::new(upstream::build_groups(
            &manifest.upstreams,
            &self.owned.directory.current(),
        )?);
        let (chains, started) = build_chains_over(
            manifest,
            &self.owned.options,
            &self.owned.services,
            &build.started,
        )?;
        let chains = timed(chains, &self.proxy.observer().metrics);
        let generation = build.generation + 1;
        let observer = self.proxy.observer();
        let mut snapshot =
            snapshot::assemble(manifest, generation, chains, &groups, &observer.routes)?;
        snapshot.take_over_mirrors(&self.proxy.snapshot());
        let kept = started.taken_over();
        *self.owned.lock_instances() = started.instances();
        *build = Build {
            generation,
            started,
        };
        self.owned.directory.publish(groups);
        self.owned.services.consumers.publish();
        self.proxy.swap(snapshot);
        (observer.routes).retain(manifest.routes.iter().map(|r| r.name.as_str()));
        tracing::info!(generation, filters_kept = kept, "config reloaded");
        // The listeners are the same; their certificate files may not be.
        // A failure is logged, and the running certificates stay.
        let _ = self.reload_certificates();
        Ok(generation)
    }

    /// Reads every TLS listener's certificate files again and swaps in
    /// those that changed; how many listeners got new certificates. Files
    /// that do not load are refused with their reason (and logged), and
    /// their listener keeps its certificates; the first such error is
    /// returned once every listener was tried. Blocks on file reads.
    pub fn reload_certificates(&self) -> Result<usize, TlsError> {
        let mut swapped = 0;
        let mut first_error = None;
        for certs in &self.owned.certificates {
            match certs.reload() {
                Ok(changed) => swapped += usize::from(changed),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(swapped), Err)
    }

    /// How the certificate reloads of listener `listener` went so far;
    /// `None` when it has no TLS.
    pub fn certificate_reloads(&self, listener: &str) -> Option<CertificateReloads> {
        (self.owned.certificates.iter())
            .find(|c| c.listener() == listener)
            .map(|c| c.reloads())
    }

    /// The bound address of the listener named `name`.
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Every listener's name and bound address, in manifest order.
    pub fn addresses(&self) -> &[(String, SocketAddr)] {
        &self.addresses
    }

    /// The running upstream group named `name`, with its live state.
    pub fn upstream(&self, name: &str) -> Option<Arc<upstream::UpstreamGroup>> {
        self.owned.directory.get(name)
    }

    /// What happened so far to the copies route `route` mirrors, when it
    /// has a mirror.
    pub fn mirror_counts(&self, route: &str) -> Option<MirrorCounts> {
        let snapshot = self.proxy.snapshot();
        Some(snapshot.route_named(route)?.mirror.as_ref()?.counts())
    }

    /// How many workers serve.
    pub fn workers(&self) -> usize {
        self.worker_count
    }

    /// Removes the cached responses `purge` selects, on this node and in
    /// every Redis service the cache uses (which tells the other nodes);
    /// how many went from memory here and from Redis.
    pub async fn purge_responses(&self, purge: &Purge) -> (usize, usize) {
        let services = &self.owned.services;
        let local = services.response_cache.purge_local(purge);
        let shared = response_cache::tier::purge(services, purge).await;
        (local, shared)
    }

    /// Reopens the access log's file before its next line (after rotation).
    pub fn reopen_access_log(&self) {
        self.proxy.observer().reopen_access_log();
    }

    /// Every metric, the gateway's and the plugins', in `format`.
    pub fn metrics(&self, format: Format) -> String {
        self.proxy.observer().metrics.render(format)
    }

    /// Stops accepting on every worker, lets in-flight requests finish for up
    /// to the manifest's `shutdown_timeout`, and returns whether every
    /// connection drained in time. The workers' threads have ended when it
    /// returns. A second call finds nothing left to stop.
    pub async fn shutdown(&self) -> bool {
        let _ = self.shutdown.send(true);
        self.tracker.close();
        let drained = tokio::time::timeout(self.shutdown_timeout, self.tracker.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                open_connections = self.tracker.len(),
                "shutdown deadline passed; closing remaining connections"
            );
        }
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(workers) = workers {
            workers.stop().await;
        }
        // Every request has settled: its line is written and its spans are
        // exported before the process ends.
        self.proxy.observer().flush(SPANS_AT_SHUTDOWN).await;
        drained
    }
}
