//! The report of a misused guarded object: one block on stderr naming what
//! happened (overflow, underflow, use-after-free, double-free), the object,
//! the faulting address and instruction, and the allocation and free stacks.
//!
//! Each frame is written as `0xADDR MODULE+0xOFFSET [SYMBOL+0xN]`: the module
//! and its file offset from a pass over /proc/self/maps (read with
//! open/read into static buffers), the symbol where the module exports one
//! (`elf`, as dladdr would name it). `memx symbolize` turns the
//! module+offsets into function, file and line offline.
//!
//! Written from the fault handler: only `write(2)` and reads of memory and
//! /proc, into static buffers that one report at a time owns (REPORTING);
//! a second thread faulting meanwhile waits for the first report to end.
//!
//! Owns: the report's scratch buffers. Must never: allocate, take a lock, or
//! call into the loader.

use super::elf;
use super::pool::{self, Layout, Slot, Trace, FREED, LIVE, SLOTS};
use crate::sys::{self, io};
use crate::util::fmt::FixedBuf;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const DONE: u8 = 2;
static REPORTING: AtomicU8 = AtomicU8::new(IDLE);

/// Frames resolved per report: the faulting instruction and two stacks.
const MAX_FRAMES: usize = 1 + 2 * pool::DEPTH;
const MAX_PATH: usize = 256;

#[derive(Clone, Copy)]
struct Module {
    /// Frame address (0: unused entry).
    addr: usize,
    path: [u8; MAX_PATH],
    path_len: usize,
    /// `addr`'s offset in the mapped file.
    offset: usize,
    /// Where the file's ELF header is mapped (0: not seen).
    base: usize,
    found: bool,
}

impl Module {
    const NONE: Module = Module {
        addr: 0,
        path: [0; MAX_PATH],
        path_len: 0,
        offset: 0,
        base: 0,
        found: false,
    };
}

struct Scratch {
    modules: [Module; MAX_FRAMES],
    /// The module whose offset-0 mapping was seen last, and where.
    last_path: [u8; MAX_PATH],
    last_len: usize,
    last_base: usize,
    read: [u8; 4096],
}

struct Shared(UnsafeCell<Scratch>);
// SAFETY: used only by the thread that moved REPORTING from IDLE to BUSY.
unsafe impl Sync for Shared {}

static SCRATCH: Shared = Shared(UnsafeCell::new(Scratch {
    modules: [Module::NONE; MAX_FRAMES],
    last_path: [0; MAX_PATH],
    last_len: 0,
    last_base: 0,
    read: [0; 4096],
}));

/// The misuse found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Overflow,
    Underflow,
    UseAfterFree,
    DoubleFree,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Overflow => "overflow",
            Kind::Underflow => "underflow",
            Kind::UseAfterFree => "use-after-free",
            Kind::DoubleFree => "double-free",
        }
    }
}

/// The fault handler's hook: reports a fault at `addr` inside the pool and
/// says so; false for any other address (the fault is someone else's).
pub fn on_fault(sig: i32, addr: usize, pc: usize) -> bool {
    let Some(lay) = pool::layout() else {
        return false;
    };
    if !lay.contains(addr) {
        return false;
    }
    let Some(i) = nearest_object(&lay, addr) else {
        return false;
    };
    let slot = lay.slot(i);
    let freed = slot.state.load(Ordering::Acquire) == FREED;
    let kind = if freed {
        Kind::UseAfterFree
    } else if addr >= slot.addr + slot.size {
        Kind::Overflow
    } else {
        Kind::Underflow
    };
    let what = if sig == libc::SIGBUS {
        "SIGBUS"
    } else {
        "SIGSEGV"
    };
    report(kind, what, addr, pc, slot);
    true
}

/// The double free of a guarded object (its slot `i`): reports, then aborts.
pub fn double_free(i: usize, p: usize) -> ! {
    if let Some(lay) = pool::layout() {
        let slot = lay.slot(i);
        report(Kind::DoubleFree, "free()", p, 0, slot);
    }
    sys::abort()
}

/// The slot whose object (live or freed) lies nearest `addr`: the slot that
/// holds it, or in a guard page the nearer of the two slots around it.
fn nearest_object(lay: &Layout, addr: usize) -> Option<usize> {
    let (i, in_guard) = lay.position(addr);
    let used =
        |j: usize| j < SLOTS && lay.slot(j).state.load(Ordering::Acquire) & (LIVE | FREED) != 0;
    let distance = |j: usize| {
        let s = lay.slot(j);
        if addr < s.addr {
            s.addr - addr
        } else {
            addr.saturating_sub(s.addr + s.size)
        }
    };
    if !in_guard {
        return used(i).then_some(i);
    }
    let left = i.checked_sub(1).filter(|&j| used(j));
    let right = Some(i).filter(|&j| used(j));
    match (left, right) {
        (Some(l), Some(r)) => Some(if distance(l) <= distance(r) { l } else { r }),
        (l, r) => l.or(r),
    }
}

fn report(kind: Kind, what: &str, addr: usize, pc: usize, slot: &Slot) {
    if REPORTING
        .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Another thread is reporting: let it finish (its process ends).
        while REPORTING.load(Ordering::Acquire) == BUSY {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
        return;
    }
    // SAFETY: REPORTING is ours (BUSY): nobody else touches the scratch.
    let scratch = unsafe { &mut *SCRATCH.0.get() };
    let freed = kind == Kind::UseAfterFree || kind == Kind::DoubleFree;
    let mut n = 0;
    let mut add = |a: usize| {
        scratch.modules[n] = Module::NONE;
        scratch.modules[n].addr = a;
        n += 1;
    };
    add(pc);
    slot.alloc.frames().iter().for_each(|&a| add(a));
    if freed {
        slot.free.frames().iter().for_each(|&a| add(a));
    }
    resolve_modules(scratch, n);

    let mut line = FixedBuf::<512>::new();
    line.str("memx: ==== guarded allocation: ")
        .str(kind.name())
        .str(" ====\n");
    emit(&mut line);
    line.str("memx: ").str(what).str(" at ").hex(addr as u64);
    let (start, end) = (slot.addr, slot.addr + slot.size);
    if addr >= end && kind != Kind::DoubleFree {
        line.str(", ")
            .usize(addr - end)
            .str(" bytes past the end of");
    } else if addr < start {
        line.str(", ").usize(start - addr).str(" bytes before");
    } else if kind != Kind::DoubleFree {
        line.str(", ").usize(addr - start).str(" bytes into");
    } else {
        line.str(", freed again:");
    }
    line.str(" the ")
        .usize(slot.size)
        .str("-byte object at ")
        .hex(start as u64);
    if freed {
        line.str(" (freed)");
    }
    line.str("\n");
    emit(&mut line);
    let mut next = 0;
    if pc != 0 {
        line.str("memx: faulting instruction:\n");
        emit(&mut line);
        write_frame(&mut line, 0, &scratch.modules[0]);
    }
    next += 1;
    next = write_stack(
        &mut line,
        "allocated",
        &slot.alloc,
        &scratch.modules[next..n],
        next,
    );
    if freed {
        write_stack(
            &mut line,
            "freed",
            &slot.free,
            &scratch.modules[next..n],
            next,
        );
    }
    if kind != Kind::DoubleFree && crate::profile::dump_at_crash() {
        // Written by a dump writer (a copy-on-write child), not from this handler.
        line.str("memx: heap profile at the crash: the newest MEMX_PROFILE dump of this pid\n");
        emit(&mut line);
    }
    line.str("memx: ==== end of report (memx symbolize: function, file and line) ====\n");
    emit(&mut line);
    REPORTING.store(DONE, Ordering::Release);
}

/// Writes one stack's header and frames; returns the index after them.
fn write_stack<const N: usize>(
    line: &mut FixedBuf<N>,
    verb: &str,
    t: &Trace,
    modules: &[Module],
    first: usize,
) -> usize {
    line.str("memx: ")
        .str(verb)
        .str(" by thread ")
        .i64(t.tid)
        .str(":\n");
    emit(line);
    let k = t.frames().len();
    for (j, m) in modules.iter().take(k).enumerate() {
        write_frame(line, j, m);
    }
    first + k
}

fn write_frame<const N: usize>(line: &mut FixedBuf<N>, index: usize, m: &Module) {
    line.str("memx:     #")
        .usize(index)
        .str(" ")
        .hex(m.addr as u64)
        .str(" ");
    if !m.found {
        line.str("?\n");
        emit(line);
        return;
    }
    if m.path_len == 0 {
        line.str("[anon]");
    } else {
        line.bytes(&m.path[..m.path_len]);
    }
    line.str("+").hex(m.offset as u64);
    let mut name = [0u8; elf::MAX_NAME];
    if m.base != 0 {
        // SAFETY: `base` is where the maps showed this file's offset 0
        // mapped: its ELF header, in a loaded image.
        if let Some((len, off)) = unsafe { elf::symbol(m.base, m.addr, &mut name) } {
            line.str(" ").bytes(&name[..len]).str("+").hex(off as u64);
        }
    }
    line.str("\n");
    emit(line);
}

fn emit<const N: usize>(line: &mut FixedBuf<N>) {
    sys::write_stderr(line.as_bytes());
    line.clear();
}

/// One pass over /proc/self/maps: fills each frame's module, file offset
/// and image base.
fn resolve_modules(s: &mut Scratch, n: usize) {
    let fd = io::open_read(b"/proc/self/maps\0");
    if fd < 0 {
        return;
    }
    s.last_len = 0;
    s.last_base = 0;
    let mut have = 0;
    loop {
        let got = io::read_fd(fd, &mut s.read[have..]);
        have += got;
        let mut used = 0;
        while let Some(nl) = s.read[used..have].iter().position(|&c| c == b'\n') {
            let line = s.read[used..used + nl].as_ptr();
            let len = nl;
            // SAFETY: `line..line+len` lies in s.read, which the callee does
            // not touch (it writes only the module table and last_*).
            let bytes = unsafe { core::slice::from_raw_parts(line, len) };
            on_maps_line(
                &mut s.modules[..n],
                &mut s.last_path,
                &mut s.last_len,
                &mut s.last_base,
                bytes,
            );
            used += nl + 1;
        }
        if got == 0 {
            break;
        }
        if used == 0 && have == s.read.len() {
            // A line longer than the buffer: drop it.
            have = 0;
            continue;
        }
        s.read.copy_within(used..have, 0);
        have -= used;
    }
    io::close(fd);
}

fn on_maps_line(
    modules: &mut [Module],
    last_path: &mut [u8; MAX_PATH],
    last_len: &mut usize,
    last_base: &mut usize,
    line: &[u8],
) {
    let Some(m) = parse_maps_line(line) else {
        return;
    };
    let path = &m.path[..m.path.len().min(MAX_PATH)];
    if m.offset == 0 && path.first() == Some(&b'/') {
        last_path[..path.len()].copy_from_slice(path);
        *last_len = path.len();
        *last_base = m.start;
    }
    for f in modules.iter_mut() {
        if f.found || f.addr < m.start || f.addr >= m.end {
            continue;
        }
        f.found = true;
        f.offset = f.addr - m.start + m.offset;
        f.path[..path.len()].copy_from_slice(path);
        f.path_len = path.len();
        if !path.is_empty() && &last_path[..*last_len] == path {
            f.base = *last_base;
        }
    }
}

struct MapsLine<'a> {
    start: usize,
    end: usize,
    offset: usize,
    path: &'a [u8],
}

/// `start-end perms offset dev inode   path`.
fn parse_maps_line(line: &[u8]) -> Option<MapsLine<'_>> {
    let mut fields = line.splitn(6, |&c| c == b' ');
    let range = fields.next()?;
    let dash = range.iter().position(|&c| c == b'-')?;
    let start = hex(&range[..dash])?;
    let end = hex(&range[dash + 1..])?;
    let _perms = fields.next()?;
    let offset = hex(fields.next()?)?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let rest = fields.next().unwrap_or(&[]);
    let skip = rest.iter().position(|&c| c != b' ').unwrap_or(rest.len());
    Some(MapsLine {
        start,
        end,
        offset,
        path: &rest[skip..],
    })
}

fn hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0usize;
    for &c in s {
        let d = (c as char).to_digit(16)?;
        v = (v << 4) | d as usize;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let l = parse_maps_line(
            b"7f3a1c000000-7f3a1c021000 r-xp 00002000 08:01 1234      /usr/lib/libc.so.6",
        )
        .unwrap();
        assert_eq!(
            (l.start, l.end, l.offset),
            (0x7f3a1c000000, 0x7f3a1c021000, 0x2000)
        );
        assert_eq!(l.path, b"/usr/lib/libc.so.6");
        let anon = parse_maps_line(b"7f3a1c000000-7f3a1c021000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anon.path, b"");
        assert!(parse_maps_line(b"garbage").is_none());
    }

    #[test]
    fn frames_get_their_module_offset_and_base() {
        let mut modules = [Module::NONE; 2];
        modules[0].addr = 0x5000_1234;
        modules[1].addr = 0x9999_0000;
        let (mut lp, mut ll, mut lb) = ([0u8; MAX_PATH], 0, 0);
        for l in [
            &b"50000000-50001000 r--p 00000000 08:01 7 /bin/prog"[..],
            b"50001000-50002000 r-xp 00001000 08:01 7 /bin/prog",
        ] {
            on_maps_line(&mut modules, &mut lp, &mut ll, &mut lb, l);
        }
        assert!(modules[0].found);
        assert_eq!(&modules[0].path[..modules[0].path_len], b"/bin/prog");
        assert_eq!(modules[0].offset, 0x1234);
        assert_eq!(modules[0].base, 0x5000_0000);
        assert!(!modules[1].found);
    }
}
