//! The OS layer: the only module that calls libc or the kernel.
//!
//! Owns: memory mapping (`mmap`/`munmap`/`madvise`), the page size, stderr,
//! the environment scan, time, errno, the thread-exit key and fork hooks.
//! Must never: call malloc (directly or through a libc function that may),
//! hold a lock, or know anything about allocator policy.

pub mod dl;
pub mod dl_find;
pub mod fault;
pub mod io;
pub mod lock;
pub mod rseq;
pub mod snapshot_child;
pub mod tls;
pub mod unwind;

use core::sync::atomic::{AtomicUsize, Ordering};

/// Maps `bytes` of fresh, zeroed, private memory. Null on failure.
pub fn map(bytes: usize) -> *mut u8 {
    map_anonymous(bytes, libc::PROT_READ | libc::PROT_WRITE)
}

fn map_anonymous(bytes: usize, prot: i32) -> *mut u8 {
    // SAFETY: an anonymous private mapping at a kernel-chosen address has no
    // preconditions; failure is reported as MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            bytes,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Maps `bytes` (a multiple of the OS page size) aligned to `align` (a power
/// of two, at least the OS page size) by over-mapping and trimming.
pub fn map_aligned(bytes: usize, align: usize) -> *mut u8 {
    let Some(total) = bytes.checked_add(align) else {
        return core::ptr::null_mut();
    };
    let p = map(total);
    if p.is_null() {
        return p;
    }
    let start = p as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = total - head - bytes;
    if head > 0 {
        unmap(p, head);
    }
    if tail > 0 {
        unmap((aligned + bytes) as *mut u8, tail);
    }
    aligned as *mut u8
}

/// Unmaps a range previously returned by `map`.
pub fn unmap(p: *mut u8, bytes: usize) {
    // SAFETY: callers pass whole OS pages that they mapped and no longer use.
    unsafe { libc::munmap(p as *mut libc::c_void, bytes) };
}

/// Gives the physical pages of a range back to the OS; the range stays mapped
/// and reads as zero afterwards. Returns whether the kernel accepted.
pub fn release(p: *mut u8, bytes: usize) -> bool {
    let saved = errno();
    // SAFETY: callers pass whole OS pages of a free span; no live object is
    // in the range, so dropping its contents is fine.
    let rc = unsafe { libc::madvise(p as *mut libc::c_void, bytes, libc::MADV_DONTNEED) };
    set_errno(saved);
    rc == 0
}

/// Reserves `bytes` of address space with no access (guarded sampling's
/// pool). Null on failure.
pub fn reserve(bytes: usize) -> *mut u8 {
    map_anonymous(bytes, libc::PROT_NONE)
}

/// Makes whole OS pages of a reserved range readable and writable. False if
/// the kernel refused (out of memory or mappings).
pub fn open_pages(p: *mut u8, bytes: usize) -> bool {
    set_protection(p, bytes, libc::PROT_READ | libc::PROT_WRITE)
}

/// Makes whole OS pages of a mapping inaccessible, keeping their contents
/// (checked mode's guard pages). False if the kernel refused (out of
/// memory or mappings).
pub fn protect_none(p: *mut u8, bytes: usize) -> bool {
    set_protection(p, bytes, libc::PROT_NONE)
}

/// `mprotect` with errno left as the caller had it.
fn set_protection(p: *mut u8, bytes: usize, prot: i32) -> bool {
    let saved = errno();
    // SAFETY: callers pass whole pages of a mapping of theirs; the pages
    // made inaccessible hold no object the program may touch.
    let rc = unsafe { libc::mprotect(p as *mut libc::c_void, bytes, prot) };
    set_errno(saved);
    rc == 0
}

/// Drops the contents of whole OS pages and makes them inaccessible again,
/// in one call (a fresh PROT_NONE mapping over them). False on failure.
pub fn close_pages(p: *mut u8, bytes: usize) -> bool {
    let saved = errno();
    // SAFETY: callers pass whole pages of a range they reserved and hold no
    // object in; MAP_FIXED replaces exactly those pages.
    let q = unsafe {
        libc::mmap(
            p as *mut libc::c_void,
            bytes,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    set_errno(saved);
    q != libc::MAP_FAILED
}

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The OS page size (4 KiB on x86-64), read once.
pub fn os_page_size() -> usize {
    let v = PAGE_SIZE.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    // SAFETY: sysconf has no preconditions and does not allocate.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let v = if v > 0 { v as usize } else { 4096 };
    PAGE_SIZE.store(v, Ordering::Relaxed);
    v
}

/// Writes all of `msg` to stderr, retrying on partial writes; errno is kept.
pub fn write_stderr(msg: &[u8]) {
    write_fd(2, msg);
}

/// Writes all of `msg` to `fd`; errors are ignored (diagnostics only).
pub fn write_fd(fd: i32, msg: &[u8]) -> bool {
    let saved = errno();
    let mut off = 0;
    let mut ok = true;
    while off < msg.len() {
        // SAFETY: the pointer and length describe the live slice `msg[off..]`.
        let n = unsafe {
            libc::write(
                fd,
                msg[off..].as_ptr() as *const libc::c_void,
                msg.len() - off,
            )
        };
        if n <= 0 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            ok = false;
            break;
        }
        off += n as usize;
    }
    set_errno(saved);
    ok
}

/// Ends the process with SIGABRT, as glibc does on heap corruption.
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}

pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(v: i32) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = v };
}

/// Monotonic time in nanoseconds (vDSO; no syscall on x86-64).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// True in setuid/setgid-like processes, where glibc ignores MALLOC_* too.
pub fn secure_mode() -> bool {
    // SAFETY: getauxval reads the auxiliary vector; no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Bytes the process has resident, from /proc/self/statm (0 if unreadable).
pub fn rss_bytes() -> usize {
    let mut buf = [0u8; 128];
    let n = read_file(b"/proc/self/statm\0", &mut buf);
    // statm: size resident shared ... (in OS pages)
    let mut fields = buf[..n].split(|&c| c == b' ');
    fields.next();
    let pages = fields.next().map(parse_decimal).unwrap_or(0);
    pages * os_page_size()
}

/// The decimal number at the start of `s` (0 if none; saturating).
pub(crate) fn parse_decimal(s: &[u8]) -> usize {
    s.iter()
        .take_while(|c| c.is_ascii_digit())
        .fold(0usize, |a, &c| {
            a.saturating_mul(10).saturating_add((c - b'0') as usize)
        })
}

/// Reads up to `buf.len()` bytes of a file named by a NUL-terminated path
/// (0 if it cannot be opened); errno is kept.
pub fn read_file(path: &[u8], buf: &mut [u8]) -> usize {
    let fd = io::open_read(path);
    if fd < 0 {
        return 0;
    }
    let mut off = 0;
    while off < buf.len() {
        let n = io::read_fd(fd, &mut buf[off..]);
        if n == 0 {
            break;
        }
        off += n;
    }
    io::close(fd);
    off
}

extern "C" {
    static mut environ: *const *const libc::c_char;
    static __libc_single_threaded: libc::c_char;
}

/// Calls `f(name, value)` for every `MEMX_*` variable of the environment.
/// Reads libc's `environ` without copying; nothing here allocates.
pub fn for_each_memx_var(mut f: impl FnMut(&[u8], &[u8])) {
    // SAFETY: `environ` is libc's NULL-terminated array of NUL-terminated
    // strings; it may still be null very early, which is checked.
    let mut p = unsafe { environ };
    if p.is_null() {
        return;
    }
    loop {
        // SAFETY: `p` walks the array until its NULL terminator.
        let entry = unsafe { *p };
        if entry.is_null() {
            break;
        }
        // SAFETY: each entry is a NUL-terminated C string.
        let bytes = unsafe { core::ffi::CStr::from_ptr(entry) }.to_bytes();
        if bytes.starts_with(b"MEMX_") {
            if let Some(eq) = bytes.iter().position(|&c| c == b'=') {
                f(&bytes[..eq], &bytes[eq + 1..]);
            }
        }
        // SAFETY: not past the terminator, which was checked above.
        p = unsafe { p.add(1) };
    }
}

/// Whether glibc knows the process to have a single thread (glibc >= 2.32).
pub fn single_threaded() -> bool {
    // SAFETY: a byte that glibc keeps up to date; a racy read is harmless
    // because it only turns from 1 to 0 while this thread runs.
    unsafe { core::ptr::read_volatile(&raw const __libc_single_threaded) != 0 }
}

/// A pthread key whose destructor runs `f` at thread exit (None if glibc
/// has no free key). pthread_key_create takes a slot in glibc's static key
/// table and does not allocate.
pub fn create_thread_key(f: unsafe extern "C" fn(*mut libc::c_void)) -> Option<u32> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-parameter.
    let rc = unsafe { libc::pthread_key_create(&mut key, Some(f)) };
    (rc == 0).then_some(key)
}

/// Arms `key`'s destructor for this thread with a non-null value.
pub fn set_thread_key(key: u32, value: *mut u8) {
    // SAFETY: `key` came from `create_thread_key`.
    unsafe { libc::pthread_setspecific(key, value as *const libc::c_void) };
}

/// Registers fork handlers (prepare, parent, child).
pub fn at_fork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) {
    // SAFETY: the handlers are plain functions valid for the process lifetime.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// The kernel thread id of the calling thread.
/// CPUs this process may run on (its affinity mask when first asked), at
/// least 1.
pub fn usable_cpus() -> usize {
    static CPUS: AtomicUsize = AtomicUsize::new(0);
    let v = CPUS.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    let v = read_affinity_cpus();
    CPUS.store(v, Ordering::Relaxed);
    v
}

/// A raw syscall with the mask on the stack: glibc's sysconf may allocate.
fn read_affinity_cpus() -> usize {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    let size = core::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a writable buffer of `size` bytes; pid 0 = this thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_getaffinity, 0, size, &mut set) };
    if r <= 0 {
        return 1;
    }
    // SAFETY: `set` is an initialised plain struct of `size` bytes (the
    // kernel filled its first `r`; the rest stay zero).
    let bytes = unsafe { core::slice::from_raw_parts(&set as *const _ as *const u8, size) };
    bytes
        .iter()
        .map(|b| b.count_ones() as usize)
        .sum::<usize>()
        .max(1)
}

/// The calling thread's voluntary context switches so far (each time it
/// blocked: slept, waited for I/O or for a lock) and its CPU time (user +
/// system) in microseconds; zeros if unknown.
pub fn thread_usage() -> (u64, u64) {
    // SAFETY: a zeroed rusage is valid.
    let mut ru: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: `ru` is writable and of the right type.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (0, 0);
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (ru.ru_nvcsw as u64, us(ru.ru_utime) + us(ru.ru_stime))
}

pub fn gettid() -> i64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i64 }
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

pub fn getppid() -> i32 {
    // SAFETY: getppid has no preconditions.
    unsafe { libc::getppid() }
}

/// 64 random bits for keys (free-list hardening): getrandom(2) without
/// blocking, else the kernel's AT_RANDOM bytes, mixed with the time and an
/// address either way. Never allocates and never fails.
pub fn random_u64() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: `v` is 8 writable bytes; GRND_NONBLOCK never waits.
    let got = unsafe {
        libc::syscall(
            libc::SYS_getrandom,
            &mut v as *mut u64,
            8usize,
            libc::GRND_NONBLOCK,
        )
    };
    if got != 8 {
        // SAFETY: getauxval has no preconditions; AT_RANDOM, when present,
        // points at 16 random bytes the kernel placed on the initial stack.
        let at = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u64;
        if !at.is_null() {
            // SAFETY: see above (8 of the 16 bytes, possibly unaligned).
            v = unsafe { at.read_unaligned() };
        }
        v ^= now_ns().rotate_left(29) ^ (&v as *const u64 as u64);
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn usable_cpus_match_the_affinity_mask() {
        let std_view = std::thread::available_parallelism().unwrap().get();
        assert_eq!(super::usable_cpus(), std_view);
    }
}
