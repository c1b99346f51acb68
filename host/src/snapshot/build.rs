//! Builds every route's chain from the manifest: loads each plugin once,
//! starts one filter instance per filter entry (global filters are shared by
//! every route), and reports every plugin that cannot load or start.

use std::sync::Arc;

use crate::config::model::{FilterRef, OnError, Plugin as PluginConfig};
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

/// Loads plugins and starts filter instances; the chain of every route, in
/// manifest order. `vms_default` is the pool size for plugins that do not set `vms`.
pub fn chains(
    manifest: &Manifest,
    runtime: &Arc<Runtime>,
    vms_default: usize,
    services: &Arc<Services>,
) -> Result<Vec<Chain>, Vec<BuildError>> {
    let mut errors = Vec::new();
    let plugins: Vec<Option<Arc<Plugin>>> = manifest
        .plugins
        .iter()
        .map(|p| load(p, runtime).map_err(|e| errors.push(e)).ok())
        .collect();
    let mut instance = |filter: &FilterRef| -> Option<Arc<dyn HttpFilter>> {
        let config = &manifest.plugins[filter.plugin.0];
        let plugin = plugins[filter.plugin.0].clone()?;
        let settings = FilterSettings {
            root_id: filter.root_id.as_str().into(),
            configuration: filter.config.clone(),
        };
        let mode = match config.on_error {
            OnError::FailClosed => FailMode::Closed,
            OnError::FailOpen => FailMode::Open,
        };
        let vms = config.vms.unwrap_or(vms_default);
        FilterInstance::new(plugin, settings, vms, services.clone())
            .map(|instance| Arc::new(ProxyWasmFilter::new(instance, mode)) as Arc<dyn HttpFilter>)
            .map_err(|source| {
                errors.push(BuildError::Start {
                    plugin: config.name.clone(),
                    location: filter.location,
                    source,
                })
            })
            .ok()
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
    Ok(routes
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
        .collect())
}

/// Reads (within [`MAX_PLUGIN_BYTES`]) and compiles one plugin.
fn load(plugin: &PluginConfig, runtime: &Arc<Runtime>) -> Result<Arc<Plugin>, BuildError> {
    let limits = PluginLimits {
        memory_bytes: usize::try_from(plugin.memory_bytes).unwrap_or(usize::MAX),
        callback_deadline: plugin.callback_deadline,
        quotas: plugin.quotas,
    };
    let bytes = crate::config::read_file(&plugin.file, MAX_PLUGIN_BYTES).map_err(|source| {
        BuildError::Read {
            plugin: plugin.name.clone(),
            location: plugin.location,
            path: plugin.file.clone(),
            source,
        }
    })?;
    runtime
        .load(&plugin.name, &bytes, limits, plugin.vm_config.clone())
        .map_err(|source| BuildError::Load {
            plugin: plugin.name.clone(),
            location: plugin.location,
            source,
        })
}
