//! Python frames in sampled stacks: when the process is CPython 3.8–3.13,
//! each sample also reads the current thread's Python frames (function,
//! file, line) straight from the interpreter's frame chain, and they are
//! stitched into the native stack where the interpreter's evaluation
//! function (`_PyEval_EvalFrameDefault`) is, as `py-spy --native` shows.
//!
//! Safety rules (a probe showed what breaks): inside malloc we call no
//! Python function that can allocate or run Python code — only pure ones
//! (`PyCode_Addr2Line`, `PyFrame_GetLineNumber` before 3.11, thread-state
//! getters). Frames are read only from this OS thread's own thread state
//! (see `own_thread_state`), with or without the GIL, and never during
//! start-up or finalisation. Names are copied at sample time; no Python
//! object is kept alive.
//!
//! A Python frame appears in a stack as `TAG | id`; the table maps ids to
//! (function, file, line), aggregated by line.
//! Owns: the interpreter's layout (chosen once from its version) and the
//! table of Python frames. Must never: call into Python beyond the pure
//! functions above, or resolve symbols from the allocation path (that
//! happens once, in `detect`, from the library constructor).

use super::debug_offsets;
use super::line_cache::{Key, LineCache};
use crate::meta::META;
use crate::sys::dl;
use crate::util::fmt::FixedBuf;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// Stack words with these top bits are Python frames (user-space addresses
/// never have them).
pub const TAG: usize = 0xf000_0000_0000_0000;
pub const MAX_FRAMES: usize = 64;

/// Byte offsets into the interpreter's structures for one minor version
/// (x86-64 release builds; checked against the headers by the tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) minor: u32,
    /// PyThreadState → first frame: `frame` (≤3.10), `cframe` (3.11,
    /// 3.12; then `_PyCFrame.current_frame` at `cframe_current`), or
    /// `current_frame` (3.13).
    pub(super) ts_frame: usize,
    pub(super) cframe_current: Option<usize>,
    pub(super) f_back: usize,
    pub(super) f_code: usize,
    /// 3.11+: `prev_instr` / `instr_ptr`, `owner`, and 3.11's `is_entry`.
    pub(super) f_instr: usize,
    pub(super) f_owner: usize,
    pub(super) f_is_entry: Option<usize>,
    pub(super) co_filename: usize,
    pub(super) co_name: usize,
    pub(super) co_code_adaptive: usize,
    pub(super) co_firsttraceable: usize,
    /// sizeof(PyASCIIObject), sizeof(PyCompactUnicodeObject).
    pub(super) ascii_size: usize,
    pub(super) compact_size: usize,
}

const fn old(minor: u32) -> Layout {
    Layout {
        minor,
        ts_frame: 24,
        cframe_current: None,
        f_back: 24,
        f_code: 32,
        f_instr: 0,
        f_owner: 0,
        f_is_entry: None,
        co_filename: 104,
        co_name: 112,
        co_code_adaptive: 0,
        co_firsttraceable: 0,
        ascii_size: 48,
        compact_size: 72,
    }
}

pub(super) const LAYOUTS: [Layout; 6] = [
    old(8),
    old(9),
    old(10),
    Layout {
        minor: 11,
        ts_frame: 56,
        cframe_current: Some(8),
        f_back: 48,
        f_code: 32,
        f_instr: 56,
        f_owner: 69,
        f_is_entry: Some(68),
        co_filename: 112,
        co_name: 120,
        co_code_adaptive: 184,
        co_firsttraceable: 168,
        ascii_size: 48,
        compact_size: 72,
    },
    Layout {
        minor: 12,
        ts_frame: 56,
        cframe_current: Some(0),
        f_back: 8,
        f_code: 0,
        f_instr: 56,
        f_owner: 70,
        f_is_entry: None,
        co_filename: 112,
        co_name: 120,
        co_code_adaptive: 192,
        co_firsttraceable: 176,
        ascii_size: 40,
        compact_size: 56,
    },
    Layout {
        minor: 13,
        ts_frame: 72,
        cframe_current: None,
        f_back: 8,
        f_code: 0,
        f_instr: 56,
        f_owner: 70,
        f_is_entry: None,
        co_filename: 112,
        co_name: 120,
        co_code_adaptive: 200,
        co_firsttraceable: 184,
        ascii_size: 40,
        compact_size: 56,
    },
];

const OWNED_BY_GENERATOR: u8 = 1;
const OWNED_BY_CSTACK: u8 = 3;

type PtrFn = unsafe extern "C" fn() -> *mut u8;
type IntFn = unsafe extern "C" fn() -> i32;

/// The interpreter's entry points and layout, found once.
struct Interp {
    layout: Layout,
    /// The thread state holding the GIL (the pymalloc hook's check).
    current_tstate: PtrFn,
    this_thread_tstate: PtrFn,
    is_initialized: IntFn,
    is_finalizing: IntFn,
    addr2line: unsafe extern "C" fn(*mut u8, i32) -> i32,
    frame_line: unsafe extern "C" fn(*mut u8) -> i32,
    code_type: usize,
    unicode_type: usize,
    eval_start: usize,
    eval_end: usize,
}

struct Slot(UnsafeCell<Option<Interp>>);
// SAFETY: written once by `detect` before ACTIVE is set; read-only after.
unsafe impl Sync for Slot {}
static INTERP: Slot = Slot(UnsafeCell::new(None));
static ACTIVE: AtomicBool = AtomicBool::new(false);

fn interp() -> Option<&'static Interp> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: ACTIVE is set only after INTERP was written, never again.
    unsafe { (*INTERP.0.get()).as_ref() }
}

/// The CPython version `major.minor` of this process, if it is CPython.
fn version() -> Option<(u32, u32)> {
    let v = dl::symbol(c"Py_Version");
    if v != 0 {
        // SAFETY: Py_Version (3.11+) is a `const unsigned long` PY_VERSION_HEX.
        let hex = unsafe { *(v as *const u32) };
        return Some((hex >> 24, (hex >> 16) & 0xff));
    }
    let f = dl::symbol(c"Py_GetVersion");
    if f == 0 {
        return None;
    }
    // SAFETY: Py_GetVersion() returns a static NUL-terminated string such
    // as "3.10.13 (main, ...)"; it formats into a static buffer, no malloc.
    let s = unsafe {
        let f: unsafe extern "C" fn() -> *const libc::c_char = core::mem::transmute(f);
        core::ffi::CStr::from_ptr(f()).to_bytes()
    };
    let mut parts = s.split(|&c| c == b'.' || c == b' ');
    let num = |p: Option<&[u8]>| -> Option<u32> {
        let p = p?;
        if p.is_empty() || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(p.iter().fold(0u32, |a, &c| a * 10 + (c - b'0') as u32))
    };
    Some((num(parts.next())?, num(parts.next())?))
}

/// From the library constructor: is this CPython 3.8–3.13? Then resolve
/// what sampling needs and turn Python frames on.
pub fn detect() {
    let Some((3, minor)) = version() else {
        return;
    };
    let Some(layout) = layout_for(minor) else {
        return;
    };
    let finalizing_name = if minor >= 13 {
        c"Py_IsFinalizing"
    } else {
        c"_Py_IsFinalizing"
    };
    let current_name = if minor >= 13 {
        c"PyThreadState_GetUnchecked"
    } else {
        c"_PyThreadState_UncheckedGet"
    };
    let syms = [
        dl::symbol(current_name),
        dl::symbol(c"PyGILState_GetThisThreadState"),
        dl::symbol(c"Py_IsInitialized"),
        dl::symbol(finalizing_name),
        dl::symbol(c"PyCode_Addr2Line"),
        dl::symbol(c"PyFrame_GetLineNumber"),
        dl::symbol(c"PyCode_Type"),
        dl::symbol(c"PyUnicode_Type"),
        dl::symbol(c"_PyEval_EvalFrameDefault"),
    ];
    if syms.contains(&0) {
        return;
    }
    let eval_size = dl::symbol_size(syms[8]);
    // SAFETY: each address was found under the name of a function with the
    // signature it is given here (CPython's C API for these versions).
    let interp = unsafe {
        Interp {
            layout,
            current_tstate: core::mem::transmute::<usize, PtrFn>(syms[0]),
            this_thread_tstate: core::mem::transmute::<usize, PtrFn>(syms[1]),
            is_initialized: core::mem::transmute::<usize, IntFn>(syms[2]),
            is_finalizing: core::mem::transmute::<usize, IntFn>(syms[3]),
            addr2line: core::mem::transmute::<usize, unsafe extern "C" fn(*mut u8, i32) -> i32>(
                syms[4],
            ),
            frame_line: core::mem::transmute::<usize, unsafe extern "C" fn(*mut u8) -> i32>(
                syms[5],
            ),
            code_type: syms[6],
            unicode_type: syms[7],
            eval_start: syms[8],
            eval_end: syms[8] + eval_size,
        }
    };
    // SAFETY: called once from the constructor, before ACTIVE is set, so
    // nothing reads the slot yet.
    unsafe { *INTERP.0.get() = Some(interp) };
    ACTIVE.store(true, Ordering::Release);
}

/// The layout of CPython 3.`minor`: the table's up to 3.12; from 3.13 the
/// interpreter's own `_Py_DebugOffsets`, read from `_PyRuntime` (checked
/// against the table on 3.13). None, with one line on stderr for 3.13+,
/// when frames cannot be read safely.
fn layout_for(minor: u32) -> Option<Layout> {
    let table = LAYOUTS.iter().find(|l| l.minor == minor.min(13)).copied()?;
    if minor < 13 {
        return Some(table);
    }
    let runtime = dl::symbol(c"_PyRuntime");
    let mut line = FixedBuf::<240>::new();
    line.str("memx: CPython 3.").u64(minor as u64).str(": ");
    // `_PyRuntime` is CPython's static runtime state, far larger than the
    // words read (3.13's struct alone is WORDS words), and initialised data
    // before any code runs.
    let words = (runtime != 0).then(|| {
        // SAFETY: WORDS words of `_PyRuntime`, readable as above.
        unsafe { core::ptr::read_unaligned(runtime as *const [u64; debug_offsets::WORDS]) }
    });
    let result = match words {
        Some(w) if w[0].to_le_bytes() == *debug_offsets::COOKIE => {
            debug_offsets::layout(&w, &table)
        }
        _ => {
            line.str(
                "no _Py_DebugOffsets at _PyRuntime; Python frames are off (native stacks only)\n",
            );
            crate::sys::write_stderr(line.as_bytes());
            return None;
        }
    };
    match result {
        Ok(l) => {
            if minor == 13 && l != table {
                line.str(
                    "_Py_DebugOffsets differ from memx's 3.13 table; using the offsets read\n",
                );
                crate::sys::write_stderr(line.as_bytes());
            }
            Some(l)
        }
        Err(debug_offsets::Refusal::Newer(v)) => {
            line.str("_Py_DebugOffsets version ")
                .hex(v)
                .str(" is newer than memx knows; Python frames are off (native stacks only)\n");
            crate::sys::write_stderr(line.as_bytes());
            None
        }
        Err(debug_offsets::Refusal::FreeThreaded) => {
            line.str("free-threaded build: Python frames and the pymalloc hook are off (native stacks only)\n");
            crate::sys::write_stderr(line.as_bytes());
            None
        }
    }
}

/// None outside CPython 3.8–3.13; else whether the interpreter has
/// finished starting (and is not finalising).
pub fn started() -> Option<bool> {
    let py = interp()?;
    // SAFETY: pure reads of interpreter globals.
    Some(unsafe { (py.is_initialized)() != 0 && (py.is_finalizing)() == 0 })
}

/// One Python frame of the current thread: its code object (alive while
/// its frame is, which lasts the whole sample: the thread is in malloc) and
/// line; `last_of_call` marks the outermost frame one evaluation call runs.
#[derive(Clone, Copy, Default)]
pub struct PyFrame {
    code: usize,
    line: i32,
    pub last_of_call: bool,
}

/// Reads a word at `base + off`; 0 when `base` is null or misaligned.
///
/// # Safety
/// A non-null, aligned `base` points at a live object of the layout.
unsafe fn word(base: usize, off: usize) -> usize {
    if base == 0 || !base.is_multiple_of(8) {
        return 0;
    }
    // SAFETY: the caller's promise.
    unsafe { *((base + off) as *const usize) }
}

/// The current thread's Python frames, innermost first, if it runs Python
/// (holding the GIL, or in a C call that released it); 0 frames otherwise.
pub fn capture(out: &mut [PyFrame; MAX_FRAMES]) -> usize {
    let Some(py) = interp() else {
        return 0;
    };
    let tstate = own_thread_state(py);
    if tstate == 0 {
        return 0;
    }
    // SAFETY: `tstate` is this thread's own (see `own_thread_state`).
    unsafe { walk(py, tstate, out) }
}

/// This OS thread's own thread state, or 0 outside a running interpreter.
///
/// `PyGILState_GetThisThreadState` is a pure thread-specific-storage read
/// (`pthread_getspecific` behind an "is the key set up" test, 3.8–3.13), so
/// it needs no GIL. A thread's frame chain changes only while that thread
/// runs Python; here it is inside malloc, so the chain stays as it was when
/// it called into C, whoever holds the GIL (numpy's `calloc` with the GIL
/// released is the common case), and the frames keep their code objects
/// alive. With a sub-interpreter this is the state the thread first got,
/// which only this thread touches too: its frames are the outer caller's.
/// Other threads free a thread state only in a fork child (where that thread
/// is gone) or when the interpreter finalises, which is checked first; a
/// daemon thread that allocates in C code at the very moment finalisation
/// begins is the one window left.
fn own_thread_state(py: &Interp) -> usize {
    // SAFETY: pure reads of interpreter globals and this thread's TSS slot
    // (no allocation, no Python code, no lock).
    unsafe {
        if (py.is_initialized)() == 0 || (py.is_finalizing)() != 0 {
            return 0;
        }
        (py.this_thread_tstate)() as usize
    }
}

/// Whether Python frames are read in this process (CPython 3.8–3.13 found).
pub fn active() -> bool {
    interp().is_some()
}

/// Whether this thread's own thread state holds the GIL in a running
/// interpreter (initialised, not finalising): the check that survives
/// sub-interpreters, which `PyGILState_Check` does not.
pub fn holds_gil() -> bool {
    gil_tstate().is_some()
}

fn gil_tstate() -> Option<(&'static Interp, usize)> {
    let py = interp()?;
    // SAFETY: pure reads of interpreter state (no allocation, no Python
    // code); the thread-state getters read a TLS slot or a global.
    unsafe {
        if (py.is_initialized)() == 0 || (py.is_finalizing)() != 0 {
            return None;
        }
        let t = (py.current_tstate)() as usize;
        if t == 0 || t != (py.this_thread_tstate)() as usize {
            return None;
        }
        Some((py, t))
    }
}

/// # Safety
/// `tstate` is this thread's own thread state, and this thread is not
/// running Python (it is inside the allocator).
unsafe fn walk(py: &Interp, tstate: usize, out: &mut [PyFrame; MAX_FRAMES]) -> usize {
    let l = &py.layout;
    // Pointers come from the interpreter's own frame chain; `word` rejects
    // null and misaligned ones.
    // SAFETY: (whole body) only this thread changes its own frame chain,
    // and it is inside the allocator.
    unsafe {
        let mut f = word(tstate, l.ts_frame);
        if let Some(off) = l.cframe_current {
            f = word(f, off);
        }
        let mut n = 0;
        let mut steps = 0;
        while f != 0 && n < MAX_FRAMES && steps < 4096 {
            steps += 1;
            let next = word(f, l.f_back);
            if l.minor <= 10 {
                out[n] = PyFrame {
                    code: word(f, l.f_code),
                    line: (py.frame_line)(f as *mut u8),
                    last_of_call: true,
                };
                n += 1;
                f = next;
                continue;
            }
            let owner = *((f + l.f_owner) as *const u8);
            if owner == OWNED_BY_CSTACK {
                // 3.12+: the shim an evaluation call pushes below its frames.
                if n > 0 {
                    out[n - 1].last_of_call = true;
                }
                f = next;
                continue;
            }
            let code = word(f, l.f_code);
            let entry = l.f_is_entry.is_some_and(|o| *((f + o) as *const u8) != 0);
            if code != 0 && word(code, 8) == py.code_type {
                let start = code + l.co_code_adaptive;
                let instr = word(f, l.f_instr);
                let first = *((code + l.co_firsttraceable) as *const i32) as usize;
                let incomplete = owner != OWNED_BY_GENERATOR && instr < start + 2 * first;
                if !incomplete {
                    let offset = (instr as isize - start as isize) as i32;
                    out[n] = PyFrame {
                        code,
                        line: line_of(py, code, offset),
                        last_of_call: false,
                    };
                    n += 1;
                }
            }
            if entry && n > 0 {
                out[n - 1].last_of_call = true;
            }
            f = next;
        }
        n
    }
}

/// Lines already looked up (3.11+, where the walk knows the offset).
static LINES: LineCache = LineCache::new();

/// The line of instruction `offset` of the live code object `code`.
///
/// # Safety
/// `code` is a live code object (a frame of this thread holds it).
unsafe fn line_of(py: &Interp, code: usize, offset: i32) -> i32 {
    // SAFETY: (whole body) the caller's promise; addr2line is pure.
    unsafe {
        let key = Key {
            code,
            name: word(code, py.layout.co_name),
            file: word(code, py.layout.co_filename),
            offset,
        };
        if let Some(line) = LINES.get(&key) {
            return line;
        }
        let line = (py.addr2line)(code as *mut u8, offset);
        LINES.put(&key, line);
        line
    }
}

/// The evaluation function's code, as (start, end]: a return address in it
/// is where a Python call's frames go. None unless Python frames are read.
pub fn eval_range() -> Option<(usize, usize)> {
    interp().map(|p| (p.eval_start, p.eval_end))
}

/// Whether `ip` is a return address inside the evaluation function.
pub fn is_eval(ip: usize) -> bool {
    eval_range().is_some_and(|(start, end)| ip > start && ip <= end)
}

/// Merges Python frames into a native stack: each return address inside
/// the evaluation function is replaced by the Python frames that call ran
/// (`TAG | index into py`); Python frames left over go at the end.
pub fn stitch(native: &[usize], py: &[PyFrame], out: &mut [usize]) -> usize {
    let (mut n, mut pi) = (0, 0);
    let mut push = |w: usize, n: &mut usize| {
        if *n < out.len() {
            out[*n] = w;
            *n += 1;
        }
    };
    for &ip in native {
        if pi < py.len() && is_eval(ip) {
            loop {
                push(TAG | pi, &mut n);
                pi += 1;
                if py[pi - 1].last_of_call || pi == py.len() {
                    break;
                }
            }
        } else {
            push(ip, &mut n);
        }
    }
    while pi < py.len() {
        push(TAG | pi, &mut n);
        pi += 1;
    }
    n
}

// ------------------------------------------------------------ frame table

/// One distinct (function, file, line); the two names follow it in memory.
#[repr(C)]
pub struct Entry {
    chain: *mut Entry,
    older: *mut Entry,
    hash: u64,
    pub id: u32,
    pub line: i32,
    name_len: u32,
    file_len: u32,
}

impl Entry {
    fn text(&self) -> &[u8] {
        // SAFETY: `intern` allocated name_len + file_len bytes right after
        // the header and filled them before publishing the entry.
        unsafe {
            let p = (self as *const Entry).add(1) as *const u8;
            core::slice::from_raw_parts(p, (self.name_len + self.file_len) as usize)
        }
    }

    pub fn name(&self) -> &[u8] {
        &self.text()[..self.name_len as usize]
    }

    pub fn file(&self) -> &[u8] {
        &self.text()[self.name_len as usize..]
    }

    pub fn older(&self) -> *const Entry {
        self.older
    }
}

const HEADS: usize = 4096;

/// Python frames seen in samples, each stored once. Guarded by the
/// profiler's lock; entries never change or go away once published.
pub struct FrameTable {
    heads: *mut *mut Entry,
    newest: *mut Entry,
    count: u32,
}

// SAFETY: used only under the profiler's lock; entries live in META.
unsafe impl Send for FrameTable {}

impl FrameTable {
    pub const fn new() -> Self {
        FrameTable {
            heads: core::ptr::null_mut(),
            newest: core::ptr::null_mut(),
            count: 0,
        }
    }

    pub fn newest(&self) -> *const Entry {
        self.newest
    }

    /// The id of `frame`'s (function, file, line), added if new; None when
    /// its names cannot be read or memory is short.
    pub fn intern(&mut self, frame: &PyFrame) -> Option<u32> {
        let py = interp()?;
        let mut name = [0u8; 200];
        let mut file = [0u8; 400];
        // SAFETY: the code object is alive (its frame holds it for the
        // whole sample); its name fields are str objects or checked.
        let (nl, fl) = unsafe {
            (
                read_str(py, word(frame.code, py.layout.co_name), &mut name),
                read_str(py, word(frame.code, py.layout.co_filename), &mut file),
            )
        };
        self.find_or_add(&name[..nl], &file[..fl], frame.line)
    }

    fn find_or_add(&mut self, name: &[u8], file: &[u8], line: i32) -> Option<u32> {
        if self.heads.is_null() {
            self.heads = META.alloc(HEADS * core::mem::size_of::<usize>(), 64) as *mut *mut Entry;
            if self.heads.is_null() {
                return None;
            }
        }
        let h = hash3(name, file, line);
        // SAFETY: `heads` has HEADS slots; chains hold published entries.
        let head = unsafe { self.heads.add(h as usize % HEADS) };
        // SAFETY: as above.
        let mut e = unsafe { *head };
        while !e.is_null() {
            // SAFETY: a published entry.
            let r = unsafe { &*e };
            if r.hash == h && r.line == line && r.name() == name && r.file() == file {
                return Some(r.id);
            }
            e = r.chain;
        }
        let bytes = core::mem::size_of::<Entry>() + name.len() + file.len();
        let e = META.alloc(bytes, 16) as *mut Entry;
        if e.is_null() {
            return None;
        }
        self.count += 1;
        // SAFETY: `e` has room for the header and both names, and is filled
        // before it becomes reachable.
        unsafe {
            e.write(Entry {
                chain: *head,
                older: self.newest,
                hash: h,
                id: self.count,
                line,
                name_len: name.len() as u32,
                file_len: file.len() as u32,
            });
            let dst = e.add(1) as *mut u8;
            core::ptr::copy_nonoverlapping(name.as_ptr(), dst, name.len());
            core::ptr::copy_nonoverlapping(file.as_ptr(), dst.add(name.len()), file.len());
            *head = e;
        }
        self.newest = e;
        Some(self.count)
    }
}

impl Default for FrameTable {
    fn default() -> Self {
        Self::new()
    }
}

fn hash3(a: &[u8], b: &[u8], line: i32) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ line as u64;
    for &c in a.iter().chain(b.iter()) {
        h = (h ^ c as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Copies a Python str as UTF-8 into `out` (truncated); "?" for anything
/// that is not a compact str.
///
/// # Safety
/// `s` is null or points at a live Python object.
unsafe fn read_str(py: &Interp, s: usize, out: &mut [u8]) -> usize {
    // A str's state bits, length and compact data follow this version's layout.
    // SAFETY: (whole body) `s` is a live object (caller), its header readable.
    unsafe {
        if s == 0 || word(s, 8) != py.unicode_type {
            out[0] = b'?';
            return 1;
        }
        let len = word(s, 16);
        let state = *((s + 32) as *const u32);
        let kind = (state >> 2) & 7;
        let compact = state & (1 << 5) != 0;
        let ascii = state & (1 << 6) != 0;
        if !compact {
            out[0] = b'?';
            return 1;
        }
        let data = s + if ascii {
            py.layout.ascii_size
        } else {
            py.layout.compact_size
        };
        if ascii {
            // Most names and paths: the bytes are the UTF-8 already.
            let n = len.min(out.len());
            core::ptr::copy_nonoverlapping(data as *const u8, out.as_mut_ptr(), n);
            return n;
        }
        let mut n = 0;
        for i in 0..len {
            let c = match kind {
                1 => *((data + i) as *const u8) as u32,
                2 => *((data + 2 * i) as *const u16) as u32,
                _ => *((data + 4 * i) as *const u32),
            };
            let mut enc = [0u8; 4];
            let bytes = char::from_u32(c)
                .unwrap_or('?')
                .encode_utf8(&mut enc)
                .as_bytes();
            if n + bytes.len() > out.len() {
                break;
            }
            out[n..n + bytes.len()].copy_from_slice(bytes);
            n += bytes.len();
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_interned_by_function_file_and_line() {
        let mut t = FrameTable::new();
        let a = t.find_or_add(b"f", b"x.py", 3).unwrap();
        let b = t.find_or_add(b"f", b"x.py", 4).unwrap();
        let c = t.find_or_add(b"g", b"x.py", 3).unwrap();
        assert_eq!(t.find_or_add(b"f", b"x.py", 3), Some(a));
        assert!(a != b && b != c && a != c);
        // SAFETY: `newest` is a published entry.
        let e = unsafe { &*t.newest() };
        assert_eq!(
            (e.name(), e.file(), e.line, e.id),
            (&b"g"[..], &b"x.py"[..], 3, c)
        );
    }

    #[test]
    fn stitching_without_an_interpreter_keeps_native_frames_and_appends_python() {
        let py = [PyFrame::default(); 2];
        let mut out = [0usize; 8];
        let n = stitch(&[10, 20, 30], &py, &mut out);
        assert_eq!(&out[..n], &[10, 20, 30, TAG, TAG | 1]);
    }
}
