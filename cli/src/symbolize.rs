//! Offline symbolisation of return addresses against the dump's maps.
//!
//! address → maps line → file offset (`addr - start + offset`) → ELF virtual
//! address (through the PT_LOAD program headers) → DWARF frames (with inlined
//! functions) for `vaddr - 1`, so that a return address reports its call
//! line; the ELF symbol tables when there is no DWARF. Anything that cannot
//! be read (a missing, stripped or moved file) gives `module+0xoffset`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;

use addr2line::gimli;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::dump::{Dump, MapEntry, PyFrame};

type Slice = gimli::EndianSlice<'static, gimli::RunTimeEndian>;

/// One (possibly inlined) function frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Demangled name, or `module+0xoffset` when unknown.
    pub function: String,
    /// Source file (full path as DWARF gives it).
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Path of the mapped file, or the pseudo-name (`[anon]`, `[heap]`).
    pub module: String,
    /// In libmemx.so itself: never shown.
    pub hidden: bool,
}

impl Frame {
    /// `name (file.c:12)` or `name`.
    pub fn with_line(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{} ({}:{})", self.function, basename(f), l),
            (Some(f), None) => format!("{} ({})", self.function, basename(f)),
            _ => self.function.clone(),
        }
    }
}

/// All we know about one return address.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// A Python frame (from the dump's PYTHON_FRAMES), not a return address.
    pub python: bool,
    /// Index into the dump's maps.
    pub map: Option<usize>,
    /// Innermost first; one entry per inlined function plus the real one.
    pub frames: Vec<Frame>,
}

/// What a report says about stripped modules, if any left frames unnamed.
pub fn unnamed_note(unnamed: &[Unnamed]) -> Option<String> {
    if unnamed.is_empty() {
        return None;
    }
    let list: Vec<String> = unnamed
        .iter()
        .map(|u| {
            let s = if u.addresses == 1 { "" } else { "es" };
            format!("{} ({} address{s})", basename(&u.module), u.addresses)
        })
        .collect();
    Some(format!(
        "no symbols for {}: stripped, so their frames show as module+0xoffset. Get the debug \
         files (Debian: the -dbgsym packages from the debian-debug archive, or debuginfod; \
         or an unstripped build) and pass --symbols DIR, a directory holding \
         .build-id/xx/yyyy.debug or NAME.debug files (/usr/lib/debug is always searched)",
        list.join(", ")
    ))
}

pub fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

struct Sym {
    addr: u64,
    size: u64,
    name: String,
}

struct Module {
    /// (file offset, file size, virtual address) of each PT_LOAD.
    segments: Vec<(u64, u64, u64)>,
    /// Whether it (or its debug file) has a full symbol table (.symtab) or
    /// DWARF; if not, only exported names (.dynsym) are known: stripped.
    full_symbols: bool,
    ctx: Option<addr2line::Context<Slice>>,
    /// Sorted by address.
    symbols: Vec<Sym>,
    pub build_id: Option<Vec<u8>>,
}

impl Module {
    fn vaddr(&self, file_off: u64) -> u64 {
        for &(off, size, vaddr) in &self.segments {
            if file_off >= off && file_off < off + size.max(1) {
                return file_off - off + vaddr;
            }
        }
        file_off
    }

    fn symbol(&self, probe: u64) -> Option<&Sym> {
        let i = self.symbols.partition_point(|s| s.addr <= probe);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        if s.size == 0 || probe < s.addr + s.size {
            Some(s)
        } else {
            None
        }
    }
}

fn leak(data: Vec<u8>) -> &'static [u8] {
    Box::leak(data.into_boxed_slice())
}

fn read_elf(path: &Path) -> Option<(&'static [u8], object::File<'static>)> {
    let data = leak(std::fs::read(path).ok()?);
    let file = object::File::parse(data).ok()?;
    Some((data, file))
}

fn has_dwarf(file: &object::File<'_>) -> bool {
    file.section_by_name(".debug_info")
        .map(|s| s.size() > 0)
        .unwrap_or(false)
}

fn has_symtab(file: &object::File<'_>) -> bool {
    file.symbols().next().is_some()
}

/// Directories given with `--symbols`, searched before /usr/lib/debug.
static DEBUG_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Adds a directory of debug files (`--symbols DIR`).
pub fn add_debug_dir(dir: PathBuf) {
    DEBUG_DIRS.lock().unwrap().push(dir);
}

/// A separate debug file: in each `--symbols` directory, then in
/// /usr/lib/debug, by build id (`.build-id/xx/yyyy.debug`); then in each
/// `--symbols` directory by name (`NAME.debug`, `NAME`, the
/// .gnu_debuglink name, the file's full path below DIR); by .gnu_debuglink
/// beside the file, in .debug/ or under /usr/lib/debug. A file counts if
/// it has DWARF or a full symbol table (an unstripped copy of the binary).
fn find_debug_file(path: &Path, file: &object::File<'_>) -> Option<object::File<'static>> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    let mut dirs = DEBUG_DIRS.lock().unwrap().clone();
    dirs.push(PathBuf::from("/usr/lib/debug"));
    if let Ok(Some(id)) = file.build_id() {
        if id.len() > 1 {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            for d in &dirs {
                candidates.push(d.join(format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..])));
            }
        }
    }
    let link = file
        .gnu_debuglink()
        .ok()
        .flatten()
        .and_then(|(name, _)| std::str::from_utf8(name).ok().map(str::to_string));
    if let Some(name) = path.file_name() {
        let name = name.to_string_lossy();
        let rel = path.strip_prefix("/").unwrap_or(path);
        for d in &dirs[..dirs.len() - 1] {
            candidates.push(d.join(format!("{name}.debug")));
            candidates.push(d.join(&*name));
            if let Some(l) = &link {
                candidates.push(d.join(l));
            }
            candidates.push(d.join(format!("{}.debug", rel.display())));
            candidates.push(d.join(rel));
        }
    }
    if let Ok(Some((name, _crc))) = file.gnu_debuglink() {
        if let (Ok(name), Some(dir)) = (std::str::from_utf8(name), path.parent()) {
            candidates.push(dir.join(name));
            candidates.push(dir.join(".debug").join(name));
            let rel = dir.strip_prefix("/").unwrap_or(dir);
            candidates.push(Path::new("/usr/lib/debug").join(rel).join(name));
        }
    }
    for c in candidates {
        if c.as_path() == path {
            continue;
        }
        if let Some((_, f)) = read_elf(&c) {
            if has_dwarf(&f) || has_symtab(&f) {
                return Some(f);
            }
        }
    }
    None
}

fn dwarf_context(file: &object::File<'static>) -> Option<addr2line::Context<Slice>> {
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Slice, gimli::Error> {
        let data: &'static [u8] = match file.section_by_name(id.name()) {
            Some(s) => match s.uncompressed_data() {
                Ok(Cow::Borrowed(b)) => b,
                Ok(Cow::Owned(v)) => leak(v),
                Err(_) => &[],
            },
            None => &[],
        };
        Ok(gimli::EndianSlice::new(data, endian))
    };
    let dwarf = gimli::Dwarf::load(load).ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

fn collect_symbols(files: &[&object::File<'static>]) -> Vec<Sym> {
    let mut syms = Vec::new();
    for f in files {
        for s in f.symbols().chain(f.dynamic_symbols()) {
            if s.kind() != SymbolKind::Text || !s.is_definition() || s.address() == 0 {
                continue;
            }
            if let Ok(name) = s.name() {
                if name.is_empty() {
                    continue;
                }
                let name = addr2line::demangle_auto(Cow::Borrowed(name), None).into_owned();
                syms.push(Sym {
                    addr: s.address(),
                    size: s.size(),
                    name,
                });
            }
        }
    }
    // Prefer sized symbols at equal addresses; drop duplicates.
    syms.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size.cmp(&a.size)));
    syms.dedup_by(|later, earlier| later.addr == earlier.addr);
    syms
}

fn load_module(path: &Path) -> Option<Module> {
    let (_, file) = read_elf(path)?;
    let segments = file
        .segments()
        .map(|s| {
            let (off, size) = s.file_range();
            (off, size, s.address())
        })
        .collect();
    let build_id = file.build_id().ok().flatten().map(|b| b.to_vec());
    let debug = if has_dwarf(&file) && has_symtab(&file) {
        None
    } else {
        find_debug_file(path, &file)
    };
    let ctx = match &debug {
        Some(d) if has_dwarf(d) => dwarf_context(d),
        _ if has_dwarf(&file) => dwarf_context(&file),
        _ => None,
    };
    let full_symbols = has_dwarf(&file)
        || has_symtab(&file)
        || debug
            .as_ref()
            .is_some_and(|d| has_dwarf(d) || has_symtab(d));
    let symbols = match &debug {
        Some(d) => collect_symbols(&[&file, d]),
        None => collect_symbols(&[&file]),
    };
    Some(Module {
        segments,
        full_symbols,
        ctx,
        symbols,
        build_id,
    })
}

pub struct Symbolizer<'a> {
    maps: &'a [MapEntry],
    python: &'a HashMap<u64, PyFrame>,
    modules: HashMap<String, Option<Module>>,
    cache: HashMap<u64, Rc<Resolved>>,
    /// Per stripped module (path): addresses that got no name.
    unnamed: HashMap<String, usize>,
    /// Print notes about unreadable files to stderr.
    pub quiet: bool,
}

/// A module whose frames showed as `module+0xoffset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unnamed {
    pub module: String,
    /// Distinct addresses in it without a name.
    pub addresses: usize,
}

impl<'a> Symbolizer<'a> {
    pub fn new(dump: &'a Dump) -> Self {
        Self::with_maps(&dump.maps, &dump.python_frames)
    }

    /// A symbolizer over `maps` alone (no dump: a guarded-sampling report).
    pub fn with_maps(maps: &'a [MapEntry], python: &'a HashMap<u64, PyFrame>) -> Self {
        Symbolizer {
            maps,
            python,
            modules: HashMap::new(),
            cache: HashMap::new(),
            unnamed: HashMap::new(),
            quiet: false,
        }
    }

    /// Stripped modules (no symbol table, no DWARF, no debug file found)
    /// that left frames without a name, most first.
    pub fn unnamed(&self) -> Vec<Unnamed> {
        let mut v: Vec<Unnamed> = self
            .unnamed
            .iter()
            .map(|(m, &n)| Unnamed {
                module: m.clone(),
                addresses: n,
            })
            .collect();
        v.sort_by(|a, b| b.addresses.cmp(&a.addresses).then(a.module.cmp(&b.module)));
        v
    }

    fn module(&mut self, m: &MapEntry) -> Option<&Module> {
        let path = m.file_path().to_string();
        if !self.modules.contains_key(&path) {
            let p = Path::new(&path);
            let loaded = match std::fs::metadata(p) {
                Err(e) => {
                    if !self.quiet {
                        eprintln!("memx: note: cannot read {path} ({e}); its frames show as module+offset");
                    }
                    None
                }
                Ok(md) => {
                    if m.inode != 0 && md.ino() != m.inode && !self.quiet {
                        eprintln!("memx: note: {path} is not the file the process mapped (it was replaced or moved); its names may be wrong");
                    }
                    let module = load_module(p);
                    if module.is_none() && !self.quiet {
                        eprintln!("memx: note: {path} is not a readable ELF file; its frames show as module+offset");
                    }
                    module
                }
            };
            self.modules.insert(path.clone(), loaded);
        }
        self.modules.get(&path).and_then(|m| m.as_ref())
    }

    /// The GNU build id of a mapped file, if it can be read.
    pub fn build_id(&mut self, map: usize) -> Option<Vec<u8>> {
        let m = self.maps.get(map)?.clone();
        if !m.is_file() {
            return None;
        }
        self.module(&m).and_then(|md| md.build_id.clone())
    }

    pub fn resolve(&mut self, addr: u64) -> Rc<Resolved> {
        if let Some(r) = self.cache.get(&addr) {
            return r.clone();
        }
        let r = Rc::new(self.resolve_uncached(addr));
        self.cache.insert(addr, r.clone());
        r
    }

    fn resolve_uncached(&mut self, addr: u64) -> Resolved {
        if let Some(py) = self.python.get(&addr) {
            return Resolved {
                map: None,
                python: true,
                frames: vec![Frame {
                    function: py.function.clone(),
                    file: Some(py.file.clone()),
                    line: Some(py.line),
                    module: crate::profile::PYTHON_MODULE.into(),
                    hidden: false,
                }],
            };
        }
        let idx = self
            .maps
            .iter()
            .position(|m| addr >= m.start && addr < m.end);
        let Some(idx) = idx else {
            return Resolved {
                python: false,
                map: None,
                frames: vec![Frame {
                    function: format!("0x{addr:x}"),
                    file: None,
                    line: None,
                    module: "?".into(),
                    hidden: false,
                }],
            };
        };
        let m = self.maps[idx].clone();
        let file_off = addr - m.start + m.offset;
        let module_name = if m.path.is_empty() {
            "[anon]".to_string()
        } else {
            m.file_path().to_string()
        };
        let hidden = basename(&module_name).starts_with("libmemx");
        let fallback = |module_name: &str| Frame {
            function: format!("{}+0x{:x}", basename(module_name), file_off),
            file: None,
            line: None,
            module: module_name.to_string(),
            hidden,
        };
        if !m.is_file() {
            return Resolved {
                python: false,
                map: Some(idx),
                frames: vec![fallback(&module_name)],
            };
        }
        let Some(module) = self.module(&m) else {
            return Resolved {
                python: false,
                map: Some(idx),
                frames: vec![fallback(&module_name)],
            };
        };
        // A return address: look up the call instruction before it.
        let probe = module.vaddr(file_off).saturating_sub(1);
        let mut frames = Vec::new();
        if let Some(ctx) = &module.ctx {
            if let Ok(mut iter) = ctx.find_frames(probe).skip_all_loads() {
                while let Ok(Some(f)) = iter.next() {
                    let function = f
                        .function
                        .as_ref()
                        .and_then(|n| n.demangle().ok().map(|s| s.into_owned()));
                    let (file, line) = match &f.location {
                        Some(l) => (l.file.map(|s| s.to_string()), l.line),
                        None => (None, None),
                    };
                    frames.push(Frame {
                        function: function.unwrap_or_default(),
                        file,
                        line,
                        module: module_name.clone(),
                        hidden,
                    });
                }
            }
        }
        let sym = module.symbol(probe).map(|s| s.name.clone());
        let stripped = !module.full_symbols;
        if frames.is_empty() {
            let mut f = fallback(&module_name);
            match sym {
                Some(s) => f.function = s,
                None if stripped && !hidden => {
                    *self.unnamed.entry(module_name.clone()).or_default() += 1
                }
                None => {}
            }
            frames.push(f);
        } else {
            // The outermost DWARF frame is the real function: fill in a
            // missing name from the symbol table.
            let n = frames.len();
            for (i, f) in frames.iter_mut().enumerate() {
                if f.function.is_empty() {
                    f.function = match (&sym, i + 1 == n) {
                        (Some(s), true) => s.clone(),
                        _ => fallback(&module_name).function,
                    };
                }
            }
        }
        Resolved {
            python: false,
            map: Some(idx),
            frames,
        }
    }
}
