//! `_dl_find_object` for the statically linked unwinder (libgcc_eh), defined
//! inside libmemx as a HIDDEN symbol.
//!
//! libgcc_eh built against glibc >= 2.35 finds a frame's unwind tables by
//! calling `_dl_find_object`, a GLIBC_2.35 symbol: a reference to glibc's
//! would make libmemx need glibc 2.35 (the wheel's tag rose from
//! manylinux_2_34 to 2_35, and libmemx would not load on RHEL 9's 2.34).
//! So the linker binds libgcc_eh's reference to the definition here, which
//! is hidden: libmemx never exports it. Exported, it would interpose
//! glibc's for the whole process (libmemx is preloaded first), libgcc_s's
//! C++ exception unwinding included.
//!
//! It calls glibc's own `_dl_find_object` (lock-free, no allocation) when
//! the running glibc has one and `resolve` has found it (once, from the
//! library constructor). Otherwise (glibc < 2.35, or a walk before the
//! constructor ran) it answers from `dl_iterate_phdr`, as libgcc itself
//! does on older glibc: the object whose mapping holds the address, and its
//! PT_GNU_EH_FRAME segment. `dlfo_link_map` is left null there: libgcc
//! reads only `dlfo_eh_frame` (x86-64 and aarch64 have no `dlfo_eh_dbase`;
//! libgcc's unwind-dw2-fde-dip.c, `_Unwind_Find_FDE`).
//!
//! Owns: the `_dl_find_object` symbol inside libmemx, and glibc's address.
//! Must never: be exported, allocate, panic, or look glibc's function up
//! from the lookup itself (dlvsym may allocate and takes the loader's lock;
//! the lookup runs from inside malloc when guarded sampling walks a stack).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

/// glibc's `struct dl_find_object` on targets without `dlfo_eh_dbase`
/// (<dlfcn.h>, bits/dl_find_object.h: DLFO_STRUCT_HAS_EH_DBASE is 0 on
/// x86-64 and aarch64).
#[repr(C)]
pub struct DlFindObject {
    pub flags: u64,
    pub map_start: *mut c_void,
    pub map_end: *mut c_void,
    pub link_map: *mut c_void,
    pub eh_frame: *mut c_void,
    pub reserved: [u64; 7],
}

type FindFn = unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> c_int;

/// glibc's `_dl_find_object`, 0 until `resolve` found it (or when the
/// running glibc has none).
static GLIBC_FIND: AtomicUsize = AtomicUsize::new(0);

/// Calls that `dl_iterate_phdr` answered (tests: that the unwinder's
/// reference is bound to this module's symbol).
#[cfg(test)]
static FALLBACK_CALLS: AtomicUsize = AtomicUsize::new(0);

// The symbol libgcc_eh's reference binds to. `.hidden` keeps it out of
// libmemx's dynamic symbol table (a `#[no_mangle]` function would be
// exported), and lets the linker turn libgcc_eh's call into a direct one.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .text._dl_find_object,\"ax\",@progbits",
    ".globl _dl_find_object",
    ".hidden _dl_find_object",
    ".type _dl_find_object,@function",
    ".p2align 4",
    "_dl_find_object:",
    "jmp {find}",
    ".size _dl_find_object, . - _dl_find_object",
    ".popsection",
    find = sym find_object,
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".pushsection .text._dl_find_object,\"ax\",%progbits",
    ".globl _dl_find_object",
    ".hidden _dl_find_object",
    ".type _dl_find_object,%function",
    ".p2align 2",
    "_dl_find_object:",
    "b {find}",
    ".size _dl_find_object, . - _dl_find_object",
    ".popsection",
    find = sym find_object,
);

/// Looks glibc's `_dl_find_object` up (version GLIBC_2.35); from the
/// library constructor only, never from the allocation path. Without it
/// (glibc < 2.35) lookups keep using `dl_iterate_phdr`.
pub fn resolve() {
    // Our own `_dl_find_object` is hidden, so the global scope can only
    // yield glibc's (or an interposer's of the same version, which must
    // keep glibc's contract).
    // SAFETY: RTLD_DEFAULT with a NUL-terminated name and version; dlvsym
    // has no other preconditions.
    let f = unsafe {
        libc::dlvsym(
            libc::RTLD_DEFAULT,
            c"_dl_find_object".as_ptr(),
            c"GLIBC_2.35".as_ptr(),
        )
    };
    GLIBC_FIND.store(f as usize, Ordering::Release);
}

/// The implementation behind the hidden `_dl_find_object`, glibc's contract:
/// 0 and `*out` filled when `pc` lies in a loaded object's mapping, else -1.
///
/// # Safety
/// `out` must be valid for writes of a `DlFindObject`.
unsafe extern "C" fn find_object(pc: *mut c_void, out: *mut DlFindObject) -> c_int {
    let f = GLIBC_FIND.load(Ordering::Acquire);
    if f != 0 {
        // SAFETY: `f` came from dlvsym for `_dl_find_object@GLIBC_2.35`,
        // whose signature is `FindFn`; glibc's code stays loaded.
        let f: FindFn = unsafe { core::mem::transmute::<usize, FindFn>(f) };
        // SAFETY: the caller's contract on `out`, passed on.
        return unsafe { f(pc, out) };
    }
    #[cfg(test)]
    FALLBACK_CALLS.fetch_add(1, Ordering::Relaxed);
    match find_by_phdrs(pc as usize) {
        Some(found) => {
            // SAFETY: the caller's contract on `out`.
            unsafe { out.write(found) };
            0
        }
        None => -1,
    }
}

/// What the `dl_iterate_phdr` callback looks for, and what it found.
struct Search {
    pc: usize,
    page: usize,
    found: Option<DlFindObject>,
}

/// The answer glibc's `_dl_find_object` gives for `pc`, from the program
/// headers of the loaded objects: the mapping of the object whose
/// [lowest PT_LOAD start rounded down to a page, highest PT_LOAD end)
/// holds `pc` (glibc's `l_map_start`, `l_map_end`), and the address of its
/// PT_GNU_EH_FRAME segment (null without one). None if no object holds it.
pub fn find_by_phdrs(pc: usize) -> Option<DlFindObject> {
    let mut s = Search {
        pc,
        page: super::os_page_size(),
        found: None,
    };
    // dl_iterate_phdr takes the loader's (recursive) lock and does not
    // allocate.
    // SAFETY: `each_object` matches the callback type; `s` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each_object), &mut s as *mut Search as *mut c_void) };
    s.found
}

/// # Safety
/// Called by `dl_iterate_phdr` with its `info` and the `Search` passed to it.
unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is `find_by_phdrs`'s `Search`, alive for the call.
    let s = unsafe { &mut *(data as *mut Search) };
    // SAFETY: glibc passes a valid `dl_phdr_info` for the call's duration.
    let info = unsafe { &*info };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: `dlpi_phdr` points at the object's `dlpi_phnum` program
    // headers, mapped for as long as the object is loaded.
    let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let bias = info.dlpi_addr as usize;
    let (mut lo, mut hi) = (usize::MAX, 0usize);
    let mut eh_frame = 0usize;
    for ph in phdrs {
        if ph.p_type == libc::PT_LOAD {
            let start = (ph.p_vaddr as usize) & !(s.page.wrapping_sub(1));
            lo = lo.min(start);
            hi = hi.max((ph.p_vaddr as usize).wrapping_add(ph.p_memsz as usize));
        } else if ph.p_type == libc::PT_GNU_EH_FRAME && eh_frame == 0 {
            eh_frame = bias.wrapping_add(ph.p_vaddr as usize);
        }
    }
    if lo >= hi {
        return 0;
    }
    let (start, end) = (bias.wrapping_add(lo), bias.wrapping_add(hi));
    if s.pc < start || s.pc >= end {
        return 0;
    }
    s.found = Some(DlFindObject {
        flags: 0,
        map_start: start as *mut c_void,
        map_end: end as *mut c_void,
        link_map: core::ptr::null_mut(),
        eh_frame: eh_frame as *mut c_void,
        reserved: [0; 7],
    });
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc's own `_dl_find_object` (this machine's glibc is >= 2.35).
    fn glibc(pc: usize) -> Option<DlFindObject> {
        // SAFETY: NUL-terminated name and version.
        let f = unsafe {
            libc::dlvsym(
                libc::RTLD_DEFAULT,
                c"_dl_find_object".as_ptr(),
                c"GLIBC_2.35".as_ptr(),
            )
        };
        assert!(!f.is_null(), "this glibc has no _dl_find_object");
        // SAFETY: as in `find_object`.
        let f: FindFn = unsafe { core::mem::transmute::<*mut c_void, FindFn>(f) };
        // SAFETY: an all-zero DlFindObject is valid plain data.
        let mut out: DlFindObject = unsafe { core::mem::zeroed() };
        // SAFETY: `out` is writable.
        (unsafe { f(pc as *mut c_void, &mut out) } == 0).then_some(out)
    }

    fn same(pc: usize) -> Option<DlFindObject> {
        let (ours, theirs) = (find_by_phdrs(pc), glibc(pc));
        match (&ours, &theirs) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                assert_eq!(a.map_start, b.map_start, "map_start of {pc:#x}");
                assert_eq!(a.map_end, b.map_end, "map_end of {pc:#x}");
                assert_eq!(a.eh_frame, b.eh_frame, "eh_frame of {pc:#x}");
                assert_eq!(a.flags, b.flags, "flags of {pc:#x}");
            }
            _ => panic!(
                "{pc:#x}: ours found {}, glibc's {}",
                ours.is_some(),
                theirs.is_some()
            ),
        }
        ours
    }

    #[inline(never)]
    fn in_test_binary() -> usize {
        core::hint::black_box(1)
    }

    #[test]
    fn agrees_with_glibc() {
        let libc_fn = same(libc::getpid as *const () as usize).expect("libc's getpid not found");
        let own = same(in_test_binary as *const () as usize).expect("the test binary not found");
        assert_ne!(libc_fn.map_start, own.map_start);
        assert!(!libc_fn.eh_frame.is_null() && !own.eh_frame.is_null());
        // The edges of libc's mapping, and just past it.
        same(libc_fn.map_start as usize);
        same(libc_fn.map_end as usize - 1);
        same(libc_fn.map_end as usize);
        // The dynamic loader (its `__tls_get_addr`).
        // SAFETY: NUL-terminated name.
        let ld = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__tls_get_addr".as_ptr()) };
        if !ld.is_null() {
            same(ld as usize).expect("ld.so not found");
        }
        // A stack address and a fresh anonymous mapping belong to no object.
        let local = 0u64;
        assert!(same(&local as *const u64 as usize).is_none());
        let m = super::super::map(4096);
        assert!(same(m as usize).is_none());
        super::super::unmap(m, 4096);
    }

    #[test]
    fn the_unwinder_calls_this_definition() {
        // No `resolve()` in the unit tests: every lookup takes the fallback,
        // so a walk must count some (libgcc_eh's reference bound here).
        let before = FALLBACK_CALLS.load(Ordering::Relaxed);
        let mut frames = [0usize; 16];
        let n = super::super::unwind::backtrace(&mut frames);
        assert!(n >= 2, "only {n} frames");
        assert!(FALLBACK_CALLS.load(Ordering::Relaxed) > before);
    }
}
