//! One slot of a filter instance's VM pool: the VM that takes new streams, the
//! failed VMs still draining the streams bound to them, and what became of the
//! VMs that were dropped while streams were still bound to them.
//!
//! This is bookkeeping only: it never calls into a guest, and knows nothing of
//! tickers beyond aborting one when its VM goes.
//!
//! A VM's life: `current` (takes new streams) → on a failure, `draining` (no
//! new streams; those bound to it keep calling it) → dropped when its last
//! stream is released. A draining VM that fails again, or the oldest draining
//! VM when more than [`MAX_DRAINING`] are, is dropped at once; the streams still
//! bound to it are then answered with the reason kept in `lost`.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::stream::StreamData;
use super::vm::Vm;

/// How many failed VMs a slot keeps draining at once. When one more fails, the
/// oldest draining VM is dropped and its remaining streams fail. This bounds a
/// slot's memory at `1 + MAX_DRAINING` VMs.
pub(crate) const MAX_DRAINING: usize = 2;

/// The first retry delay after a VM failed to start; doubles up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest retry delay after start-up failures.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A VM of a slot with the streams bound to it.
pub(crate) struct Bound {
    pub(crate) vm: Vm,
    /// Names this VM among all VMs the slot ever had (streams and `Home`s remember it).
    pub(crate) generation: u64,
    /// Streams bound to this VM and not yet released.
    pub(crate) streams: usize,
    /// Why the VM failed; set once it drains.
    pub(crate) failure: Option<String>,
    pub(crate) ticker: Option<JoinHandle<()>>,
    /// The worker whose runtime runs `ticker` (`None`: the runtime that started it off a worker).
    pub(crate) ticker_worker: Option<usize>,
    pub(crate) tick_period: Option<Duration>,
}

impl Bound {
    /// A fresh VM with no stream bound and no ticker yet.
    pub(crate) fn new(vm: Vm, generation: u64) -> Self {
        Self {
            vm,
            generation,
            streams: 0,
            failure: None,
            ticker: None,
            ticker_worker: None,
            tick_period: None,
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
    }
}

/// A VM dropped while streams were bound to it: why, until they are all released.
struct Lost {
    generation: u64,
    streams: usize,
    reason: String,
}

/// What [`Slot::fail`] did with a failed VM, for the log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// No stream was bound to it: dropped.
    Dropped,
    /// It drains the `streams` bound to it; `evicted` streams of the oldest
    /// draining VM failed to keep the pool bounded.
    Draining {
        /// Streams still bound to the failed VM.
        streams: usize,
        /// Streams of the evicted draining VM (0 when none was evicted).
        evicted: usize,
    },
    /// It was already draining: dropped, and its `streams` now fail.
    DroppedWhileDraining {
        /// Streams that fail with it.
        streams: usize,
    },
    /// No VM of that generation (already gone).
    Unknown,
}

/// One slot of the pool.
pub(crate) struct Slot {
    /// The VM new streams are bound to.
    pub(crate) current: Option<Bound>,
    /// Failed VMs finishing the streams bound to them, oldest first.
    draining: Vec<Bound>,
    lost: Vec<Lost>,
    /// Paused streams whose VM was dropped, by (generation, context).
    orphans: Vec<((u64, u32), Box<StreamData>)>,
    next_generation: u64,
    pub(crate) backoff: Duration,
    pub(crate) retry_at: Option<Instant>,
    pub(crate) last_error: String,
    /// The current VM failed and none has taken its place yet.
    replacing: bool,
}

impl Slot {
    /// A slot holding `vm` (generation 0) as its current VM.
    pub(crate) fn new(vm: Option<Vm>) -> Self {
        Self {
            current: vm.map(|vm| Bound::new(vm, 0)),
            draining: Vec::new(),
            lost: Vec::new(),
            orphans: Vec::new(),
            replacing: false,
            next_generation: 1,
            backoff: FIRST_BACKOFF,
            retry_at: None,
            last_error: String::new(),
        }
    }

    /// A generation no VM of this slot has had.
    pub(crate) fn next_generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }

    /// The live VM (current or draining) of `generation`.
    pub(crate) fn vm(&mut self, generation: u64) -> Option<&mut Bound> {
        match self.current.as_mut() {
            Some(current) if current.generation == generation => Some(current),
            _ => self
                .draining
                .iter_mut()
                .find(|b| b.generation == generation),
        }
    }

    /// Why a stream of `generation` has no VM any more.
    pub(crate) fn lost_reason(&self, generation: u64) -> String {
        self.lost
            .iter()
            .find(|l| l.generation == generation)
            .map_or_else(|| "its VM is gone".to_owned(), |l| l.reason.clone())
    }

    /// Takes the data of a paused stream whose VM was dropped.
    pub(crate) fn take_orphan(&mut self, generation: u64, context: u32) -> Option<Box<StreamData>> {
        let key = (generation, context);
        let position = self.orphans.iter().position(|(k, _)| *k == key)?;
        Some(self.orphans.swap_remove(position).1)
    }

    /// Whether a VM started now takes the place of a failed one (asked
    /// once per start: the answer resets).
    pub(crate) fn replaces_a_failed_vm(&mut self) -> bool {
        std::mem::take(&mut self.replacing)
    }

    /// The VM of `generation` failed with `reason`. The current VM starts
    /// draining (the next binding starts a fresh one); a draining VM is dropped.
    pub(crate) fn fail(&mut self, generation: u64, reason: &str) -> Failed {
        if self
            .current
            .as_ref()
            .is_some_and(|b| b.generation == generation)
        {
            self.replacing = true;
            let Some(mut failed) = self.current.take() else {
                return Failed::Unknown;
            };
            if failed.streams == 0 {
                self.retire(failed, String::new());
                return Failed::Dropped;
            }
            failed.failure = Some(reason.to_owned());
            let streams = failed.streams;
            self.draining.push(failed);
            let mut evicted = 0;
            if self.draining.len() > MAX_DRAINING {
                let oldest = self.draining.remove(0);
                evicted = oldest.streams;
                let first = oldest.failure.clone().unwrap_or_default();
                self.retire(
                    oldest,
                    format!(
                        "its VM had failed ({first}) and was dropped while draining, \
                         to keep at most {MAX_DRAINING} failed VMs per slot"
                    ),
                );
            }
            return Failed::Draining { streams, evicted };
        }
        let Some(position) = self
            .draining
            .iter()
            .position(|b| b.generation == generation)
        else {
            return Failed::Unknown;
        };
        let failed = self.draining.remove(position);
        let streams = failed.streams;
        let first = failed.failure.clone().unwrap_or_default();
        self.retire(
            failed,
            format!(
                "its VM had failed in another stream ({first}) and then failed again \
                 while draining ({reason}), so it was dropped"
            ),
        );
        Failed::DroppedWhileDraining { streams }
    }

    /// A stream of `generation` with HTTP context `context` ended. Returns true
    /// when that was the last stream of a draining VM, which is then dropped.
    pub(crate) fn release(&mut self, generation: u64, context: u32) -> bool {
        let _ = self.take_orphan(generation, context);
        if let Some(bound) = self.vm(generation) {
            bound.streams = bound.streams.saturating_sub(1);
            bound.vm.forget(context);
            let drained = bound.failure.is_some() && bound.streams == 0;
            if drained {
                self.draining.retain(|b| b.generation != generation);
            }
            return drained;
        }
        if let Some(lost) = self.lost.iter_mut().find(|l| l.generation == generation) {
            lost.streams = lost.streams.saturating_sub(1);
        }
        self.lost.retain(|l| l.streams > 0);
        false
    }

    /// Drops `bound`: its paused streams become orphans and are woken, and the
    /// streams still bound to it will be told `reason`.
    fn retire(&mut self, mut bound: Bound, reason: String) {
        for (context, data) in bound.vm.drain_streams() {
            data.resume.wake();
            self.orphans.push(((bound.generation, context), data));
        }
        if bound.streams > 0 {
            self.lost.push(Lost {
                generation: bound.generation,
                streams: bound.streams,
                reason,
            });
        }
    }

    /// Every live VM of the slot: the current one, then those draining.
    pub(crate) fn live(&self) -> impl Iterator<Item = &Bound> {
        self.current.iter().chain(&self.draining)
    }

    /// Failed VMs still draining.
    #[cfg(test)]
    pub(crate) fn draining(&self) -> usize {
        self.draining.len()
    }

    /// Streams bound to dropped VMs and not yet released.
    #[cfg(test)]
    pub(crate) fn lost_streams(&self) -> usize {
        self.lost.iter().map(|l| l.streams).sum()
    }
}
