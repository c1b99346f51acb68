//! Shared queues (`proxy_register/resolve/enqueue/dequeue_shared_queue`): named
//! per `vm_id` (the plugin name); the registering VM is told of new items
//! through `proxy_on_queue_ready`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Items a queue holds before the oldest is dropped.
pub const MAX_ITEMS: usize = 10_000;

/// No queue has that id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no such queue")]
pub struct UnknownQueue;

/// Called with the queue id when an item arrives.
pub type ReadyHook = Arc<dyn Fn(u32) + Send + Sync>;

struct Queue {
    items: VecDeque<Bytes>,
    ready: Option<ReadyHook>,
}

#[derive(Default)]
struct Inner {
    ids: HashMap<(String, String), u32>,
    queues: Vec<Queue>,
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

    /// Creates or opens `name` in `vm_id`; `ready` (the caller) is told of new items.
    pub fn register(&self, vm_id: &str, name: &str, ready: ReadyHook) -> u32 {
        let mut inner = self.lock();
        let key = (vm_id.to_owned(), name.to_owned());
        if let Some(&id) = inner.ids.get(&key) {
            inner.queues[id as usize].ready = Some(ready);
            return id;
        }
        let id = inner.queues.len() as u32;
        inner.queues.push(Queue {
            items: VecDeque::new(),
            ready: Some(ready),
        });
        inner.ids.insert(key, id);
        id
    }

    /// The id of an existing queue.
    pub fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.lock()
            .ids
            .get(&(vm_id.to_owned(), name.to_owned()))
            .copied()
    }

    /// Appends an item (dropping the oldest beyond [`MAX_ITEMS`]) and tells the owner.
    pub fn enqueue(&self, id: u32, item: Bytes) -> Result<(), UnknownQueue> {
        let hook = {
            let mut inner = self.lock();
            let queue = inner.queues.get_mut(id as usize).ok_or(UnknownQueue)?;
            if queue.items.len() >= MAX_ITEMS {
                queue.items.pop_front();
                tracing::warn!(queue = id, "shared queue full; dropped its oldest item");
            }
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
        let queue = inner.queues.get_mut(id as usize).ok_or(UnknownQueue)?;
        Ok(queue.items.pop_front())
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
        let id = queues.register("p", "jobs", hook);
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
}
