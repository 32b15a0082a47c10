//! memx's SIGSEGV/SIGBUS handler, for guarded sampling and checked mode's
//! guard pages: a fault a hook claims (an access to one of their
//! inaccessible pages) is reported, everything else goes on to the handler
//! that was in place before memx's.
//!
//! The handler runs on the faulting thread's stack, or on its alternate
//! stack when it has one (SA_ONSTACK). After a report it puts the previous
//! action back and returns: the faulting instruction runs again and faults
//! again, now under the program's own handler or the default action, so the
//! process still dies of the signal (with a core) or the program's handler
//! still decides. A fault that is not ours is handed to the previous
//! handler directly; with none (SIG_DFL/SIG_IGN) the previous action is put
//! back and the fault repeats under it. A program that installs its own
//! handler later replaces memx's (and then its handler sees every fault).
//!
//! Owns: the two saved previous actions and the hooks (at most `HOOKS`,
//! each asked in turn until one claims the fault). Must never: allocate,
//! take a lock,
//! or return into a faulting instruction without having changed the action
//! (that would loop forever).

use super::io::{self, OldAction};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Decides about a fault: `(signal, faulting address, faulting instruction)`;
/// true when it was reported (the fault is then fatal).
pub type Hook = fn(i32, usize, usize) -> bool;

const SIGNALS: [i32; 2] = [libc::SIGSEGV, libc::SIGBUS];

struct Saved(UnsafeCell<[Option<OldAction>; 2]>);
// SAFETY: written once by `install` (under INSTALLING, before the handler
// can run), read only afterwards.
unsafe impl Sync for Saved {}

static PREVIOUS: Saved = Saved(UnsafeCell::new([None, None]));
static INSTALLING: AtomicBool = AtomicBool::new(false);
/// Hooks installed (0: a free entry); each is stored once and never removed.
const HOOKS: usize = 2;
static HOOK: [AtomicUsize; HOOKS] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// Adds `hook` (once; a hook already there is not added twice), and
/// installs the handler for SIGSEGV and SIGBUS (once per process),
/// remembering the actions it replaces.
pub fn install(hook: Hook) {
    let h = hook as usize;
    for slot in &HOOK {
        match slot.compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(v) if v == h => break,
            Err(_) => {}
        }
    }
    if INSTALLING.swap(true, Ordering::AcqRel) {
        return;
    }
    for (i, &sig) in SIGNALS.iter().enumerate() {
        let old = io::current_action(sig);
        // SAFETY: only this call (guarded by INSTALLING) writes PREVIOUS,
        // and the slot is filled before our handler is installed for `sig`.
        unsafe { (*PREVIOUS.0.get())[i] = old };
        if old.is_some() {
            io::install_handler_with(sig, on_fault, libc::SA_ONSTACK | libc::SA_RESTART);
        }
    }
}

fn previous(sig: i32) -> Option<OldAction> {
    let i = SIGNALS.iter().position(|&s| s == sig)?;
    // SAFETY: written before the handler was installed (see `Saved`).
    unsafe { (*PREVIOUS.0.get())[i] }
}

extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // si_code > 0: raised by the kernel for an access (not kill or raise).
    let ours = code > 0
        && HOOK.iter().any(|slot| {
            let hook = slot.load(Ordering::Acquire);
            // SAFETY: a non-zero entry holds a `Hook` stored by `install`.
            hook != 0
                && unsafe { core::mem::transmute::<usize, Hook>(hook) }(sig, addr, fault_pc(ctx))
        });
    let Some(prev) = previous(sig) else { return };
    if ours {
        // The faulting instruction runs again, under the program's action.
        prev.restore(sig);
        return;
    }
    if prev.is_function() {
        // SAFETY: our own handler's arguments, handed on unchanged.
        unsafe { prev.chain(sig, info, ctx) };
        return;
    }
    // SIG_DFL or SIG_IGN: put it back; a fault repeats under it, and a
    // signal sent by kill or raise is sent again (blocked until we return).
    prev.restore(sig);
    if code <= 0 {
        // SAFETY: raise has no preconditions.
        unsafe { libc::raise(sig) };
    }
}

/// The faulting instruction's address, from the signal context (0 where
/// this architecture's layout is not known here).
fn fault_pc(ctx: *mut libc::c_void) -> usize {
    if ctx.is_null() {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: an SA_SIGINFO handler's third argument is a ucontext_t.
        unsafe {
            (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] as usize
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: as above.
        unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.pc as usize }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        0
    }
}
