//! The WASI preview 1 functions Proxy-Wasm SDKs import, granting nothing: no
//! files, no sockets, no environment, no arguments. stdout/stderr go to the log.

use super::memory::{self, Ctx};
use super::{Registry, unix_nanos};

/// WASI errno values used here.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSYS: i32 = 52;

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
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            let mut text = Vec::new();
            for i in 0..count {
                let Ok(entry) = memory::read(&mut c, iovs + i * 8, 8) else {
                    return Ok(ERRNO_INVAL);
                };
                let ptr = i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
                let len = i32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
                match memory::read(&mut c, ptr, len) {
                    Ok(bytes) => text.extend_from_slice(&bytes),
                    Err(_) => return Ok(ERRNO_INVAL),
                }
            }
            let plugin = c.data().plugin.name.as_str();
            let line = String::from_utf8_lossy(&text);
            let line = line.trim_end();
            if fd == 1 {
                tracing::info!(target: "weir::plugin", plugin, stream = "stdout", "{line}");
            } else {
                tracing::error!(target: "weir::plugin", plugin, stream = "stderr", "{line}");
            }
            match memory::write_u32(&mut c, written, text.len() as u32) {
                Ok(()) => Ok(ERRNO_SUCCESS),
                Err(_) => Ok(ERRNO_INVAL),
            }
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        r.add(m, name, |mut c: Ctx<'_>, count: i32, size: i32| {
            let ok = memory::write_u32(&mut c, count, 0)
                .and_then(|()| memory::write_u32(&mut c, size, 0));
            Ok(if ok.is_ok() {
                ERRNO_SUCCESS
            } else {
                ERRNO_INVAL
            })
        })?;
    }
    for name in ["environ_get", "args_get"] {
        r.add(m, name, |_: Ctx<'_>, _: i32, _: i32| Ok(ERRNO_SUCCESS))?;
    }
    r.add(
        m,
        "clock_time_get",
        |mut c: Ctx<'_>, _clock: i32, _precision: i64, ret: i32| {
            Ok(match memory::write_u64(&mut c, ret, unix_nanos()) {
                Ok(()) => ERRNO_SUCCESS,
                Err(_) => ERRNO_INVAL,
            })
        },
    )?;
    r.add(
        m,
        "clock_res_get",
        |mut c: Ctx<'_>, _clock: i32, ret: i32| {
            Ok(match memory::write_u64(&mut c, ret, 1_000) {
                Ok(()) => ERRNO_SUCCESS,
                Err(_) => ERRNO_INVAL,
            })
        },
    )?;
    r.add(m, "random_get", |mut c: Ctx<'_>, ptr: i32, len: i32| {
        let mut bytes = vec![0u8; len as u32 as usize];
        if getrandom::fill(&mut bytes).is_err() {
            return Ok(ERRNO_NOSYS);
        }
        Ok(match memory::write(&mut c, ptr, &bytes) {
            Ok(()) => ERRNO_SUCCESS,
            Err(_) => ERRNO_INVAL,
        })
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
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| Ok(ERRNO_NOSYS),
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
