//! The PROCESS section of a dump: which process wrote it (pid, parent pid,
//! command line) and its threads (id, name), so the dumps of a process tree
//! (a `multiprocessing` pool, a shell pipeline) can be told apart.
//!
//! ```text
//! PROCESS:
//! pid<TAB>4242
//! ppid<TAB>4200
//! cmdline<TAB>python3 -c import os
//! thread<TAB>4242<TAB>python3
//! ```
//! The command line's arguments are joined by spaces, tabs and newlines in
//! them shown as spaces. pprof readers skip these lines (they are not maps
//! lines), as they skip PYTHON_FRAMES.
//! Owns: nothing. Must never: allocate (it reads /proc into stack buffers).

use crate::sys;
use crate::sys::io;
use crate::util::fmt::FixedBuf;

/// The most bytes of the command line recorded.
const CMDLINE_MAX: usize = 4096;

/// Writes the section through `put`.
pub fn write(put: &mut impl FnMut(&[u8])) {
    let mut line = FixedBuf::<{ CMDLINE_MAX + 64 }>::new();
    line.str("\nPROCESS:\npid\t")
        .u64(sys::getpid() as u64)
        .str("\nppid\t")
        .u64(sys::getppid() as u64)
        .str("\ncmdline\t");
    let mut cmd = [0u8; CMDLINE_MAX];
    let n = sys::read_file(b"/proc/self/cmdline\0", &mut cmd);
    let args = cmd[..n].strip_suffix(b"\0").unwrap_or(&cmd[..n]);
    for &c in args {
        line.bytes(&[one_line(c)]);
    }
    line.str("\n");
    put(line.as_bytes());
    io::for_each_dir_entry(b"/proc/self/task\0", |tid| {
        let mut path = FixedBuf::<64>::new();
        path.str("/proc/self/task/").bytes(tid).str("/comm\0");
        let mut name = [0u8; 32];
        let n = sys::read_file(path.as_bytes(), &mut name);
        let name = name[..n].strip_suffix(b"\n").unwrap_or(&name[..n]);
        let mut line = FixedBuf::<96>::new();
        line.str("thread\t")
            .bytes(tid)
            .str("\t")
            .bytes(name)
            .str("\n");
        put(line.as_bytes());
    });
}

/// A command-line byte as it goes on one line: the NUL between arguments
/// and control characters become spaces.
fn one_line(c: u8) -> u8 {
    if c < b' ' {
        b' '
    } else {
        c
    }
}
