//! A JWKS fetched from an upstream group, shared by the plugin's VMs on the
//! node and refreshed on an interval and when a token names an unknown key.
//!
//! The plugin's shared data holds one [`Record`] per JWKS location: the
//! document last fetched, when, and a lease naming the VM fetching now.
//! Each VM parses the document into keys of its own and serves them to
//! requests. A fetch is:
//! - **single flight**: a VM takes the lease with compare-and-swap before it
//!   fetches, so one fetch at a time runs on the node; requests that need
//!   new keys park on an event ([`Http::wait`](weir_sdk::Http::wait)) until
//!   the fetch ends, on the fetching VM when its answer arrives, on the
//!   others at their next tick;
//! - **bounded**: at most one starts per `min_refresh_interval` on the node,
//!   however many tokens name unknown keys;
//! - **stale-while-revalidate**: once the keys are older than
//!   `refresh_interval`, a tick (or a request) starts a fetch and requests
//!   go on with the cached keys meanwhile.
//!
//! The fetch is the plugin's own call ([`background::call`]): it outlives
//! the request that needed it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use weir_sdk::metrics::Counter;
use weir_sdk::{CallRequest, CallResponse, Error, HostError, background, log, shared};

use crate::keys::{KeySet, Origin};

/// The tick period while no request waits: checks whether the keys are due
/// for a refresh.
const SLOW_TICK: Duration = Duration::from_secs(1);
/// The tick period while requests wait for another VM's fetch.
const FAST_TICK: Duration = Duration::from_millis(100);
/// How long past its timeout a fetch's lease holds (its answer on the way).
const LEASE_GRACE_MS: u64 = 1_000;
/// Compare-and-swap attempts before giving a write up.
const CAS_ATTEMPTS: usize = 4;

/// Where the JWKS is and how often to fetch it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The upstream group to call.
    pub upstream: String,
    /// The path (with query) of the document.
    pub path: String,
    /// The `:authority` of the call (the upstream's name when `None`).
    pub authority: Option<String>,
    /// Keys older than this are refreshed.
    pub refresh_ms: u64,
    /// At most one fetch starts per this long.
    pub min_refresh_ms: u64,
    /// How long a fetch may take.
    pub timeout: Duration,
}

/// What the VMs share about one JWKS location.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    /// When the document was last fetched (ms since the epoch; 0: never).
    fetched_ms: u64,
    /// When the last fetch started, whatever came of it.
    attempt_ms: u64,
    /// A VM is fetching until then (0: none).
    lease_until_ms: u64,
    /// The document last fetched.
    jwks: String,
}

/// This VM's parsed keys.
#[derive(Clone, Default)]
struct Local {
    keys: Option<Rc<KeySet>>,
    fetched_ms: u64,
}

/// What a request gets when it asks for keys.
pub enum Keys {
    /// Verify with these.
    Ready(Rc<KeySet>),
    /// A fetch is on its way: wait on [`Jwks::event`].
    Wait,
    /// No keys, and none are being fetched.
    Unavailable,
}

/// How asking for a fetch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// This VM started one.
    Started,
    /// One is in flight (here or on another VM).
    InFlight,
    /// The last one started less than `min_refresh_interval` ago.
    TooSoon,
    /// None could start.
    Failed,
}

/// A remote JWKS, as one VM sees it.
pub struct Jwks {
    source: Source,
    /// Its shared-data key, which also names the event waiters park on.
    key: String,
    local: RefCell<Local>,
    /// The lease of this VM's fetch in flight, if any.
    fetching: Cell<Option<u64>>,
    /// Whether requests of this VM may be parked on the event.
    waiting: Cell<bool>,
    /// Whether ticks run at [`FAST_TICK`].
    fast: Cell<bool>,
    /// Until then no fetch can start on the node (the last one started less
    /// than `min_refresh_interval` ago and has ended, and this VM holds its
    /// keys): requests need not look at shared data.
    quiet_until: Cell<u64>,
    fetches: Option<Counter>,
    failures: Option<Counter>,
}

/// Writes an empty record under `key`.
fn create(key: &str) -> Result<(), HostError> {
    let empty =
        serde_json::to_vec(&Record::default()).map_err(|_| HostError::SerializationFailure)?;
    shared::set(key, &empty, None)
}

/// The host's clock in milliseconds since the epoch, outside a request.
fn now_ms() -> u64 {
    background::now()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Jwks {
    /// The JWKS at `source`; asks for ticks, which fetch it the first time
    /// and refresh it.
    pub fn new(source: Source) -> Result<Self, HostError> {
        let key = format!("jwt-auth/jwks/{}{}", source.upstream, source.path);
        background::set_tick_period(SLOW_TICK)?;
        // The record exists before any VM serves, so every lease is taken by
        // compare-and-swap: a write to a missing key always succeeds, and
        // two VMs could both take the lease. (The host configures a
        // filter's VMs one after the other.)
        if shared::get(&key)?.is_none() {
            create(&key)?;
        }
        Ok(Self {
            source,
            key,
            local: RefCell::new(Local::default()),
            fetching: Cell::new(None),
            waiting: Cell::new(false),
            fast: Cell::new(false),
            quiet_until: Cell::new(0),
            fetches: Counter::define("jwt_auth_jwks_fetches").ok(),
            failures: Counter::define("jwt_auth_jwks_fetch_failures").ok(),
        })
    }

    /// The event requests waiting for a fetch park on.
    pub fn event(&self) -> &str {
        &self.key
    }

    /// The keys for a token naming `kid` at `now_ms`. When none answers to
    /// `kid` (or there are no keys yet), a fetch starts if allowed and, if
    /// `may_wait`, the request is told to wait for it.
    pub fn keys(self: &Rc<Self>, kid: Option<&str>, now_ms: u64, may_wait: bool) -> Keys {
        let known = |local: &Local| local.keys.clone().filter(|keys| keys.knows(kid));
        let due = |local: &Local| now_ms >= local.fetched_ms.saturating_add(self.source.refresh_ms);
        let quiet = now_ms < self.quiet_until.get() && self.fetching.get().is_none();
        {
            let local = self.local.borrow().clone();
            if (known(&local).is_none() || due(&local))
                && !quiet
                && let Some((record, _)) = self.read()
            {
                self.adopt(&record);
            }
        }
        let local = self.local.borrow().clone();
        if let Some(keys) = known(&local) {
            if due(&local) && !quiet {
                // Stale while revalidating: these keys serve meanwhile.
                let _ = self.refresh(now_ms);
            }
            return Keys::Ready(keys);
        }
        if quiet {
            // Nothing newer can exist yet: a flood of unknown `kid`s costs
            // no shared-data reads.
            return local.keys.map_or(Keys::Unavailable, Keys::Ready);
        }
        match self.refresh(now_ms) {
            Refresh::Started | Refresh::InFlight if may_wait => {
                self.waiting.set(true);
                self.tick_fast(true);
                Keys::Wait
            }
            _ => local.keys.map_or(Keys::Unavailable, Keys::Ready),
        }
    }

    /// A tick: wakes waiters once another VM's fetch has ended, and starts
    /// a fetch when the keys are due (or were never fetched).
    pub fn tick(self: &Rc<Self>) {
        let now = now_ms();
        if self.fetching.get().is_some_and(|until| now >= until) {
            // The host answers every call; should an answer be lost, the
            // lease lapses and this VM may fetch again.
            self.fetching.set(None);
        }
        if self.waiting.get() && self.fetching.get().is_none() {
            match self.read() {
                Some((record, _)) if record.lease_until_ms > now => {}
                Some((record, _)) => {
                    self.adopt(&record);
                    self.wake_waiters();
                }
                None => self.wake_waiters(),
            }
        }
        let due = now
            >= self
                .local
                .borrow()
                .fetched_ms
                .saturating_add(self.source.refresh_ms);
        if due && self.fetching.get().is_none() && now >= self.quiet_until.get() {
            if let Some((record, _)) = self.read() {
                self.adopt(&record);
            }
            let fetched = self.local.borrow().fetched_ms;
            if now >= fetched.saturating_add(self.source.refresh_ms) {
                let _ = self.refresh(now);
            }
        }
    }

    /// The shared record and its version, if there is one.
    fn read(&self) -> Option<(Record, u32)> {
        let entry = shared::get(&self.key).ok().flatten()?;
        let record = serde_json::from_slice(&entry.value).ok()?;
        Some((record, entry.cas))
    }

    /// Takes the keys of `record` when it is newer than this VM's.
    fn adopt(&self, record: &Record) {
        if record.fetched_ms <= self.local.borrow().fetched_ms || record.jwks.is_empty() {
            return;
        }
        if let Ok((keys, _)) = KeySet::from_jwks(record.jwks.as_bytes(), Origin::Remote)
            && !keys.is_empty()
        {
            *self.local.borrow_mut() = Local {
                keys: Some(Rc::new(keys)),
                fetched_ms: record.fetched_ms,
            };
        }
    }

    /// Updates the shared record with `change` (compare-and-swap, retried).
    fn update(&self, change: impl Fn(&mut Record)) -> Result<(), HostError> {
        let mut outcome = Err(HostError::CasMismatch);
        for _ in 0..CAS_ATTEMPTS {
            let (mut record, cas) = self
                .read()
                .map_or((Record::default(), None), |(r, cas)| (r, Some(cas)));
            change(&mut record);
            let bytes = serde_json::to_vec(&record).map_err(|_| HostError::SerializationFailure)?;
            outcome = shared::set(&self.key, &bytes, cas);
            if outcome != Err(HostError::CasMismatch) {
                break;
            }
        }
        outcome
    }

    /// Starts a fetch unless one is in flight or the last one is too recent.
    fn refresh(self: &Rc<Self>, now: u64) -> Refresh {
        if self.fetching.get().is_some() {
            return Refresh::InFlight;
        }
        for _ in 0..CAS_ATTEMPTS {
            let Some((record, cas)) = self.read() else {
                // Gone (evicted, say): made again, then leased by CAS.
                let _ = create(&self.key);
                continue;
            };
            let cas = Some(cas);
            if record.lease_until_ms > now {
                return Refresh::InFlight;
            }
            let next_allowed = record.attempt_ms.saturating_add(self.source.min_refresh_ms);
            if record.attempt_ms != 0 && now < next_allowed {
                // The last fetch has ended: take its keys, and rest until
                // the next may start.
                self.adopt(&record);
                self.quiet_until.set(next_allowed);
                return Refresh::TooSoon;
            }
            let timeout_ms = u64::try_from(self.source.timeout.as_millis()).unwrap_or(u64::MAX);
            let lease = now
                .saturating_add(timeout_ms)
                .saturating_add(LEASE_GRACE_MS);
            let leased = Record {
                attempt_ms: now,
                lease_until_ms: lease,
                ..record
            };
            let Ok(bytes) = serde_json::to_vec(&leased) else {
                return Refresh::Failed;
            };
            match shared::set(&self.key, &bytes, cas) {
                Ok(()) => return self.start(lease),
                Err(HostError::CasMismatch) => {}
                Err(error) => {
                    log::warn(&format!(
                        "jwt-auth: cannot record a JWKS fetch in shared data: {error}"
                    ));
                    return Refresh::Failed;
                }
            }
        }
        Refresh::InFlight
    }

    /// Calls the upstream for the document, holding `lease`.
    fn start(self: &Rc<Self>, lease: u64) -> Refresh {
        let source = &self.source;
        let mut request = CallRequest::get(&source.path)
            .header("accept", "application/jwk-set+json, application/json")
            .timeout(source.timeout);
        if let Some(authority) = &source.authority {
            request = request.authority(authority);
        }
        let this = self.clone();
        match background::call(&source.upstream, request, move |answer| {
            this.fetched(lease, answer);
        }) {
            Ok(()) => {
                self.fetching.set(Some(lease));
                if let Some(counter) = self.fetches {
                    let _ = counter.increment(1);
                }
                Refresh::Started
            }
            Err(error) => {
                self.fail(&format!("the call could not start: {error}"));
                let _ = self.update(|r| {
                    if r.lease_until_ms == lease {
                        r.lease_until_ms = 0;
                    }
                });
                Refresh::Failed
            }
        }
    }

    /// The answer of the fetch that held `lease`: new keys for this VM and
    /// the others, or a warning; either way, the lease is released and the
    /// waiting requests go on.
    fn fetched(&self, lease: u64, answer: Result<CallResponse, Error>) {
        self.fetching.set(None);
        let now = now_ms();
        let parsed = match answer {
            Ok(response) if response.status == 200 => {
                match KeySet::from_jwks(&response.body, Origin::Remote) {
                    Ok((keys, skipped)) => {
                        for line in skipped {
                            log::warn(&format!(
                                "jwt-auth: left out of the JWKS from upstream `{}` {}: {line}",
                                self.source.upstream, self.source.path
                            ));
                        }
                        if keys.is_empty() {
                            Err("the document has no usable key".to_owned())
                        } else {
                            Ok((keys, String::from_utf8_lossy(&response.body).into_owned()))
                        }
                    }
                    Err(why) => Err(format!("the document {why}")),
                }
            }
            Ok(response) => Err(format!("the upstream answered {}", response.status)),
            Err(error) => Err(error.to_string()),
        };
        let document = parsed.as_ref().ok().map(|(_, text)| text.clone());
        let written = self.update(|record| {
            if let Some(text) = &document {
                record.fetched_ms = now;
                record.jwks.clone_from(text);
            }
            if record.lease_until_ms == lease {
                record.lease_until_ms = 0;
            }
        });
        if let Err(error) = written {
            log::warn(&format!(
                "jwt-auth: cannot share the JWKS in shared data: {error}"
            ));
        }
        match parsed {
            Ok((keys, _)) => {
                *self.local.borrow_mut() = Local {
                    keys: Some(Rc::new(keys)),
                    fetched_ms: now,
                };
            }
            Err(why) => self.fail(&why),
        }
        self.wake_waiters();
    }

    /// Logs and counts a failed fetch.
    fn fail(&self, why: &str) {
        let cached = self.local.borrow().keys.as_ref().map_or(0, |k| k.len());
        log::warn(&format!(
            "jwt-auth: cannot fetch the JWKS from upstream `{}` {}: {why} ({cached} cached keys serve meanwhile)",
            self.source.upstream, self.source.path
        ));
        if let Some(counter) = self.failures {
            let _ = counter.increment(1);
        }
    }

    /// Resumes the requests parked on the event.
    fn wake_waiters(&self) {
        self.waiting.set(false);
        self.tick_fast(false);
        background::wake(&self.key);
    }

    /// Switches between the fast and the slow tick.
    fn tick_fast(&self, fast: bool) {
        if self.fast.replace(fast) != fast {
            let period = if fast { FAST_TICK } else { SLOW_TICK };
            let _ = background::set_tick_period(period);
        }
    }
}
