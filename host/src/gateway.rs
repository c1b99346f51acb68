//! Starting and stopping a whole gateway: bind every listener, build the proxy
//! snapshot, serve, and drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::config::Manifest;
use crate::config::model::ListenerId;
use crate::pipeline::{self, BuildError as PipelineBuildError, Pipelines};
use crate::proxy::Proxy;
use crate::services::{RedisService, RedisServices, Services};
use crate::upstream::{self, InvalidTarget, UpstreamCaller};
use crate::wasm::{LoadError, Runtime};

/// One problem per line, each with its place in the manifest.
fn list(manifest: &std::path::Path, errors: &[PipelineBuildError]) -> String {
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
    /// VMs per filter instance for plugins that do not set `vms` (default: one per core).
    pub vms: Option<usize>,
}

/// Loads every plugin and starts every filter of `manifest` with `services`
/// (what `weir validate` runs to check plugins, and what `Gateway::start` serves with).
pub fn build_pipelines(
    manifest: &Manifest,
    options: &Options,
    services: &Arc<Services>,
) -> Result<Pipelines, StartError> {
    if manifest.plugins.is_empty() {
        return Ok(Pipelines { routes: Vec::new() });
    }
    let runtime = Runtime::shared(options.cache_dir.clone())?;
    let vms = options.vms.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    pipeline::build(manifest, &runtime, vms, services).map_err(|errors| StartError::Plugins {
        manifest: manifest.source.clone(),
        errors,
    })
}
use crate::server::{self, tls::TlsError};

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
    /// An upstream group could not be built.
    #[error(transparent)]
    Upstream(#[from] InvalidTarget),
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
        errors: Vec<PipelineBuildError>,
    },
}

/// A serving gateway.
pub struct Gateway {
    addresses: Vec<(String, SocketAddr)>,
    services: Arc<Services>,
    shutdown: watch::Sender<bool>,
    tracker: TaskTracker,
    shutdown_timeout: Duration,
}

impl Gateway {
    /// Binds every listener of `manifest` and starts serving, with default options.
    pub async fn start(manifest: Manifest) -> Result<Self, StartError> {
        Self::start_with(manifest, &Options::default()).await
    }

    /// Binds every listener of `manifest`, loads its plugins and starts serving.
    pub async fn start_with(manifest: Manifest, options: &Options) -> Result<Self, StartError> {
        let groups = upstream::build_groups(&manifest.upstreams)?;
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
            .filter_map(|p| Some((p.name.clone(), p.shared_data_tier.clone()?)));
        let services =
            Services::new(Arc::new(UpstreamCaller::new(&groups)), redis).with_tiers(tiers);
        let pipelines = build_pipelines(&manifest, options, &services)?;
        let plugin_services = services.clone();
        let mut listeners = Vec::with_capacity(manifest.listeners.len());
        let mut addresses = Vec::with_capacity(manifest.listeners.len());
        for (i, config) in manifest.listeners.iter().enumerate() {
            let bind_error = |source| StartError::Bind {
                listener: config.name.clone(),
                address: config.address,
                source,
            };
            let tls = match &config.tls {
                Some(tls) => Some(TlsAcceptor::from(server::tls::server_config(tls).map_err(
                    |source| StartError::Tls {
                        listener: config.name.clone(),
                        source,
                    },
                )?)),
                None => None,
            };
            let socket = bind(config.address).map_err(bind_error)?;
            let local = socket.local_addr().map_err(bind_error)?;
            addresses.push((config.name.clone(), local));
            listeners.push(server::Listener {
                id: ListenerId(i),
                name: config.name.clone(),
                socket,
                tls,
                limits: Arc::new(config.limits.clone()),
            });
        }
        let shutdown_timeout = manifest.shutdown_timeout;
        let proxy = Arc::new(Proxy::new(manifest, groups, pipelines));
        let (shutdown, _) = watch::channel(false);
        let tracker = TaskTracker::new();
        for listener in listeners {
            tracing::info!(listener = %listener.name, address = %listener.socket.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), tls = listener.tls.is_some(), "listening");
            tokio::spawn(server::accept_loop(
                listener,
                proxy.clone(),
                tracker.clone(),
                shutdown.subscribe(),
            ));
        }
        Ok(Self {
            addresses,
            services: plugin_services,
            shutdown,
            tracker,
            shutdown_timeout,
        })
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

    /// Every metric the plugins defined, in the Prometheus text format.
    pub fn plugin_metrics(&self) -> String {
        self.services.metrics.render_prometheus()
    }

    /// Stops accepting, lets in-flight requests finish for up to the manifest's
    /// `shutdown_timeout`, and returns whether every connection drained in time.
    pub async fn shutdown(self) -> bool {
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
        drained
    }
}

/// Pending connections the kernel queues per listener (capped by
/// `net.core.somaxconn`). The usual 128 drops handshakes in a burst of new
/// clients, which then retry a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket with [`LISTEN_BACKLOG`].
fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}
