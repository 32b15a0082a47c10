//! The name of the exported symbol around an address, read from a loaded
//! image's dynamic symbol table in place: what `dladdr` answers, without
//! dladdr. glibc's dladdr takes the loader's lock (`dl_load_lock`); from a
//! fault handler that could wait forever on a thread stopped inside dlopen,
//! so the report reads the tables itself: no lock, no allocation, no call.
//!
//! Owns: nothing. Must never: write memory, or read outside the image's
//! headers, dynamic section and symbol/string tables.

/// Longest name returned.
pub const MAX_NAME: usize = 200;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_STRSZ: i64 = 10;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const SYM_SIZE: usize = 24;
/// More symbols than any real image has: a corrupt table stops here.
const MAX_SYMBOLS: usize = 1 << 22;

/// # Safety
/// `a` is readable for `size_of::<T>()` bytes.
unsafe fn rd<T: Copy>(a: usize) -> T {
    // SAFETY: the caller's promise.
    unsafe { (a as *const T).read_unaligned() }
}

/// The exported symbol containing `addr` in the image whose ELF header is
/// mapped at `base`: its name (NUL-free, at most MAX_NAME bytes, copied into
/// `name`) and `addr`'s offset from its start.
///
/// # Safety
/// `base` is the start of a loaded ELF image's first mapping (file offset
/// 0), whose tables are mapped and readable.
pub unsafe fn symbol(
    base: usize,
    addr: usize,
    name: &mut [u8; MAX_NAME],
) -> Option<(usize, usize)> {
    // The caller promises that the headers, dynamic section and tables of
    // a loaded image are mapped; every offset below comes from them.
    // SAFETY: every read lies in that mapped image (the caller's promise).
    unsafe {
        if rd::<[u8; 4]>(base) != *b"\x7fELF" || rd::<u8>(base + 4) != 2 {
            return None;
        }
        let phoff = rd::<u64>(base + 32) as usize;
        let phentsize = rd::<u16>(base + 54) as usize;
        let phnum = rd::<u16>(base + 56) as usize;
        let (mut bias, mut dynamic) = (None, 0);
        for i in 0..phnum {
            let ph = base + phoff + i * phentsize;
            let p_type = rd::<u32>(ph);
            let p_offset = rd::<u64>(ph + 8) as usize;
            let p_vaddr = rd::<u64>(ph + 16) as usize;
            if p_type == PT_LOAD && p_offset == 0 && bias.is_none() {
                bias = Some(base.wrapping_sub(p_vaddr));
            }
            if p_type == PT_DYNAMIC {
                dynamic = p_vaddr;
            }
        }
        let bias = bias?;
        if dynamic == 0 {
            return None;
        }
        // ld.so relocates the table addresses in place on most targets;
        // the vDSO and a few targets keep link-time values.
        let fix = |v: usize| if v < bias { v.wrapping_add(bias) } else { v };
        let (mut symtab, mut strtab, mut strsz, mut hash, mut gnu_hash) = (0, 0, 0, 0, 0);
        let mut d = bias.wrapping_add(dynamic);
        loop {
            let tag = rd::<i64>(d);
            let val = rd::<u64>(d + 8) as usize;
            match tag {
                DT_NULL => break,
                DT_SYMTAB => symtab = fix(val),
                DT_STRTAB => strtab = fix(val),
                DT_STRSZ => strsz = val,
                DT_HASH => hash = fix(val),
                DT_GNU_HASH => gnu_hash = fix(val),
                _ => {}
            }
            d += 16;
        }
        if symtab == 0 || strtab == 0 {
            return None;
        }
        let count = if hash != 0 {
            rd::<u32>(hash + 4) as usize
        } else if gnu_hash != 0 {
            gnu_hash_count(gnu_hash)
        } else {
            return None;
        };
        let mut best: Option<(usize, u32)> = None;
        for i in 1..count.min(MAX_SYMBOLS) {
            let s = symtab + i * SYM_SIZE;
            let shndx = rd::<u16>(s + 6);
            let value = rd::<u64>(s + 8) as usize;
            let size = rd::<u64>(s + 16) as usize;
            if shndx == 0 || value == 0 {
                continue;
            }
            let lo = value.wrapping_add(bias);
            let inside = addr >= lo && (addr - lo < size || (size == 0 && addr == lo));
            if inside && best.is_none_or(|(b, _)| lo > b) {
                best = Some((lo, rd::<u32>(s)));
            }
        }
        let (lo, st_name) = best?;
        let mut n = 0;
        while n < MAX_NAME && (strsz == 0 || (st_name as usize + n) < strsz) {
            let c = rd::<u8>(strtab + st_name as usize + n);
            if c == 0 {
                break;
            }
            name[n] = c;
            n += 1;
        }
        (n > 0).then_some((n, addr - lo))
    }
}

/// Symbols in a table that has only a GNU hash section: one past the
/// highest index any bucket's chain reaches.
///
/// # Safety
/// `gh` is a mapped DT_GNU_HASH section.
unsafe fn gnu_hash_count(gh: usize) -> usize {
    // SAFETY: the section's layout: nbuckets, symoffset, bloom words,
    // bloom shift, then the bloom filter, buckets and chains.
    unsafe {
        let nbuckets = rd::<u32>(gh) as usize;
        let symoffset = rd::<u32>(gh + 4) as usize;
        let bloom = rd::<u32>(gh + 8) as usize;
        let buckets = gh + 16 + bloom * 8;
        let chains = buckets + nbuckets * 4;
        let mut last = 0;
        for b in 0..nbuckets {
            last = last.max(rd::<u32>(buckets + b * 4) as usize);
        }
        if last < symoffset {
            return symoffset;
        }
        while last < MAX_SYMBOLS && rd::<u32>(chains + (last - symoffset) * 4) & 1 == 0 {
            last += 1;
        }
        last + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_an_exported_libc_function_as_dladdr_does() {
        let addr = libc::getpid as *const () as usize + 3;
        // SAFETY: zeroed Dl_info is a valid out-parameter.
        let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
        // SAFETY: a valid out-parameter.
        assert!(unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) } != 0);
        let mut name = [0u8; MAX_NAME];
        // SAFETY: dli_fbase is libc's load address (its ELF header).
        let (n, off) =
            unsafe { symbol(info.dli_fbase as usize, addr, &mut name) }.expect("a name for getpid");
        // SAFETY: dladdr's name is a NUL-terminated string in libc's table.
        let want = unsafe { core::ffi::CStr::from_ptr(info.dli_sname) }.to_bytes();
        assert_eq!(&name[..n], want);
        assert_eq!(off, addr - info.dli_saddr as usize);
    }
}
