//! Sampling CPython's own allocator (pymalloc) from LD_PRELOAD: with
//! profiling on, memx installs itself as a *hook* over the interpreter's
//! `PYMEM_DOMAIN_MEM` and `PYMEM_DOMAIN_OBJ` allocators, as tracemalloc
//! does: each hook function calls the allocator it replaced.
//!
//! - malloc/calloc/realloc of up to `SMALL` bytes (pymalloc's own limit:
//!   larger requests it hands to `PyMem_RawMalloc`, i.e. memx's malloc,
//!   whose countdown already sees them) take their size off the thread's
//!   sampling countdown (`thread_cache::count_down_is_sample`); when it
//!   crosses zero memx serves the request itself as a sampled object (a
//!   span of its own, recorded with the stack, Python frames included).
//!   Every other request goes to the previous allocator unchanged.
//! - free is the previous allocator's own function, installed as it is
//!   (the hook's context is the previous allocator's, so no free pays for
//!   the hook); realloc of anything the hook does not sample goes to the
//!   previous allocator. Ownership is decided in one place, memx's own
//!   `free`/`realloc`: pymalloc hands every pointer outside its arenas to
//!   `PyMem_RawFree`/`PyMem_RawRealloc`, which are memx's, so a sampled
//!   object comes back to memx (and stays memx's when it grows) whether the
//!   hook is still installed or was removed meanwhile (tracemalloc.stop()
//!   restores the allocator it found). Routing those objects to memx
//!   directly from the hook would skip a tracemalloc installed *under* the
//!   hook, leaving its traces stale, and would cost a page-map lookup on
//!   every free.
//!
//! When it is installed: at a sample point (the profiler's `record_alloc`)
//! on a thread whose own thread state holds the GIL
//! (`python::holds_gil`: initialised, not finalising, the sub-interpreter
//! safe check), retried at later sample points while the allocator is not
//! pymalloc's (tracemalloc started first). The install calls no Python
//! allocator and runs no Python code: `PyMem_GetAllocator`,
//! `PyMem_SetAllocator` and `_PyMem_GetCurrentAllocatorName` copy or
//! compare structs, under `ALLOCATORS_MUTEX` from 3.12 (which no allocation
//! call holds, so taking it from inside one cannot deadlock). A Python
//! allocator call may be in progress below this point on the same thread
//! (pymalloc handing a large request to malloc, or growing its arena table
//! with `PyMem_RawRealloc`); that is why the install must not allocate
//! through Python: a nested pymalloc call there could reenter `new_arena`.
//! Swapping the domain struct does not disturb that call: it already
//! dispatched through the previous allocator, whose object any later free
//! sends back to it through the hook.
//!
//! Not installed: with profiling off; with an allocator other than pymalloc
//! (`PYTHONMALLOC=malloc`, `--python-all`: every object already reaches
//! memx; the debug hooks, `-X dev`: they would reject a sampled object
//! freed after the hook is gone; mimalloc, 3.13's option and the
//! free-threaded builds' only allocator: it does not hand foreign pointers
//! to free). A failed check prints one line and leaves the process as
//! before.
//!
//! Owns: the saved previous allocators and the install state. Must never:
//! call a Python allocator or Python code from the allocation path, resolve
//! symbols outside `detect` (the constructor), or keep a Python object.

use super::python;
use crate::sys::dl;
use crate::thread_cache;
use crate::util::fmt::FixedBuf;
use core::cell::UnsafeCell;
use core::ffi::{c_char, c_void, CStr};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// pymalloc serves requests up to this many bytes from its pools; larger
/// ones it passes to `PyMem_RawMalloc` (SMALL_REQUEST_THRESHOLD, 3.8–3.13).
const SMALL: usize = 512;

const DOMAIN_MEM: i32 = 1;
const DOMAIN_OBJ: i32 = 2;

/// CPython's `PyMemAllocatorEx` (3.5+).
#[repr(C)]
#[derive(Clone, Copy)]
struct Allocator {
    ctx: *mut c_void,
    malloc: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void,
    calloc: unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void,
    realloc: unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> *mut c_void,
    free: unsafe extern "C" fn(*mut c_void, *mut c_void),
}

/// The allocators the hook replaced, one per domain (MEM, OBJ); each hook's
/// `ctx` points at its domain's slot, as tracemalloc's do.
struct Saved(UnsafeCell<[Option<Allocator>; 2]>);
// SAFETY: each slot is written once, before the hook that reads it is
// published with PyMem_SetAllocator (under the GIL), and never again.
unsafe impl Sync for Saved {}
static PREV: Saved = Saved(UnsafeCell::new([None, None]));

type GetFn = unsafe extern "C" fn(i32, *mut Allocator);
type SetFn = unsafe extern "C" fn(i32, *const Allocator);
type NameFn = unsafe extern "C" fn() -> *const c_char;

/// Entry points found by `detect` (0 = not CPython or not found).
static GET: AtomicUsize = AtomicUsize::new(0);
static SET: AtomicUsize = AtomicUsize::new(0);
static NAME: AtomicUsize = AtomicUsize::new(0);

/// Install state: NOT_YET → (WAITING ↔ NOT_YET) → INSTALLED or OFF.
static STATE: AtomicU32 = AtomicU32::new(OFF);
const OFF: u32 = 0;
const NOT_YET: u32 = 1;
const BUSY: u32 = 2;
const INSTALLED: u32 = 3;
/// Samples to let pass between two tries while someone else's hook is on.
const RETRY_EVERY: u32 = 64;
static SKIPPED: AtomicU32 = AtomicU32::new(0);
static SAID_WAITING: AtomicU32 = AtomicU32::new(0);

/// From the library constructor, after `python::detect`: resolves the
/// allocator API when this is a CPython whose frames memx reads.
pub fn detect() {
    if !python::active() {
        return;
    }
    let syms = [
        dl::symbol(c"PyMem_GetAllocator"),
        dl::symbol(c"PyMem_SetAllocator"),
        dl::symbol(c"_PyMem_GetCurrentAllocatorName"),
    ];
    if syms.contains(&0) {
        say(b"memx: Python's allocator API was not found; pymalloc's objects are not sampled");
        return;
    }
    GET.store(syms[0], Ordering::Relaxed);
    SET.store(syms[1], Ordering::Relaxed);
    NAME.store(syms[2], Ordering::Relaxed);
    STATE.store(NOT_YET, Ordering::Release);
}

/// Whether the hook is in place (for stats and tests).
pub fn installed() -> bool {
    STATE.load(Ordering::Relaxed) == INSTALLED
}

/// At a sample point, with no allocator or profiler lock held: installs the
/// hook if it is not yet in place and this thread may (holds the GIL).
pub fn maybe_install() {
    if STATE.load(Ordering::Relaxed) != NOT_YET {
        return;
    }
    if SKIPPED.load(Ordering::Relaxed) > 0 {
        SKIPPED.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    if !python::holds_gil() {
        return;
    }
    if STATE
        .compare_exchange(NOT_YET, BUSY, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    // SAFETY: this thread holds the GIL in an initialised, running
    // interpreter, and the entry points were resolved by `detect`.
    let next = unsafe { install() };
    STATE.store(next, Ordering::Release);
}

/// # Safety
/// The caller holds the GIL (its own thread state), Python is running, and
/// `detect` resolved the entry points.
unsafe fn install() -> u32 {
    // SAFETY: (whole body) the functions have CPython's signatures
    // (3.8–3.13); they copy or compare structs and call no allocator.
    unsafe {
        let name: NameFn = core::mem::transmute(NAME.load(Ordering::Relaxed));
        let n = name();
        if !n.is_null() {
            match CStr::from_ptr(n).to_bytes() {
                b"pymalloc" => {}
                // Every object already reaches memx's malloc.
                b"malloc" => return OFF,
                other => {
                    let mut line = FixedBuf::<160>::new();
                    line.str("memx: Python's allocator is ").bytes(other).str(
                        ", not pymalloc: its objects are not sampled (memx hooks pymalloc only)",
                    );
                    say(line.as_bytes());
                    return OFF;
                }
            }
        } else {
            // Someone else's hook (tracemalloc started first): try again
            // later, once it is gone.
            if SAID_WAITING.swap(1, Ordering::Relaxed) == 0 {
                say(b"memx: Python's allocator is hooked already (tracemalloc?); pymalloc's objects are sampled once that hook is removed");
            }
            SKIPPED.store(RETRY_EVERY, Ordering::Relaxed);
            return NOT_YET;
        }
        let get: GetFn = core::mem::transmute(GET.load(Ordering::Relaxed));
        let set: SetFn = core::mem::transmute(SET.load(Ordering::Relaxed));
        let saved = &mut *PREV.0.get();
        for (slot, domain) in [(0, DOMAIN_MEM), (1, DOMAIN_OBJ)] {
            let mut a = core::mem::MaybeUninit::<Allocator>::uninit();
            get(domain, a.as_mut_ptr());
            saved[slot] = Some(a.assume_init());
        }
        for (slot, domain) in [(0, DOMAIN_MEM), (1, DOMAIN_OBJ)] {
            // PyMem_SetAllocator copies the struct.
            if let Some(p) = saved[slot].as_mut() {
                set(domain, &hook_over(p));
            }
        }
        INSTALLED
    }
}

fn say(msg: &[u8]) {
    crate::sys::write_stderr(msg);
    crate::sys::write_stderr(b"\n");
}

/// The hook over the saved allocator `p`: its ctx names `p`; malloc, calloc
/// and realloc are memx's; free is pymalloc's own, installed as it is, so
/// that a free (as many calls as allocations) pays nothing for the hook.
/// That passes pymalloc's free our ctx instead of its own null one, which
/// it ignores: the hook goes only over exactly pymalloc's allocator
/// (`_PyMem_GetCurrentAllocatorName` said "pymalloc": functions and null
/// ctx compared), whose functions never read their ctx (3.8–3.13).
fn hook_over(p: &mut Allocator) -> Allocator {
    Allocator {
        free: p.free,
        ctx: p as *mut Allocator as *mut c_void,
        malloc: hook_malloc,
        calloc: hook_calloc,
        realloc: hook_realloc,
    }
}

/// # Safety
/// `ctx` is the hook's context: a saved previous allocator.
#[inline(always)]
unsafe fn prev<'a>(ctx: *mut c_void) -> &'a Allocator {
    // SAFETY: the caller's promise; the slot never changes once published.
    unsafe { &*(ctx as *const Allocator) }
}

/// A request of `size` bytes the countdown chose: memx serves it. Null if
/// it could not (the previous allocator then serves it, unsampled).
fn sampled(size: usize) -> *mut c_void {
    thread_cache::alloc_sampled_object(size.max(1)) as *mut c_void
}

/// Every pymalloc request goes through here: only the countdown is charged
/// inline (14 instructions to the tail call, counted in the disassembly);
/// the rest is cold.
unsafe extern "C" fn hook_malloc(ctx: *mut c_void, size: usize) -> *mut c_void {
    if size <= SMALL && thread_cache::charge_countdown(size) {
        // SAFETY: this hook's own context.
        return unsafe { malloc_crossed_zero(ctx, size) };
    }
    // SAFETY: `ctx` is this hook's saved allocator (set at install).
    unsafe {
        let a = prev(ctx);
        (a.malloc)(a.ctx, size)
    }
}

/// `hook_malloc` of the request that crossed the countdown's zero.
///
/// # Safety
/// As for `hook_malloc`.
#[cold]
#[inline(never)]
unsafe fn malloc_crossed_zero(ctx: *mut c_void, size: usize) -> *mut c_void {
    if thread_cache::crossed_zero_is_sample() {
        let p = sampled(size);
        if !p.is_null() {
            return p;
        }
    }
    // SAFETY: as in `hook_malloc`.
    unsafe {
        let a = prev(ctx);
        (a.malloc)(a.ctx, size)
    }
}

unsafe extern "C" fn hook_calloc(ctx: *mut c_void, n: usize, elsize: usize) -> *mut c_void {
    if let Some(size) = n.checked_mul(elsize) {
        if size <= SMALL && thread_cache::count_down_is_sample(size) {
            let p = sampled(size);
            if !p.is_null() {
                // SAFETY: `p` holds at least `size` writable bytes.
                unsafe { core::ptr::write_bytes(p as *mut u8, 0, size) };
                return p;
            }
        }
    }
    // SAFETY: as in `hook_malloc`.
    unsafe {
        let a = prev(ctx);
        (a.calloc)(a.ctx, n, elsize)
    }
}

unsafe extern "C" fn hook_realloc(ctx: *mut c_void, p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        // SAFETY: the same context.
        return unsafe { hook_malloc(ctx, size) };
    }
    // `p` is the caller's live block of this domain (or one of memx's,
    // which the previous allocator hands to memx's realloc).
    // SAFETY: as in `hook_malloc`, for the live block `p` above.
    unsafe {
        let a = prev(ctx);
        if size <= SMALL && thread_cache::count_down_is_sample(size) {
            // The old block's size is unknown here: let its owner resize
            // it (which copies what is valid), then move the result.
            let q = (a.realloc)(a.ctx, p, size);
            if q.is_null() {
                return q;
            }
            let s = sampled(size);
            if s.is_null() {
                return q;
            }
            core::ptr::copy_nonoverlapping(q as *const u8, s as *mut u8, size);
            (a.free)(a.ctx, q);
            return s;
        }
        (a.realloc)(a.ctx, p, size)
    }
}
