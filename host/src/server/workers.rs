//! Worker threads (thread-per-core). Each worker is a thread running a
//! current-thread tokio runtime that serves its own `SO_REUSEPORT` socket of
//! every listener, so the kernel spreads new connections over the workers and a
//! connection lives on one worker for its whole life. A worker marks its thread
//! (`crate::worker`), so it uses its own VM of each filter and its own upstream
//! connections.
//!
//! Starting is two steps: [`Runtimes::build`], then bind each worker's sockets
//! inside its runtime ([`Runtimes::enter`]), then [`Runtimes::run`]. Stopping:
//! [`Workers::stop`] after the gateway has drained its connections.

use std::io;
use std::sync::Arc;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::{oneshot, watch};
use tokio_util::task::TaskTracker;

use super::{Listener, accept_loop};
use crate::lifecycle::Proxy;

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A worker's runtime could not be built.
    #[error("cannot start worker {index}'s runtime: {source}")]
    Runtime {
        /// The worker.
        index: usize,
        /// What failed.
        source: io::Error,
    },
    /// A worker's thread could not be spawned.
    #[error("cannot start worker {index}'s thread: {source}")]
    Thread {
        /// The worker.
        index: usize,
        /// What failed.
        source: io::Error,
    },
}

/// A worker's runtime. Dropped, it shuts down without waiting, so a start that
/// fails half-way (on the caller's async thread) cannot panic by blocking there.
struct WorkerRuntime(Option<Runtime>);

impl Drop for WorkerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The workers' runtimes, built but not running yet.
pub struct Runtimes {
    runtimes: Vec<WorkerRuntime>,
}

impl Runtimes {
    /// Builds `count` (at least one) current-thread runtimes.
    pub fn build(count: usize) -> Result<Self, WorkerError> {
        let runtimes = (0..count.max(1))
            .map(|index| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|r| WorkerRuntime(Some(r)))
                    .map_err(|source| WorkerError::Runtime { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { runtimes })
    }

    /// How many workers.
    pub fn len(&self) -> usize {
        self.runtimes.len()
    }

    /// Runs `f` inside worker `index`'s runtime, so the sockets it creates
    /// register with that worker's reactor.
    pub fn enter<T>(&self, index: usize, f: impl FnOnce() -> T) -> T {
        match self.runtimes.get(index).and_then(|r| r.0.as_ref()) {
            Some(runtime) => {
                let _entered = runtime.enter();
                f()
            }
            None => f(),
        }
    }

    /// Starts one thread per runtime; worker *i* serves `listeners[i]`
    /// (sockets bound inside its runtime) until `shutdown` fires, and its
    /// connections are spawned on `tracker`. The threads end at
    /// [`Workers::stop`], or when the returned [`Workers`] is dropped.
    pub fn run(
        self,
        listeners: Vec<Vec<Listener>>,
        proxy: &Arc<Proxy>,
        tracker: &TaskTracker,
        shutdown: &watch::Sender<bool>,
    ) -> Result<Workers, WorkerError> {
        let handles: Arc<[Handle]> = self
            .runtimes
            .iter()
            .filter_map(|r| r.0.as_ref().map(|r| r.handle().clone()))
            .collect();
        let (stop, _) = watch::channel(false);
        let mut workers = Workers {
            stop,
            exited: Vec::with_capacity(self.runtimes.len()),
        };
        let mut listeners = listeners.into_iter();
        for (index, runtime) in self.runtimes.into_iter().enumerate() {
            let serve = Serve {
                listeners: listeners.next().unwrap_or_default(),
                proxy: proxy.clone(),
                tracker: tracker.clone(),
                shutdown: shutdown.subscribe(),
                stop: workers.stop.subscribe(),
            };
            let (exited, exit) = oneshot::channel::<()>();
            let handles = handles.clone();
            std::thread::Builder::new()
                .name(format!("weir-worker-{index}"))
                .spawn(move || {
                    crate::worker::enter(index, handles);
                    if let Some(rt) = &runtime.0 {
                        rt.block_on(serve.run());
                    }
                    // The runtime goes first (its connections and tasks with it),
                    // then `exited` tells `Workers::stop` this worker is done.
                    drop(runtime);
                    drop(exited);
                })
                .map_err(|source| WorkerError::Thread { index, source })?;
            workers.exited.push(exit);
        }
        Ok(workers)
    }
}

/// What one worker serves.
struct Serve {
    listeners: Vec<Listener>,
    proxy: Arc<Proxy>,
    tracker: TaskTracker,
    shutdown: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
}

impl Serve {
    /// Accepts on every listener until shutdown; returns when told to stop.
    async fn run(mut self) {
        for listener in self.listeners {
            tokio::spawn(accept_loop(
                listener,
                self.proxy.clone(),
                self.tracker.clone(),
                self.shutdown.clone(),
            ));
        }
        // A dropped sender (the gateway dropped without a shutdown) also stops.
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

/// The running worker threads.
pub struct Workers {
    stop: watch::Sender<bool>,
    exited: Vec<oneshot::Receiver<()>>,
}

impl Workers {
    /// How many workers run.
    pub fn len(&self) -> usize {
        self.exited.len()
    }

    /// Ends every worker: its runtime stops, dropping whatever it still runs
    /// (call it after connections have drained). Returns once every thread is done.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for exit in self.exited {
            let _ = exit.await;
        }
    }
}
