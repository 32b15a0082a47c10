//! Heap dumps: a consistent snapshot of the stack table, written in pprof's
//! legacy heap profile format ("heap_v2") to `<file>.tmp` and renamed to
//! `<prefix>.<pid>.<seq>.heap`, so a reader never sees half a file.
//!
//! ```text
//! heap profile:   12:  1048576 [   300: 9437184] @ heap_v2/524288
//!      3:   393216 [    50:  655360] @ 0x55d0c1e2a1b9 0x55d0c1e2a2f0 ...
//! ...
//!
//! MAPPED_LIBRARIES:
//! <a copy of /proc/self/maps>
//! ```
//! Counts are raw samples; readers unsample them with the rate (pprof:
//! scale = 1 / (1 − exp(−avg/rate)), avg = bytes / objects, per pair).
//!
//! Owns: the dump sequence number and the dump lock (one dump at a time).
//! Must never: run in a signal handler, allocate through malloc (the
//! snapshot lives in pages mapped for it), or hold the table's lock while
//! writing to the file.

use super::peak::Snap;
use super::process;
use super::python::{self, Entry};
use super::table::{Counts, MAX_DEPTH};
use super::STATE;
use crate::config;
use crate::sys;
use crate::sys::io;
use crate::sys::lock::Lock;
use crate::util::fmt::FixedBuf;
use crate::util::round_up;
use core::sync::atomic::{AtomicU32, Ordering};

static DUMP_LOCK: Lock = Lock::new();
static SEQ: AtomicU32 = AtomicU32::new(1);
/// Set once a failure was reported; in the word shared with the dump
/// writers when there is one (a writer's own statics die with it).
static REPORTED_FAILURE: AtomicU32 = AtomicU32::new(0);
const FAILURE_REPORTED: u32 = 1;

pub type PathBuf = FixedBuf<{ config::Path::MAX + 48 }>;

/// What a dump holds: the live heap now, or as it was at its peak.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Now,
    Peak,
}

/// The fork child numbers its own dumps from 1 (its files carry its pid).
pub fn reset_after_fork() {
    SEQ.store(1, Ordering::Relaxed);
    // SAFETY: the child has one thread; a dump the parent was writing is
    // not ours to finish.
    unsafe { DUMP_LOCK.reset() };
}

/// The sequence number of the next dump (taken by the process that asks:
/// a dump writer's own increments die with it).
pub fn take_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// In a dump writer: its copy of the dump lock may have been held by a
/// thread of the program that does not exist there.
pub fn reset_lock_in_writer() {
    // SAFETY: the writer has one thread.
    unsafe { DUMP_LOCK.reset() };
}

/// Writes dump number `seq` of this process (named after the pid that
/// asked, also in a dump writer) from `taken`, or from a copy taken now;
/// returns its path, or None when it could not be written (reported once
/// on stderr; the program goes on).
pub fn write(seq: u32, taken: Option<Taken>) -> Option<PathBuf> {
    write_file(Some(seq), || taken.or_else(|| snapshot(Kind::Now)))
}

/// Writes the peak profile (`<prefix>.<pid>.peak.heap`, replaced at each
/// write); its path, or None when it could not be written or there is no
/// peak yet.
pub fn write_peak() -> Option<PathBuf> {
    let peak = snapshot(Kind::Peak)?;
    write_file(None, || Some(peak))
}

/// `<prefix>.<pid>.<seq>.heap` (or `.peak.heap` without a `seq`), written
/// through a temporary file from the copy `take` gives.
fn write_file(seq: Option<u32>, take: impl FnOnce() -> Option<Taken>) -> Option<PathBuf> {
    let _one_at_a_time = DUMP_LOCK.lock();
    let prefix = super::cfg().profile_prefix.as_bytes();
    let mut path = PathBuf::new();
    path.bytes(prefix)
        .str(".")
        .u64(super::published::pid() as u64)
        .str(".");
    match seq {
        Some(seq) => path.u64_width_zero(seq as u64, 4).str(".heap"),
        None => path.str("peak.heap"),
    };
    let mut tmp = PathBuf::new();
    tmp.bytes(path.as_bytes()).str(".tmp\0");
    let mut fin = PathBuf::new();
    fin.bytes(path.as_bytes()).str("\0");
    if path.len() + 5 >= PathBuf::capacity() {
        report_failure(path.as_bytes(), libc::ENAMETOOLONG);
        return None;
    }
    let fd = match open_tmp(tmp.as_bytes()) {
        Ok(fd) => fd,
        Err(e) => {
            report_failure(tmp.as_bytes(), e);
            return None;
        }
    };
    let ok = write_contents(fd, take());
    io::close(fd);
    if !ok {
        io::unlink(tmp.as_bytes());
        report_failure(tmp.as_bytes(), libc::EIO);
        return None;
    }
    if let Err(e) = io::rename(tmp.as_bytes(), fin.as_bytes()) {
        io::unlink(tmp.as_bytes());
        report_failure(fin.as_bytes(), e);
        return None;
    }
    Some(path)
}

/// Creates the temporary file, replacing a stale one a crashed process of
/// the same pid left (never following a symlink planted there).
fn open_tmp(tmp: &[u8]) -> Result<i32, i32> {
    match io::create_exclusive(tmp) {
        Err(libc::EEXIST) => {
            io::unlink(tmp);
            io::create_exclusive(tmp)
        }
        r => r,
    }
}

fn report_failure(path: &[u8], err: i32) {
    let flag = crate::sys::snapshot_child::shared_word().unwrap_or(&REPORTED_FAILURE);
    if flag.fetch_or(FAILURE_REPORTED, Ordering::Relaxed) & FAILURE_REPORTED != 0 {
        return;
    }
    let mut line = FixedBuf::<512>::new();
    line.str("memx: cannot write heap profile ")
        .bytes(path.strip_suffix(b"\0").unwrap_or(path))
        .str(": ")
        .str(errno_text(err))
        .str(" (further failures are not reported)\n");
    sys::write_stderr(line.as_bytes());
}

fn errno_text(e: i32) -> &'static str {
    match e {
        libc::ENOENT => "no such directory",
        libc::EACCES | libc::EPERM => "permission denied",
        libc::EROFS => "read-only file system",
        libc::ENOSPC => "no space left on device",
        libc::ENOTDIR => "a path component is not a directory",
        libc::ENAMETOOLONG => "name too long",
        libc::ELOOP => "refusing to follow a symbolic link",
        libc::EIO => "write error",
        _ => "error",
    }
}

/// The snapshot, header, one line per stack, then the process maps.
fn write_contents(fd: i32, taken: Option<Taken>) -> bool {
    let mut out = Writer::new(fd);
    let Some(Taken {
        snaps,
        n,
        bytes,
        pyframes,
        peak,
    }) = taken
    else {
        return false;
    };
    // SAFETY: `snapshot` mapped `bytes` bytes holding `n` initialised Snaps.
    let list = unsafe { core::slice::from_raw_parts(snaps, n) };
    let mut total = Counts::default();
    for s in list {
        total.allocs += s.counts.allocs;
        total.alloc_bytes += s.counts.alloc_bytes;
        total.frees += s.counts.frees;
        total.free_bytes += s.counts.free_bytes;
    }
    // Room for the counts and MAX_DEPTH words of 19 characters each.
    let mut line = FixedBuf::<{ 96 + 19 * MAX_DEPTH }>::new();
    line.str("heap profile: ");
    counts(&mut line, &total);
    line.str(" @ heap_v2/")
        .usize(crate::sampler::mean())
        .str("\n");
    out.put(line.as_bytes());
    for s in list {
        line.clear();
        counts(&mut line, &s.counts);
        line.str(" @");
        // SAFETY: buckets are never freed and their frames never change.
        for &ip in unsafe { (*s.bucket).frames() } {
            line.str(" ").hex(ip as u64);
        }
        line.str("\n");
        out.put(line.as_bytes());
    }
    sys::unmap(snaps as *mut u8, bytes);
    out.put(b"\nMAPPED_LIBRARIES:\n");
    copy_maps(&mut out);
    if let Some((bytes, after_ns)) = peak {
        write_peak_note(&mut out, bytes, after_ns);
    }
    write_python_frames(&mut out, pyframes);
    process::write(&mut |b: &[u8]| out.put(b));
    out.finish()
}

/// After the maps, in a peak profile (readers keep unknown sections):
///
/// ```text
/// PEAK:
/// the sampled live heap at its peak: 109051904 bytes in use (estimated), 2.345 s after start
/// ```
fn write_peak_note(out: &mut Writer, bytes: u64, after_ns: u64) {
    let mut line = FixedBuf::<200>::new();
    line.str("\nPEAK:\nthe sampled live heap at its peak: ")
        .u64(bytes)
        .str(" bytes in use (estimated), ")
        .u64(after_ns / 1_000_000_000)
        .str(".")
        .u64_width_zero(after_ns / 1_000_000 % 1000, 3)
        .str(" s after start\n");
    out.put(line.as_bytes());
}

fn counts<const N: usize>(line: &mut FixedBuf<N>, c: &Counts) {
    line.u64_width(c.inuse(), 6)
        .str(": ")
        .u64_width(c.inuse_bytes(), 8)
        .str(" [")
        .u64_width(c.allocs, 6)
        .str(": ")
        .u64_width(c.alloc_bytes, 8)
        .str("]");
}

/// After the maps, when the stacks hold Python frames:
///
/// ```text
/// PYTHON_FRAMES:
/// 0xf000000000000001\t<function>\t<file>\t<line>
/// ```
/// pprof readers skip these lines (they are not maps lines) and show the
/// tagged words as unknown addresses; memx's own tools name them.
fn write_python_frames(out: &mut Writer, newest: *const Entry) {
    if newest.is_null() {
        return;
    }
    out.put(b"\nPYTHON_FRAMES:\n");
    let mut e = newest;
    let mut line = FixedBuf::<700>::new();
    while !e.is_null() {
        // SAFETY: entries are published under the lock before the snapshot
        // read `newest`, and never change or go away.
        let r = unsafe { &*e };
        line.clear();
        line.hex((python::TAG | r.id as usize) as u64)
            .str("\t")
            .bytes(r.name())
            .str("\t")
            .bytes(r.file())
            .str("\t")
            .i64(r.line as i64)
            .str("\n");
        out.put(line.as_bytes());
        e = r.older();
    }
}

/// A consistent copy of every bucket's counts, in pages mapped for it
/// (`bytes` of them, `n` Snaps), and the newest Python frame entry then.
/// What it points to (buckets' frames, frame entries) never changes.
pub struct Taken {
    snaps: *mut Snap,
    n: usize,
    bytes: usize,
    pyframes: *const Entry,
    /// A peak profile's estimated bytes and time since start.
    peak: Option<(u64, u64)>,
}

impl Taken {
    /// Unmaps the copy without writing it (the writer has its own).
    pub fn discard(self) {
        sys::unmap(self.snaps as *mut u8, self.bytes);
    }
}

/// Copies every bucket's counts (or the peak's copy) under the lock into
/// freshly mapped pages; None if mapping failed or there is no peak yet.
fn snapshot(kind: Kind) -> Option<Taken> {
    let snap = take_kind(&STATE.lock(), kind);
    // Requests that came while the lock was held are served now.
    super::worker::serve_pending();
    snap
}

/// The copy of the live heap now, from the state the caller holds locked.
pub fn take(st: &super::State) -> Option<Taken> {
    take_kind(st, Kind::Now)
}

fn take_kind(st: &super::State, kind: Kind) -> Option<Taken> {
    let peak = &st.peak;
    if kind == Kind::Peak && peak.bytes == 0 {
        return None;
    }
    let cap = match kind {
        Kind::Now => st.table.buckets(),
        Kind::Peak => peak.snaps().len(),
    }
    .max(1);
    let bytes = round_up(cap * core::mem::size_of::<Snap>(), sys::os_page_size());
    let snaps = sys::map(bytes) as *mut Snap;
    if snaps.is_null() {
        return None;
    }
    let mut n = 0;
    let mut put = |s: Snap| {
        if n < cap {
            // SAFETY: `n < cap` slots fit in the mapping.
            unsafe { snaps.add(n).write(s) };
            n += 1;
        }
    };
    match kind {
        Kind::Now => st.table.for_each(|b| {
            put(Snap {
                bucket: b,
                counts: b.counts,
            })
        }),
        Kind::Peak => peak.snaps().iter().for_each(|&s| put(s)),
    }
    Some(Taken {
        snaps,
        n,
        bytes,
        pyframes: st.pyframes.newest(),
        peak: (kind == Kind::Peak).then(|| (peak.bytes, super::since_start(peak.at_ns))),
    })
}

fn copy_maps(out: &mut Writer) {
    let fd = io::open_read(b"/proc/self/maps\0");
    if fd < 0 {
        return;
    }
    let mut chunk = [0u8; 4096];
    loop {
        let n = io::read_fd(fd, &mut chunk);
        if n == 0 {
            break;
        }
        out.put(&chunk[..n]);
    }
    io::close(fd);
}

/// Buffered writes to a file descriptor; remembers the first failure.
struct Writer {
    fd: i32,
    buf: [u8; 16384],
    len: usize,
    ok: bool,
}

impl Writer {
    fn new(fd: i32) -> Self {
        Writer {
            fd,
            buf: [0; 16384],
            len: 0,
            ok: true,
        }
    }

    fn put(&mut self, mut s: &[u8]) {
        while !s.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = s.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
            self.len += n;
            s = &s[n..];
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            self.ok &= sys::write_fd(self.fd, &self.buf[..self.len]);
            self.len = 0;
        }
    }

    fn finish(mut self) -> bool {
        self.flush();
        self.ok
    }
}
