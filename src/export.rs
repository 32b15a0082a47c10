//! The exported C symbols: one line each, calling `api`. Built only with the
//! `export` feature and outside `cargo test`, so the test harness keeps the
//! system allocator.
//!
//! Must never: hold policy. Everything below `api` decides.

use crate::api;
use crate::init;
use crate::stats::{self, MallInfo, MallInfo2};
use core::ffi::c_void;

type P = *mut c_void;

#[no_mangle]
pub extern "C" fn malloc(size: usize) -> P {
    api::malloc(size) as P
}

#[no_mangle]
pub extern "C" fn free(p: P) {
    api::free(p as *mut u8)
}

#[no_mangle]
pub extern "C" fn cfree(p: P) {
    api::free(p as *mut u8)
}

#[no_mangle]
pub extern "C" fn free_sized(p: P, _size: usize) {
    api::free(p as *mut u8)
}

#[no_mangle]
pub extern "C" fn free_aligned_sized(p: P, _align: usize, _size: usize) {
    api::free(p as *mut u8)
}

#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> P {
    api::calloc(n, size) as P
}

/// # Safety
/// C contract: `p` is null or a live allocation.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: P, size: usize) -> P {
    // SAFETY: the C caller's contract.
    unsafe { api::realloc(p as *mut u8, size) as P }
}

/// # Safety
/// C contract: `p` is null or a live allocation.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: P, n: usize, size: usize) -> P {
    // SAFETY: the C caller's contract.
    unsafe { api::reallocarray(p as *mut u8, n, size) as P }
}

/// # Safety
/// `out` must be a valid pointer to write the result to (POSIX contract).
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut P, align: usize, size: usize) -> i32 {
    // SAFETY: the C caller's contract.
    unsafe { api::posix_memalign(out as *mut *mut u8, align, size) }
}

#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> P {
    api::aligned_alloc(align, size) as P
}

#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> P {
    api::memalign(align, size) as P
}

#[no_mangle]
pub extern "C" fn valloc(size: usize) -> P {
    api::valloc(size) as P
}

#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> P {
    api::pvalloc(size) as P
}

#[no_mangle]
pub extern "C" fn malloc_usable_size(p: P) -> usize {
    api::malloc_usable_size(p as *mut u8)
}

#[no_mangle]
pub extern "C" fn malloc_trim(pad: usize) -> i32 {
    api::malloc_trim(pad)
}

#[no_mangle]
pub extern "C" fn malloc_stats() {
    stats::write_report(2)
}

#[no_mangle]
pub extern "C" fn mallinfo2() -> MallInfo2 {
    stats::mallinfo2()
}

#[no_mangle]
pub extern "C" fn mallinfo() -> MallInfo {
    stats::mallinfo()
}

#[no_mangle]
pub extern "C" fn mallopt(param: i32, value: i32) -> i32 {
    api::mallopt(param, value)
}

/// Leaving without destructors (os._exit, multiprocessing's workers) still
/// writes the profiler's exit dump.
#[no_mangle]
pub extern "C" fn _exit(code: i32) -> ! {
    init::fast_exit(code)
}

#[no_mangle]
pub extern "C" fn _Exit(code: i32) -> ! {
    init::fast_exit(code)
}

// glibc's internal names, which some programs and libraries call directly.

#[no_mangle]
pub extern "C" fn __libc_malloc(size: usize) -> P {
    api::malloc(size) as P
}

#[no_mangle]
pub extern "C" fn __libc_free(p: P) {
    api::free(p as *mut u8)
}

#[no_mangle]
pub extern "C" fn __libc_calloc(n: usize, size: usize) -> P {
    api::calloc(n, size) as P
}

/// # Safety
/// C contract: `p` is null or a live allocation.
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: P, size: usize) -> P {
    // SAFETY: the C caller's contract.
    unsafe { api::realloc(p as *mut u8, size) as P }
}

#[no_mangle]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> P {
    api::memalign(align, size) as P
}

#[no_mangle]
pub extern "C" fn __libc_valloc(size: usize) -> P {
    api::valloc(size) as P
}

#[no_mangle]
pub extern "C" fn __libc_pvalloc(size: usize) -> P {
    api::pvalloc(size) as P
}
