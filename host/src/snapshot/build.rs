//! Builds every route's chain from the manifest: loads each plugin once,
//! starts one filter instance per filter entry (global filters are shared by
//! every route), and reports every plugin that cannot load or start.
//!
//! A reload takes over the filters of the running build that did not change
//! ([`Started`]), so their VMs, and the state their root contexts keep, live on.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::model::{FilterRef, OnError, Plugin as PluginConfig, PluginModule, Quotas};
use crate::config::{FileError, Location, MAX_PLUGIN_BYTES, Manifest};
use crate::filters::ProxyWasmFilter;
use crate::lifecycle::{Chain, FailMode, HttpFilter};
use crate::services::Services;
use crate::wasm::{
    FilterInstance, FilterSettings, LoadError, Plugin, PluginLimits, Runtime, StartError,
};

/// One plugin or filter that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The plugin's file cannot be read (it changed since validation).
    #[error("plugin `{plugin}`: file `{}` {source}", path.display())]
    Read {
        /// Plugin name.
        plugin: String,
        /// Where the plugin is written.
        location: Location,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: FileError,
    },
    /// The plugin's module cannot be used.
    #[error("plugin `{plugin}`: {source}")]
    Load {
        /// Plugin name.
        plugin: String,
        /// Where the plugin is written.
        location: Location,
        /// Why.
        source: LoadError,
    },
    /// A filter's VM refused to start (`on_vm_start` / `on_configure` / a trap).
    #[error("plugin `{plugin}`: {source}")]
    Start {
        /// Plugin name.
        plugin: String,
        /// Where the filter is written.
        location: Location,
        /// Why.
        source: StartError,
    },
}

impl BuildError {
    /// Where in the manifest the problem is.
    pub fn location(&self) -> Location {
        match self {
            Self::Read { location, .. }
            | Self::Load { location, .. }
            | Self::Start { location, .. } => *location,
        }
    }
}

/// Everything that shapes a started filter: two filters with equal keys
/// behave alike, so a reload may hand one's VMs to the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FilterKey {
    plugin: String,
    vm_id: String,
    module: [u8; 32],
    memory_bytes: u64,
    callback_deadline: Duration,
    quotas: Quotas,
    on_error: OnError,
    vms: usize,
    vm_config: Bytes,
    root_id: String,
    config: Bytes,
}

/// The filters one build started, by key, for the next build to take over.
#[derive(Default)]
pub struct Started {
    filters: HashMap<FilterKey, Vec<StartedFilter>>,
    taken_over: usize,
}

/// A started filter, and the instance (with its VMs) it runs on.
#[derive(Clone)]
struct StartedFilter {
    filter: Arc<dyn HttpFilter>,
    instance: Arc<FilterInstance>,
}

impl Started {
    /// How many of its filters it took over from the build before.
    pub fn taken_over(&self) -> usize {
        self.taken_over
    }

    /// The filter instances it runs, each once.
    pub fn instances(&self) -> Vec<Arc<FilterInstance>> {
        self.filters
            .values()
            .flatten()
            .map(|started| started.instance.clone())
            .collect()
    }
}

/// A loaded plugin and the digest of its module.
struct Loaded {
    plugin: Arc<Plugin>,
    module: [u8; 32],
}

/// Loads plugins and starts filter instances; the chain of every route, in
/// manifest order, and what was started. A filter whose key matches one of
/// `running` is taken over instead of started (each running filter at most
/// once). `vms_default` is the pool size for plugins that do not set `vms`.
pub fn chains(
    manifest: &Manifest,
    runtime: &Arc<Runtime>,
    vms_default: usize,
    services: &Arc<Services>,
    running: &Started,
) -> Result<(Vec<Chain>, Started), Vec<BuildError>> {
    let mut errors = Vec::new();
    let plugins: Vec<Option<Loaded>> = manifest
        .plugins
        .iter()
        .map(|p| load(p, runtime).map_err(|e| errors.push(e)).ok())
        .collect();
    let mut started = Started::default();
    let mut taken: HashMap<FilterKey, usize> = HashMap::new();
    let mut instance = |filter: &FilterRef| -> Option<Arc<dyn HttpFilter>> {
        let config = &manifest.plugins[filter.plugin.0];
        let loaded = plugins[filter.plugin.0].as_ref()?;
        let vms = config.vms.unwrap_or(vms_default);
        let key = FilterKey {
            plugin: config.name.clone(),
            vm_id: config.vm_id.clone(),
            module: loaded.module,
            memory_bytes: config.memory_bytes,
            callback_deadline: config.callback_deadline,
            quotas: config.quotas,
            on_error: config.on_error,
            vms,
            vm_config: config.vm_config.clone(),
            root_id: filter.root_id.clone(),
            config: filter.config.clone(),
        };
        let uses = taken.entry(key.clone()).or_default();
        let reused = running
            .filters
            .get(&key)
            .and_then(|f| f.get(*uses))
            .cloned();
        *uses += 1;
        let filter = match reused {
            Some(filter) => {
                started.taken_over += 1;
                filter
            }
            None => start(loaded, config, filter, vms, services)
                .map_err(|e| errors.push(e))
                .ok()?,
        };
        started.filters.entry(key).or_default().push(filter.clone());
        Some(filter.filter)
    };
    let global: Vec<Option<Arc<dyn HttpFilter>>> =
        manifest.global_filters.iter().map(&mut instance).collect();
    let routes: Vec<Vec<Option<Arc<dyn HttpFilter>>>> = manifest
        .routes
        .iter()
        .map(|route| route.filters.iter().map(&mut instance).collect())
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let global: Vec<Arc<dyn HttpFilter>> = global.into_iter().flatten().collect();
    let chains = routes
        .into_iter()
        .map(|own| {
            Chain::new(
                global
                    .iter()
                    .cloned()
                    .chain(own.into_iter().flatten())
                    .collect(),
            )
        })
        .collect();
    Ok((chains, started))
}

/// Starts one filter instance of a loaded plugin.
fn start(
    loaded: &Loaded,
    config: &PluginConfig,
    filter: &FilterRef,
    vms: usize,
    services: &Arc<Services>,
) -> Result<StartedFilter, BuildError> {
    let settings = FilterSettings {
        root_id: filter.root_id.as_str().into(),
        configuration: filter.config.clone(),
    };
    let mode = match config.on_error {
        OnError::FailClosed => FailMode::Closed,
        OnError::FailOpen => FailMode::Open,
    };
    FilterInstance::new(loaded.plugin.clone(), settings, vms, services.clone())
        .map(|instance| StartedFilter {
            filter: Arc::new(ProxyWasmFilter::new(instance.clone(), mode)),
            instance,
        })
        .map_err(|source| {
            // A plugin that names the field it refuses is reported there.
            let location = match &source {
                StartError::ConfigureRejected(Some(reason)) => filter
                    .config_places
                    .locate(&reason.pointer)
                    .unwrap_or(filter.location),
                _ => filter.location,
            };
            BuildError::Start {
                plugin: config.name.clone(),
                location,
                source,
            }
        })
}

/// Reads (a file within [`MAX_PLUGIN_BYTES`], or a built-in's embedded
/// bytes) and compiles one plugin (the runtime compiles a module once per
/// content, whatever the builds and wherever the bytes came from).
fn load(plugin: &PluginConfig, runtime: &Arc<Runtime>) -> Result<Loaded, BuildError> {
    let limits = PluginLimits {
        memory_bytes: usize::try_from(plugin.memory_bytes).unwrap_or(usize::MAX),
        callback_deadline: plugin.callback_deadline,
        quotas: plugin.quotas,
    };
    let bytes: Cow<'static, [u8]> = match &plugin.module {
        PluginModule::File(path) => crate::config::read_file(path, MAX_PLUGIN_BYTES)
            .map(Cow::Owned)
            .map_err(|source| BuildError::Read {
                plugin: plugin.name.clone(),
                location: plugin.location,
                path: path.clone(),
                source,
            })?,
        PluginModule::Builtin(builtin) => Cow::Borrowed(builtin.module),
    };
    let module = Sha256::digest(&bytes).into();
    runtime
        .load(
            &plugin.name,
            &plugin.vm_id,
            &bytes,
            limits,
            plugin.vm_config.clone(),
        )
        .map(|plugin| Loaded { plugin, module })
        .map_err(|source| BuildError::Load {
            plugin: plugin.name.clone(),
            location: plugin.location,
            source,
        })
}
