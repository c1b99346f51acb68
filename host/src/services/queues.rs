//! Shared queues (`proxy_register/resolve/enqueue/dequeue_shared_queue`): named
//! per `vm_id` (the plugin's, by default its name); the registering VM is told of new items
//! through `proxy_on_queue_ready`.
//!
//! As in Envoy (cpp-host `SharedQueue`), ids are process-wide and start at 1:
//! 0 is no queue, so a filter that ignores a failed resolve and uses the zero
//! it left behind reaches nothing (`NOT_FOUND`), not another plugin's queue.
//!
//! Each `vm_id` is held to its plugin's quotas: how many queues it may register
//! and how many bytes its queues may hold together, whoever enqueues them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::quota::{Quota, QuotaExceeded, Quotas};

/// Items a queue holds before the oldest is dropped.
pub const MAX_ITEMS: usize = 10_000;

/// No queue has that id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no such queue")]
pub struct UnknownQueue;

/// Why an item was not enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// No queue has that id.
    #[error(transparent)]
    Unknown(#[from] UnknownQueue),
    /// The owner's queues already hold its `queue_bytes`.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
}

/// Called with the queue id when an item arrives.
pub type ReadyHook = Arc<dyn Fn(u32) + Send + Sync>;

struct Queue {
    /// The `vm_id` that owns it (and whose quota its bytes count against).
    owner: String,
    items: VecDeque<Bytes>,
    ready: Option<ReadyHook>,
}

/// What one `vm_id` holds, and may hold.
struct Usage {
    queues: usize,
    bytes: u64,
    max_bytes: u64,
}

#[derive(Default)]
struct Inner {
    ids: HashMap<(String, String), u32>,
    /// Queue `id` is at index `id - 1`.
    queues: Vec<Queue>,
    usage: HashMap<String, Usage>,
}

/// The queue with id `id` in `queues` (ids start at 1; 0 is none).
fn queue_mut(queues: &mut [Queue], id: u32) -> Result<&mut Queue, UnknownQueue> {
    let index = (id as usize).checked_sub(1).ok_or(UnknownQueue)?;
    queues.get_mut(index).ok_or(UnknownQueue)
}

/// Every shared queue of the process.
#[derive(Default)]
pub struct Queues {
    inner: Mutex<Inner>,
}

impl Queues {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates or opens `name` in `vm_id`; `ready` (the caller) is told of new
    /// items. A new queue beyond `quotas.queues` is refused.
    pub fn register(
        &self,
        vm_id: &str,
        name: &str,
        ready: ReadyHook,
        quotas: &Quotas,
    ) -> Result<u32, QuotaExceeded> {
        let mut inner = self.lock();
        let key = (vm_id.to_owned(), name.to_owned());
        if let Some(&id) = inner.ids.get(&key)
            && let Ok(queue) = queue_mut(&mut inner.queues, id)
        {
            queue.ready = Some(ready);
            return Ok(id);
        }
        let usage = inner.usage.entry(vm_id.to_owned()).or_insert(Usage {
            queues: 0,
            bytes: 0,
            max_bytes: quotas.queue_bytes,
        });
        usage.max_bytes = quotas.queue_bytes;
        if usage.queues >= quotas.queues {
            return Err(Quota::Queues.into());
        }
        usage.queues += 1;
        let id = u32::try_from(inner.queues.len() + 1).unwrap_or(u32::MAX);
        inner.queues.push(Queue {
            owner: vm_id.to_owned(),
            items: VecDeque::new(),
            ready: Some(ready),
        });
        inner.ids.insert(key, id);
        Ok(id)
    }

    /// The id of an existing queue.
    pub fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.lock()
            .ids
            .get(&(vm_id.to_owned(), name.to_owned()))
            .copied()
    }

    /// Appends an item (dropping the oldest beyond [`MAX_ITEMS`]) and tells the
    /// owner. Refused when the owner's queues would hold more than its `queue_bytes`.
    pub fn enqueue(&self, id: u32, item: Bytes) -> Result<(), EnqueueError> {
        let hook = {
            let mut inner = self.lock();
            let Inner { queues, usage, .. } = &mut *inner;
            let queue = queue_mut(queues, id)?;
            let usage = usage.get_mut(&queue.owner).ok_or(UnknownQueue)?;
            let dropped = if queue.items.len() >= MAX_ITEMS {
                queue.items.front().map_or(0, |b| b.len() as u64)
            } else {
                0
            };
            if usage.bytes - dropped + item.len() as u64 > usage.max_bytes {
                return Err(QuotaExceeded::from(Quota::QueueBytes).into());
            }
            if queue.items.len() >= MAX_ITEMS {
                queue.items.pop_front();
                tracing::warn!(queue = id, "shared queue full; dropped its oldest item");
            }
            usage.bytes = usage.bytes - dropped + item.len() as u64;
            queue.items.push_back(item);
            queue.ready.clone()
        };
        if let Some(hook) = hook {
            hook(id);
        }
        Ok(())
    }

    /// Takes the oldest item: `Ok(None)` when empty, `Err` for an unknown queue.
    pub fn dequeue(&self, id: u32) -> Result<Option<Bytes>, UnknownQueue> {
        let mut inner = self.lock();
        let Inner { queues, usage, .. } = &mut *inner;
        let queue = queue_mut(queues, id)?;
        let item = queue.items.pop_front();
        if let (Some(item), Some(usage)) = (&item, usage.get_mut(&queue.owner)) {
            usage.bytes = usage.bytes.saturating_sub(item.len() as u64);
        }
        Ok(item)
    }

    /// Bytes the queues of `vm_id` hold now.
    pub fn bytes_held(&self, vm_id: &str) -> u64 {
        self.lock().usage.get(vm_id).map_or(0, |u| u.bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn items_go_through_in_order_and_the_owner_is_told() {
        let queues = Queues::default();
        let told = Arc::new(AtomicU32::new(0));
        let hook = {
            let told = told.clone();
            Arc::new(move |_id: u32| {
                told.fetch_add(1, Ordering::SeqCst);
            })
        };
        let id = queues
            .register("p", "jobs", hook, &Quotas::default())
            .expect("register");
        assert_eq!(queues.resolve("p", "jobs"), Some(id));
        assert_eq!(queues.resolve("other", "jobs"), None);
        queues
            .enqueue(id, Bytes::from_static(b"a"))
            .expect("enqueue");
        queues
            .enqueue(id, Bytes::from_static(b"b"))
            .expect("enqueue");
        assert_eq!(told.load(Ordering::SeqCst), 2);
        assert_eq!(queues.dequeue(id), Ok(Some(Bytes::from_static(b"a"))));
        assert_eq!(queues.dequeue(id), Ok(Some(Bytes::from_static(b"b"))));
        assert_eq!(queues.dequeue(id), Ok(None));
        assert_eq!(queues.dequeue(99), Err(UnknownQueue));
    }

    #[test]
    fn ids_start_at_1_and_0_is_no_queue() {
        let queues = Queues::default();
        let hook: ReadyHook = Arc::new(|_| {});
        let quotas = Quotas::default();
        let first = queues.register("p", "a", hook.clone(), &quotas);
        assert_eq!(first, Ok(1));
        assert_eq!(queues.register("q", "a", hook, &quotas), Ok(2));
        assert_eq!(
            queues.enqueue(0, Bytes::from_static(b"stray")),
            Err(EnqueueError::Unknown(UnknownQueue))
        );
        assert_eq!(queues.dequeue(0), Err(UnknownQueue));
        assert_eq!(queues.dequeue(1), Ok(None), "nothing reached queue 1");
    }

    fn quotas(queues: usize, queue_bytes: u64) -> Quotas {
        Quotas {
            queues,
            queue_bytes,
            ..Quotas::default()
        }
    }

    #[test]
    fn queue_bytes_count_across_a_plugins_queues_and_free_on_dequeue() {
        let queues = Queues::default();
        let quotas = quotas(10, 100);
        let hook: ReadyHook = Arc::new(|_| {});
        let a = queues.register("p", "a", hook.clone(), &quotas).expect("a");
        let b = queues.register("p", "b", hook.clone(), &quotas).expect("b");
        let other = queues
            .register("q", "a", hook, &quotas)
            .expect("other plugin");
        queues
            .enqueue(a, Bytes::from(vec![0; 60]))
            .expect("60 of 100");
        assert_eq!(
            queues.enqueue(b, Bytes::from(vec![0; 41])),
            Err(EnqueueError::Quota(Quota::QueueBytes.into())),
            "60 + 41 bytes across p's two queues"
        );
        queues
            .enqueue(b, Bytes::from(vec![0; 40]))
            .expect("exactly 100");
        queues
            .enqueue(other, Bytes::from(vec![0; 100]))
            .expect("another plugin has its own bytes");
        assert_eq!(queues.bytes_held("p"), 100);
        assert_eq!(queues.dequeue(a).map(|i| i.map(|b| b.len())), Ok(Some(60)));
        assert_eq!(queues.bytes_held("p"), 40);
        queues
            .enqueue(b, Bytes::from(vec![0; 60]))
            .expect("room again");
        assert_eq!(
            queues.enqueue(99, Bytes::new()),
            Err(EnqueueError::Unknown(UnknownQueue))
        );
    }

    #[test]
    fn a_plugin_registers_at_most_its_queue_count() {
        let queues = Queues::default();
        let quotas = quotas(2, 100);
        let hook: ReadyHook = Arc::new(|_| {});
        let a = queues.register("p", "a", hook.clone(), &quotas).expect("1");
        queues.register("p", "b", hook.clone(), &quotas).expect("2");
        assert_eq!(
            queues.register("p", "c", hook.clone(), &quotas),
            Err(Quota::Queues.into())
        );
        assert_eq!(
            queues.register("p", "a", hook.clone(), &quotas),
            Ok(a),
            "reopening an existing queue is not a new one"
        );
        queues
            .register("q", "c", hook, &quotas)
            .expect("other plugin");
    }
}
