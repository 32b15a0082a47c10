//! C++'s replaceable `operator new` and `operator delete`, all twenty forms
//! (plain, array, nothrow, aligned, sized), so that C++ programs reach memx
//! directly instead of through the C++ runtime's wrappers around `malloc`.
//! On mimalloc-bench's larson those wrappers cost 22 instructions and two
//! PLT jumps per new/delete pair (callgrind); jemalloc, tcmalloc and
//! mimalloc export these operators too.
//!
//! Failure is the C++ runtime's business. An `operator new` that finds no
//! memory must call the installed new_handler until it succeeds or throws,
//! then throw `std::bad_alloc` (a nothrow one returns null instead). This
//! crate aborts on unwind, so no exception may pass a Rust frame. Each
//! `new` is therefore a naked stub: it calls memx, returns what memx gave,
//! and only on null jumps (a tail jump: no memx frame stays on the stack)
//! to the next definition of the same operator in the search order, the
//! C++ runtime's. That one calls `malloc` (memx again) in the standard's
//! new_handler loop and throws or returns null as the standard says.
//!
//! The runtime's operators are looked up on the first failure only, never
//! at load: a failed `dlsym` (a C program has no C++ runtime) mallocs its
//! error message, and that allocation, made from the library constructor,
//! put memx's guard SIGSEGV handler in ahead of a program's own
//! (memx_guard_own_handler caught it).
//!
//! Owns: the addresses of the runtime's operators (`NEXT`). Must never:
//! leave a frame of its own on the stack while the runtime's operator runs,
//! or look the runtime up while memx is still serving the request.
#![allow(non_snake_case)]

use super::P;
use crate::api;
use crate::diag;
use crate::sys::dl;
use core::ffi::CStr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The operators whose failure the runtime handles, by `kind`.
const NEW_NAMES: [&CStr; 8] = [
    c"_Znwm",
    c"_Znam",
    c"_ZnwmRKSt9nothrow_t",
    c"_ZnamRKSt9nothrow_t",
    c"_ZnwmSt11align_val_t",
    c"_ZnamSt11align_val_t",
    c"_ZnwmSt11align_val_tRKSt9nothrow_t",
    c"_ZnamSt11align_val_tRKSt9nothrow_t",
];

/// The runtime's definition of each operator in NEW_NAMES (0: not looked
/// up yet).
static NEXT: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

/// The runtime's operator `kind` (an index into NEW_NAMES), for a `new`
/// that memx could not serve; called by the stubs after memx returned.
extern "C" fn runtime_operator(kind: usize) -> usize {
    let slot = &NEXT[kind];
    let mut f = slot.load(Relaxed);
    if f == 0 {
        f = dl::next_symbol(NEW_NAMES[kind]);
        slot.store(f, Relaxed);
    }
    if f == 0 {
        diag::fatal(
            b"operator new: out of memory, and no C++ runtime after memx to throw std::bad_alloc",
        );
    }
    f
}

extern "C" fn alloc(size: usize) -> P {
    api::malloc(size) as P
}

extern "C" fn alloc_aligned(size: usize, align: usize) -> P {
    api::memalign(align, size) as P
}

/// A `new` stub: memx's `$alloc` with the caller's arguments (size, and
/// alignment where there is one); on null, the runtime's operator `$kind`
/// with the same arguments (rdi, rsi, rdx are all an operator new takes).
/// Three pushes keep the calls 16-byte aligned; the CFI lets the
/// profiler's unwinder (and a debugger) walk through the stub.
macro_rules! new_stub {
    ($name:ident, $kind:expr, $alloc:path, $($arg:ident: $ty:ty),*) => {
        #[no_mangle]
        #[unsafe(naked)]
        pub extern "C" fn $name($($arg: $ty),*) -> P {
            core::arch::naked_asm!(
                ".cfi_startproc",
                "push rdi",
                ".cfi_adjust_cfa_offset 8",
                "push rsi",
                ".cfi_adjust_cfa_offset 8",
                "push rdx",
                ".cfi_adjust_cfa_offset 8",
                "call {alloc}",
                "test rax, rax",
                "jz 2f",
                "add rsp, 24",
                ".cfi_adjust_cfa_offset -24",
                "ret",
                ".cfi_adjust_cfa_offset 24",
                "2:",
                "mov edi, {kind}",
                "call {runtime}",
                "pop rdx",
                ".cfi_adjust_cfa_offset -8",
                "pop rsi",
                ".cfi_adjust_cfa_offset -8",
                "pop rdi",
                ".cfi_adjust_cfa_offset -8",
                "jmp rax",
                ".cfi_endproc",
                alloc = sym $alloc,
                runtime = sym runtime_operator,
                kind = const $kind,
            )
        }
    };
}

new_stub!(_Znwm, 0, alloc, _size: usize);
new_stub!(_Znam, 1, alloc, _size: usize);
new_stub!(_ZnwmRKSt9nothrow_t, 2, alloc, _size: usize, _nt: *const u8);
new_stub!(_ZnamRKSt9nothrow_t, 3, alloc, _size: usize, _nt: *const u8);
new_stub!(_ZnwmSt11align_val_t, 4, alloc_aligned, _size: usize, _align: usize);
new_stub!(_ZnamSt11align_val_t, 5, alloc_aligned, _size: usize, _align: usize);
new_stub!(_ZnwmSt11align_val_tRKSt9nothrow_t, 6, alloc_aligned, _size: usize, _align: usize, _nt: *const u8);
new_stub!(_ZnamSt11align_val_tRKSt9nothrow_t, 7, alloc_aligned, _size: usize, _align: usize, _nt: *const u8);

/// The deletes: all `free` (memx finds size and alignment itself).
macro_rules! delete {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name(p: P, $($arg: $ty),*) {
            api::free(p as *mut u8)
        }
    )*};
}

delete! {
    _ZdlPv();
    _ZdaPv();
    _ZdlPvm(_size: usize);
    _ZdaPvm(_size: usize);
    _ZdlPvRKSt9nothrow_t(_nt: *const u8);
    _ZdaPvRKSt9nothrow_t(_nt: *const u8);
    _ZdlPvSt11align_val_t(_align: usize);
    _ZdaPvSt11align_val_t(_align: usize);
    _ZdlPvmSt11align_val_t(_size: usize, _align: usize);
    _ZdaPvmSt11align_val_t(_size: usize, _align: usize);
    _ZdlPvSt11align_val_tRKSt9nothrow_t(_align: usize, _nt: *const u8);
    _ZdaPvSt11align_val_tRKSt9nothrow_t(_align: usize, _nt: *const u8);
}
