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
use crate::config::model::Listener;
use crate::lifecycle::{Chain, Proxy};
use crate::services::response_cache::{self, Purge};
use crate::services::{RedisService, RedisServices, Services};
use crate::snapshot::{self, BuildError, MissingGroup, Started};
use crate::upstream::{self, Directory, InvalidUpstream, UpstreamCaller};
use crate::wasm::{LoadError, Runtime};

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
    /// A reload changed a listener (name, address, TLS or limits), which needs a restart.
    #[error("the listeners differ from the running ones; listeners change only with a restart")]
    ListenersChanged,
}

/// The parts of a gateway that outlive any one config: a reload builds the
/// new snapshot from them and keeps them.
struct Owned {
    options: Options,
    services: Arc<Services>,
    directory: Arc<Directory>,
    /// The listeners as configured (bound at start; a reload may not change them).
    listeners: Vec<Listener>,
    /// The last build that was swapped in (held while the next one builds).
    build: std::sync::Mutex<Build>,
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
        let (chains, started) =
            build_chains_over(&manifest, options, &services, &Started::default())?;
        services.consumers.publish();
        let snapshot = snapshot::assemble(&manifest, 1, chains, &groups)?;
        let runtimes = server::workers::Runtimes::build(options.worker_count())?;
        let mut listeners: Vec<Vec<server::Listener>> =
            (0..runtimes.len()).map(|_| Vec::new()).collect();
        let mut addresses = Vec::with_capacity(manifest.listeners.len());
        for config in &manifest.listeners {
            let tls = match &config.tls {
                Some(tls) => Some(TlsAcceptor::from(server::tls::server_config(tls).map_err(
                    |source| StartError::Tls {
                        listener: config.name.clone(),
                        source,
                    },
                )?)),
                None => None,
            };
            let limits = Arc::new(config.limits.clone());
            let slots = Arc::new(server::slots::Slots::new(&config.limits));
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
                    name: config.name.as_str().into(),
                    socket,
                    tls: tls.clone(),
                    limits: limits.clone(),
                    slots: slots.clone(),
                });
            }
            tracing::info!(listener = %config.name, %address, tls = tls.is_some(), workers = runtimes.len(), "listening");
            addresses.push((config.name.clone(), address));
        }
        let shutdown_timeout = manifest.shutdown_timeout;
        let proxy = Arc::new(Proxy::new(snapshot));
        let (shutdown, _) = watch::channel(false);
        let tracker = TaskTracker::new();
        let workers = runtimes.run(listeners, &proxy, &tracker, &shutdown)?;
        let owned = Owned {
            options: options.clone(),
            services,
            directory,
            listeners: manifest.listeners.clone(),
            build: std::sync::Mutex::new(Build {
                generation: 1,
                started,
            }),
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
        let generation = build.generation + 1;
        let snapshot = snapshot::assemble(manifest, generation, chains, &groups)?;
        let kept = started.taken_over();
        *build = Build {
            generation,
            started,
        };
        self.owned.directory.publish(groups);
        self.owned.services.consumers.publish();
        self.proxy.swap(snapshot);
        tracing::info!(generation, filters_kept = kept, "config reloaded");
        Ok(generation)
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

    /// Every metric the plugins defined, in the Prometheus text format.
    pub fn plugin_metrics(&self) -> String {
        self.owned.services.metrics.render_prometheus()
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
        drained
    }
}
