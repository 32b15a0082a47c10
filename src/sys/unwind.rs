//! Stack capture through libgcc's `_Unwind_Backtrace`: works without frame
//! pointers (it reads the .eh_frame tables), and does not allocate: it finds
//! a frame's unwind tables with `_dl_find_object`, which libmemx defines
//! itself, hidden (`sys::dl_find`: glibc's when the running glibc has one,
//! else `dl_iterate_phdr`), so libmemx needs no GLIBC_2.35 symbol.
//!
//! The unwinder is linked in from the static libgcc_eh, its symbols local
//! to libmemx, rather than from libgcc_s.so: loading that library cost
//! every process about 100 KiB of resident pages (its mapping, and the
//! fault-around of its text when its initialisers ran), memx's own text
//! grows by 25 KiB, touched only when a stack is walked. An idle C
//! program's peak RSS went from 1508 to 1368 KiB, mimalloc-bench's mleak
//! from 2380 to 2072 KiB (glibc 1956). The program's own exceptions keep
//! using libgcc_s (and glibc's `_dl_find_object`, which libmemx does not
//! export). What this copy cannot see: frames that a JIT registered
//! with libgcc_s's `__register_frame` (a walk ends there).
//!
//! Owns: the call into libgcc_eh, and the address range of memx's own code.
//! Must never: be entered recursively by the same thread (the profiler's
//! re-entry guard sees to that), or symbolise anything.

use core::sync::atomic::{AtomicUsize, Ordering};

// Static, so the process need not load libgcc_s (see above).
#[link(name = "gcc_eh", kind = "static")]
extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut libc::c_void, *mut libc::c_void) -> i32,
        arg: *mut libc::c_void,
    ) -> i32;
    fn _Unwind_GetIP(ctx: *mut libc::c_void) -> usize;
}

const URC_NO_REASON: i32 = 0;
const URC_END_OF_STACK: i32 = 5;

struct Walk<'a> {
    out: &'a mut [usize],
    len: usize,
    /// Still inside memx's own frames (dropped).
    leading: bool,
    /// The walk ends after the first return address in (stop.0, stop.1].
    stop: (usize, usize),
}

extern "C" fn on_frame(ctx: *mut libc::c_void, arg: *mut libc::c_void) -> i32 {
    // SAFETY: `arg` is the `Walk` that `backtrace` passed, alive for the call.
    let w = unsafe { &mut *(arg as *mut Walk) };
    // SAFETY: `ctx` is the unwinder's context for this frame.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    if ip == 0 {
        return URC_END_OF_STACK;
    }
    if w.leading && is_own_code(ip) {
        return URC_NO_REASON;
    }
    w.leading = false;
    if w.len == w.out.len() {
        return URC_END_OF_STACK;
    }
    w.out[w.len] = ip;
    w.len += 1;
    if ip > w.stop.0 && ip <= w.stop.1 {
        return URC_END_OF_STACK;
    }
    URC_NO_REASON
}

/// Return addresses of the calling stack, innermost first, with memx's own
/// leading frames dropped; returns how many were written.
pub fn backtrace(out: &mut [usize]) -> usize {
    backtrace_until(out, (0, 0))
}

/// As `backtrace`, ending with the first return address inside the code
/// range (stop.0, stop.1] (a return address points past its call): the
/// frames beyond it are not walked at all, which is where the time goes
/// (libgcc interprets each frame's unwind table).
pub fn backtrace_until(out: &mut [usize], stop: (usize, usize)) -> usize {
    let mut w = Walk {
        out,
        len: 0,
        leading: true,
        stop,
    };
    // SAFETY: `on_frame` matches the callback type and `w` outlives the call.
    unsafe { _Unwind_Backtrace(on_frame, &mut w as *mut Walk as *mut libc::c_void) };
    w.len
}

static OWN_START: AtomicUsize = AtomicUsize::new(0);
static OWN_END: AtomicUsize = AtomicUsize::new(0);

fn is_own_code(ip: usize) -> bool {
    ip >= OWN_START.load(Ordering::Relaxed) && ip < OWN_END.load(Ordering::Relaxed)
}

extern "C" {
    /// The ELF header of the object this code is linked into (set by the
    /// linker; hidden, so it names memx's own image even when preloaded).
    static __ehdr_start: [u8; 64];
}

/// Finds memx's executable segment from its own program headers, so that
/// `backtrace` can drop memx's frames. Called once, before profiling starts.
pub fn find_own_code() {
    // Offsets of the Elf64 layout: e_phoff at 32, e_phentsize at 54, e_phnum
    // at 56; p_type at 0, p_flags at 4, p_vaddr at 16, p_memsz at 40.
    // SAFETY: a loaded object's ELF and program headers stay mapped, read-only.
    unsafe {
        let base = (&raw const __ehdr_start) as *const u8;
        let phoff = (base.add(32) as *const u64).read_unaligned() as usize;
        let phentsize = (base.add(54) as *const u16).read_unaligned() as usize;
        let phnum = (base.add(56) as *const u16).read_unaligned() as usize;
        let (mut lo, mut hi) = (usize::MAX, 0);
        let mut load_bias = None;
        for i in 0..phnum {
            let ph = base.add(phoff + i * phentsize);
            let p_type = (ph as *const u32).read_unaligned();
            let p_flags = (ph.add(4) as *const u32).read_unaligned();
            let p_offset = (ph.add(8) as *const u64).read_unaligned() as usize;
            let p_vaddr = (ph.add(16) as *const u64).read_unaligned() as usize;
            let p_memsz = (ph.add(40) as *const u64).read_unaligned() as usize;
            if p_type != libc::PT_LOAD {
                continue;
            }
            if p_offset == 0 {
                load_bias = Some(base as usize - p_vaddr);
            }
            if p_flags & libc::PF_X != 0 {
                lo = lo.min(p_vaddr);
                hi = hi.max(p_vaddr + p_memsz);
            }
        }
        if let Some(bias) = load_bias {
            if lo < hi {
                OWN_START.store(bias + lo, Ordering::Relaxed);
                OWN_END.store(bias + hi, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn deeper(n: usize, out: &mut [usize]) -> usize {
        if n == 0 {
            backtrace(out)
        } else {
            core::hint::black_box(deeper(n - 1, out))
        }
    }

    #[test]
    fn captures_a_deep_stack_and_stops_at_the_buffer_end() {
        // No find_own_code(): in a test binary everything is "own" code.
        let mut big = [0usize; 64];
        let n = deeper(10, &mut big);
        assert!(n >= 10, "only {n} frames");
        assert!(big[..n].iter().all(|&ip| ip != 0));
        let mut small = [0usize; 3];
        assert_eq!(deeper(10, &mut small), 3);
    }

    #[inline(never)]
    fn deeper_until(n: usize, out: &mut [usize], stop: (usize, usize)) -> usize {
        if n == 0 {
            backtrace_until(out, stop)
        } else {
            core::hint::black_box(deeper_until(n - 1, out, stop))
        }
    }

    #[test]
    fn stops_after_the_first_frame_in_the_stop_range() {
        let mut all = [0usize; 64];
        let n = deeper_until(10, &mut all, (0, 0));
        // The recursion's return address repeats from the second frame on;
        // a walk told to stop there ends at its first occurrence.
        let ip = all[3];
        let first = all.iter().position(|&a| a == ip).unwrap();
        assert!(first < 3 && n > 10, "{:x?}", &all[..n]);
        let mut out = [0usize; 64];
        let k = deeper_until(10, &mut out, (ip - 1, ip));
        assert_eq!(k, first + 1, "{:x?}", &out[..k]);
        assert_eq!(out[..k], all[..k]);
    }
}
