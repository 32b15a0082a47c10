//! Symbol lookup in the loaded program (`dlsym`, `dladdr1`), used once from
//! the library constructor to find the interpreter's entry points.
//!
//! Owns: nothing. Must never: be called from the allocation path (dlsym
//! may allocate and takes the loader's lock).

/// The address of `name` in the global scope, or 0 when no loaded object
/// defines it.
pub fn symbol(name: &core::ffi::CStr) -> usize {
    // SAFETY: RTLD_DEFAULT with a NUL-terminated name; dlsym has no other
    // preconditions. A failed lookup only sets dlerror's state.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// The definition of `name` that comes after this library in the search
/// order (`RTLD_NEXT`): libc's, for a function memx also exports.
pub fn next_symbol(name: &core::ffi::CStr) -> usize {
    // SAFETY: as `symbol`, with RTLD_NEXT.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
}

/// The size in bytes of the function symbol that `addr` starts, from the
/// dynamic symbol table (0 when unknown).
pub fn symbol_size(addr: usize) -> usize {
    const RTLD_DL_SYMENT: i32 = 1;
    // SAFETY: Dl_info is plain data; zeroed is a valid start.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    let mut sym: *const libc::Elf64_Sym = core::ptr::null();
    // SAFETY: valid out-parameters; with RTLD_DL_SYMENT, dladdr1 stores a
    // pointer to the matching ELF symbol (in the object's mapped table).
    let ok = unsafe {
        libc::dladdr1(
            addr as *const libc::c_void,
            &mut info,
            &mut sym as *mut *const libc::Elf64_Sym as *mut *mut libc::c_void,
            RTLD_DL_SYMENT,
        )
    };
    if ok == 0 || sym.is_null() || info.dli_saddr as usize != addr {
        return 0;
    }
    // SAFETY: dladdr1 succeeded, so `sym` points into the symbol table.
    unsafe { (*sym).st_size as usize }
}
