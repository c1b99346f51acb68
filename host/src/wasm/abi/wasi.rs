//! The WASI preview 1 functions Proxy-Wasm SDKs import, granting nothing: no
//! files, no sockets, no environment, no arguments. stdout/stderr go to the log.
//! `poll_oneoff` serves clock subscriptions only, and never sleeps: every clock
//! fires at once (see [`poll_oneoff`]).
//!
//! Bounded like the Proxy-Wasm calls: a span outside guest memory answers
//! `EFAULT`, one over its cap `EINVAL`; `fd_write` takes at most
//! [`caps::FD_WRITE_BYTES`] (a short write, as POSIX allows) under the plugin's
//! log rate, and `random_get` fills guest memory in place, in chunks, checking
//! the callback's deadline between them.

use super::memory::{self, Ctx, span};
use super::{Quota, Registry, Status, caps, on_time, unix_nanos, warn_quota};

/// WASI errno values used here.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSYS: i32 = 52;
const ERRNO_NOTSUP: i32 = 58;

/// Bytes of one WASI `subscription` (userdata u64, then the tagged union: tag
/// u8 at 8, the clock or fd fields from 16).
const SUBSCRIPTION_BYTES: usize = 48;
/// Bytes of one WASI `event` (userdata u64, error u16 at 8, type u8 at 10).
const EVENT_BYTES: usize = 32;
/// `eventtype::clock`; `fd_read` is 1 and `fd_write` 2.
const EVENTTYPE_CLOCK: u8 = 0;

/// The errno for a refused span: outside memory is `EFAULT`, anything else `EINVAL`.
fn errno(status: Status) -> i32 {
    match status {
        Status::InvalidMemoryAccess => ERRNO_FAULT,
        _ => ERRNO_INVAL,
    }
}

/// Little-endian u32 at `at` in `bytes` (which the caller has sized).
fn u32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// `fd_write` to stdout or stderr: checks every iovec, then logs up to
/// [`caps::FD_WRITE_BYTES`] of them as one line, within the plugin's log rate.
/// Returns the bytes taken (a short write beyond the cap) or the errno.
fn fd_write(c: &mut Ctx<'_>, fd: i32, iovs: i32, count: i32) -> Result<usize, i32> {
    let count = count as u32 as usize;
    if count > caps::FD_WRITE_IOVECS {
        return Err(ERRNO_INVAL);
    }
    let (data, state) = memory::whole(c).map_err(errno)?;
    let table = span(iovs, (count * 8) as i32, caps::FD_WRITE_IOVECS * 8);
    let table = &data[table.range(data.len()).map_err(errno)?];
    let mut ranges = Vec::with_capacity(count);
    for entry in table.chunks_exact(8) {
        let iovec = span(u32_at(entry, 0), u32_at(entry, 4), usize::MAX);
        ranges.push(iovec.range(data.len()).map_err(errno)?);
    }
    let total = ranges
        .iter()
        .map(|r| r.len())
        .fold(0, usize::saturating_add);
    let taken = total.min(caps::FD_WRITE_BYTES);
    let stdout = fd == 1;
    let enabled = if stdout {
        tracing::enabled!(target: "weir::plugin", tracing::Level::INFO)
    } else {
        tracing::enabled!(target: "weir::plugin", tracing::Level::ERROR)
    };
    if !enabled || taken == 0 {
        return Ok(taken);
    }
    if !state.plugin.log_bucket.take(taken) {
        warn_quota(state, Quota::LogRate);
        return Ok(taken);
    }
    let mut text = Vec::with_capacity(taken);
    for range in ranges {
        let room = taken - text.len();
        text.extend_from_slice(&data[range.start..range.start + range.len().min(room)]);
    }
    let plugin = state.plugin.name.as_str();
    let line = String::from_utf8_lossy(&text);
    let line = line.trim_end();
    if stdout {
        tracing::info!(target: "weir::plugin", plugin, stream = "stdout", "{line}");
    } else {
        tracing::error!(target: "weir::plugin", plugin, stream = "stderr", "{line}");
    }
    Ok(taken)
}

/// `random_get`: fills the guest's span in place, [`caps::RANDOM_CHUNK`] bytes
/// at a time, failing the callback if its deadline passes meanwhile.
fn random_get(c: &mut Ctx<'_>, ptr: i32, len: i32) -> wasmtime::Result<i32> {
    let (target, state) = match memory::borrow_mut(c, span(ptr, len, caps::RANDOM_BYTES)) {
        Ok(borrowed) => borrowed,
        Err(status) => return Ok(errno(status)),
    };
    for chunk in target.chunks_mut(caps::RANDOM_CHUNK) {
        on_time(state, "random_get")?;
        if getrandom::fill(chunk).is_err() {
            return Ok(ERRNO_NOSYS);
        }
    }
    Ok(ERRNO_SUCCESS)
}

/// `poll_oneoff` for clock subscriptions: each one fires at once, as if its
/// time had passed, and its event (its userdata, type clock, no error) is
/// written. It does not sleep: the guest runs on a worker thread that serves
/// other requests, and a blocked callback would stall them all. Go's runtime
/// calls it to sleep (`usleep`, e.g. while printing a panic) and needs
/// success; Rust's `std::thread::sleep` needs the clock event back. A guest
/// that sleeps until the clock has really moved (Go's timers) spins, and
/// stops at its callback deadline. cpp-host (Envoy) also returns at once, but
/// with no events. `fd_read`/`fd_write` subscriptions answer `ENOTSUP` (there
/// are no descriptors to wait on); an unknown tag, or no subscriptions,
/// `EINVAL`.
fn poll_oneoff(
    c: &mut Ctx<'_>,
    subscriptions: i32,
    events: i32,
    count: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    on_time(c.data(), "poll_oneoff")?;
    let count = count as u32 as usize;
    if count == 0 || count > caps::POLL_SUBSCRIPTIONS {
        return Ok(ERRNO_INVAL);
    }
    let table = span(
        subscriptions,
        (count * SUBSCRIPTION_BYTES) as i32,
        caps::POLL_SUBSCRIPTIONS * SUBSCRIPTION_BYTES,
    );
    let fired = match memory::borrow(c, [table]) {
        Ok(([table], _)) => match fired_clocks(table) {
            Ok(fired) => fired,
            Err(errno) => return Ok(errno),
        },
        Err(status) => return Ok(errno(status)),
    };
    let written = memory::write(c, events, &fired)
        .and_then(|()| memory::write_u32(c, nevents, (fired.len() / EVENT_BYTES) as u32));
    Ok(written.map_or_else(errno, |()| ERRNO_SUCCESS))
}

/// The events of a subscription table whose subscriptions are all clocks: one
/// fired clock event per subscription, in order. `ENOTSUP` for an fd
/// subscription, `EINVAL` for an unknown tag.
fn fired_clocks(table: &[u8]) -> Result<Vec<u8>, i32> {
    let mut events = Vec::with_capacity(table.len() / SUBSCRIPTION_BYTES * EVENT_BYTES);
    for subscription in table.chunks_exact(SUBSCRIPTION_BYTES) {
        match subscription[8] {
            EVENTTYPE_CLOCK => {}
            1 | 2 => return Err(ERRNO_NOTSUP),
            _ => return Err(ERRNO_INVAL),
        }
        let mut event = [0; EVENT_BYTES];
        event[..8].copy_from_slice(&subscription[..8]);
        event[10] = EVENTTYPE_CLOCK;
        events.extend_from_slice(&event);
    }
    Ok(events)
}

/// Registers the functions under both WASI module names.
pub fn add(r: &mut Registry<'_>) -> wasmtime::Result<()> {
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        add_module(r, module)?;
    }
    Ok(())
}

fn add_module(r: &mut Registry<'_>, m: &'static str) -> wasmtime::Result<()> {
    r.add(
        m,
        "fd_write",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, count: i32, written: i32| {
            on_time(c.data(), "fd_write")?;
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            match fd_write(&mut c, fd, iovs, count) {
                Ok(taken) => Ok(match memory::write_u32(&mut c, written, taken as u32) {
                    Ok(()) => ERRNO_SUCCESS,
                    Err(status) => errno(status),
                }),
                Err(errno) => Ok(errno),
            }
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        r.add(m, name, |mut c: Ctx<'_>, count: i32, size: i32| {
            let ok = memory::write_u32(&mut c, count, 0)
                .and_then(|()| memory::write_u32(&mut c, size, 0));
            Ok(ok.map_or_else(errno, |()| ERRNO_SUCCESS))
        })?;
    }
    for name in ["environ_get", "args_get"] {
        r.add(m, name, |_: Ctx<'_>, _: i32, _: i32| Ok(ERRNO_SUCCESS))?;
    }
    r.add(
        m,
        "clock_time_get",
        |mut c: Ctx<'_>, _clock: i32, _precision: i64, ret: i32| {
            let ok = memory::write_u64(&mut c, ret, unix_nanos());
            Ok(ok.map_or_else(errno, |()| ERRNO_SUCCESS))
        },
    )?;
    r.add(
        m,
        "clock_res_get",
        |mut c: Ctx<'_>, _clock: i32, ret: i32| {
            let ok = memory::write_u64(&mut c, ret, 1_000);
            Ok(ok.map_or_else(errno, |()| ERRNO_SUCCESS))
        },
    )?;
    r.add(m, "random_get", |mut c: Ctx<'_>, ptr: i32, len: i32| {
        random_get(&mut c, ptr, len)
    })?;
    r.add(
        m,
        "proc_exit",
        |_: Ctx<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the plugin called proc_exit({code})"
            )))
        },
    )?;
    r.add(m, "sched_yield", |_: Ctx<'_>| Ok(ERRNO_SUCCESS))?;
    r.add(
        m,
        "poll_oneoff",
        |mut c: Ctx<'_>, subscriptions: i32, events: i32, count: i32, nevents: i32| {
            poll_oneoff(&mut c, subscriptions, events, count, nevents)
        },
    )?;
    r.add(m, "fd_close", |_: Ctx<'_>, _: i32| Ok(ERRNO_BADF))?;
    r.add(m, "fd_fdstat_get", |_: Ctx<'_>, _: i32, _: i32| {
        Ok(ERRNO_BADF)
    })?;
    r.add(m, "fd_fdstat_set_flags", |_: Ctx<'_>, _: i32, _: i32| {
        Ok(ERRNO_BADF)
    })?;
    r.add(m, "fd_prestat_get", |_: Ctx<'_>, _: i32, _: i32| {
        Ok(ERRNO_BADF)
    })?;
    r.add(
        m,
        "fd_prestat_dir_name",
        |_: Ctx<'_>, _: i32, _: i32, _: i32| Ok(ERRNO_BADF),
    )?;
    r.add(
        m,
        "fd_read",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| Ok(ERRNO_BADF),
    )?;
    r.add(
        m,
        "fd_seek",
        |_: Ctx<'_>, _: i32, _: i64, _: i32, _: i32| Ok(ERRNO_BADF),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(userdata: u64, tag: u8) -> Vec<u8> {
        let mut bytes = vec![0; SUBSCRIPTION_BYTES];
        bytes[..8].copy_from_slice(&userdata.to_le_bytes());
        bytes[8] = tag;
        bytes
    }

    #[test]
    fn every_clock_subscription_fires_with_its_userdata() {
        let table = [subscription(7, 0), subscription(9, 0)].concat();
        let events = fired_clocks(&table).expect("clocks only");
        assert_eq!(events.len(), 2 * EVENT_BYTES);
        let second = &events[EVENT_BYTES..];
        assert_eq!(&second[..8], &9u64.to_le_bytes());
        assert_eq!(&second[8..10], &[0, 0], "no error");
        assert_eq!(second[10], EVENTTYPE_CLOCK);
    }

    #[test]
    fn fd_subscriptions_are_not_supported_and_unknown_tags_are_invalid() {
        let table = [subscription(7, 0), subscription(9, 1)].concat();
        assert_eq!(fired_clocks(&table), Err(ERRNO_NOTSUP));
        assert_eq!(fired_clocks(&subscription(1, 2)), Err(ERRNO_NOTSUP));
        assert_eq!(fired_clocks(&subscription(1, 3)), Err(ERRNO_INVAL));
    }
}
