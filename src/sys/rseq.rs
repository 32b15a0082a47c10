//! Restartable sequences: glibc's per-thread `rseq` registration, and the two
//! critical sections the per-CPU caches are built on.
//!
//! glibc ≥ 2.35 registers an `rseq` area for every thread it creates (a
//! second registration would fail with EBUSY), at thread pointer +
//! `__rseq_offset`, and sets `__rseq_size` to 0 when it did not register
//! (older kernels, valgrind, `GLIBC_TUNABLES=glibc.pthread.rseq=0`). Both
//! symbols are referenced weakly, so a glibc without them reads as "no
//! rseq" instead of failing to load. The kernel keeps the area's `cpu_id`
//! current, and restarts a critical section at its abort handler when the
//! thread is preempted, migrated or sent a signal inside it.
//!
//! The sections operate on one *slot block*: a word and `SLOTS` slots,
//!
//! ```text
//!   word  = chains | objects << 16
//!   slot[i] = head | len << 48        for i < chains (the pushed chains)
//!   chains ≤ SLOTS,   objects = Σ len over slot[0..chains]
//! ```
//!
//! and pick the block of the CPU they run on: `base + (cpu << CPU_SHIFT)`.
//! Each commits with one store to the word, its last instruction; before it
//! they write only a slot past `chains`, which nothing reads until a commit
//! counts it, so a restart leaves no trace.
//!
//! Owns: nothing but code. Must never: register rseq itself (glibc owns the
//! registration), or be called where `available()` said no.

use core::sync::atomic::{AtomicIsize, AtomicU8, Ordering::Relaxed};

/// Slots of one block: `8 × (1 + SLOTS)` = 128 bytes, two cache lines.
pub const SLOTS: usize = 15;
/// Bytes of one block.
pub const BLOCK_BYTES: usize = 8 * (1 + SLOTS);
/// log2 of the bytes between two CPUs' block arrays.
pub const CPU_SHIFT: u32 = 15;
/// The abort signature glibc registers on x86-64 (`RSEQ_SIG`): the kernel
/// aborts only to an address preceded by it.
const RSEQ_SIG: u32 = 0x5305_3053;

// struct rseq (uapi/linux/rseq.h): u32 cpu_id_start, u32 cpu_id, u64
// rseq_cs, u32 flags, ... — `cpu_id` at 4, `rseq_cs` at 8.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".weak __rseq_offset",
    ".weak __rseq_size",
    // The two section descriptors (struct rseq_cs: u32 version, u32 flags,
    // u64 start_ip, u64 post_commit_offset, u64 abort_ip), 32-aligned.
    ".pushsection .data.rel.ro.memx_rseq,\"aw\",@progbits",
    ".balign 32",
    "memx_rseq_push_cs:",
    ".long 0, 0",
    ".quad 21f, 22f - 21f, 24f",
    ".balign 32",
    "memx_rseq_pop_cs:",
    ".long 0, 0",
    ".quad 31f, 32f - 31f, 34f",
    ".popsection",
    ".pushsection .text.memx_rseq,\"ax\",@progbits",
    // memx_rseq_offset_ptr() -> &__rseq_offset, or null (weak, absent)
    ".globl memx_rseq_offset_ptr",
    ".hidden memx_rseq_offset_ptr",
    ".type memx_rseq_offset_ptr,@function",
    "memx_rseq_offset_ptr:",
    "mov rax, qword ptr [rip + __rseq_offset@GOTPCREL]",
    "ret",
    ".globl memx_rseq_size_ptr",
    ".hidden memx_rseq_size_ptr",
    ".type memx_rseq_size_ptr,@function",
    "memx_rseq_size_ptr:",
    "mov rax, qword ptr [rip + __rseq_size@GOTPCREL]",
    "ret",
    // memx_rseq_push(block0 rdi, entry rsi, len rdx, cap rcx, rseq_off r8,
    //                ncpu r9) -> 1 pushed, 0 no room or no valid CPU
    ".globl memx_rseq_push",
    ".hidden memx_rseq_push",
    ".type memx_rseq_push,@function",
    "memx_rseq_push:",
    "20:",
    "lea r10, [rip + memx_rseq_push_cs]",
    "mov qword ptr fs:[r8 + 8], r10",
    "21:",
    "mov eax, dword ptr fs:[r8 + 4]",
    "cmp eax, r9d",
    "jae 23f",
    "shl rax, {shift}",
    "add rax, rdi",
    "mov r10, qword ptr [rax]",
    "movzx r11d, r10w",
    "cmp r11d, {slots}",
    "jae 23f",
    "mov r11, r10",
    "shr r11, 16",
    "add r11, rdx",
    "cmp r11, rcx",
    "ja 23f",
    "movzx r11d, r10w",
    "mov qword ptr [rax + 8 + r11 * 8], rsi",
    "mov r11, rdx",
    "shl r11, 16",
    "lea r10, [r10 + r11 + 1]",
    "mov qword ptr [rax], r10",
    "22:",
    "mov eax, 1",
    "ret",
    "23:",
    "xor eax, eax",
    "ret",
    ".long {sig}",
    "24:",
    "jmp 20b",
    ".size memx_rseq_push, . - memx_rseq_push",
    // memx_rseq_pop(block0 rdi, rseq_off rsi, ncpu rdx) -> entry, or 0
    ".globl memx_rseq_pop",
    ".hidden memx_rseq_pop",
    ".type memx_rseq_pop,@function",
    "memx_rseq_pop:",
    "30:",
    "lea r10, [rip + memx_rseq_pop_cs]",
    "mov qword ptr fs:[rsi + 8], r10",
    "31:",
    "mov eax, dword ptr fs:[rsi + 4]",
    "cmp eax, edx",
    "jae 33f",
    "shl rax, {shift}",
    "add rax, rdi",
    "mov r10, qword ptr [rax]",
    "movzx r11d, r10w",
    "test r11d, r11d",
    "jz 33f",
    "mov r11, qword ptr [rax + r11 * 8]",
    "mov rcx, r11",
    "shr rcx, 48",
    "shl rcx, 16",
    "inc rcx",
    "sub r10, rcx",
    "mov qword ptr [rax], r10",
    "32:",
    "mov rax, r11",
    "ret",
    "33:",
    "xor eax, eax",
    "ret",
    ".long {sig}",
    "34:",
    "jmp 30b",
    ".size memx_rseq_pop, . - memx_rseq_pop",
    ".popsection",
    shift = const CPU_SHIFT,
    slots = const SLOTS,
    sig = const RSEQ_SIG,
);

extern "C" {
    fn memx_rseq_offset_ptr() -> *const isize;
    fn memx_rseq_size_ptr() -> *const u32;
    fn memx_rseq_push(
        block0: *mut u64,
        entry: u64,
        len: u64,
        cap: u64,
        off: isize,
        ncpu: u64,
    ) -> u64;
    fn memx_rseq_pop(block0: *mut u64, off: isize, ncpu: u64) -> u64;
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static AVAILABLE: AtomicU8 = AtomicU8::new(UNKNOWN);
static OFFSET: AtomicIsize = AtomicIsize::new(0);

/// Whether glibc registered rseq for this process's threads (asked once;
/// valgrind and `glibc.pthread.rseq=0` say no).
pub fn available() -> bool {
    match AVAILABLE.load(Relaxed) {
        YES => true,
        NO => false,
        _ => probe(),
    }
}

#[cold]
fn probe() -> bool {
    // SAFETY: both return a GOT entry: the address of glibc's variable, or
    // null where glibc has none (weak references).
    let (off, size) = unsafe { (memx_rseq_offset_ptr(), memx_rseq_size_ptr()) };
    // SAFETY: non-null pointers name glibc's initialised, read-only-after-
    // startup variables.
    let ok = !off.is_null() && !size.is_null() && unsafe { *size } >= 20;
    if ok {
        // SAFETY: as above.
        OFFSET.store(unsafe { *off }, Relaxed);
    }
    let ok = ok && cpu_id().is_some();
    AVAILABLE.store(if ok { YES } else { NO }, Relaxed);
    ok
}

/// The CPU this thread ran on a moment ago, from its rseq area; None if
/// this thread has no registration (a thread not made by glibc).
pub fn cpu_id() -> Option<u32> {
    let off = OFFSET.load(Relaxed);
    let id: u32;
    // SAFETY: glibc's rseq area of this thread lies at fs + off (probe);
    // reading its cpu_id has no side effect.
    unsafe {
        core::arch::asm!(
            "mov {id:e}, dword ptr fs:[{off} + 4]",
            off = in(reg) off,
            id = out(reg) id,
            options(nostack, readonly, preserves_flags)
        );
    }
    // RSEQ_CPU_ID_UNINITIALIZED (-1) and _REGISTRATION_FAILED (-2).
    (id < u32::MAX - 1).then_some(id)
}

/// Pushes `entry` (a chain head | len << 48) onto the block of the CPU
/// this runs on, if it has a free slot and `objects + len ≤ cap`.
///
/// # Safety
/// `available()`; `block0 + (c << CPU_SHIFT)` is a writable block for every
/// c < ncpu, written only through these two functions.
#[inline]
pub unsafe fn push(block0: *mut u64, entry: u64, len: u64, cap: u64, ncpu: u32) -> bool {
    // SAFETY: as the caller promises; the section writes only the block.
    unsafe { memx_rseq_push(block0, entry, len, cap, OFFSET.load(Relaxed), ncpu as u64) != 0 }
}

/// Pops the last pushed entry of this CPU's block; 0 if it has none (or
/// this thread has no valid CPU number).
///
/// # Safety
/// As `push`.
#[inline]
pub unsafe fn pop(block0: *mut u64, ncpu: u32) -> u64 {
    // SAFETY: as the caller promises.
    unsafe { memx_rseq_pop(block0, OFFSET.load(Relaxed), ncpu as u64) }
}

/// The highest possible CPU number + 1, from
/// `/sys/devices/system/cpu/possible` ("0-3", "0,2-5"); None if unreadable.
/// CPU numbers need not be dense, so caches are sized by this, not by the
/// number of CPUs online.
pub fn possible_cpus() -> Option<u32> {
    let mut buf = [0u8; 256];
    let n = super::read_file(b"/sys/devices/system/cpu/possible\0", &mut buf);
    parse_highest(&buf[..n]).map(|m| m + 1)
}

fn parse_highest(s: &[u8]) -> Option<u32> {
    let mut best: Option<u32> = None;
    let mut cur: Option<u32> = None;
    for &c in s {
        if c.is_ascii_digit() {
            let v = cur
                .unwrap_or(0)
                .checked_mul(10)?
                .checked_add((c - b'0') as u32)?;
            cur = Some(v);
        } else {
            if let Some(v) = cur.take() {
                best = Some(best.map_or(v, |b| b.max(v)));
            }
            if !matches!(c, b',' | b'-' | b'\n') {
                return None;
            }
        }
    }
    if let Some(v) = cur {
        best = Some(best.map_or(v, |b| b.max(v)));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn possible_cpu_lists_parse() {
        assert_eq!(parse_highest(b"0-3\n"), Some(3));
        assert_eq!(parse_highest(b"0\n"), Some(0));
        assert_eq!(parse_highest(b"0,2-5,7\n"), Some(7));
        assert_eq!(parse_highest(b""), None);
        assert_eq!(parse_highest(b"0-x"), None);
        assert!(possible_cpus().unwrap() >= 1);
    }
}
