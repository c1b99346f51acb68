//! A filter instance (a plugin with one configuration) and its pool of VMs.
//!
//! A stream is bound to one VM of the pool for its life. Each callback locks
//! that VM only while it runs. A VM that traps or overruns its deadline is
//! discarded: the streams it held fail, and the next stream bound to the slot
//! gets a fresh VM (retried with backoff when start-up itself fails).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::plugin::Plugin;
use super::stream::StreamData;
use super::vm::{Callback, Delivery, Home, StartError, Vm, describe_error};
use crate::services::Services;

/// The first retry delay after a VM failed to start; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What happens to a request when its filter fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Answer 503 naming the plugin.
    Closed,
    /// Skip the filter for the rest of the request.
    Open,
}

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

/// One slot of the pool.
struct Slot {
    vm: Option<Vm>,
    /// Bumped each time the VM is discarded; a stream remembers the generation it was bound to.
    generation: u64,
    /// Streams whose VM was discarded while it held them, by (generation, context).
    orphans: Vec<((u64, u32), Box<StreamData>)>,
    backoff: Duration,
    retry_at: Option<Instant>,
    last_error: String,
    ticker: Option<tokio::task::JoinHandle<()>>,
    /// The worker whose runtime runs `ticker` (`None`: the runtime that started it off a worker).
    ticker_worker: Option<usize>,
    tick_period: Option<Duration>,
}

/// A plugin bound to one configuration, with its VMs.
pub struct FilterInstance {
    plugin: Arc<Plugin>,
    configuration: Bytes,
    services: Arc<Services>,
    fail_mode: FailMode,
    slots: Vec<Mutex<Slot>>,
    next: AtomicUsize,
}

impl FilterInstance {
    /// Starts `vms` VMs of `plugin` with `configuration` (JSON bytes). Fails when
    /// the first VM cannot start: the plugin or its configuration is rejected.
    pub fn new(
        plugin: Arc<Plugin>,
        configuration: Bytes,
        fail_mode: FailMode,
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
                match Vm::start(&plugin, configuration.clone(), services.clone(), home) {
                    Ok(vm) => slots.push(Mutex::new(Slot {
                        tick_period: None,
                        vm: Some(vm),
                        generation: 0,
                        orphans: Vec::new(),
                        backoff: FIRST_BACKOFF,
                        retry_at: None,
                        last_error: String::new(),
                        ticker: None,
                        ticker_worker: None,
                    })),
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            Self {
                plugin,
                configuration,
                services,
                fail_mode,
                slots,
                next: AtomicUsize::new(0),
            }
        });
        if let Some(error) = failure {
            return Err(error);
        }
        for index in 0..instance.slots.len() {
            if let Some(mut slot) = instance.lock(index) {
                instance.sync_ticker(index, &mut slot);
            }
        }
        Ok(instance)
    }

    /// The plugin's name.
    pub fn plugin_name(&self) -> &str {
        &self.plugin.name
    }

    /// What a failure of this filter does to the request.
    pub fn fail_mode(&self) -> FailMode {
        self.fail_mode
    }

    fn home(self: &Arc<Self>, slot: usize, generation: u64) -> Home {
        Home {
            instance: Arc::downgrade(self),
            slot,
            generation,
        }
    }

    /// Runs a root callback for something that arrived for slot `index`'s VM.
    pub(crate) fn deliver(self: &Arc<Self>, index: usize, generation: u64, event: Delivery) {
        let Some(mut slot) = self.lock(index) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        let Some(vm) = slot.vm.as_mut() else {
            return;
        };
        match vm.deliver(event) {
            Ok(()) => self.sync_ticker(index, &mut slot),
            Err(error) => {
                let reason = describe_error(&error);
                self.discard(index, &mut slot, &reason);
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
            let Some(vm) = slot.vm.as_mut() else {
                continue;
            };
            let (back, created) = vm.create_context(data);
            data = back;
            match created {
                Ok(context) => {
                    let stream = FilterStream {
                        instance: self.clone(),
                        slot: index,
                        generation: slot.generation,
                        context,
                    };
                    return (data, Ok(stream));
                }
                Err(error) => {
                    let reason = describe_error(&error);
                    self.discard(index, &mut slot, &reason);
                    return (data, Err(self.failed(reason)));
                }
            }
        }
        let error = FilterError::Unavailable {
            plugin: self.plugin.name.clone(),
            reason: last,
        };
        (data, Err(error))
    }

    /// Makes sure the slot has a VM, starting a fresh one unless backing off.
    fn ensure_vm(self: &Arc<Self>, index: usize, slot: &mut Slot) -> Result<(), String> {
        if slot.vm.is_some() {
            return Ok(());
        }
        if slot.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(slot.last_error.clone());
        }
        let home = self.home(index, slot.generation);
        match Vm::start(
            &self.plugin,
            self.configuration.clone(),
            self.services.clone(),
            home,
        ) {
            Ok(vm) => {
                tracing::info!(plugin = %self.plugin.name, slot = index, "started a fresh VM");
                slot.tick_period = vm.tick_period();
                slot.vm = Some(vm);
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

    /// Drops the slot's VM after a failure; streams it held become orphans and are woken.
    fn discard(&self, index: usize, slot: &mut Slot, reason: &str) {
        tracing::error!(plugin = %self.plugin.name, slot = index, reason, "VM failed; replacing it");
        if let Some(mut vm) = slot.vm.take() {
            for (id, data) in vm.drain_streams() {
                data.resume.wake();
                slot.orphans.push(((slot.generation, id), data));
            }
        }
        slot.generation += 1;
        slot.tick_period = None;
        if let Some(ticker) = slot.ticker.take() {
            ticker.abort();
        }
    }

    /// Starts, restarts or stops the slot's tick task to match the VM's period.
    /// Ticks run on the worker that owns the slot; a ticker started off a
    /// worker (the VM's first `on_configure`) moves there the first time that
    /// worker runs the VM.
    fn sync_ticker(self: &Arc<Self>, index: usize, slot: &mut Slot) {
        let wanted = slot.vm.as_ref().and_then(Vm::tick_period);
        let running = slot.ticker.as_ref().is_some_and(|t| !t.is_finished());
        let owner = crate::worker::owner(index);
        let misplaced = running && owner.is_some() && slot.ticker_worker != owner;
        if wanted == slot.tick_period && running == wanted.is_some() && !misplaced {
            return;
        }
        if let Some(ticker) = slot.ticker.take() {
            ticker.abort();
        }
        slot.tick_period = wanted;
        let (Some(period), Some(runtime)) = (wanted, crate::worker::runtime_for(index)) else {
            return;
        };
        slot.ticker_worker = owner;
        let instance = Arc::downgrade(self);
        let generation = slot.generation;
        slot.ticker = Some(runtime.spawn(async move {
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

    /// Runs `proxy_on_tick` on one slot's VM; false when the ticker should stop.
    fn tick(self: &Arc<Self>, index: usize, generation: u64) -> bool {
        let Some(mut slot) = self.lock(index) else {
            return false;
        };
        if slot.generation != generation {
            return false;
        }
        let Some(vm) = slot.vm.as_mut() else {
            return false;
        };
        if let Err(error) = vm.tick() {
            let reason = describe_error(&error);
            self.discard(index, &mut slot, &reason);
            return false;
        }
        if slot.vm.as_ref().and_then(Vm::tick_period) != slot.tick_period {
            // Re-arm with the new period (this task ends; the new one takes over).
            slot.ticker = None;
            self.sync_ticker(index, &mut slot);
            return false;
        }
        true
    }
}

/// A stream's binding to one VM of a filter instance.
pub struct FilterStream {
    instance: Arc<FilterInstance>,
    slot: usize,
    generation: u64,
    context: u32,
}

impl FilterStream {
    /// The filter instance.
    pub fn instance(&self) -> &Arc<FilterInstance> {
        &self.instance
    }

    /// Runs a callback with `data` lent to the VM; returns the data and the raw action.
    pub fn call(
        &self,
        data: Box<StreamData>,
        callback: Callback,
    ) -> (Box<StreamData>, Result<i32, FilterError>) {
        let Some(mut slot) = self.instance.lock(self.slot) else {
            return (data, Err(self.instance.failed("no such VM slot".into())));
        };
        if slot.generation != self.generation {
            return (
                data,
                Err(self.instance.failed("its VM was replaced".into())),
            );
        }
        let Some(vm) = slot.vm.as_mut() else {
            return (
                data,
                Err(self.instance.failed("its VM was replaced".into())),
            );
        };
        let (data, result) = vm.callback(self.context, data, callback);
        match result {
            Ok(action) => {
                self.instance.sync_ticker(self.slot, &mut slot);
                (data, Ok(action))
            }
            Err(error) => {
                let reason = describe_error(&error);
                self.instance.discard(self.slot, &mut slot, &reason);
                (data, Err(self.instance.failed(reason)))
            }
        }
    }

    /// Leaves `data` with the VM while the filter holds the stream paused.
    pub fn park(&self, data: Box<StreamData>) -> Result<(), (Box<StreamData>, FilterError)> {
        let Some(mut slot) = self.instance.lock(self.slot) else {
            return Err((data, self.instance.failed("no such VM slot".into())));
        };
        let current = slot.generation == self.generation;
        match slot.vm.as_mut() {
            Some(vm) if current => {
                vm.park(self.context, data);
                Ok(())
            }
            _ => Err((data, self.instance.failed("its VM was replaced".into()))),
        }
    }

    /// Takes the data back after a pause. `Err` carries the data when the VM
    /// was discarded meanwhile (the filter's context is gone).
    pub fn unpark(&self) -> Result<Box<StreamData>, Option<(Box<StreamData>, FilterError)>> {
        let Some(mut slot) = self.instance.lock(self.slot) else {
            return Err(None);
        };
        if slot.generation == self.generation
            && let Some(data) = slot.vm.as_mut().and_then(|vm| vm.unpark(self.context))
        {
            return Ok(data);
        }
        let key = (self.generation, self.context);
        let position = slot.orphans.iter().position(|(k, _)| *k == key);
        let error = self
            .instance
            .failed("its VM was replaced while the stream was paused".into());
        Err(position.map(|i| (slot.orphans.swap_remove(i).1, error)))
    }
}
