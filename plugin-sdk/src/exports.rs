//! The Proxy-Wasm callbacks a module exports, each handed to the module's
//! [`Dispatch`]. `export!` installs the dispatcher at `_initialize`.
#![allow(unsafe_code)]

use std::cell::RefCell;

use crate::Plugin;
use crate::runtime::{Dispatch, Runtime};

thread_local! {
    static DISPATCH: RefCell<Option<Box<dyn Dispatch>>> = const { RefCell::new(None) };
}

/// Makes plugin type `P` the module's; called once by `export!`.
pub fn install<P: Plugin>() {
    DISPATCH.with(|d| *d.borrow_mut() = Some(Box::new(Runtime::<P>::default())));
}

/// Runs `f` on the dispatcher; `default` before `install`.
fn with<R>(default: R, f: impl FnOnce(&dyn Dispatch) -> R) -> R {
    DISPATCH.with(|d| match d.borrow().as_deref() {
        Some(dispatch) => f(dispatch),
        None => default,
    })
}

/// Marks the module as speaking Proxy-Wasm ABI 0.2.1.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    with((), |d| d.on_context_create(context_id, parent_id));
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_vm_start(_root_id: u32, _size: usize) -> u32 {
    1
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_configure(root_id: u32, size: usize) -> u32 {
    u32::from(with(false, |d| d.on_configure(root_id, size)))
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, end: u32) -> u32 {
    with(0, |d| d.on_request_headers(context_id, end != 0))
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_request_body(context_id: u32, size: usize, end: u32) -> u32 {
    with(0, |d| d.on_request_body(context_id, size, end != 0))
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_request_trailers(_context_id: u32, _trailers: usize) -> u32 {
    0
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, end: u32) -> u32 {
    with(0, |d| d.on_response_headers(context_id, end != 0))
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_response_body(context_id: u32, size: usize, end: u32) -> u32 {
    with(0, |d| d.on_response_body(context_id, size, end != 0))
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_response_trailers(_context_id: u32, _trailers: usize) -> u32 {
    0
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_http_call_response(
    _root_id: u32,
    token: u32,
    headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    with((), |d| d.on_http_call_response(token, headers, body_size));
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_redis_call_response(_root_id: u32, token: u32, status: u32, size: usize) {
    with((), |d| d.on_redis_call_response(token, status, size));
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_tick(root_id: u32) {
    with((), |d| d.on_tick(root_id));
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_log(context_id: u32) {
    with((), |d| d.on_log(context_id));
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_delete(context_id: u32) {
    with((), |d| d.on_delete(context_id));
}
