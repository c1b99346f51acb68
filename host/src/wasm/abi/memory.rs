//! Reading and writing guest memory, and handing bytes to the guest through its
//! own allocator.

use wasmtime::Caller;

use super::Status;
use crate::wasm::vm::VmState;

/// The host-call context.
pub type Ctx<'a> = Caller<'a, VmState>;

/// The guest's exported linear memory.
fn memory(caller: &mut Ctx<'_>) -> Option<wasmtime::Memory> {
    caller.data().memory
}

/// Checks that `len` bytes at `ptr` lie inside guest memory, without copying them.
pub fn check(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<(), Status> {
    borrow(caller, [(ptr, len)]).map(|_| ())
}

/// Copies `len` bytes at `ptr` out of the guest.
pub fn read(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let ([bytes], _) = borrow(caller, [(ptr, len)])?;
    Ok(bytes.to_vec())
}

/// Borrows the guest bytes of each `(ptr, len)` span alongside the host state,
/// so host calls can act on names and values without copying them out first.
pub fn borrow<'c, const N: usize>(
    caller: &'c mut Ctx<'_>,
    spans: [(i32, i32); N],
) -> Result<([&'c [u8]; N], &'c mut VmState), Status> {
    let memory = memory(caller).ok_or(Status::InvalidMemoryAccess)?;
    let (data, state) = memory.data_and_store_mut(caller);
    let data: &'c [u8] = data;
    let mut slices: [&'c [u8]; N] = [&[]; N];
    for (slice, (ptr, len)) in slices.iter_mut().zip(spans) {
        let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
        let end = ptr.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
        *slice = data.get(ptr..end).ok_or(Status::InvalidMemoryAccess)?;
    }
    Ok((slices, state))
}

/// Writes `bytes` at `ptr` in guest memory.
pub fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let memory = memory(caller).ok_or(Status::InvalidMemoryAccess)?;
    memory
        .write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|_| Status::InvalidMemoryAccess)
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
