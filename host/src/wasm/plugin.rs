//! The Wasm engine and compiled plugins.
//!
//! One [`Runtime`] per process: one wasmtime `Engine` (epoch interruption on,
//! compiled code cached on disk by wasmtime keyed on the module's content), one
//! `Linker` with every host function, and an epoch ticker thread. A [`Plugin`]
//! is a module compiled once and pre-linked (`InstancePre`), so a VM is a cheap
//! instantiation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, InstancePre, Linker, Module};

use super::trace::Trace;
use super::vm::VmState;
use crate::services::quota::{LogBucket, Quotas, Warnings};

/// How often the epoch advances; CPU deadlines are whole multiples of it.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The ABI versions Weir serves, by their marker export. `0_2_100` is
/// Higress's: ABI 0.2.1 plus Higress's extensions (Redis, upstream hosts,
/// injected data), exported by every module its Go SDK builds with Go 1.24
/// (and by TinyGo builds with the `proxy_wasm_version_0_2_100` tag).
const ABI_MARKERS: [&str; 3] = [
    "proxy_abi_version_0_2_1",
    "proxy_abi_version_0_2_0",
    "proxy_abi_version_0_2_100",
];

/// Sandbox limits of one plugin's VMs.
#[derive(Debug, Clone, Copy)]
pub struct PluginLimits {
    /// Linear memory cap per VM.
    pub memory_bytes: usize,
    /// CPU time one callback may use.
    pub callback_deadline: Duration,
    /// What the plugin may hold in the shared services, and how fast it may log.
    pub quotas: Quotas,
}

impl PluginLimits {
    /// The deadline in epoch ticks (at least one).
    pub fn deadline_ticks(&self) -> u64 {
        let ticks = self.callback_deadline.as_micros() / EPOCH_TICK.as_micros().max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1) + 1
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a valid Wasm module.
    #[error("not a valid Wasm module: {0}")]
    Compile(String),
    /// No Proxy-Wasm ABI version marker (or an unsupported one).
    #[error("exports no supported Proxy-Wasm ABI version (one of {})", ABI_MARKERS.join(", "))]
    NoAbiVersion,
    /// It imports something Weir does not provide.
    #[error("imports `{module}.{name}`, which Weir does not provide")]
    UnknownImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// Linking failed for another reason (e.g. an import with the wrong signature).
    #[error("cannot be linked: {0}")]
    Link(String),
    /// The engine could not be configured.
    #[error("cannot configure the Wasm engine: {0}")]
    Engine(String),
}

/// The process-wide Wasm runtime.
pub struct Runtime {
    engine: Engine,
    linker: Linker<VmState>,
    provided: std::collections::HashSet<(&'static str, &'static str)>,
    modules: Mutex<HashMap<[u8; 32], Module>>,
    /// Epoch ticks so far (the engine's epoch, readable by host calls).
    ticks: AtomicU64,
}

impl Runtime {
    /// Builds the engine, the linker and the epoch ticker. `cache_dir`
    /// enables wasmtime's on-disk cache of compiled code.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.max_wasm_stack(512 * 1024);
        if let Some(dir) = cache_dir {
            let mut cache_config = wasmtime::CacheConfig::new();
            cache_config.with_directory(dir);
            let cache =
                wasmtime::Cache::new(cache_config).map_err(|e| LoadError::Engine(e.to_string()))?;
            config.cache(Some(cache));
        }
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        let provided =
            super::abi::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;
        let runtime = Arc::new(Self {
            engine,
            linker,
            provided,
            modules: Mutex::new(HashMap::new()),
            ticks: AtomicU64::new(0),
        });
        spawn_epoch_ticker(Arc::downgrade(&runtime));
        Ok(runtime)
    }

    /// The process-wide runtime, created on first use (with the first caller's
    /// `cache_dir`): one engine per process, so a module compiled once serves
    /// every gateway and reload in the process.
    pub fn shared(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, LoadError> {
        static SHARED: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(runtime) = shared.as_ref() {
            return Ok(runtime.clone());
        }
        let runtime = Self::new(cache_dir)?;
        *shared = Some(runtime.clone());
        Ok(runtime)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or reuses) `bytes` and checks it is a Proxy-Wasm module Weir
    /// can link. Its VMs get `vm_configuration` (see [`Plugin::vm_configuration`]).
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        vm_id: &str,
        bytes: &[u8],
        limits: PluginLimits,
        vm_configuration: Bytes,
    ) -> Result<Arc<Plugin>, LoadError> {
        self.load_with(name, vm_id, bytes, limits, vm_configuration, None)
    }

    /// [`Runtime::load`] for `weir plugin test`: the plugin's VMs record
    /// every host call they make, their log lines and their failures in
    /// `trace`. Its imports are linked to recording wrappers around the same
    /// host functions (`trace::linker`); plugins loaded with
    /// [`Runtime::load`] are not, and pay nothing for it.
    pub fn load_traced(
        self: &Arc<Self>,
        name: &str,
        bytes: &[u8],
        limits: PluginLimits,
        trace: Arc<Trace>,
    ) -> Result<Arc<Plugin>, LoadError> {
        self.load_with(name, name, bytes, limits, Bytes::new(), Some(trace))
    }

    fn load_with(
        self: &Arc<Self>,
        name: &str,
        vm_id: &str,
        bytes: &[u8],
        limits: PluginLimits,
        vm_configuration: Bytes,
        trace: Option<Arc<Trace>>,
    ) -> Result<Arc<Plugin>, LoadError> {
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        let cached = self.modules.lock().ok().and_then(|m| m.get(&hash).cloned());
        let module = match cached {
            Some(module) => module,
            None => {
                let module = Module::new(&self.engine, bytes)
                    .map_err(|e| LoadError::Compile(super::vm::describe_error(&e)))?;
                if let Ok(mut modules) = self.modules.lock() {
                    modules.insert(hash, module.clone());
                }
                module
            }
        };
        if !module
            .exports()
            .any(|e| ABI_MARKERS.contains(&e.name()) && e.ty().func().is_some())
        {
            return Err(LoadError::NoAbiVersion);
        }
        for import in module.imports() {
            if !self.provided.contains(&(import.module(), import.name())) {
                return Err(LoadError::UnknownImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                });
            }
        }
        let pre = match &trace {
            None => self.linker.instantiate_pre(&module),
            Some(_) => super::trace::linker(&self.engine, &self.linker, &module)
                .and_then(|linker| linker.instantiate_pre(&module)),
        }
        .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        Ok(Arc::new(Plugin {
            name: name.to_owned(),
            vm_id: vm_id.to_owned(),
            vm_configuration,
            log_bucket: LogBucket::new(limits.quotas.log_bytes_per_second),
            warnings: Warnings::default(),
            limits,
            pre,
            runtime: self.clone(),
            trace,
        }))
    }
}

/// Advances the epoch once per [`EPOCH_TICK`] of wall-clock time while the
/// runtime lives. It counts elapsed time rather than its own wake-ups, so a
/// ticker that sleeps late (a busy machine) catches up instead of stretching
/// every deadline.
fn spawn_epoch_ticker(runtime: Weak<Runtime>) {
    let spawned = std::thread::Builder::new()
        .name("weir-epoch".into())
        .spawn(move || {
            let start = Instant::now();
            while let Some(runtime) = runtime.upgrade() {
                let due = start.elapsed().as_micros() / EPOCH_TICK.as_micros().max(1);
                let due = u64::try_from(due).unwrap_or(u64::MAX);
                let mut done = runtime.ticks.load(Ordering::Relaxed);
                while done < due {
                    runtime.engine.increment_epoch();
                    done += 1;
                }
                runtime.ticks.store(done, Ordering::Release);
                drop(runtime);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the epoch ticker; CPU deadlines will not fire");
    }
}

/// A compiled, pre-linked plugin.
pub struct Plugin {
    /// Its name in the manifest.
    pub name: String,
    /// Its VM id: the namespace of its shared data and queues, shared with
    /// every plugin of the same VM id (`plugin_vm_id`).
    pub vm_id: String,
    /// Sandbox limits of its VMs.
    pub limits: PluginLimits,
    /// The VM configuration (the manifest's `vm_config`, as bytes): its size
    /// goes to `proxy_on_vm_start`, and buffer 6 (`VmConfiguration`) reads it
    /// at any time, as in Envoy.
    pub vm_configuration: Bytes,
    /// Its log budget, shared by all its VMs.
    pub(crate) log_bucket: LogBucket,
    /// When each of its quotas was last warned about.
    pub(crate) warnings: Warnings,
    pre: InstancePre<VmState>,
    runtime: Arc<Runtime>,
    /// Where its VMs record what they do (`weir plugin test` only).
    pub(crate) trace: Option<Arc<Trace>>,
}

impl Plugin {
    /// The engine it was compiled for.
    pub fn engine(&self) -> &Engine {
        &self.runtime.engine
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<VmState> {
        &self.pre
    }

    /// The engine's epoch now, in [`EPOCH_TICK`]s (what epoch deadlines count).
    pub(crate) fn epoch(&self) -> u64 {
        self.runtime.ticks.load(Ordering::Acquire)
    }
}
