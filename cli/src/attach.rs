//! Finding a running memx process's profiling settings, and whether its
//! dump signal reaches memx: for `memx snapshot PID`.
//!
//! The settings come from the process's memory: libmemx.so exports
//! `memx_profile_info`, a pointer to a block holding the prefix, the signal
//! and counters (layout in src/profile/published.rs). Its address is the
//! library's load address (from /proc/PID/maps) plus the symbol's value
//! (from the library file's dynamic symbol table); /proc/PID/mem reads it.
//! /proc/PID/environ is only a fallback: services overwrite it with their
//! process title. Reading /proc/PID/mem needs the rights of a debugger
//! (same user, or root, and ptrace allowed by Yama's ptrace_scope).
//!
//! Owns: reading another process's maps, memory and signal masks.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol};

const SYMBOL: &str = "memx_profile_info";
/// Bytes of the published block (v1): 52 of fields, 240 of prefix.
const BLOCK: usize = 52 + 240;

/// What memx published in the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// MEMX_PROFILE as given (None: profiling off).
    pub prefix: Option<String>,
    pub signal: i32,
    pub pid: u32,
    /// Times memx's handler for the signal ran.
    pub handled: u64,
    /// Dumps started by a request.
    pub dumps: u64,
    /// Requests for which no dump writer could be started.
    pub failed: u64,
}

/// Where memx's block pointer is in `pid`: the library's load bias and
/// the symbol's value.
pub struct Loaded {
    bias: u64,
    symbol: u64,
}

/// The library that exports `memx_profile_info` in `pid`'s maps (files
/// whose name holds "memx": libmemx.so, a Python wheel's extension).
/// Ok(None): memx is not loaded.
pub fn find(pid: u32, maps: &str) -> Result<Option<Loaded>, String> {
    // path -> lowest start of a mapping at file offset 0.
    let mut seen: Vec<(String, u64)> = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(offset)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(2).unwrap_or("");
        let base = Path::new(path)
            .file_name()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default();
        if !path.starts_with('/') || !base.contains("memx") {
            continue;
        }
        let start = u64::from_str_radix(range.split('-').next().unwrap_or(""), 16).ok();
        if let (Some(start), Ok(0)) = (start, u64::from_str_radix(offset, 16)) {
            if !seen.iter().any(|s| s.0 == path) {
                seen.push((path.to_string(), start));
            }
        }
    }
    for (path, start) in seen {
        let candidates = [
            PathBuf::from(format!("/proc/{pid}/root{path}")),
            PathBuf::from(&path),
        ];
        let Some(data) = candidates.iter().find_map(|p| std::fs::read(p).ok()) else {
            continue;
        };
        let Ok(obj) = object::File::parse(&*data) else {
            continue;
        };
        let Some(sym) = obj.dynamic_symbols().find(|s| s.name() == Ok(SYMBOL)) else {
            continue;
        };
        // The first segment's page is what is mapped at file offset 0.
        let first = obj.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
        return Ok(Some(Loaded {
            bias: start.wrapping_sub(first),
            symbol: sym.address(),
        }));
    }
    Ok(None)
}

/// Reads the published block through /proc/PID/mem.
pub fn read(pid: u32, lib: &Loaded) -> Result<Published, std::io::Error> {
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let mut ptr = [0u8; 8];
    mem.read_exact_at(&mut ptr, lib.bias.wrapping_add(lib.symbol))?;
    let mut b = [0u8; BLOCK];
    mem.read_exact_at(&mut b, u64::from_le_bytes(ptr))?;
    parse(&b).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "memx_profile_info does not hold memx's block (a different memx version?)",
        )
    })
}

fn parse(b: &[u8; BLOCK]) -> Option<Published> {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    if &b[..8] != b"memxinfo" || u32_at(8) != 1 {
        return None;
    }
    let len = (u32_at(48) as usize).min(240);
    let prefix = (u32_at(12) == 2 && len > 0)
        .then(|| String::from_utf8_lossy(&b[52..52 + len]).into_owned());
    Some(Published {
        prefix,
        signal: u32_at(16) as i32,
        pid: u32_at(20),
        handled: u64_at(24),
        dumps: u64_at(32),
        failed: u64_at(40),
    })
}

/// How `pid` treats `sig`, from /proc/PID/status and its threads'.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// A handler is installed (memx's, or one that replaced it).
    Caught,
    Ignored,
    /// No handler: the default action (ending the process for USR1/USR2
    /// and real-time signals).
    Default,
    /// Caught, but every thread blocks it: it would stay pending.
    BlockedEverywhere,
}

pub fn disposition(pid: u32, sig: i32) -> Result<Disposition, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let has = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|mask| (1..=64).contains(&sig) && mask & (1u64 << (sig - 1)) != 0)
    };
    if has(&status, "SigIgn:") {
        return Ok(Disposition::Ignored);
    }
    if !has(&status, "SigCgt:") {
        return Ok(Disposition::Default);
    }
    let mut any_open = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            match std::fs::read_to_string(t.path().join("status")) {
                Ok(s) if has(&s, "SigBlk:") => {}
                _ => any_open = true,
            }
        }
    } else {
        any_open = true;
    }
    Ok(if any_open {
        Disposition::Caught
    } else {
        Disposition::BlockedEverywhere
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_published_block() {
        let mut b = [0u8; BLOCK];
        b[..8].copy_from_slice(b"memxinfo");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&2u32.to_le_bytes());
        b[16..20].copy_from_slice(&44u32.to_le_bytes());
        b[20..24].copy_from_slice(&77u32.to_le_bytes());
        b[24..32].copy_from_slice(&3u64.to_le_bytes());
        b[32..40].copy_from_slice(&2u64.to_le_bytes());
        b[48..52].copy_from_slice(&6u32.to_le_bytes());
        b[52..58].copy_from_slice(b"/tmp/p");
        let p = parse(&b).unwrap();
        assert_eq!(p.prefix.as_deref(), Some("/tmp/p"));
        assert_eq!(
            (p.signal, p.pid, p.handled, p.dumps, p.failed),
            (44, 77, 3, 2, 0)
        );
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(parse(&b).unwrap().prefix, None);
        b[0] = b'x';
        assert!(parse(&b).is_none());
    }

    #[test]
    fn reads_its_own_disposition() {
        let me = std::process::id();
        // The test harness leaves SIGRTMIN+20 at its default action.
        assert_eq!(
            disposition(me, libc::SIGRTMIN() + 20).unwrap(),
            Disposition::Default
        );
    }
}
