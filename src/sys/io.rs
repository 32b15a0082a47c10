//! Files, futex wake-ups, signals and the clock thread for the profiler's dump side.
//!
//! Owns: thin wrappers over open/rename/read/write, futex wait/wake, sigaction
//! and pthread_create, each keeping errno as the program left it.
//! Must never: call malloc (none of these libc calls does), or decide policy
//! (what to write, when, where: that is `profile`'s).

use super::{errno, set_errno};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Calls `f` with errno saved, and restores errno after.
fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    let saved = errno();
    let r = f();
    set_errno(saved);
    r
}

/// Opens `path` (NUL-terminated) with `flags` (plus close-on-exec and
/// never through a symlink), mode 0600 if created. The errno on failure.
fn open_file(path: &[u8], flags: i32) -> Result<i32, i32> {
    debug_assert!(path.ends_with(b"\0"));
    let saved = errno();
    // SAFETY: `path` is NUL-terminated (callers build it with a trailing 0).
    let fd = unsafe {
        libc::open(
            path.as_ptr() as *const libc::c_char,
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    let e = errno();
    set_errno(saved);
    if fd < 0 {
        Err(e)
    } else {
        Ok(fd)
    }
}

/// Creates `path` for writing, refusing to reuse an existing file.
pub fn create_exclusive(path: &[u8]) -> Result<i32, i32> {
    open_file(path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)
}

/// Opens `path` for appending, created if missing and emptied first if
/// `truncate`.
pub fn open_log(path: &[u8], truncate: bool) -> Result<i32, i32> {
    let trunc = if truncate { libc::O_TRUNC } else { 0 };
    open_file(
        path,
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | trunc,
    )
}

/// Opens `path` read-only; -1 on failure.
pub fn open_read(path: &[u8]) -> i32 {
    debug_assert!(path.ends_with(b"\0"));
    // SAFETY: `path` is NUL-terminated.
    keep_errno(|| unsafe {
        libc::open(
            path.as_ptr() as *const libc::c_char,
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    })
}

/// Reads into `buf`; 0 at end of file or on error (EINTR retried).
pub fn read_fd(fd: i32, buf: &mut [u8]) -> usize {
    keep_errno(|| loop {
        // SAFETY: `buf` is a live, writable slice of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        return n.max(0) as usize;
    })
}

pub fn close(fd: i32) {
    // SAFETY: the caller owns `fd` and does not use it after.
    keep_errno(|| unsafe { libc::close(fd) });
}

/// Renames `from` to `to` (both NUL-terminated); the errno on failure.
pub fn rename(from: &[u8], to: &[u8]) -> Result<(), i32> {
    let saved = errno();
    // SAFETY: both paths are NUL-terminated.
    let rc = unsafe {
        libc::rename(
            from.as_ptr() as *const libc::c_char,
            to.as_ptr() as *const libc::c_char,
        )
    };
    let e = errno();
    set_errno(saved);
    if rc == 0 {
        Ok(())
    } else {
        Err(e)
    }
}

pub fn unlink(path: &[u8]) {
    // SAFETY: `path` is NUL-terminated.
    keep_errno(|| unsafe { libc::unlink(path.as_ptr() as *const libc::c_char) });
}

/// Waits until `word` no longer holds `expected`, a `futex_wake` on it, or
/// `timeout_ms` (-1: forever). No file descriptor is involved, so the
/// program never sees one of ours.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout_ms: i32) {
    let ts = libc::timespec {
        tv_sec: (timeout_ms.max(0) / 1000) as libc::time_t,
        tv_nsec: ((timeout_ms.max(0) % 1000) as libc::c_long) * 1_000_000,
    };
    let tsp = if timeout_ms < 0 {
        core::ptr::null()
    } else {
        &ts as *const libc::timespec
    };
    // SAFETY: `word` is a live, aligned u32 and `tsp` null or a live
    // timespec; FUTEX_WAIT re-checks the value in the kernel.
    keep_errno(|| unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
        )
    });
}

/// Wakes a thread waiting on `word`; async-signal-safe.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32.
    keep_errno(|| unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        )
    });
}

/// Threads in this process, from /proc/self/status (0 if unreadable).
pub fn thread_count() -> usize {
    let mut buf = [0u8; 2048];
    let n = super::read_file(b"/proc/self/status\0", &mut buf);
    let text = &buf[..n];
    let key = b"\nThreads:";
    let Some(at) = text.windows(key.len()).position(|w| w == key) else {
        return 0;
    };
    let rest = &text[at + key.len()..];
    let digits = rest.iter().position(|c| !c.is_ascii_whitespace());
    digits.map_or(0, |i| super::parse_decimal(&rest[i..]))
}

/// Whether the process's main thread has exited (a zombie until the other
/// threads are gone), from the state in /proc/self/stat.
pub fn main_thread_exited() -> bool {
    let mut buf = [0u8; 512];
    let n = super::read_file(b"/proc/self/stat\0", &mut buf);
    // "pid (comm) S ...": the state follows the last ')'.
    let text = &buf[..n];
    match text.iter().rposition(|&c| c == b')') {
        Some(i) => text.get(i + 2) == Some(&b'Z'),
        None => false,
    }
}

/// Ends the process as glibc does when its last thread exits.
pub fn exit(code: i32) -> ! {
    // SAFETY: exit runs the atexit handlers and destructors, then ends the
    // process; it does not return.
    unsafe { libc::exit(code) }
}

/// libc's `_exit` (memx exports its own), found once by `find_real_exit`.
static REAL_EXIT: AtomicUsize = AtomicUsize::new(0);

/// From the library constructor: where libc's `_exit` is.
pub fn find_real_exit() {
    REAL_EXIT.store(super::dl::next_symbol(c"_exit"), Ordering::Relaxed);
}

/// Ends the process now, without atexit handlers or destructors: libc's
/// `_exit`, or its system call when that was not found (yet).
pub fn exit_now(code: i32) -> ! {
    let f = REAL_EXIT.load(Ordering::Relaxed);
    if f != 0 {
        // SAFETY: the address dlsym gave for libc's `_exit`, which has
        // this signature and does not return.
        unsafe {
            let real: extern "C" fn(i32) -> ! = core::mem::transmute(f);
            real(code)
        }
    }
    loop {
        // SAFETY: exit_group ends every thread of the process; no return.
        unsafe { libc::syscall(libc::SYS_exit_group, code) };
    }
}

/// Ends the process by `sig` with its default action, from any thread
/// (the helper blocks every signal, so it unblocks `sig` first) or from a
/// signal handler (everything here is async-signal-safe); exit status
/// 128 + `sig` if the signal stays blocked everywhere for a second.
pub fn die_of(sig: i32) -> ! {
    // SAFETY: plain-data sigaction and sigset structs; valid pointers.
    unsafe {
        let mut dfl: libc::sigaction = core::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &dfl, core::ptr::null_mut());
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
        libc::kill(libc::getpid(), sig);
    }
    let tick = AtomicU32::new(0);
    futex_wait(&tick, 0, 1000);
    exit_now(128 + sig)
}

/// Calls `f` with the name of each entry of the directory `path`
/// (NUL-terminated), `.` and `..` left out; getdents64 into a stack
/// buffer, as opendir would allocate.
pub fn for_each_dir_entry(path: &[u8], mut f: impl FnMut(&[u8])) {
    debug_assert!(path.ends_with(b"\0"));
    // SAFETY: `path` is NUL-terminated.
    let fd = keep_errno(|| unsafe {
        libc::open(
            path.as_ptr() as *const libc::c_char,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    });
    if fd < 0 {
        return;
    }
    let mut buf = [0u64; 512];
    loop {
        // SAFETY: `buf` is 4 KiB of writable, 8-aligned memory.
        let n = keep_errno(|| unsafe {
            libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), 4096usize)
        });
        if n <= 0 {
            break;
        }
        let bytes = buf.as_ptr() as *const u8;
        let mut off = 0usize;
        while off < n as usize {
            // The kernel filled `n` bytes of linux_dirent64 records: d_ino
            // (8), d_off (8), d_reclen (2), d_type (1), d_name (NUL-
            // terminated), each record `d_reclen` long.
            // SAFETY: `off` < `n` starts a whole record of that layout.
            let (reclen, name) = unsafe {
                let rec = bytes.add(off);
                let reclen = (rec.add(16) as *const u16).read_unaligned() as usize;
                let name = core::ffi::CStr::from_ptr(rec.add(19) as *const libc::c_char);
                (reclen, name.to_bytes())
            };
            if name != b"." && name != b".." {
                f(name);
            }
            off += reclen.max(1);
        }
    }
    close(fd);
}

/// Wall-clock milliseconds since the epoch.
pub fn unix_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A signal handler in the three-argument form.
pub type Handler = extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void);

/// The action that was installed before ours, to chain to.
#[derive(Clone, Copy)]
pub struct OldAction(libc::sigaction);

impl OldAction {
    /// Puts this action back in place for `sig` (async-signal-safe).
    pub fn restore(&self, sig: i32) {
        // SAFETY: a valid sigaction read earlier by sigaction itself.
        keep_errno(|| unsafe { libc::sigaction(sig, &self.0, core::ptr::null_mut()) });
    }

    /// Whether this action is a function (not SIG_DFL or SIG_IGN).
    pub fn is_function(&self) -> bool {
        let h = self.0.sa_sigaction;
        h != libc::SIG_DFL && h != libc::SIG_IGN
    }

    /// Whether this is the default action (SIG_DFL).
    pub fn is_default(&self) -> bool {
        self.0.sa_sigaction == libc::SIG_DFL
    }

    /// Calls the previous handler, if it was a function (not SIG_DFL or
    /// SIG_IGN: the default action of a dump signal would end the process).
    ///
    /// # Safety
    /// Called from our own handler with the arguments it received.
    pub unsafe fn chain(&self, sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        let h = self.0.sa_sigaction;
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            return;
        }
        if self.0.sa_flags & libc::SA_SIGINFO != 0 {
            // SAFETY: with SA_SIGINFO, sa_sigaction holds a 3-argument handler.
            let f: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
            f(sig, info, ctx);
        } else {
            // SAFETY: without SA_SIGINFO, it holds a 1-argument handler.
            let f: extern "C" fn(i32) =
                unsafe { core::mem::transmute::<usize, extern "C" fn(i32)>(h) };
            f(sig);
        }
    }
}

/// The action now in place for `sig`.
pub fn current_action(sig: i32) -> Option<OldAction> {
    // SAFETY: sigaction structs are plain data; zeroed is a valid start.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    let rc = keep_errno(|| unsafe { libc::sigaction(sig, core::ptr::null(), &mut old) });
    (rc == 0).then_some(OldAction(old))
}

/// Puts back an action `install_handler` or `current_action` returned.
pub fn restore_action(sig: i32, old: &OldAction) {
    // SAFETY: `old.0` is a sigaction the kernel filled in.
    keep_errno(|| unsafe { libc::sigaction(sig, &old.0, core::ptr::null_mut()) });
}

/// Installs `handler` for `sig` (SA_RESTART, all signals blocked while it
/// runs) and returns the action it replaced.
pub fn install_handler(sig: i32, handler: Handler) -> Option<OldAction> {
    install_handler_with(sig, handler, libc::SA_RESTART)
}

/// `install_handler` with `flags` (besides SA_SIGINFO) of the caller's choice.
pub fn install_handler_with(sig: i32, handler: Handler, flags: i32) -> Option<OldAction> {
    // SAFETY: sigaction structs are plain data; zeroed is a valid start.
    let mut new: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    new.sa_sigaction = handler as usize;
    new.sa_flags = libc::SA_SIGINFO | flags;
    // SAFETY: valid sigset out-parameter; valid sigaction pointers.
    let rc = keep_errno(|| unsafe {
        libc::sigfillset(&mut new.sa_mask);
        libc::sigaction(sig, &new, &mut old)
    });
    (rc == 0).then_some(OldAction(old))
}

/// Starts a detached thread running `f(arg)` with every signal blocked (so
/// the program's signals keep going to its own threads). False on failure.
pub fn spawn_thread(f: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void) -> bool {
    keep_errno(|| {
        // SAFETY: plain pthread and sigset calls with valid out-parameters;
        // the mask is restored before returning.
        unsafe {
            let mut all: libc::sigset_t = core::mem::zeroed();
            let mut old: libc::sigset_t = core::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let mut attr: libc::pthread_attr_t = core::mem::zeroed();
            libc::pthread_attr_init(&mut attr);
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            libc::pthread_attr_setstacksize(&mut attr, 256 << 10);
            let mut t: libc::pthread_t = 0;
            let rc = libc::pthread_create(&mut t, &attr, f, core::ptr::null_mut());
            libc::pthread_attr_destroy(&mut attr);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
            if rc == 0 {
                libc::pthread_setname_np(t, c"memx-profile".as_ptr());
            }
            rc == 0
        }
    })
}
