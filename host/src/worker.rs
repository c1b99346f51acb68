//! Which worker the current thread is.
//!
//! A gateway runs N workers (thread-per-core), each a thread with a
//! current-thread tokio runtime. A worker marks its thread when it starts, so
//! lower layers can keep per-worker state without locks shared between
//! workers: a filter binds a request to the worker's own VM, the upstream pool
//! keeps each worker's idle connections apart, and work that answers a VM
//! (ticks, callout and queue deliveries) is sent to the runtime of the worker
//! that owns it. Off a worker (`weir validate`, unit tests, the gateway's
//! control thread) [`current`] is `None` and callers fall back to shared state.
//!
//! Knows tokio only.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use tokio::runtime::Handle;

thread_local! {
    /// This thread's worker index (read on the request path, so a plain `Cell`).
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
    /// The runtimes of this worker's siblings (and its own), by index.
    static SIBLINGS: RefCell<Option<Arc<[Handle]>>> = const { RefCell::new(None) };
}

/// The default number of workers: one per core the process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Marks the current thread as worker `index` of a gateway whose workers run on
/// `runtimes` (indexed like the workers). Called once by each worker thread.
pub fn enter(index: usize, runtimes: Arc<[Handle]>) {
    INDEX.with(|i| i.set(Some(index)));
    SIBLINGS.with(|s| *s.borrow_mut() = Some(runtimes));
}

/// The current thread's worker index; `None` off a worker.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// How many workers the current thread's gateway runs; `None` off a worker.
pub fn count() -> Option<usize> {
    SIBLINGS.with(|s| s.borrow().as_ref().map(|r| r.len()))
}

/// The worker that owns per-worker slot `slot` (slot *i* belongs to worker
/// *i*), when the current thread is a worker and such a worker exists.
pub fn owner(slot: usize) -> Option<usize> {
    count().filter(|&n| slot < n).map(|_| slot)
}

/// Where to run work for per-worker slot `slot`: its owner's runtime when
/// there is one (see [`owner`]), else the current runtime; `None` when
/// neither exists.
pub fn runtime_for(slot: usize) -> Option<Handle> {
    let owner = SIBLINGS.with(|s| s.borrow().as_ref().and_then(|r| r.get(slot).cloned()));
    owner.or_else(|| Handle::try_current().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_worker_nothing_is_owned() {
        assert_eq!(current(), None);
        assert_eq!(count(), None);
        assert_eq!(owner(0), None);
        assert!(
            runtime_for(0).is_none(),
            "no runtime on a plain test thread"
        );
    }

    #[test]
    fn a_worker_owns_its_own_slot_and_finds_its_siblings() {
        let runtimes: Vec<tokio::runtime::Runtime> = (0..2)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a runtime")
            })
            .collect();
        let handles: Arc<[Handle]> = runtimes.iter().map(|r| r.handle().clone()).collect();
        let expected = handles[1].id();
        std::thread::spawn(move || {
            enter(1, handles);
            assert_eq!(current(), Some(1));
            assert_eq!(count(), Some(2));
            assert_eq!(owner(1), Some(1));
            assert_eq!(owner(2), None, "a slot beyond the workers has no owner");
            assert_eq!(runtime_for(1).map(|h| h.id()), Some(expected));
        })
        .join()
        .expect("the worker thread");
    }
}
