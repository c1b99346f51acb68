//! Services the host offers filters beyond the stream itself: HTTP callouts
//! to upstream groups, the shared-data cache, shared queues and metrics, each
//! holding every plugin to its [`quota::Quotas`].
//!
//! Knows neither wasmtime nor hyper: callouts go through the [`HttpCaller`]
//! and [`GrpcCaller`] traits, which the proxy implements over its upstream
//! groups.

pub mod consumers;
pub mod grpc_call;
pub mod http_call;
pub mod metrics;
pub mod plugin_health;
pub mod queues;
pub mod quota;
pub mod redis;
pub mod response_cache;
pub mod shared_data;
pub mod tier;

use std::sync::Arc;

pub use consumers::Consumers;
pub use grpc_call::{GrpcCaller, GrpcEvent, GrpcExchange, GrpcRequest};
pub use http_call::{CallRequest, CallResponse, HttpCaller, NoUpstreams};
pub use metrics::Metrics;
pub use queues::Queues;
pub use redis::{RedisService, RedisServices};
pub use response_cache::ResponseCache;
pub use shared_data::SharedData;

/// Everything filters can reach besides their stream; one per gateway.
pub struct Services {
    /// HTTP callouts to upstream groups.
    pub http: Arc<dyn HttpCaller>,
    /// gRPC callouts to upstream groups.
    pub grpc: Arc<dyn GrpcCaller>,
    /// The shared-data cache.
    pub shared_data: SharedData,
    /// Shared queues.
    pub queues: Queues,
    /// Plugin metrics.
    pub metrics: Arc<Metrics>,
    /// How the plugins' VMs fare (failures, restarts).
    pub plugin_health: Arc<plugin_health::PluginHealth>,
    /// Named Redis services.
    pub redis: RedisServices,
    /// Shared-data stores tiered onto a Redis service, by VM id.
    pub tiers: std::collections::HashMap<String, String>,
    /// The running manifest's consumers.
    pub consumers: Consumers,
    /// Whole responses, for the `weir.cache_*` functions.
    pub response_cache: ResponseCache,
}

impl Services {
    /// Services with `http` and `grpc` for callouts, `redis` services, and
    /// default bounds for the rest.
    pub fn new(
        http: Arc<dyn HttpCaller>,
        grpc: Arc<dyn GrpcCaller>,
        redis: RedisServices,
    ) -> Arc<Self> {
        Arc::new(Self {
            http,
            grpc,
            shared_data: SharedData::new(shared_data::DEFAULT_MAX_BYTES),
            queues: Queues::default(),
            metrics: Arc::new(Metrics::default()),
            plugin_health: Arc::default(),
            redis,
            tiers: std::collections::HashMap::new(),
            consumers: Consumers::default(),
            response_cache: ResponseCache::default(),
        })
    }

    /// Tiers plugin `plugin`'s shared data onto Redis service `service`.
    pub fn with_tiers(
        mut self: Arc<Self>,
        tiers: impl IntoIterator<Item = (String, String)>,
    ) -> Arc<Self> {
        if let Some(services) = Arc::get_mut(&mut self) {
            services.tiers.extend(tiers);
        }
        self
    }

    /// Gives the response cache a memory budget of `max_bytes`.
    pub fn with_response_cache(mut self: Arc<Self>, max_bytes: u64) -> Arc<Self> {
        if let Some(services) = Arc::get_mut(&mut self) {
            services.response_cache = ResponseCache::new(max_bytes);
        }
        self
    }

    /// Services with no upstreams and no Redis (for checking plugins without serving).
    pub fn standalone() -> Arc<Self> {
        Self::new(
            Arc::new(NoUpstreams),
            Arc::new(NoUpstreams),
            RedisServices::default(),
        )
    }
}
