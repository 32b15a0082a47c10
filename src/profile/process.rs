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

/// Writes the section through `put`, for the profiled process: the one
/// whose pid memx recorded at start, also when a dump writer (a child of
/// its own, with another pid and one thread) writes it; so everything is
/// read from `/proc/<pid>`, never `/proc/self` or `getppid`.
pub fn write(put: &mut impl FnMut(&[u8])) {
    let pid = super::published::pid();
    let mut dir = FixedBuf::<32>::new();
    dir.str("/proc/").u64(pid as u64);
    let mut line = FixedBuf::<{ CMDLINE_MAX + 64 }>::new();
    line.str("\nPROCESS:\npid\t")
        .u64(pid as u64)
        .str("\nppid\t")
        .u64(parent_of(dir.as_bytes()))
        .str("\ncmdline\t");
    let mut cmd = [0u8; CMDLINE_MAX];
    let mut path = FixedBuf::<64>::new();
    path.bytes(dir.as_bytes()).str("/cmdline\0");
    let n = sys::read_file(path.as_bytes(), &mut cmd);
    let args = cmd[..n].strip_suffix(b"\0").unwrap_or(&cmd[..n]);
    for &c in args {
        line.bytes(&[one_line(c)]);
    }
    line.str("\n");
    put(line.as_bytes());
    let mut tasks = FixedBuf::<64>::new();
    tasks.bytes(dir.as_bytes()).str("/task\0");
    io::for_each_dir_entry(tasks.as_bytes(), |tid| {
        let mut path = FixedBuf::<96>::new();
        path.bytes(dir.as_bytes())
            .str("/task/")
            .bytes(tid)
            .str("/comm\0");
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

/// The parent pid from `<dir>/stat` ("pid (comm) state ppid ..."; the
/// command name may hold spaces and parentheses, so after the last ')').
fn parent_of(dir: &[u8]) -> u64 {
    let mut path = FixedBuf::<64>::new();
    path.bytes(dir).str("/stat\0");
    let mut stat = [0u8; 512];
    let n = sys::read_file(path.as_bytes(), &mut stat);
    let stat = &stat[..n];
    let Some(close) = stat.iter().rposition(|&c| c == b')') else {
        return 0;
    };
    stat[close + 1..]
        .split(|&c| c == b' ')
        .filter(|f| !f.is_empty())
        .nth(1)
        .map(|f| {
            f.iter()
                .take_while(|c| c.is_ascii_digit())
                .fold(0u64, |a, &c| a * 10 + (c - b'0') as u64)
        })
        .unwrap_or(0)
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
