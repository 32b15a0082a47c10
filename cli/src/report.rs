//! `memx report` (pprof-like top table), `memx diff` (growth per site) and
//! the short summary `memx run` prints.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::dump::{Dump, Format};
use crate::profile::{By, Row, SymProfile};
use crate::units::{bytes, count, percent, signed_bytes, signed_count};

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub top: usize,
    pub alloc: bool,
    pub by: By,
    pub sort_cum: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            top: 20,
            alloc: false,
            by: By::Function,
            sort_cum: false,
        }
    }
}

fn kind_name(alloc: bool) -> &'static str {
    if alloc {
        "allocated"
    } else {
        "in-use"
    }
}

fn by_name(by: By) -> &'static str {
    match by {
        By::Function => "function",
        By::Line => "line",
        By::Stack => "stack",
    }
}

pub fn describe(d: &Dump) -> String {
    let mut s = d.path.display().to_string();
    match (d.pid, d.seq) {
        (Some(p), Some(q)) => {
            let _ = write!(s, " (pid {p}, dump {q})");
        }
        _ if d.format == Format::HeapProfile => s.push_str(" (gperftools)"),
        _ => {}
    }
    s
}

/// `pid 42 (parent 7, 2 threads): python3 app.py`, from the PROCESS section.
pub fn process_text(d: &Dump) -> Option<String> {
    let p = d.process.as_ref()?;
    let mut s = format!("pid {}", p.pid.or(d.pid)?);
    if let Some(pp) = p.ppid {
        let _ = write!(s, " (parent {pp}");
        if !p.threads.is_empty() {
            let _ = write!(s, ", {} threads", p.threads.len());
        }
        s.push(')');
    }
    if !p.cmdline.is_empty() {
        let _ = write!(s, ": {}", shorten(&p.cmdline, 100));
    }
    Some(s)
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}

pub fn report(p: &SymProfile, o: &Options) -> String {
    let mut out = String::new();
    let t = p.total();
    let _ = writeln!(out, "File: {}", describe(&p.dump));
    if let Some(proc_line) = process_text(&p.dump) {
        let _ = writeln!(out, "Process: {proc_line}");
    }
    let _ = writeln!(out, "Sampling: {}", p.dump.sampling_text());
    let _ = writeln!(
        out,
        "In use: {} in {} objects; allocated since start: {} in {} objects",
        bytes(t.inuse_bytes),
        count(t.inuse_objs),
        bytes(t.alloc_bytes),
        count(t.alloc_objs)
    );
    for n in p.dump.notes() {
        let _ = writeln!(out, "Note: {n}");
    }
    if let Some(n) = crate::symbolize::unnamed_note(&p.unnamed) {
        let _ = writeln!(out, "Note: {n}");
    }
    let (_, total) = t.pick(o.alloc);
    let mut rows = p.aggregate(o.by);
    let key_of = |r: &Row| {
        if o.sort_cum {
            r.cum.pick(o.alloc).1
        } else {
            r.flat.pick(o.alloc).1
        }
    };
    rows.retain(|r| r.cum.pick(o.alloc).1 > 0.0);
    rows.sort_by(|a, b| {
        key_of(b)
            .total_cmp(&key_of(a))
            .then(b.cum.pick(o.alloc).1.total_cmp(&a.cum.pick(o.alloc).1))
            .then(a.key.cmp(&b.key))
    });
    let shown = rows.len().min(o.top);
    let _ = writeln!(
        out,
        "Showing {} bytes by {}: top {} of {} (sorted by {})",
        kind_name(o.alloc),
        by_name(o.by),
        shown,
        rows.len(),
        if o.sort_cum { "cum" } else { "flat" }
    );
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "\n(no {} bytes in this dump{})",
            kind_name(o.alloc),
            if o.alloc { "" } else { "; try --alloc" }
        );
        return out;
    }
    out.push('\n');
    if o.by == By::Stack {
        let _ = writeln!(
            out,
            "{:>10} {:>6} {:>9}  stack (innermost first)",
            "bytes", "%", "objects"
        );
        for r in rows.iter().take(shown) {
            let (objs, b) = r.flat.pick(o.alloc);
            let mut lines = r.key.lines();
            let _ = writeln!(
                out,
                "{:>10} {:>6} {:>9}  {}",
                bytes(b),
                percent(b, total),
                count(objs),
                lines.next().unwrap_or("")
            );
            for l in lines {
                let _ = writeln!(out, "{:>28}  {}", "", l);
            }
        }
        return out;
    }
    let _ = writeln!(
        out,
        "{:>10} {:>6} {:>6} {:>10} {:>6} {:>9}  {}",
        "flat",
        "flat%",
        "sum%",
        "cum",
        "cum%",
        "objects",
        by_name(o.by)
    );
    let mut sum = 0.0;
    for r in rows.iter().take(shown) {
        let (objs, flat) = r.flat.pick(o.alloc);
        let (_, cum) = r.cum.pick(o.alloc);
        sum += flat;
        let _ = writeln!(
            out,
            "{:>10} {:>6} {:>6} {:>10} {:>6} {:>9}  {}",
            bytes(flat),
            percent(flat, total),
            percent(sum, total),
            bytes(cum),
            percent(cum, total),
            count(objs),
            r.key
        );
    }
    out
}

/// (objects, bytes).
type Pair = (f64, f64);

pub fn diff(old: &SymProfile, new: &SymProfile, o: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Old: {}", describe(&old.dump));
    let _ = writeln!(out, "New: {}", describe(&new.dump));
    let (to, tn) = (old.total().pick(o.alloc), new.total().pick(o.alloc));
    let _ = writeln!(
        out,
        "{}: {} in {} objects -> {} in {} objects ({}, {} objects)",
        if o.alloc { "Allocated" } else { "In use" },
        bytes(to.1),
        count(to.0),
        bytes(tn.1),
        count(tn.0),
        signed_bytes(tn.1 - to.1),
        signed_count(tn.0 - to.0)
    );
    let by = o.by;
    let mut sites: HashMap<String, (Pair, Pair)> = HashMap::new();
    for r in old.aggregate(by) {
        sites.entry(r.key).or_default().0 = r.flat.pick(o.alloc);
    }
    for r in new.aggregate(by) {
        sites.entry(r.key).or_default().1 = r.flat.pick(o.alloc);
    }
    let mut rows: Vec<(String, Pair, Pair)> = sites
        .into_iter()
        .map(|(k, (a, b))| (k, a, b))
        .filter(|(_, a, b)| (b.1 - a.1).abs() >= 0.5)
        .collect();
    rows.sort_by(|x, y| {
        (y.2 .1 - y.1 .1)
            .total_cmp(&(x.2 .1 - x.1 .1))
            .then(x.0.cmp(&y.0))
    });
    let grew: Vec<_> = rows.iter().filter(|r| r.2 .1 > r.1 .1).collect();
    let mut shrank: Vec<_> = rows.iter().filter(|r| r.2 .1 < r.1 .1).collect();
    shrank.reverse();
    let header = |out: &mut String| {
        let _ = writeln!(
            out,
            "{:>10} {:>9} {:>10} {:>10}  {}",
            "growth",
            "objects",
            "old",
            "new",
            by_name(by)
        );
    };
    let line = |out: &mut String, r: &(String, Pair, Pair)| {
        let mut keys = r.0.lines();
        let _ = writeln!(
            out,
            "{:>10} {:>9} {:>10} {:>10}  {}",
            signed_bytes(r.2 .1 - r.1 .1),
            signed_count(r.2 .0 - r.1 .0),
            bytes(r.1 .1),
            bytes(r.2 .1),
            keys.next().unwrap_or("")
        );
        for k in keys {
            let _ = writeln!(out, "{:>43}  {}", "", k);
        }
    };
    let _ = writeln!(
        out,
        "\nGrew: {} {} (growth of {} bytes, largest first; top {} shown)",
        grew.len(),
        if grew.len() == 1 {
            by_name(by).to_string()
        } else {
            format!("{}s", by_name(by))
        },
        kind_name(o.alloc),
        grew.len().min(o.top)
    );
    if grew.is_empty() {
        let _ = writeln!(out, "(nothing grew)");
    } else {
        header(&mut out);
        for r in grew.iter().take(o.top) {
            line(&mut out, r);
        }
    }
    if !shrank.is_empty() {
        let _ = writeln!(
            out,
            "\nShrank: {} (top {} shown)",
            shrank.len(),
            shrank.len().min(o.top)
        );
        header(&mut out);
        for r in shrank.iter().take(o.top) {
            line(&mut out, r);
        }
    }
    out
}

/// `KEY, 1.2 MiB (34.5% of the total)`: the largest site by line.
fn top_site(p: &SymProfile, alloc: bool) -> Option<String> {
    let total = p.total().pick(alloc).1;
    let mut rows = p.aggregate(By::Line);
    rows.sort_by(|a, b| b.flat.pick(alloc).1.total_cmp(&a.flat.pick(alloc).1));
    let r = rows.first()?;
    let b = r.flat.pick(alloc).1;
    (b > 0.0).then(|| {
        format!(
            "{}, {} ({} of the total)",
            r.key,
            bytes(b),
            percent(b, total)
        )
    })
}

fn file_name(p: &SymProfile) -> String {
    crate::symbolize::basename(&p.dump.path.to_string_lossy()).to_string()
}

/// Two summary lines for the end of `memx run`: the last dump's totals,
/// and the top in-use site of the dump with the most memory in use (or the
/// top allocating site when nothing is in use).
pub fn summary(last: &SymProfile, largest: Option<&SymProfile>) -> [String; 2] {
    let t = last.total();
    let first = format!(
        "last dump {}: {} in use in {} objects; allocated since start: {} in {} objects",
        file_name(last),
        bytes(t.inuse_bytes),
        count(t.inuse_objs),
        bytes(t.alloc_bytes),
        count(t.alloc_objs)
    );
    let second = match largest {
        Some(big) if big.total().inuse_bytes > t.inuse_bytes => format!(
            "most in use at {}: {}; top site there: {}",
            file_name(big),
            bytes(big.total().inuse_bytes),
            top_site(big, false).unwrap_or_else(|| "none".into())
        ),
        _ => match (top_site(last, false), top_site(last, true)) {
            (Some(s), _) => format!("top in-use site: {s}"),
            (None, Some(s)) => format!("top allocating site: {s}"),
            _ => "no sampled allocations".to_string(),
        },
    };
    [first, second]
}
