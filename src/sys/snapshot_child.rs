//! A detached copy-on-write child that runs one job and exits: how the
//! profiler writes a dump without a thread of its own (see
//! src/profile/worker.rs for why).
//!
//! ```text
//! caller (any thread, signal handler included)
//!   └─ clone(CLONE_VM|CLONE_VFORK) "trampoline", on STACK; caller waits
//!   └─ clone(CLONE_PARENT) "writer", started by the trampoline: a copy of
//!        the whole address space, taken now; runs the job on its copy of
//!        STACK, then exit_group
//!      trampoline exits at once; caller reaps it (__WCLONE) and goes on
//! ```
//! Both children have no exit signal, so to the program they are invisible:
//! no SIGCHLD, and `wait(-1)`/`waitpid(-1, ..)` without `__WALL` never
//! return them (Linux waits only for SIGCHLD children unless told). The
//! writer is a sibling of the trampoline (CLONE_PARENT), i.e. our own
//! child, not init's: nothing outside the process ever sees it. A finished
//! writer is reaped by the next `spawn` (until then it is a zombie; at most
//! WRITERS exist). Page tables are copied once (the trampoline shares the
//! caller's memory). Nothing here is a pthread, so glibc's set*id broadcast
//! never involves it.
//!
//! Owns: the trampoline stack, the writers' pids. Must never: call malloc
//! or anything that takes a glibc lock (it runs in signal handlers and
//! inside malloc), or be entered by two threads at once (BUSY says no to
//! the second).

use super::{errno, set_errno};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, Ordering};

/// The writer's stack is its copy of this one: the dump needs ~40 KiB.
const STACK_BYTES: usize = 256 << 10;

#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; STACK_BYTES]>);
// SAFETY: used by one trampoline at a time (BUSY), while its caller waits.
unsafe impl Sync for Stack {}
static STACK: Stack = Stack(UnsafeCell::new([0; STACK_BYTES]));
static BUSY: AtomicBool = AtomicBool::new(false);

/// Writers started and not yet reaped: at most this many at once.
const WRITERS: usize = 8;
/// Their pids (0 = free slot); the trampoline stores the new one in NEW.
static LIVE: [AtomicI32; WRITERS] = [const { AtomicI32::new(0) }; WRITERS];
static NEW: AtomicI32 = AtomicI32::new(0);

/// A word this process shares with its writers (MAP_SHARED): what a
/// writer sets there, the process and later writers see. Null until
/// `share_word` ran.
static SHARED: AtomicPtr<AtomicU32> = AtomicPtr::new(core::ptr::null_mut());

/// Maps the shared word (again in a fork child of the program: the
/// parent's page would be shared with it too). From the library
/// constructor or a fork child, never from a writer.
pub fn share_word() {
    // SAFETY: an anonymous shared mapping has no preconditions.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            super::os_page_size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p != libc::MAP_FAILED {
        SHARED.store(p as *mut AtomicU32, Ordering::Release);
    }
}

/// The shared word, if it could be mapped.
pub fn shared_word() -> Option<&'static AtomicU32> {
    let p = SHARED.load(Ordering::Acquire);
    // SAFETY: non-null only once mapped; the mapping is never removed and
    // a zeroed u32 is a valid AtomicU32.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Why no writer was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// Another thread is starting one right now, or WRITERS are still
    /// writing.
    Busy,
    /// clone failed with this errno (EAGAIN: RLIMIT_NPROC, ENOMEM, EPERM: seccomp).
    Clone(i32),
}

/// Runs `job` in a detached child holding a copy-on-write snapshot of this
/// process as it is now; returns once the child exists (not when it is
/// done). The child has every signal blocked and must end with `exit_now`.
pub fn spawn(job: fn() -> !) -> Result<(), SpawnError> {
    if BUSY.swap(true, Ordering::Acquire) {
        return Err(SpawnError::Busy);
    }
    let saved = errno();
    let Some(slot) = reap_finished() else {
        set_errno(saved);
        BUSY.store(false, Ordering::Release);
        return Err(SpawnError::Busy);
    };
    NEW.store(0, Ordering::Relaxed);
    // The trampoline runs on STACK (ours alone: BUSY) and shares our memory
    // while we are suspended (CLONE_VFORK), so it touches nothing we use.
    // SAFETY: sigset and clone calls with valid arguments, as above.
    let result = unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = (STACK.0.get() as *mut u8).add(STACK_BYTES);
        let pid = libc::clone(
            trampoline,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK,
            job as *mut libc::c_void,
        );
        let result = if pid < 0 {
            Err(SpawnError::Clone(errno()))
        } else {
            let mut status = 0;
            libc::waitpid(pid, &mut status, libc::__WCLONE);
            let code = libc::WEXITSTATUS(status);
            if code == 0 {
                LIVE[slot].store(NEW.load(Ordering::Relaxed), Ordering::Relaxed);
                Ok(())
            } else {
                Err(SpawnError::Clone(code))
            }
        };
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        result
    };
    set_errno(saved);
    BUSY.store(false, Ordering::Release);
    result
}

/// Reaps writers that are done; a free slot for the next one, if any.
fn reap_finished() -> Option<usize> {
    let mut free = None;
    for (i, slot) in LIVE.iter().enumerate() {
        let pid = slot.load(Ordering::Relaxed);
        if pid > 0 {
            // SAFETY: waits for our own writer only, without blocking.
            let r = unsafe {
                libc::waitpid(pid, core::ptr::null_mut(), libc::WNOHANG | libc::__WCLONE)
            };
            if r == 0 {
                continue; // still writing
            }
            slot.store(0, Ordering::Relaxed);
        }
        free.get_or_insert(i);
    }
    free
}

/// Waits until every writer started here has finished (at exit, so the
/// dumps asked for are complete before the process is seen to end).
pub fn wait_all() {
    for slot in &LIVE {
        let pid = slot.swap(0, Ordering::Relaxed);
        if pid > 0 {
            let saved = errno();
            // SAFETY: waits for our own writer only.
            while unsafe { libc::waitpid(pid, core::ptr::null_mut(), libc::__WCLONE) } < 0
                && errno() == libc::EINTR
            {}
            set_errno(saved);
        }
    }
}

/// The program forked: the writers are the parent's children, not ours.
pub fn forget_after_fork() {
    for slot in &LIVE {
        slot.store(0, Ordering::Relaxed);
    }
    BUSY.store(false, Ordering::Relaxed);
}

/// In the vfork child: fork the writer (no CLONE_VM: its own copy of
/// memory, this stack included) and exit with 0, or with the errno.
extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
    // A plain fork through the raw system call (glibc's fork would run the
    // program's atfork handlers). CLONE_PARENT: the writer is the caller's
    // child, with the trampoline's exit signal (none).
    // SAFETY: clone with no new stack or shared memory is a fork.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_PARENT, 0, 0, 0, 0) };
    if pid == 0 {
        // SAFETY: `arg` is the `fn() -> !` that `spawn` passed.
        let job: fn() -> ! = unsafe { core::mem::transmute::<*mut libc::c_void, fn() -> !>(arg) };
        // SAFETY: a static NUL-terminated name.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"memx-dump".as_ptr()) };
        job();
    }
    if pid < 0 {
        errno().max(1)
    } else {
        // Shared memory: the caller reads it once we have exited.
        NEW.store(pid as i32, Ordering::Relaxed);
        0
    }
}

/// Ends the writer at once: no atexit handlers, no destructors (they are
/// the program's, and belong to the parent).
pub fn exit_now() -> ! {
    loop {
        // SAFETY: exit_group ends the process; it does not return.
        unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    }
}
