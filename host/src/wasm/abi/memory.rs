//! Reading and writing guest memory, and handing bytes to the guest through its
//! own allocator.
//!
//! Every access goes through [`Span::range`]: the span must lie inside guest
//! memory (`INVALID_MEMORY_ACCESS`) and within the host call's cap
//! (`BAD_ARGUMENT`, see `caps`), checked by arithmetic alone, before the host
//! borrows, copies or allocates anything.

use std::ops::Range;

use wasmtime::Caller;

use super::Status;
use crate::wasm::vm::VmState;

/// The host-call context.
pub type Ctx<'a> = Caller<'a, VmState>;

/// A guest byte range a host call uses, with the most bytes the call accepts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    ptr: usize,
    len: usize,
    cap: usize,
}

/// The guest's `(ptr, len)` as a span capped at `cap` bytes. Both are read as
/// unsigned, as the ABI defines them, so a length of -1 is 4 GiB, not a wrap.
pub fn span(ptr: i32, len: i32, cap: usize) -> Span {
    Span {
        ptr: ptr as u32 as usize,
        len: len as u32 as usize,
        cap,
    }
}

impl Span {
    /// Its byte range in a memory of `memory_len` bytes: `INVALID_MEMORY_ACCESS`
    /// when it reaches past the end, else `BAD_ARGUMENT` when it exceeds its cap.
    pub fn range(self, memory_len: usize) -> Result<Range<usize>, Status> {
        let end = self
            .ptr
            .checked_add(self.len)
            .filter(|&end| end <= memory_len)
            .ok_or(Status::InvalidMemoryAccess)?;
        if self.len > self.cap {
            return Err(Status::BadArgument);
        }
        Ok(self.ptr..end)
    }
}

/// The guest's exported linear memory.
fn memory(caller: &mut Ctx<'_>) -> Option<wasmtime::Memory> {
    caller.data().memory
}

/// Copies a span out of the guest (at most its cap).
pub fn read(caller: &mut Ctx<'_>, span: Span) -> Result<Vec<u8>, Status> {
    let ([bytes], _) = borrow(caller, [span])?;
    Ok(bytes.to_vec())
}

/// The whole of guest memory alongside the host state, for calls whose spans
/// come from guest memory itself (WASI iovecs); check each with [`Span::range`].
pub fn whole<'c>(caller: &'c mut Ctx<'_>) -> Result<(&'c [u8], &'c mut VmState), Status> {
    let memory = memory(caller).ok_or(Status::InvalidMemoryAccess)?;
    let (data, state) = memory.data_and_store_mut(caller);
    Ok((data, state))
}

/// Borrows the guest bytes of each span alongside the host state, so host
/// calls can act on names and values without copying them out first.
pub fn borrow<'c, const N: usize>(
    caller: &'c mut Ctx<'_>,
    spans: [Span; N],
) -> Result<([&'c [u8]; N], &'c mut VmState), Status> {
    let (data, state) = whole(caller)?;
    let mut slices: [&'c [u8]; N] = [&[]; N];
    for (slice, span) in slices.iter_mut().zip(spans) {
        *slice = &data[span.range(data.len())?];
    }
    Ok((slices, state))
}

/// Borrows a span of guest memory for writing in place, alongside the host state.
pub fn borrow_mut<'c>(
    caller: &'c mut Ctx<'_>,
    span: Span,
) -> Result<(&'c mut [u8], &'c mut VmState), Status> {
    let memory = memory(caller).ok_or(Status::InvalidMemoryAccess)?;
    let (data, state) = memory.data_and_store_mut(caller);
    let range = span.range(data.len())?;
    Ok((&mut data[range], state))
}

/// Writes `bytes` at `ptr` in guest memory.
pub fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let span = Span {
        ptr: ptr as u32 as usize,
        len: bytes.len(),
        cap: bytes.len(),
    };
    let (target, _) = borrow_mut(caller, span)?;
    target.copy_from_slice(bytes);
    Ok(())
}

/// Writes a little-endian u32 at `ptr`.
pub fn write_u32(caller: &mut Ctx<'_>, ptr: i32, value: u32) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian u64 at `ptr`.
pub fn write_u64(caller: &mut Ctx<'_>, ptr: i32, value: u64) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Gives `bytes` to the guest: allocates exactly `len` bytes with the guest's
/// allocator, copies, and stores the pointer and length at `ret_ptr`/`ret_len`.
/// Empty data is returned as pointer 0, length 0 without allocating.
///
/// Returns `Err` only when the guest's allocator traps.
pub fn give(
    caller: &mut Ctx<'_>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<Result<(), Status>> {
    if bytes.is_empty() {
        return Ok(write_u32(caller, ret_ptr, 0).and_then(|()| write_u32(caller, ret_len, 0)));
    }
    let Ok(len) = i32::try_from(bytes.len()) else {
        return Ok(Err(Status::InternalFailure));
    };
    let Some(allocate) = caller.data().allocator.clone() else {
        return Ok(Err(Status::InternalFailure));
    };
    let ptr = allocate.call(&mut *caller, len)?;
    if ptr == 0 {
        return Ok(Err(Status::InternalFailure));
    }
    Ok(write(caller, ptr, bytes)
        .and_then(|()| write_u32(caller, ret_ptr, ptr as u32))
        .and_then(|()| write_u32(caller, ret_len, len as u32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_outside_memory_is_an_invalid_access_before_its_cap_is_considered() {
        assert_eq!(
            span(-16, 1000, 10).range(65536),
            Err(Status::InvalidMemoryAccess)
        );
        assert_eq!(
            span(0, -1, 10).range(65536),
            Err(Status::InvalidMemoryAccess)
        );
        assert_eq!(
            span(-1, 2, 10).range(65536),
            Err(Status::InvalidMemoryAccess)
        );
    }

    #[test]
    fn a_span_over_its_cap_is_a_bad_argument() {
        assert_eq!(span(0, 11, 10).range(65536), Err(Status::BadArgument));
        assert_eq!(span(16, 10, 10).range(65536), Ok(16..26));
        assert_eq!(span(65536, 0, 10).range(65536), Ok(65536..65536));
    }
}
