//! `memx symbolize`: a guarded-sampling report (written by libmemx.so's
//! fault handler, see src/guard/report.rs) with each frame named by
//! function, file and line.
//!
//! The handler writes a frame as `memx:     #N 0xADDR MODULE+0xOFFSET
//! [SYMBOL+0xN]`, the offset being into the mapped file; that is all the
//! symbolizer needs (a one-frame map per address). Every other line is
//! copied as it is, so a report embedded in a longer log keeps its place.
//!
//! Owns: reading and rewriting the frame lines. Never: guesses a frame it
//! cannot parse (the line is kept).

use std::collections::HashMap;

use crate::dump::MapEntry;
use crate::symbolize::{basename, Symbolizer};

/// One frame line of a report.
#[derive(Debug, PartialEq, Eq)]
struct FrameLine<'a> {
    /// Everything before the address (`memx:     #3 `).
    lead: &'a str,
    addr: u64,
    module: &'a str,
    offset: u64,
}

fn parse_frame(line: &str) -> Option<FrameLine<'_>> {
    let hash = line.find('#')?;
    if !line[..hash].trim_start().starts_with("memx:") {
        return None;
    }
    let rest = &line[hash + 1..];
    let digits = rest.find(' ')?;
    rest[..digits].parse::<u32>().ok()?;
    let lead = &line[..hash + 1 + digits + 1];
    let mut words = rest[digits + 1..].split_whitespace();
    let addr = u64::from_str_radix(words.next()?.strip_prefix("0x")?, 16).ok()?;
    let loc = words.next()?;
    let plus = loc.rfind("+0x")?;
    let offset = u64::from_str_radix(&loc[plus + 3..], 16).ok()?;
    Some(FrameLine {
        lead,
        addr,
        module: &loc[..plus],
        offset,
    })
}

/// The report `text` with its frames named.
pub fn symbolize(text: &str) -> String {
    let frames: Vec<Option<FrameLine>> = text.lines().map(parse_frame).collect();
    // One map per frame, covering just its address.
    let maps: Vec<MapEntry> = frames
        .iter()
        .flatten()
        .map(|f| MapEntry {
            start: f.addr,
            end: f.addr + 1,
            perms: "r-xp".into(),
            offset: f.offset,
            inode: 0,
            path: f.module.to_string(),
        })
        .collect();
    let python = HashMap::new();
    let mut sym = Symbolizer::with_maps(&maps, &python);
    sym.quiet = true;
    let mut out = String::new();
    for (line, frame) in text.lines().zip(&frames) {
        let Some(f) = frame else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let r = sym.resolve(f.addr);
        let where_ = format!("{}+0x{:x}", basename(f.module), f.offset);
        for (i, fr) in r.frames.iter().enumerate() {
            let inlined = if i + 1 < r.frames.len() {
                " (inlined)"
            } else {
                ""
            };
            if i == 0 {
                out.push_str(&format!(
                    "{}0x{:x} {}{inlined}",
                    f.lead,
                    f.addr,
                    fr.with_line()
                ));
            } else {
                let pad = " ".repeat(f.lead.len() + 2 + format!("{:x}", f.addr).len());
                out.push_str(&format!("{pad} {}{inlined}", fr.with_line()));
            }
            if i + 1 == r.frames.len() && fr.function != where_ {
                out.push_str(&format!(" [{where_}]"));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frame_lines_and_leaves_others() {
        let f = parse_frame("memx:     #2 0x55d4c0001159 /usr/bin/prog+0x1159 main+0x24").unwrap();
        assert_eq!(f.lead, "memx:     #2 ");
        assert_eq!((f.addr, f.offset), (0x55d4c0001159, 0x1159));
        assert_eq!(f.module, "/usr/bin/prog");
        let anon = parse_frame("memx:     #0 0x7f00 [anon]+0x10").unwrap();
        assert_eq!(anon.module, "[anon]");
        assert!(parse_frame("memx: allocated by thread 12:").is_none());
        assert!(parse_frame("memx:     #1 0x7f00 ?").is_none());
        assert!(parse_frame("# a comment 0x1 x+0x2").is_none());
    }

    #[test]
    fn names_a_frame_of_this_test_binary() {
        // This function's own address, as the report would give it.
        let here = names_a_frame_of_this_test_binary as *const () as u64 + 1;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| {
                let r = l.split_whitespace().next().unwrap();
                let (a, b) = r.split_once('-').unwrap();
                let (a, b) = (
                    u64::from_str_radix(a, 16).unwrap(),
                    u64::from_str_radix(b, 16).unwrap(),
                );
                here >= a && here < b
            })
            .unwrap();
        let w: Vec<&str> = line.split_whitespace().collect();
        let start = u64::from_str_radix(w[0].split('-').next().unwrap(), 16).unwrap();
        let off = here - start + u64::from_str_radix(w[2], 16).unwrap();
        let report = format!(
            "memx: ==== guarded allocation: overflow ====\nmemx:     #0 0x{here:x} {}+0x{off:x}\n",
            w[5]
        );
        let out = symbolize(&report);
        assert!(
            out.starts_with("memx: ==== guarded allocation: overflow ====\n"),
            "{out}"
        );
        assert!(out.contains("names_a_frame_of_this_test_binary"), "{out}");
        assert!(out.contains("guard_report.rs:"), "{out}");
    }
}
