//! Work a plugin does outside any one request: ticks, upstream calls of its
//! own, and waking requests parked on an event.
//!
//! - [`set_tick_period`] asks the host to run [`Plugin::on_tick`](crate::Plugin::on_tick)
//!   every period (per VM; zero stops the ticks).
//! - [`call`] calls an upstream group for the plugin, not for a request: its
//!   continuation gets only the answer, and runs whatever became of the
//!   request (if any) whose callback started it. In Weir the call outlives
//!   that request; hosts that tie callouts to the context that made them
//!   (Envoy) may cancel it with the request, so start it from
//!   [`Plugin::on_tick`](crate::Plugin::on_tick) where that matters.
//! - [`wake`] resumes the requests of this VM parked with
//!   [`Http::wait`](crate::Http::wait) on an event. One request (or the
//!   plugin) does the work, the others wait for it: a single flight.
//!
//! Wake-ups and new calls take effect when the current callback returns.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::host;
use crate::http::{CallRequest, CallResponse};
use crate::status::HostResult;

/// A plugin-level callout's continuation.
pub(crate) type Then = Box<dyn FnOnce(Result<CallResponse, Error>) + 'static>;

/// What plugin code asked for during the current callback.
#[derive(Default)]
struct Pending {
    /// Events to wake, in order.
    wakes: Vec<String>,
    /// Plugin-level callouts in flight, by token.
    calls: HashMap<u32, Then>,
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

/// Asks for [`Plugin::on_tick`](crate::Plugin::on_tick) every `period` on this
/// VM; `Duration::ZERO` stops the ticks. Callable from any callback.
pub fn set_tick_period(period: Duration) -> HostResult<()> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    host::set_tick_period_milliseconds(ms)
}

/// The host's clock, outside a request.
pub fn now() -> HostResult<SystemTime> {
    Ok(UNIX_EPOCH + Duration::from_nanos(host::current_time_nanos()?))
}

/// Calls upstream group `upstream` for the plugin; `then` runs with the
/// answer, or with an error when the call failed or timed out.
pub fn call(
    upstream: &str,
    request: CallRequest,
    then: impl FnOnce(Result<CallResponse, Error>) + 'static,
) -> HostResult<()> {
    let token = request.send(upstream)?;
    PENDING.with(|p| p.borrow_mut().calls.insert(token, Box::new(then)));
    Ok(())
}

/// Resumes every request of this VM waiting on `event`
/// ([`Http::wait`](crate::Http::wait)) once the current callback returns.
pub fn wake(event: &str) {
    PENDING.with(|p| p.borrow_mut().wakes.push(event.to_owned()));
}

/// The events woken since the last call.
pub(crate) fn take_wakes() -> Vec<String> {
    PENDING.with(|p| std::mem::take(&mut p.borrow_mut().wakes))
}

/// The continuation of plugin-level callout `token`, if it is one.
pub(crate) fn take_call(token: u32) -> Option<Then> {
    PENDING.with(|p| p.borrow_mut().calls.remove(&token))
}

/// Forgets every pending wake-up and callout (a fresh test kit).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn reset() {
    PENDING.with(|p| *p.borrow_mut() = Pending::default());
}
