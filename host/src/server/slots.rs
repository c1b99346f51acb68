//! A listener's connection slots: the `max_connections` limit, the cap per
//! client address, and the queue of connections that have not sent a byte
//! yet, from which a full listener evicts the oldest to admit a new one.
//!
//! One [`Slots`] is shared by every worker's socket of a listener. It knows no
//! sockets: the connection tells it when its first byte came ([`Slot::establish`]).
//! It costs one short lock per accepted connection and per close, an atomic
//! when the first byte comes, and nothing per request.
//!
//! Eviction keeps a flood of silent sockets from starving real clients: the
//! flood can only push out its own oldest sockets (or real ones that have not
//! sent a byte yet, which on a working connection lasts about one round trip),
//! never a connection that has spoken. The new connection takes the evicted
//! one's slot at once, so the connections holding slots never exceed
//! `max_connections`; the sockets held may, by the evictions in flight (an
//! evicted connection closes on its next poll, without serving anything).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::model::ListenerLimits;

/// How long a kind of warning stays quiet after it was logged.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The fewest entries the queue of silent connections holds before it is
/// swept of connections that have spoken or closed.
const MIN_SWEEP_AT: usize = 64;

/// Whom the per-client cap counts together: one IPv4 address, or one IPv6
/// /64 (a single host usually owns a whole /64 and picks addresses in it at
/// will). IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 client.
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 client's address.
    V6(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Its client already holds `max_connections_per_client` connections.
    #[error("the client holds max_connections_per_client connections")]
    ClientCap,
    /// Every slot is taken by a connection that has sent bytes.
    #[error("every connection slot is taken by a connection that has sent bytes")]
    Full,
}

/// What a listener's slots may want to warn about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A connection was refused for this reason.
    Refused(Refused),
    /// A silent connection was evicted to admit a new one.
    Evicted,
}

/// The slots of one listener, shared by every worker's socket of it.
pub struct Slots {
    /// `max_connections`.
    max: usize,
    /// Connections holding a slot (an evicted one has handed its slot on).
    open: AtomicUsize,
    /// `max_connections_per_client`; 0 counts nobody.
    per_client: usize,
    state: Mutex<State>,
    /// One per [`Event`] kind: client cap, full, evicted.
    warnings: [Throttle; 3],
}

/// What the lock guards.
#[derive(Default)]
struct State {
    /// Open connections per client (only while a cap is set).
    clients: HashMap<ClientKey, usize>,
    /// Connections that had not sent a byte when admitted, oldest first.
    /// Entries that have spoken or closed since stay until swept or popped.
    silent: VecDeque<Arc<Ticket>>,
    /// Sweep the queue once it is this long.
    sweep_at: usize,
}

impl Slots {
    /// The slots of a listener with `limits`.
    pub fn new(limits: &ListenerLimits) -> Self {
        Self {
            max: limits.max_connections,
            open: AtomicUsize::new(0),
            per_client: limits.max_connections_per_client,
            state: Mutex::new(State {
                sweep_at: MIN_SWEEP_AT,
                ..State::default()
            }),
            warnings: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection from `client`, or says why not. Never waits:
    /// on a full listener the new connection takes the slot of the oldest
    /// connection that has not sent a byte (`evicted` tells that it did).
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refused> {
        let key = ClientKey::from(client);
        let ticket = Arc::new(Ticket::default());
        let mut state = self.lock();
        if self.per_client > 0 && state.clients.get(&key).copied().unwrap_or(0) >= self.per_client {
            return Err(Refused::ClientCap);
        }
        let evicted = if self.take_free() {
            false
        } else if state.evict_oldest() {
            true
        } else {
            return Err(Refused::Full);
        };
        if self.per_client > 0 {
            *state.clients.entry(key).or_default() += 1;
        }
        state.push(ticket.clone());
        drop(state);
        let slot = Slot {
            slots: self.clone(),
            client: (self.per_client > 0).then_some(key),
            ticket,
        };
        Ok(Admitted { slot, evicted })
    }

    /// Counts `event`; returns how many such events happened since the last
    /// warning about them when it is time to warn again (at most once per
    /// [`WARN_INTERVAL`]), so a flood logs a line now and then, not one per socket.
    pub fn warning_due(&self, event: Event) -> Option<u64> {
        let index = match event {
            Event::Refused(Refused::ClientCap) => 0,
            Event::Refused(Refused::Full) => 1,
            Event::Evicted => 2,
        };
        self.warnings[index].due(Instant::now())
    }

    /// Takes a free slot, if there is one.
    fn take_free(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok()
    }

    /// Marks `ticket` as having sent bytes; false when it has lost its slot.
    /// A connection that the listener had just picked for eviction (its slot
    /// already handed on) gets a slot back: a free one, or else the slot of
    /// the next oldest silent connection; only when there is neither does it lose.
    fn establish(&self, ticket: &Ticket) -> bool {
        match ticket.state.compare_exchange(
            AWAITING,
            ESTABLISHED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Err(EVICTED) => {
                let mut state = self.lock();
                if !(self.take_free() || state.evict_oldest()) {
                    return false;
                }
                ticket.state.store(ESTABLISHED, Ordering::Release);
                true
            }
            _ => true,
        }
    }
}

impl State {
    /// Evicts the oldest connection that has not sent a byte, whose slot
    /// passes to the caller; false if there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some(ticket) = self.silent.pop_front() {
            if ticket
                .state
                .compare_exchange(AWAITING, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                ticket.evicted.notify_one();
                return true;
            }
        }
        false
    }

    /// Queues a new connection, dropping the entries of connections that are no
    /// longer silent: at the front at once, everywhere when the queue has
    /// doubled since the last sweep (so sweeping costs O(1) per connection).
    fn push(&mut self, ticket: Arc<Ticket>) {
        while self.silent.front().is_some_and(|t| !t.is_silent()) {
            self.silent.pop_front();
        }
        if self.silent.len() >= self.sweep_at {
            self.silent.retain(|t| t.is_silent());
            self.sweep_at = (2 * self.silent.len()).max(MIN_SWEEP_AT);
        }
        self.silent.push_back(ticket);
    }
}

/// A connection admitted, and whether admitting it evicted another.
pub struct Admitted {
    /// Its slot, held for the connection's life.
    pub slot: Slot,
    /// It was admitted by evicting a silent connection.
    pub evicted: bool,
}

/// Has not sent a byte, may be evicted.
const AWAITING: u8 = 0;
/// Has sent a byte: never evicted.
const ESTABLISHED: u8 = 1;
/// Picked for eviction.
const EVICTED: u8 = 2;
/// The connection has ended (its queue entry, if any, is stale).
const CLOSED: u8 = 3;

/// A connection's place in the queue of silent connections.
#[derive(Default)]
struct Ticket {
    state: AtomicU8,
    /// Told when the state turns [`EVICTED`].
    evicted: Notify,
}

impl Ticket {
    fn is_silent(&self) -> bool {
        self.state.load(Ordering::Acquire) == AWAITING
    }

    /// Resolves once the connection is evicted (never, once it has spoken).
    async fn evicted(&self) {
        loop {
            // A notification left over from an eviction passed on is ignored.
            self.evicted.notified().await;
            if self.state.load(Ordering::Acquire) == EVICTED {
                return;
            }
        }
    }
}

/// One connection's slot: its place under `max_connections`, its count
/// against its client's cap, its ticket in the queue of silent connections.
/// Dropped, it gives them back (its place only if it was not evicted: an
/// evicted connection's place went to the connection that evicted it).
pub struct Slot {
    slots: Arc<Slots>,
    /// Counted against the per-client cap.
    client: Option<ClientKey>,
    ticket: Arc<Ticket>,
}

impl Slot {
    /// Runs `phase` (part of the wait for the connection's first byte) unless
    /// the listener evicts the connection first (`None`). Asked to leave, the
    /// connection stays if `spoken` says its first byte has arrived after all
    /// and it gets a slot back ([`Slot::establish`]).
    pub async fn unless_evicted<T>(
        &self,
        phase: impl Future<Output = T>,
        spoken: impl Fn() -> bool,
    ) -> Option<T> {
        let mut phase = pin!(phase);
        loop {
            tokio::select! {
                out = &mut phase => return Some(out),
                () = self.ticket.evicted() => {
                    if !(spoken() && self.establish()) {
                        return None;
                    }
                }
            }
        }
    }

    /// Marks the connection as having sent its first byte: it is never
    /// evicted from now on. False when it was evicted meanwhile and no slot
    /// was left for it: it must close.
    pub fn establish(&self) -> bool {
        self.slots.establish(&self.ticket)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.ticket.state.swap(CLOSED, Ordering::AcqRel) != EVICTED {
            self.slots.open.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(key) = self.client {
            let mut state = self.slots.lock();
            if let Some(count) = state.clients.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    state.clients.remove(&key);
                }
            }
        }
    }
}

/// Counts events of one kind and says when to warn about them again.
struct Throttle {
    epoch: Instant,
    /// Milliseconds after `epoch` before which no warning is due.
    quiet_until: AtomicU64,
    /// Events since the last warning.
    count: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            quiet_until: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Throttle {
    /// Counts one event at `now`; when a warning is due, starts the quiet
    /// interval and returns the events counted since the last warning.
    fn due(&self, now: Instant) -> Option<u64> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let quiet_until = self.quiet_until.load(Ordering::Relaxed);
        if now < quiet_until {
            return None;
        }
        let next = now.saturating_add(WARN_INTERVAL.as_millis() as u64);
        self.quiet_until
            .compare_exchange(quiet_until, next, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.count.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn slots(max_connections: usize, per_client: usize) -> Arc<Slots> {
        Arc::new(Slots::new(&ListenerLimits {
            max_connections,
            max_connections_per_client: per_client,
            ..ListenerLimits::default()
        }))
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn state(slot: &Slot) -> u8 {
        slot.ticket.state.load(Ordering::Acquire)
    }

    /// A slot for a connection from `client`, which must be admitted.
    fn admit(slots: &Arc<Slots>, client: IpAddr) -> Slot {
        slots.admit(client).expect("admitted").slot
    }

    #[test]
    fn a_client_over_its_cap_is_refused_and_others_are_not() {
        let slots = slots(10, 2);
        let first = admit(&slots, A);
        let _second = admit(&slots, A);
        assert_eq!(slots.admit(A).err(), Some(Refused::ClientCap));
        assert!(slots.admit(B).is_ok());
        drop(first);
        assert!(
            slots.admit(A).is_ok(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        assert_eq!(ClientKey::from(host(1)), ClientKey::from(host(2)));
        let other_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert_ne!(ClientKey::from(host(1)), ClientKey::from(other_64));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(ClientKey::from(mapped), ClientKey::from(A));
        let slots = slots(10, 1);
        let _held = admit(&slots, host(1));
        assert_eq!(slots.admit(host(2)).err(), Some(Refused::ClientCap));
        assert!(slots.admit(other_64).is_ok());
    }

    #[test]
    fn no_cap_counts_nobody() {
        let slots = slots(10, 0);
        let _held: Vec<Slot> = (0..10).map(|_| admit(&slots, A)).collect();
        assert!(slots.lock().clients.is_empty());
    }

    #[test]
    fn a_full_listener_evicts_the_oldest_silent_connection() {
        let slots = slots(3, 0);
        let spoke = admit(&slots, A);
        let oldest_silent = admit(&slots, A);
        let newer_silent = admit(&slots, A);
        spoke.establish();
        let admitted = slots.admit(B).expect("admitted by eviction");
        assert!(admitted.evicted);
        assert_eq!(
            slots.open.load(Ordering::Acquire),
            3,
            "the slot changed hands"
        );
        assert_eq!(state(&oldest_silent), EVICTED);
        assert_eq!(state(&newer_silent), AWAITING);
        assert_eq!(state(&spoke), ESTABLISHED);
    }

    #[test]
    fn a_listener_full_of_connections_that_spoke_refuses() {
        let slots = slots(2, 0);
        let held: Vec<Slot> = (0..2).map(|_| admit(&slots, A)).collect();
        assert!(held.iter().all(Slot::establish));
        assert_eq!(slots.admit(B).err(), Some(Refused::Full));
    }

    #[test]
    fn a_connection_that_spoke_as_it_was_evicted_stays_and_passes_the_eviction_on() {
        let slots = slots(2, 0);
        let first = admit(&slots, A);
        let second = admit(&slots, A);
        let _third = admit(&slots, B);
        assert_eq!(state(&first), EVICTED);
        first.establish();
        assert_eq!(state(&first), ESTABLISHED);
        assert_eq!(state(&second), EVICTED);
    }

    #[test]
    fn the_queue_of_silent_connections_stays_small() {
        let slots = slots(100_000, 0);
        // One silent connection at the front, then many that speak and stay open.
        let _silent = admit(&slots, A);
        let mut open = Vec::new();
        for _ in 0..10_000 {
            let slot = admit(&slots, B);
            assert!(slot.establish());
            open.push(slot);
        }
        let queued = slots.lock().silent.len();
        assert!(queued <= MIN_SWEEP_AT, "{queued} entries queued");
    }

    #[tokio::test]
    async fn an_evicted_connection_leaves_and_its_slot_stays_taken() {
        let slots = slots(1, 0);
        let old = admit(&slots, A);
        let new = admit(&slots, B);
        let phase = std::future::pending::<()>();
        assert_eq!(old.unless_evicted(phase, || false).await, None);
        drop(old);
        assert_eq!(
            slots.open.load(Ordering::Acquire),
            1,
            "the new connection holds it"
        );
        assert!(new.establish());
        drop(new);
        assert_eq!(slots.open.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_connection_told_to_leave_whose_bytes_came_stays() {
        let slots = slots(2, 0);
        let first = admit(&slots, A);
        let second = admit(&slots, A);
        let _third = admit(&slots, B);
        // Pending when first polled, as a peek whose readiness is not known yet.
        let phase = tokio::task::yield_now();
        assert_eq!(first.unless_evicted(phase, || true).await, Some(()));
        assert_eq!(state(&first), ESTABLISHED);
        assert_eq!(state(&second), EVICTED, "the eviction passed on");
    }

    #[test]
    fn an_evicted_connection_with_no_slot_left_must_close() {
        let slots = slots(1, 0);
        let old = admit(&slots, A);
        let new = admit(&slots, B);
        assert!(new.establish());
        assert!(
            !old.establish(),
            "no silent connection to take from, no free slot"
        );
        drop(old);
        assert_eq!(slots.open.load(Ordering::Acquire), 1);
    }

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_held_back() {
        let throttle = Throttle::default();
        let start = throttle.epoch;
        assert_eq!(throttle.due(start), Some(1));
        assert_eq!(throttle.due(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.due(start + Duration::from_secs(2)), None);
        assert_eq!(throttle.due(start + WARN_INTERVAL), Some(3));
    }
}
