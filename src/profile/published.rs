//! What `memx snapshot PID` reads from a running process, through
//! /proc/PID/mem at the exported symbol `memx_profile_info` (a pointer to
//! `PUBLISHED`): the dump prefix and signal, and counters that tell whether
//! memx's signal handler ran and whether dumps were started.
//!
//! Why memory and not the environment: services overwrite their `environ`
//! area with a process title (setproctitle: PostgreSQL, nginx, Redis), so
//! /proc/PID/environ no longer holds MEMX_PROFILE. Why not a file: finding
//! it would need the prefix it is meant to give.
//!
//! Layout v1 (`#[repr(C)]`, little-endian, read by cli/src/attach.rs):
//!
//! ```text
//! 0   magic    [u8; 8]  "memxinfo"
//! 8   version  u32      1
//! 12  state    u32      0 = not configured yet, 1 = profiling off, 2 = on
//! 16  signal   u32      the dump signal (0 = none)
//! 20  pid      u32      the pid that configured it (fork children update it)
//! 24  handled  u64      times memx's handler for the signal ran
//! 32  dumps    u64      dumps started by a request (signal, interval, limit)
//! 40  failed   u64      requests that could not start a dump writer
//! 48  prefix_len u32, 52 prefix [u8; 240]  MEMX_PROFILE as given
//! ```
//! Owns: that block. Must never: change the layout without bumping version.

use crate::config::{self, Config};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[repr(C)]
pub struct Published {
    magic: [u8; 8],
    version: u32,
    state: AtomicU32,
    signal: AtomicU32,
    pid: AtomicU32,
    handled: AtomicU64,
    dumps: AtomicU64,
    failed: AtomicU64,
    prefix_len: AtomicU32,
    prefix: UnsafeCell<[u8; config::Path::MAX]>,
}

// SAFETY: `prefix` is written once, during initialisation, before `state`
// says it is there; every other field is atomic.
unsafe impl Sync for Published {}

pub static PUBLISHED: Published = Published {
    magic: *b"memxinfo",
    version: 1,
    state: AtomicU32::new(0),
    signal: AtomicU32::new(0),
    pid: AtomicU32::new(0),
    handled: AtomicU64::new(0),
    dumps: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    prefix_len: AtomicU32::new(0),
    prefix: UnsafeCell::new([0; config::Path::MAX]),
};

/// Records the settings (during initialisation, once).
pub fn set(cfg: &Config) {
    let p = &PUBLISHED;
    let prefix = cfg.profile_prefix.as_bytes();
    // SAFETY: initialisation runs once, on one thread, before anything
    // reads the prefix in this process (and readers outside check `state`).
    unsafe { (&mut *p.prefix.get())[..prefix.len()].copy_from_slice(prefix) };
    p.prefix_len.store(prefix.len() as u32, Ordering::Relaxed);
    p.signal.store(cfg.profile_signal as u32, Ordering::Relaxed);
    set_pid();
    let on = !prefix.is_empty();
    p.state.store(if on { 2 } else { 1 }, Ordering::Release);
}

/// This process's pid (again in a fork child).
pub fn set_pid() {
    PUBLISHED
        .pid
        .store(crate::sys::getpid() as u32, Ordering::Relaxed);
}

/// The pid dumps are named after: the process that asked for them, also
/// inside the dump writer (whose own pid differs).
pub fn pid() -> u32 {
    PUBLISHED.pid.load(Ordering::Relaxed)
}

pub fn count_handled() {
    PUBLISHED.handled.fetch_add(1, Ordering::Relaxed);
}

pub fn count_dump() {
    PUBLISHED.dumps.fetch_add(1, Ordering::Relaxed);
}

/// Dump writers started so far.
pub fn dumps_started() -> u64 {
    PUBLISHED.dumps.load(Ordering::Relaxed)
}

pub fn count_failed() {
    PUBLISHED.failed.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_documented_offsets() {
        assert_eq!(core::mem::offset_of!(Published, version), 8);
        assert_eq!(core::mem::offset_of!(Published, state), 12);
        assert_eq!(core::mem::offset_of!(Published, signal), 16);
        assert_eq!(core::mem::offset_of!(Published, pid), 20);
        assert_eq!(core::mem::offset_of!(Published, handled), 24);
        assert_eq!(core::mem::offset_of!(Published, dumps), 32);
        assert_eq!(core::mem::offset_of!(Published, failed), 40);
        assert_eq!(core::mem::offset_of!(Published, prefix_len), 48);
        assert_eq!(core::mem::offset_of!(Published, prefix), 52);
    }
}
