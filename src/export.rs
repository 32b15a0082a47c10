//! The exported C symbols: one line each, calling `api`; and the library's
//! constructor and destructor (what runs at load and at exit). Built only
//! with the `export` feature and outside `cargo test`, so the test harness
//! keeps the system allocator.
//!
//! Must never: hold policy. Everything below `api` decides.

use crate::api;
use crate::config;
use crate::init;
use crate::profile;
use crate::stats::{self, MallInfo, MallInfo2};
use core::ffi::c_void;

mod cxx;

type P = *mut c_void;

/// Where `memx snapshot PID` finds a process's dump prefix, signal and
/// counters (through /proc/PID/mem; layout in src/profile/published.rs).
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static memx_profile_info: &crate::profile::published::Published =
    &crate::profile::published::PUBLISHED;

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

// memx's own entry points, for the Python package (ctypes).

/// Writes a heap dump now; its path into `buf` (`len` bytes, NUL-terminated).
/// Returns the path's length, 0 when profiling is off, -1 on failure.
///
/// # Safety
/// `buf` points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn memx_dump(buf: *mut u8, len: usize) -> isize {
    if buf.is_null() {
        return -1;
    }
    // SAFETY: the caller's contract; not null.
    crate::profile::dump_for_caller(unsafe { core::slice::from_raw_parts_mut(buf, len) })
}

/// The `malloc_stats` figures, named by `memx_stats_names`: writes up to `n`
/// into `out`; returns how many there are.
///
/// # Safety
/// `out` points to `n` writable `u64`s.
#[no_mangle]
pub unsafe extern "C" fn memx_stats(out: *mut u64, n: usize) -> usize {
    if out.is_null() {
        return stats::figures(&mut []);
    }
    // SAFETY: the caller's contract; not null.
    stats::figures(unsafe { core::slice::from_raw_parts_mut(out, n) })
}

#[no_mangle]
pub extern "C" fn memx_stats_names() -> *const u8 {
    stats::FIGURE_NAMES.as_ptr()
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

// ------------------------------------ library constructor and destructor

/// Also initialise from the library's constructor, so configuration is
/// checked (and reported) even in a program that never allocates. Lazy
/// initialisation stays the rule: ld.so may call malloc before this runs.
unsafe extern "C" fn at_load() {
    init::ensure();
    // Where libc's `_exit` is, for ours (dlsym: not from inside malloc).
    crate::sys::io::find_real_exit();
    // glibc's `_dl_find_object`, for the unwinder's (dlvsym: not from
    // inside malloc); before this, stack walks use dl_iterate_phdr.
    crate::sys::dl_find::resolve();
    profile::set_stats_probe(|| {
        let s = stats::collect();
        [
            s.in_use as u64,
            (s.thread_cache + s.central) as u64,
            s.mapped as u64,
        ]
    });
    // After libc is initialised: the profiler may install a signal handler
    // and start its dump thread here, never from inside malloc.
    profile::start();
}

#[used]
#[link_section = ".init_array"]
static AT_LOAD: unsafe extern "C" fn() = at_load;

/// `MEMX_STATS_AT_EXIT=1`: the report, from the library's destructor, which
/// runs after the program's atexit handlers.
unsafe extern "C" fn at_exit() {
    if !init::is_ready() {
        return;
    }
    profile::at_exit();
    if config::get().stats_at_exit {
        stats::write_report(2);
    }
}

#[used]
#[link_section = ".fini_array"]
static AT_EXIT: unsafe extern "C" fn() = at_exit;
