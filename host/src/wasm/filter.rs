//! A filter instance (a plugin with one configuration) and its pool of VMs.
//!
//! A stream is bound to one VM of the pool for its life. Each callback locks
//! that VM's slot only while it runs. A VM that traps or overruns its deadline
//! stops taking new streams: the next stream bound to the slot gets a fresh VM
//! (retried with backoff when start-up itself fails), while the streams already
//! bound to the failed VM finish on it (`slot` keeps it draining). Only the
//! stream whose callback failed fails.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;

use super::plugin::Plugin;
use super::slot::{Bound, FIRST_BACKOFF, Failed, MAX_BACKOFF, Slot};
use super::stream::StreamData;
use super::vm::{Callback, Delivery, GuestFailure, Home, StartError, Vm};
use crate::services::Services;

/// Why a filter could not serve a stream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FilterError {
    /// The guest trapped, ran out of memory or overran its CPU deadline.
    #[error("plugin `{plugin}` failed: {reason}")]
    Failed {
        /// Plugin name.
        plugin: String,
        /// What happened.
        reason: String,
    },
    /// No VM is available (start-up keeps failing).
    #[error("plugin `{plugin}` is unavailable: {reason}")]
    Unavailable {
        /// Plugin name.
        plugin: String,
        /// The last start-up error.
        reason: String,
    },
}

/// What one filter (one use of a plugin) hands each of its VMs.
#[derive(Debug, Clone)]
pub struct FilterSettings {
    /// The root context its VMs create, as the `plugin_root_id` property
    /// returns it; the C++ and AssemblyScript SDKs build the root context
    /// registered under this id.
    pub root_id: Arc<str>,
    /// The plugin configuration, read in `proxy_on_configure` (buffer 7).
    pub configuration: Bytes,
}

/// What a filter instance's VMs hold now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmUsage {
    /// Live VMs (the current one of each slot, and failed ones draining).
    pub vms: usize,
    /// The size of their linear memories together, in bytes.
    pub memory_bytes: u64,
}

/// A plugin bound to one configuration, with its VMs.
pub struct FilterInstance {
    plugin: Arc<Plugin>,
    settings: FilterSettings,
    services: Arc<Services>,
    slots: Vec<Mutex<Slot>>,
    next: AtomicUsize,
}

impl FilterInstance {
    /// Starts `vms` VMs of `plugin` with `settings`. Fails when the first VM
    /// cannot start: the plugin or its configuration is rejected.
    pub fn new(
        plugin: Arc<Plugin>,
        settings: FilterSettings,
        vms: usize,
        services: Arc<Services>,
    ) -> Result<Arc<Self>, StartError> {
        let mut failure = None;
        let instance = Arc::new_cyclic(|weak: &std::sync::Weak<Self>| {
            let mut slots = Vec::with_capacity(vms.max(1));
            for slot in 0..vms.max(1) {
                let home = Home {
                    instance: weak.clone(),
                    slot,
                    generation: 0,
                };
                match Vm::start(&plugin, &settings, services.clone(), home) {
                    Ok(vm) => slots.push(Mutex::new(Slot::new(Some(vm)))),
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            Self {
                plugin,
                settings,
                services,
                slots,
                next: AtomicUsize::new(0),
            }
        });
        if let Some(error) = failure {
            return Err(error);
        }
        for index in 0..instance.slots.len() {
            if let Some(mut slot) = instance.lock(index)
                && let Some(bound) = slot.current.as_mut()
            {
                instance.sync_ticker(index, bound);
            }
        }
        Ok(instance)
    }

    /// The plugin's name.
    pub fn plugin_name(&self) -> &str {
        &self.plugin.name
    }

    /// Its live VMs and their linear memory now. Takes each slot's lock
    /// briefly, as a callback does: for the admin API, not the request path.
    pub fn usage(&self) -> VmUsage {
        let mut usage = VmUsage::default();
        for index in 0..self.slots.len() {
            if let Some(slot) = self.lock(index) {
                for bound in slot.live() {
                    usage.vms += 1;
                    usage.memory_bytes += bound.vm.memory_bytes() as u64;
                }
            }
        }
        usage
    }

    /// Runs a root callback for something that arrived for a VM of slot
    /// `index`. A draining VM still gets its answers (a stream paused on it may
    /// be waiting for one); for a dropped VM the answer is dropped.
    pub(crate) fn deliver(self: &Arc<Self>, index: usize, generation: u64, event: Delivery) {
        let Some(mut slot) = self.lock(index) else {
            return;
        };
        let Some(bound) = slot.vm(generation) else {
            return;
        };
        match bound.vm.deliver(event) {
            Ok(()) => self.sync_ticker(index, bound),
            Err(error) => {
                let failure = bound.vm.failure(&error);
                self.fail_vm(index, &mut slot, generation, &failure);
            }
        }
    }

    fn lock(&self, index: usize) -> Option<MutexGuard<'_, Slot>> {
        // A poisoned slot only means a panic while locked; its data is still consistent.
        self.slots
            .get(index)
            .map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn failed(&self, reason: String) -> FilterError {
        FilterError::Failed {
            plugin: self.plugin.name.clone(),
            reason,
        }
    }

    /// Binds a new stream to a VM and creates its HTTP context: on a worker,
    /// the worker's own slot (`worker % slots`), other slots only while its VM
    /// is unavailable; off a worker, round-robin.
    pub fn bind(
        self: &Arc<Self>,
        data: Box<StreamData>,
    ) -> (Box<StreamData>, Result<FilterStream, FilterError>) {
        let start =
            crate::worker::current().unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed));
        let mut last = String::new();
        let mut data = data;
        for k in 0..self.slots.len() {
            let index = (start + k) % self.slots.len();
            let Some(mut slot) = self.lock(index) else {
                continue;
            };
            if let Err(reason) = self.ensure_vm(index, &mut slot) {
                last = reason;
                continue;
            }
            let Some(bound) = slot.current.as_mut() else {
                continue;
            };
            let generation = bound.generation;
            let (back, created) = bound.vm.create_context(data);
            data = back;
            match created {
                Ok(context) => {
                    bound.streams += 1;
                    let stream = FilterStream {
                        instance: self.clone(),
                        slot: index,
                        generation,
                        context,
                        failed: AtomicBool::new(false),
                    };
                    return (data, Ok(stream));
                }
                Err(error) => {
                    let failure = bound.vm.failure(&error);
                    self.fail_vm(index, &mut slot, generation, &failure);
                    return (data, Err(self.failed(failure.reason)));
                }
            }
        }
        let error = FilterError::Unavailable {
            plugin: self.plugin.name.clone(),
            reason: last,
        };
        (data, Err(error))
    }

    /// Makes sure the slot has a VM for new streams, starting a fresh one unless backing off.
    fn ensure_vm(self: &Arc<Self>, index: usize, slot: &mut Slot) -> Result<(), String> {
        if slot.current.is_some() {
            return Ok(());
        }
        if slot.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(slot.last_error.clone());
        }
        let generation = slot.next_generation();
        let home = Home {
            instance: Arc::downgrade(self),
            slot: index,
            generation,
        };
        match Vm::start(&self.plugin, &self.settings, self.services.clone(), home) {
            Ok(vm) => {
                tracing::info!(plugin = %self.plugin.name, slot = index, "started a fresh VM");
                if slot.replaces_a_failed_vm() {
                    self.services.plugin_health.restarted(&self.plugin.name);
                }
                let mut bound = Bound::new(vm, generation);
                self.sync_ticker(index, &mut bound);
                slot.current = Some(bound);
                slot.backoff = FIRST_BACKOFF;
                slot.retry_at = None;
                Ok(())
            }
            Err(error) => {
                slot.last_error = error.to_string();
                slot.retry_at = Some(Instant::now() + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
                tracing::error!(plugin = %self.plugin.name, %error, "cannot start a VM; backing off");
                Err(slot.last_error.clone())
            }
        }
    }

    /// The VM `generation` of slot `index` failed: it stops taking streams, and
    /// drains the ones bound to it, or is dropped if it was draining already.
    fn fail_vm(&self, index: usize, slot: &mut Slot, generation: u64, failure: &GuestFailure) {
        let plugin = &self.plugin.name;
        let reason = failure.reason.as_str();
        self.services.plugin_health.failed(plugin, failure.kind);
        match slot.fail(generation, reason) {
            Failed::Dropped => {
                tracing::error!(
                    plugin,
                    slot = index,
                    reason,
                    "VM failed; new streams get a fresh VM"
                );
            }
            Failed::Draining { streams, evicted } => {
                tracing::error!(
                    plugin,
                    slot = index,
                    reason,
                    streams,
                    "VM failed; new streams get a fresh VM, the streams bound to it finish on it"
                );
                if evicted > 0 {
                    tracing::error!(
                        plugin,
                        slot = index,
                        streams = evicted,
                        "too many failed VMs draining: dropped the oldest, its streams fail"
                    );
                }
            }
            Failed::DroppedWhileDraining { streams } => {
                tracing::error!(
                    plugin,
                    slot = index,
                    reason,
                    streams,
                    "a draining VM failed again: dropped, its streams fail"
                );
            }
            Failed::Unknown => {}
        }
    }

    /// Starts, restarts or stops a VM's tick task to match the period it asked for.
    /// Ticks run on the worker that owns the slot; a ticker started off a
    /// worker (the VM's first `on_configure`) moves there the first time that
    /// worker runs the VM.
    fn sync_ticker(self: &Arc<Self>, index: usize, bound: &mut Bound) {
        let wanted = bound.vm.tick_period();
        let running = bound.ticker.as_ref().is_some_and(|t| !t.is_finished());
        let owner = crate::worker::owner(index);
        let misplaced = running && owner.is_some() && bound.ticker_worker != owner;
        if wanted == bound.tick_period && running == wanted.is_some() && !misplaced {
            return;
        }
        if let Some(ticker) = bound.ticker.take() {
            ticker.abort();
        }
        bound.tick_period = wanted;
        let (Some(period), Some(runtime)) = (wanted, crate::worker::runtime_for(index)) else {
            return;
        };
        bound.ticker_worker = owner;
        let instance = Arc::downgrade(self);
        let generation = bound.generation;
        bound.ticker = Some(runtime.spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                let Some(instance) = instance.upgrade() else {
                    return;
                };
                if !instance.tick(index, generation) {
                    return;
                }
            }
        }));
    }

    /// Runs `proxy_on_tick` on one VM (current or draining); false when the ticker should stop.
    fn tick(self: &Arc<Self>, index: usize, generation: u64) -> bool {
        let Some(mut slot) = self.lock(index) else {
            return false;
        };
        let Some(bound) = slot.vm(generation) else {
            return false;
        };
        if let Err(error) = bound.vm.tick() {
            let failure = bound.vm.failure(&error);
            self.fail_vm(index, &mut slot, generation, &failure);
            return false;
        }
        if bound.vm.tick_period() != bound.tick_period {
            // Re-arm with the new period (this task ends; the new one takes over).
            bound.ticker = None;
            self.sync_ticker(index, bound);
            return false;
        }
        true
    }
}

/// A stream's binding to one VM of a filter instance. Dropping it releases the
/// binding (a failed VM is dropped when its last binding is).
pub struct FilterStream {
    instance: Arc<FilterInstance>,
    slot: usize,
    generation: u64,
    context: u32,
    /// Set when one of this stream's own callbacks failed: it is not called again.
    failed: AtomicBool,
}

impl FilterStream {
    /// The filter instance.
    pub fn instance(&self) -> &Arc<FilterInstance> {
        &self.instance
    }

    /// Runs a callback with `data` lent to the VM; returns the data (always
    /// `Some`: nothing parks it) and the raw action. The VM may be draining (it
    /// failed in another stream): the stream still finishes on it. It fails
    /// when this stream's own callback failed, or when its VM was dropped.
    pub fn call(
        &self,
        data: Box<StreamData>,
        callback: Callback,
    ) -> (Option<Box<StreamData>>, Result<i32, FilterError>) {
        self.call_then_park_if(data, callback, |_, _| false)
    }

    /// [`FilterStream::call`], then, still holding the VM, parks the data in
    /// it when `park_if(action, data)` says so (a headers callback that
    /// paused). Holding the VM throughout matters: a callout answer for this
    /// stream, delivered from another worker, must find the data parked, or
    /// the filter's answer to it (resume, a local reply) would be lost.
    /// Returns `None` for the data when it was parked.
    pub fn call_then_park_if(
        &self,
        data: Box<StreamData>,
        callback: Callback,
        park_if: impl FnOnce(i32, &StreamData) -> bool,
    ) -> (Option<Box<StreamData>>, Result<i32, FilterError>) {
        if self.failed.load(Ordering::Relaxed) {
            let reason = "an earlier callback of this stream failed".to_owned();
            return (Some(data), Err(self.instance.failed(reason)));
        }
        let Some(mut slot) = self.instance.lock(self.slot) else {
            return (
                Some(data),
                Err(self.instance.failed("no such VM slot".into())),
            );
        };
        let Some(bound) = slot.vm(self.generation) else {
            let reason = slot.lost_reason(self.generation);
            return (Some(data), Err(self.instance.failed(reason)));
        };
        let (data, result) = bound.vm.callback(self.context, data, callback);
        match result {
            Ok(action) => {
                self.instance.sync_ticker(self.slot, bound);
                if park_if(action, &data) {
                    bound.vm.park(self.context, data);
                    return (None, Ok(action));
                }
                (Some(data), Ok(action))
            }
            Err(error) => {
                self.failed.store(true, Ordering::Relaxed);
                let failure = bound.vm.failure(&error);
                self.instance
                    .fail_vm(self.slot, &mut slot, self.generation, &failure);
                (Some(data), Err(self.instance.failed(failure.reason)))
            }
        }
    }

    /// Takes the data back after a pause. `Err` carries the data when the VM
    /// was dropped meanwhile (the filter's context is gone).
    pub fn unpark(&self) -> Result<Box<StreamData>, Option<(Box<StreamData>, FilterError)>> {
        let Some(mut slot) = self.instance.lock(self.slot) else {
            return Err(None);
        };
        if let Some(data) = slot
            .vm(self.generation)
            .and_then(|bound| bound.vm.unpark(self.context))
        {
            return Ok(data);
        }
        let error = self.instance.failed(format!(
            "{} while the stream was paused",
            slot.lost_reason(self.generation)
        ));
        Err(slot
            .take_orphan(self.generation, self.context)
            .map(|data| (data, error)))
    }
}

impl Drop for FilterStream {
    fn drop(&mut self) {
        let Some(mut slot) = self.instance.lock(self.slot) else {
            return;
        };
        if slot.release(self.generation, self.context) {
            tracing::info!(
                plugin = %self.instance.plugin.name,
                slot = self.slot,
                "a failed VM finished its last stream and was dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::wasm::plugin::{PluginLimits, Runtime};
    use crate::wasm::slot::MAX_DRAINING;
    use crate::wasm::stream::{RequestHead, StreamInfo};

    /// A filter whose `on_log` always traps; its other callbacks are the defaults.
    const TRAPS_ON_LOG: &str = r#"(module (memory (export "memory") 1)
        (func (export "proxy_abi_version_0_2_1"))
        (func (export "proxy_on_log") (param i32) unreachable))"#;

    fn instance() -> Arc<FilterInstance> {
        let runtime = Runtime::shared(None).expect("runtime");
        let limits = PluginLimits {
            memory_bytes: 1 << 20,
            callback_deadline: Duration::from_secs(1),
            quotas: crate::services::quota::Quotas::default(),
        };
        let plugin = runtime
            .load(
                "traps",
                "traps",
                TRAPS_ON_LOG.as_bytes(),
                limits,
                Bytes::new(),
            )
            .expect("plugin loads");
        let settings = FilterSettings {
            root_id: "traps".into(),
            configuration: Bytes::new(),
        };
        FilterInstance::new(plugin, settings, 1, Services::standalone()).expect("instance starts")
    }

    fn data() -> Box<StreamData> {
        Box::new(StreamData::new(
            StreamInfo::for_tests(),
            RequestHead::default(),
        ))
    }

    fn bind(instance: &Arc<FilterInstance>) -> FilterStream {
        instance.bind(data()).1.expect("binds")
    }

    fn call(stream: &FilterStream, callback: Callback) -> Result<i32, String> {
        stream.call(data(), callback).1.map_err(|e| e.to_string())
    }

    const HEADERS: Callback = Callback::RequestHeaders {
        headers: 0,
        end_of_stream: true,
    };

    fn draining(instance: &FilterInstance) -> usize {
        instance.lock(0).map_or(usize::MAX, |slot| slot.draining())
    }

    #[test]
    fn a_failed_vm_serves_its_streams_until_the_last_is_released() {
        let instance = instance();
        let (failing, innocent) = (bind(&instance), bind(&instance));
        assert!(call(&failing, Callback::Log).is_err());
        assert!(
            call(&failing, HEADERS).is_err(),
            "the failed stream is not called again"
        );
        assert_eq!(draining(&instance), 1);
        let fresh = bind(&instance);
        assert_ne!(
            fresh.generation, innocent.generation,
            "new streams get a fresh VM"
        );
        assert_eq!(
            call(&innocent, HEADERS),
            Ok(0),
            "the innocent stream goes on"
        );
        drop(failing);
        assert_eq!(draining(&instance), 1, "a stream is still bound to it");
        drop(innocent);
        assert_eq!(draining(&instance), 0, "dropped with its last stream");
        assert_eq!(call(&fresh, HEADERS), Ok(0));
    }

    #[test]
    fn at_most_two_failed_vms_drain_and_the_oldest_goes_first() {
        let instance = instance();
        let mut survivors = Vec::new();
        for _ in 0..=MAX_DRAINING {
            let (failing, innocent) = (bind(&instance), bind(&instance));
            assert!(call(&failing, Callback::Log).is_err());
            survivors.push(innocent);
        }
        assert_eq!(draining(&instance), MAX_DRAINING);
        let reason = call(&survivors[0], HEADERS).expect_err("its VM was evicted");
        assert!(
            reason.contains("to keep at most 2 failed VMs per slot"),
            "{reason}"
        );
        for survivor in &survivors[1..] {
            assert_eq!(call(survivor, HEADERS), Ok(0));
        }
        drop(survivors);
        assert_eq!(draining(&instance), 0);
    }

    #[test]
    fn a_draining_vm_that_fails_again_takes_its_streams_with_it() {
        let instance = instance();
        let (first, second, innocent) = (bind(&instance), bind(&instance), bind(&instance));
        assert!(call(&first, Callback::Log).is_err());
        assert!(call(&second, Callback::Log).is_err());
        assert_eq!(draining(&instance), 0, "dropped at its second failure");
        let reason = call(&innocent, HEADERS).expect_err("its VM is gone");
        assert!(reason.contains("failed again while draining"), "{reason}");
        let lost = instance.lock(0).map_or(0, |slot| slot.lost_streams());
        assert_eq!(lost, 3, "the reason is kept while streams of the VM remain");
        drop((first, second, innocent));
        let lost = instance
            .lock(0)
            .map_or(usize::MAX, |slot| slot.lost_streams());
        assert_eq!(lost, 0, "and forgotten after");
    }
}
