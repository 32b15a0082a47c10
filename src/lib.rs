//! memx: a tcmalloc-style drop-in `malloc` for `LD_PRELOAD`.
//!
//! ```text
//!   export.rs        #[no_mangle] malloc/free/... one line each; load/exit hooks
//!   api.rs           C semantics: errno, overflow, alignment, realloc rules
//!   thread_cache/    FAST PATH: per-thread free lists, no lock        ──┐
//!     mod.rs           FreeList, ThreadCache, the malloc/free fast paths │
//!     slow.rs          refill, flush, overflow, first use                │
//!     sizing.rs        how long lists may grow; the global budget        │
//!     sampling.rs      the countdown's expiry; large + sampled requests; │
//!                      the allocation path's one door into the profiler  │ objects
//!     registry.rs      live caches: creation, thread exit, fork          │
//!   cpu_cache.rs     per-CPU chains of free objects (rseq), no lock     │
//!   central.rs       per-class central lists + transfer caches          │
//!     check.rs         checked mode (MEMX_CHECK) for small objects       │
//!   large.rs         every large-object operation (span per object)     │
//!     checked.rs       checked mode: guard pages, canaries, quarantine   │
//!   page_heap.rs     spans of 8 KiB pages, free lists, coalescing     ◄─┘ spans
//!     grow.rs          growth from the OS; a large span's growth in place
//!     release.rs       madvise by age and rate; MEMX_HEAP_LIMIT
//!   pagemap.rs       address → span (+ size class), lock-free reads
//!   span.rs          a run of pages: state, and per-state fields
//!   size_class.rs, sampler.rs, stats.rs, config.rs, init.rs, diag.rs
//!   profile/         heap profiler: stacks, records, dumps (see its mod.rs)
//!   guard/           guarded sampling: pool, fault report (GWP-ASan)
//!   meta.rs          metadata arena (never the user heap)
//!   sys/             the only code that calls libc / the kernel; knows no
//!                    allocator type
//!   free_object.rs   free-list links: encoding, the key, checked walks
//!   util/            bit tricks, no-alloc formatting
//! ```
//! Each module may use only those below it, in this order from the bottom:
//! util, sys → free_object → meta → size_class, sampler, config, diag → profile → span,
//! pagemap → page_heap → large, central → cpu_cache → thread_cache → api → stats →
//! export. Exceptions: `init` ties the layers together (the slow path
//! calls `init::ensure`, and init configures the layers and runs the
//! thread-exit and fork hooks), and `span` names the profiler's `Sample`
//! type (the record a sampled object's span keeps).
//!
//! # SYNCHRONIZATION
//! | lock                         | guards                                   |
//! |------------------------------|------------------------------------------|
//! | `thread_cache::registry::REGISTRY` | list of live thread caches, their pool |
//! | `central::CENTRAL[c]` (x129) | class c's spans with free objects, its transfer cache, checked mode's per-span bitmaps |
//! | `page_heap::HEAP`            | free spans, span pool, heap statistics, Taken and Large spans' state, checked mode's quarantine of freed large objects (`large::checked`) |
//! | `profile::lock()`            | the profiler's stack and sample tables   |
//! | `meta::META`                 | the metadata arena's bump pointer        |
//! | `guard::lock()`              | the guarded pool's slots and quarantine (a leaf: nothing is taken under it) |
//!
//! Order: REGISTRY → CENTRAL[c] (at most one at a time) → HEAP → PROFILE →
//! META → GUARD. HEAP and PROFILE are never held together; the order matters to
//! the fork handler, which takes them all.
//! The per-CPU caches take no lock: a block is changed only inside a
//! restartable sequence on its own CPU (`sys::rseq`), so they sit outside
//! the order, and code holding a central lock never pushes to them.
//! A thread cache is touched only by its own thread, except after its owner
//! is gone (thread exit, fork child). Page-map reads take no lock; its
//! writers hold HEAP. Nothing reachable from malloc allocates: the crate is
//! `no_std` and has no allocator at all.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod central;
pub mod config;
pub mod cpu_cache;
pub mod diag;
#[cfg(all(feature = "export", not(test)))]
pub mod export;
pub mod free_object;
pub mod guard;
pub mod init;
pub mod large;
pub mod meta;
pub mod page_heap;
pub mod pagemap;
pub mod profile;
pub mod sampler;
pub mod size_class;
pub mod span;
pub mod stats;
pub mod sys;
pub mod thread_cache;
pub mod util;

/// A panic inside the allocator cannot unwind through C callers, and the
/// default hook would allocate: print one line from the stack and abort.
#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    let mut line = util::fmt::FixedBuf::<512>::new();
    let _ = write!(line, "memx: internal error: {}", info.message());
    if let Some(loc) = info.location() {
        let _ = write!(line, " at {}:{}", loc.file(), loc.line());
    }
    line.str("\n");
    sys::write_stderr(line.as_bytes());
    sys::abort()
}

// The precompiled `core` refers to the unwinding personality routine even
// though this crate aborts on panic and never unwinds. A hidden definition
// satisfies the linker without exporting anything; it is never called.
#[cfg(all(not(test), target_arch = "x86_64"))]
core::arch::global_asm!(
    ".pushsection .text.rust_eh_personality,\"ax\",@progbits",
    ".globl rust_eh_personality",
    ".hidden rust_eh_personality",
    ".type rust_eh_personality,@function",
    "rust_eh_personality:",
    "ud2",
    ".popsection",
);
