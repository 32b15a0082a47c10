//! The one thread-local slot: a pointer to this thread's cache, in
//! initial-exec TLS.
//!
//! Why not `thread_local!`: in a cdylib it uses the dynamic TLS model, whose
//! `__tls_get_addr` may call malloc, and a value with `Drop` registers its
//! destructor through `__cxa_thread_atexit_impl`, which calls calloc. An
//! initial-exec slot is a single `%fs`-relative load, valid from the first
//! instruction of every thread, and starts out as the address of the static
//! empty cache (so the fast path needs no null check). The slot holds an
//! untyped pointer: what it points at is the thread cache's business.
//! Must never: grow beyond one word of static TLS.

/// Defines the slot, starting out as the address of the static `$initial`
/// in every thread. Invoked once, by the owner of what the slot points at
/// (`thread_cache`), so this module names no allocator type.
#[cfg(target_arch = "x86_64")]
macro_rules! define_slot {
    ($initial:path) => {
        core::arch::global_asm!(
            ".pushsection .tdata,\"awT\",@progbits",
            ".p2align 3",
            ".globl memx_tls_cache",
            ".hidden memx_tls_cache",
            ".type memx_tls_cache,@object",
            ".size memx_tls_cache,8",
            "memx_tls_cache:",
            ".quad {initial}",
            ".popsection",
            initial = sym $initial,
        );
    };
}
pub(crate) use define_slot;

#[cfg(target_arch = "x86_64")]
mod imp {
    #[inline(always)]
    pub fn get() -> *mut u8 {
        let v: *mut u8;
        // SAFETY: reads this thread's copy of the 8-byte slot defined above;
        // the GOT entry holds its offset from the thread pointer.
        unsafe {
            core::arch::asm!(
                "mov {v}, qword ptr [rip + memx_tls_cache@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{v}]",
                v = out(reg) v,
                options(nostack, readonly, preserves_flags, pure)
            );
        }
        v
    }

    #[inline(always)]
    pub fn set(tc: *mut u8) {
        // SAFETY: writes this thread's copy of the slot; nothing else aliases
        // it (each thread has its own).
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + memx_tls_cache@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) tc,
                options(nostack, preserves_flags)
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
compile_error!("memx supports x86-64 only for now (its TLS slot is written in x86-64 assembly)");

pub use imp::{get, set};
