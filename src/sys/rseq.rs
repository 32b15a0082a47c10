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
//! The sections operate on one *block*: a word, `SLOTS` slots of chains and
//! a list of single objects,
//!
//! ```text
//!   word  = chains | objects << 16
//!   slot[i] = head | len << 48        for i < chains (the pushed chains)
//!   single  = head | ones << 48       (a list linked through the objects;
//!                                      ones = 0: empty, whatever the head)
//!   chains ≤ SLOTS,   objects = Σ len over slot[0..chains]
//!   objects + ones ≤ cap              (checked by both pushes)
//! ```
//!
//! and pick the block of the CPU they run on: `base + (cpu << CPU_SHIFT)`.
//! The chain sections commit with one store to the word, their last
//! instruction; before it they write only a slot past `chains`, which
//! nothing reads until a commit counts it. The single-object sections
//! commit with one store to `single`; before it, a push writes only the
//! link of the object it pushes, which is still the caller's. So a
//! restart leaves no trace. Threads over budget and threads asleep between
//! bursts pass objects one at a time (`pop_one`/`push_one`): a chain of one
//! per slot would take two sections per object and fill the slots.
//!
//! Owns: nothing but code. Must never: register rseq itself (glibc owns the
//! registration), or be called where `available()` said no.

use core::sync::atomic::{AtomicIsize, AtomicU8, Ordering::Relaxed};

/// Slots of one block: `8 × (2 + SLOTS)` = 128 bytes, two cache lines.
pub const SLOTS: usize = 14;
/// Bytes of one block: the word, the slots, the single-object list.
pub const BLOCK_BYTES: usize = 8 * (2 + SLOTS);
/// Byte offset of the single-object list in a block.
const SINGLE: usize = 8 * (1 + SLOTS);
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
    ".balign 32",
    "memx_rseq_push1_cs:",
    ".long 0, 0",
    ".quad 61f, 62f - 61f, 64f",
    ".balign 32",
    "memx_rseq_pop1_cs:",
    ".long 0, 0",
    ".quad 71f, 72f - 71f, 74f",
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
    "push rbx",
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
    "mov rbx, qword ptr [rax + {single}]",
    "shr rbx, 48",
    "add r11, rbx",
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
    "pop rbx",
    "ret",
    "23:",
    "xor eax, eax",
    "pop rbx",
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
    // memx_rseq_push1(block0 rdi, obj rsi, key rdx, cap rcx, rseq_off r8,
    //                 ncpu r9) -> 1 pushed, 0 full or no valid CPU.
    // rbx is saved before the section starts, so that a restart (at 60)
    // finds the stack as it was (as in push).
    ".globl memx_rseq_push1",
    ".hidden memx_rseq_push1",
    ".type memx_rseq_push1,@function",
    "memx_rseq_push1:",
    "push rbx",
    "60:",
    "lea r10, [rip + memx_rseq_push1_cs]",
    "mov qword ptr fs:[r8 + 8], r10",
    "61:",
    "mov eax, dword ptr fs:[r8 + 4]",
    "cmp eax, r9d",
    "jae 63f",
    "shl rax, {shift}",
    "add rax, rdi",
    "mov r11, qword ptr [rax]",
    "shr r11, 16",
    "mov r10, qword ptr [rax + {single}]",
    "mov rbx, r10",
    "shr rbx, 48",
    "add r11, rbx",
    "cmp r11, rcx",
    "jae 63f",
    "mov r11, rbx",
    // The old head, or END (all ones) if the list is empty.
    "mov rbx, -1",
    "test r11, r11",
    "jz 65f",
    "mov rbx, r10",
    "shl rbx, 16",
    "shr rbx, 16",
    "65:",
    "xor rbx, rdx",
    "mov qword ptr [rsi], rbx",
    "inc r11",
    "shl r11, 48",
    "or r11, rsi",
    "mov qword ptr [rax + {single}], r11",
    "62:",
    "mov eax, 1",
    "pop rbx",
    "ret",
    "63:",
    "xor eax, eax",
    "pop rbx",
    "ret",
    ".long {sig}",
    "64:",
    "jmp 60b",
    ".size memx_rseq_push1, . - memx_rseq_push1",
    // memx_rseq_pop1(block0 rdi, rseq_off rsi, ncpu rdx, key rcx) -> the
    // object, 0 if none, or (a head that is no object) | 1, uncommitted.
    ".globl memx_rseq_pop1",
    ".hidden memx_rseq_pop1",
    ".type memx_rseq_pop1,@function",
    "memx_rseq_pop1:",
    "push rbx",
    "70:",
    "lea r10, [rip + memx_rseq_pop1_cs]",
    "mov qword ptr fs:[rsi + 8], r10",
    "71:",
    "mov eax, dword ptr fs:[rsi + 4]",
    "cmp eax, edx",
    "jae 73f",
    "shl rax, {shift}",
    "add rax, rdi",
    "mov r10, qword ptr [rax + {single}]",
    "mov r11, r10",
    "shr r11, 48",
    "jz 73f",
    "mov rbx, r10",
    "shl rbx, 16",
    "shr rbx, 16",
    "test bl, 15",
    "jnz 75f",
    "test rbx, rbx",
    "jz 75f",
    // The head's link, decoded and cut to 48 bits (END: the list empties).
    "mov r10, qword ptr [rbx]",
    "xor r10, rcx",
    "shl r10, 16",
    "shr r10, 16",
    "dec r11",
    "shl r11, 48",
    "or r10, r11",
    "mov qword ptr [rax + {single}], r10",
    "72:",
    "mov rax, rbx",
    "pop rbx",
    "ret",
    "73:",
    "xor eax, eax",
    "pop rbx",
    "ret",
    "75:",
    "mov rax, rbx",
    "or rax, 1",
    "pop rbx",
    "ret",
    ".long {sig}",
    "74:",
    "jmp 70b",
    ".size memx_rseq_pop1, . - memx_rseq_pop1",
    ".popsection",
    shift = const CPU_SHIFT,
    slots = const SLOTS,
    single = const SINGLE,
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
    fn memx_rseq_push1(
        block0: *mut u64,
        obj: *mut u64,
        key: usize,
        cap: u64,
        off: isize,
        ncpu: u64,
    ) -> u64;
    fn memx_rseq_pop1(block0: *mut u64, off: isize, ncpu: u64, key: usize) -> u64;
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

/// Pushes the free object `obj` onto the single-object list of the block
/// of the CPU this runs on, if `objects + ones < cap`: `obj`'s link
/// (encoded with `key`) becomes the old head.
///
/// # Safety
/// As `push`, with the lists' members free objects linked with `key`;
/// `obj` is such an object, the caller's to give.
#[inline]
pub unsafe fn push_one(block0: *mut u64, obj: *mut u64, key: usize, cap: u64, ncpu: u32) -> bool {
    // SAFETY: as the caller promises; the section writes `obj`'s link and
    // the block's list word.
    unsafe { memx_rseq_push1(block0, obj, key, cap, OFFSET.load(Relaxed), ncpu as u64) != 0 }
}

/// Pops the head of this CPU's single-object list: the object; 0 if the
/// list is empty (or this thread has no valid CPU); or, left in place, a
/// head that is no object (a link overwritten while it was free) with bit
/// 0 set.
///
/// # Safety
/// As `push_one`.
#[inline]
pub unsafe fn pop_one(block0: *mut u64, key: usize, ncpu: u32) -> u64 {
    // SAFETY: as the caller promises; the section reads the head's link.
    unsafe { memx_rseq_pop1(block0, OFFSET.load(Relaxed), ncpu as u64, key) }
}

/// The objects on a block's single-object list, from its word.
pub fn single_len(block: *const u64) -> u64 {
    // SAFETY: a block's list word; a racy read of an aligned u64 through a
    // volatile load sees some committed value.
    unsafe { block.wrapping_byte_add(SINGLE).read_volatile() >> 48 }
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
