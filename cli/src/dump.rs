//! Parser for the heap dumps libmemx.so writes: pprof's legacy heap profile
//! text format (`heap_v2`, as gperftools writes it), followed by the
//! process's `/proc/self/maps`.
//!
//! ```text
//! heap profile:   <inuse_objs>: <inuse_bytes> [  <alloc_objs>:  <alloc_bytes>] @ heap_v2/<rate>
//!    <inuse_objs>: <inuse_bytes> [  <alloc_objs>:  <alloc_bytes>] @ 0x7f..a 0x55..b ...
//!
//! MAPPED_LIBRARIES:
//! <maps lines>
//! SOME_LATER_SECTION:
//! <lines>
//! ```
//!
//! Counts are raw sampled counts; [`unsample`] turns them into estimates the
//! way pprof does. gperftools' own dumps (`@ heapprofile`, unsampled) are read
//! too. Sections after the maps whose header is an upper-case word followed
//! by `:` are kept by name and otherwise ignored.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One `A: B [ C: D]` group: raw in-use and allocated counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub inuse_objs: u64,
    pub inuse_bytes: u64,
    pub alloc_objs: u64,
    pub alloc_bytes: u64,
}

/// Estimated (unsampled) figures of one sample or a sum of them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    pub inuse_objs: f64,
    pub inuse_bytes: f64,
    pub alloc_objs: f64,
    pub alloc_bytes: f64,
}

impl Estimate {
    pub fn add(&mut self, o: &Estimate) {
        self.inuse_objs += o.inuse_objs;
        self.inuse_bytes += o.inuse_bytes;
        self.alloc_objs += o.alloc_objs;
        self.alloc_bytes += o.alloc_bytes;
    }

    /// (objects, bytes) of the chosen kind.
    pub fn pick(&self, alloc: bool) -> (f64, f64) {
        if alloc {
            (self.alloc_objs, self.alloc_bytes)
        } else {
            (self.inuse_objs, self.inuse_bytes)
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub raw: Counts,
    pub est: Estimate,
    /// Return addresses, innermost first.
    pub stack: Vec<u64>,
}

/// One line of `/proc/<pid>/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`); empty for anonymous memory.
    pub path: String,
}

impl MapEntry {
    /// A real file (not anonymous memory, not `[vdso]` and the like).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }

    /// The path without a ` (deleted)` suffix.
    pub fn file_path(&self) -> &str {
        self.path.strip_suffix(" (deleted)").unwrap_or(&self.path)
    }
}

/// A Python frame named in the PYTHON_FRAMES section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyFrame {
    pub function: String,
    pub file: String,
    pub line: u32,
}

/// Who wrote the dump: the PROCESS section (libmemx.so writes it after
/// the maps; lines `pid<TAB>N`, `ppid<TAB>N`, `cmdline<TAB>ARGS`,
/// `thread<TAB>TID<TAB>NAME`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub pid: Option<u32>,
    pub ppid: Option<u32>,
    pub cmdline: String,
    /// (thread id, name).
    pub threads: Vec<(u32, String)>,
}

impl Process {
    fn parse(lines: &[String]) -> Process {
        let mut p = Process::default();
        for l in lines {
            let mut f = l.splitn(3, '\t');
            match (f.next(), f.next(), f.next()) {
                (Some("pid"), Some(v), None) => p.pid = v.trim().parse().ok(),
                (Some("ppid"), Some(v), None) => p.ppid = v.trim().parse().ok(),
                (Some("cmdline"), Some(v), None) => p.cmdline = v.trim_end().to_string(),
                (Some("thread"), Some(t), Some(name)) => {
                    if let Ok(t) = t.trim().parse() {
                        p.threads.push((t, name.to_string()));
                    }
                }
                _ => {}
            }
        }
        p
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// memx: `@ heap_v2/<rate>`, sampled.
    HeapV2,
    /// gperftools: `@ heapprofile`, every allocation counted.
    HeapProfile,
}

#[derive(Clone, Debug)]
pub struct Dump {
    pub path: PathBuf,
    pub format: Format,
    /// Mean bytes between samples; 0 = not sampled.
    pub rate: u64,
    /// The header's totals (raw).
    pub header: Counts,
    pub samples: Vec<Sample>,
    pub maps: Vec<MapEntry>,
    /// Python frames: stack words `0xf000… | id` → function, file, line
    /// (section `PYTHON_FRAMES:`, lines `0x…<TAB>function<TAB>file<TAB>line`).
    pub python_frames: HashMap<u64, PyFrame>,
    /// The PROCESS section, when the dump has one.
    pub process: Option<Process>,
    /// Sections after the maps that this version does not read: (name, lines).
    pub extra_sections: Vec<(String, Vec<String>)>,
    /// From a `<prefix>.<pid>.<seq>.heap` file name.
    pub pid: Option<u32>,
    pub seq: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpError {
    Io(String),
    Empty,
    NotADump(String),
    Truncated(String),
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpError::Io(s) => write!(f, "{s}"),
            DumpError::Empty => write!(f, "empty file: the dump was not written or was cut off"),
            DumpError::NotADump(s) => write!(f, "not a memx heap dump: {s}"),
            DumpError::Truncated(s) => write!(f, "truncated dump: {s}"),
        }
    }
}

/// pprof's unsampling of one (count, bytes) pair taken with a mean sampling
/// interval of `rate` bytes: each sampled object of average size `avg` stood
/// for `1 / (1 - exp(-avg / rate))` objects.
pub fn unsample(count: u64, bytes: u64, rate: u64) -> (f64, f64) {
    if count == 0 || rate == 0 {
        return (count as f64, bytes as f64);
    }
    let avg = bytes as f64 / count as f64;
    let scale = 1.0 / (1.0 - (-avg / rate as f64).exp());
    (count as f64 * scale, bytes as f64 * scale)
}

fn estimate(c: &Counts, rate: u64) -> Estimate {
    let (inuse_objs, inuse_bytes) = unsample(c.inuse_objs, c.inuse_bytes, rate);
    let (alloc_objs, alloc_bytes) = unsample(c.alloc_objs, c.alloc_bytes, rate);
    Estimate {
        inuse_objs,
        inuse_bytes,
        alloc_objs,
        alloc_bytes,
    }
}

/// Parses `A: B [ C: D]` and returns the counts and the rest after `@`.
fn parse_counts(line: &str) -> Option<(Counts, &str)> {
    let (counts, rest) = line.split_once('@')?;
    let counts = counts.trim();
    let (inuse, alloc) = counts.split_once('[')?;
    let alloc = alloc.trim().strip_suffix(']')?;
    let pair = |s: &str| -> Option<(u64, u64)> {
        let (a, b) = s.split_once(':')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    };
    let (inuse_objs, inuse_bytes) = pair(inuse)?;
    let (alloc_objs, alloc_bytes) = pair(alloc)?;
    Some((
        Counts {
            inuse_objs,
            inuse_bytes,
            alloc_objs,
            alloc_bytes,
        },
        rest.trim(),
    ))
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(s, 16).ok()
}

/// `start-end perms offset dev inode path`, the path possibly with spaces.
pub fn parse_maps_line(line: &str) -> Option<MapEntry> {
    let mut rest = line.trim_start();
    let mut fields = [""; 5];
    for f in fields.iter_mut() {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        *f = &rest[..end];
        rest = rest[end..].trim_start();
    }
    let (start, end) = fields[0].split_once('-')?;
    Some(MapEntry {
        start: parse_hex(start)?,
        end: parse_hex(end)?,
        perms: fields[1].to_string(),
        offset: parse_hex(fields[2])?,
        inode: fields[4].parse().ok()?,
        path: rest.trim_end().to_string(),
    })
}

/// A section header after the maps: `UPPER_CASE:` (at least one letter).
fn section_header(line: &str) -> Option<&str> {
    let name = line.trim_end().strip_suffix(':')?;
    let ok = !name.is_empty()
        && name.bytes().any(|b| b.is_ascii_uppercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    ok.then_some(name)
}

/// `<prefix>.<pid>.<seq>.heap` → (pid, seq).
pub fn pid_seq_from_name(path: &Path) -> (Option<u32>, Option<u32>) {
    let name = match path.file_name().and_then(|n| n.to_str()) {
        Some(n) => n,
        None => return (None, None),
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() >= 4 && parts[parts.len() - 1] == "heap" {
        let seq = parts[parts.len() - 2].parse().ok();
        let pid = parts[parts.len() - 3].parse().ok();
        if seq.is_some() && pid.is_some() {
            return (pid, seq);
        }
    }
    (None, None)
}

impl Dump {
    /// `load`, with the error as the one line the command prints: an I/O
    /// error already names the file; a parse error gets its name added.
    pub fn load_for_message(path: &Path) -> Result<Dump, String> {
        Dump::load(path).map_err(|e| match e {
            DumpError::Io(s) => s,
            e => format!("{}: {e}", path.display()),
        })
    }

    pub fn load(path: &Path) -> Result<Dump, DumpError> {
        let bytes = std::fs::read(path).map_err(|e| {
            DumpError::Io(match e.kind() {
                std::io::ErrorKind::NotFound => format!("{}: no such file", path.display()),
                _ => format!("{}: {e}", path.display()),
            })
        })?;
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t.to_string(),
            Err(_) if !bytes.starts_with(b"heap profile:") => {
                return Err(DumpError::NotADump(
                    "binary file, expected a `heap profile:` text header".into(),
                ))
            }
            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        let mut dump = Dump::parse(&text)?;
        let (pid, seq) = pid_seq_from_name(path);
        dump.pid = pid;
        dump.seq = seq;
        dump.path = path.to_path_buf();
        Ok(dump)
    }

    pub fn parse(text: &str) -> Result<Dump, DumpError> {
        if text.trim().is_empty() {
            return Err(DumpError::Empty);
        }
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("");
        let header_rest = first.strip_prefix("heap profile:").ok_or_else(|| {
            DumpError::NotADump("the first line does not start with `heap profile:`".into())
        })?;
        let (header, tag) = parse_counts(header_rest).ok_or_else(|| {
            DumpError::NotADump(format!("cannot read the header line `{}`", first.trim()))
        })?;
        let (format, rate) = if tag == "heapprofile" {
            (Format::HeapProfile, 0)
        } else if let Some(r) = tag.strip_prefix("heap_v2/") {
            let rate = r.trim().parse().map_err(|_| {
                DumpError::NotADump(format!("bad sampling rate in header: `{tag}`"))
            })?;
            (Format::HeapV2, rate)
        } else {
            return Err(DumpError::NotADump(format!(
                "unknown profile kind `@ {tag}` (expected heap_v2/N or heapprofile)"
            )));
        };

        let complete = text.ends_with('\n');
        let all: Vec<&str> = lines.collect();
        let n = all.len();
        let mut samples = Vec::new();
        let mut i = 0;
        let mut saw_maps = false;
        while i < n {
            let line = all[i];
            i += 1;
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            if t == "MAPPED_LIBRARIES:" {
                saw_maps = true;
                break;
            }
            let last_partial = i == n && !complete;
            let parsed = parse_counts(t).and_then(|(c, rest)| {
                let stack: Option<Vec<u64>> = rest.split_whitespace().map(parse_hex).collect();
                Some((c, stack?))
            });
            match parsed {
                Some((raw, stack)) if !last_partial => samples.push(Sample {
                    raw,
                    est: estimate(&raw, rate),
                    stack,
                }),
                _ if last_partial || i == n => {
                    return Err(DumpError::Truncated(format!(
                        "it ends inside the samples (line {}), before MAPPED_LIBRARIES",
                        i + 1
                    )))
                }
                _ => {
                    return Err(DumpError::NotADump(format!(
                        "line {} is not a sample: `{}`",
                        i + 1,
                        shorten(t)
                    )))
                }
            }
        }
        if !saw_maps {
            return Err(DumpError::Truncated(
                "no MAPPED_LIBRARIES section after the samples".into(),
            ));
        }
        let mut maps = Vec::new();
        let mut extra_sections: Vec<(String, Vec<String>)> = Vec::new();
        while i < n {
            let line = all[i];
            i += 1;
            if line.trim().is_empty() {
                continue;
            }
            if let Some(name) = section_header(line) {
                extra_sections.push((name.to_string(), Vec::new()));
                continue;
            }
            if let Some((name, lines)) = extra_sections.last_mut() {
                if i == n && !complete {
                    // Sections after the maps end with a newline too.
                    return Err(DumpError::Truncated(format!(
                        "the {name} section is cut off"
                    )));
                }
                lines.push(line.to_string());
                continue;
            }
            if i == n && !complete {
                // The last maps line was cut off; it may be the one we need.
                return Err(DumpError::Truncated(
                    "the MAPPED_LIBRARIES section is cut off".into(),
                ));
            }
            match parse_maps_line(line) {
                Some(m) => maps.push(m),
                None => {
                    return Err(DumpError::NotADump(format!(
                        "line {} of MAPPED_LIBRARIES is not a maps line: `{}`",
                        i + 1,
                        shorten(line)
                    )))
                }
            }
        }
        if maps.is_empty() {
            return Err(DumpError::Truncated(
                "the MAPPED_LIBRARIES section is empty".into(),
            ));
        }
        let mut process = None;
        extra_sections.retain(|(name, lines)| {
            if name != "PROCESS" {
                return true;
            }
            process = Some(Process::parse(lines));
            false
        });
        let mut python_frames = HashMap::new();
        extra_sections.retain(|(name, lines)| {
            if name != "PYTHON_FRAMES" {
                return true;
            }
            for l in lines {
                let mut f = l.splitn(4, '\t');
                let (Some(a), Some(func), Some(file), Some(line)) =
                    (f.next(), f.next(), f.next(), f.next())
                else {
                    continue;
                };
                if let Some(a) = parse_hex(a.trim()) {
                    python_frames.insert(
                        a,
                        PyFrame {
                            function: func.to_string(),
                            file: file.to_string(),
                            line: line.trim().parse().unwrap_or(0),
                        },
                    );
                }
            }
            false
        });
        Ok(Dump {
            path: PathBuf::new(),
            format,
            rate,
            header,
            samples,
            maps,
            python_frames,
            process,
            extra_sections,
            pid: None,
            seq: None,
        })
    }

    /// Sum of the samples' estimates.
    pub fn total(&self) -> Estimate {
        let mut t = Estimate::default();
        for s in &self.samples {
            t.add(&s.est);
        }
        t
    }

    /// Sum of the samples' raw counts.
    pub fn raw_total(&self) -> Counts {
        let mut t = Counts::default();
        for s in &self.samples {
            t.inuse_objs += s.raw.inuse_objs;
            t.inuse_bytes += s.raw.inuse_bytes;
            t.alloc_objs += s.raw.alloc_objs;
            t.alloc_bytes += s.raw.alloc_bytes;
        }
        t
    }

    /// Notes about the dump itself (inconsistent header, skipped sections).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.raw_total() != self.header {
            notes.push(format!(
                "the header's totals ({}: {} [{}: {}]) differ from the sum of the samples",
                self.header.inuse_objs,
                self.header.inuse_bytes,
                self.header.alloc_objs,
                self.header.alloc_bytes
            ));
        }
        for (name, lines) in &self.extra_sections {
            // libmemx's peak profile (`<prefix>.<pid>.peak.heap`) says so.
            if name == "PEAK" {
                notes.extend(lines.iter().map(|l| format!("peak profile: {l}")));
                continue;
            }
            notes.push(format!(
                "skipped section {name} ({} lines): not read by this version of memx",
                lines.len()
            ));
        }
        notes
    }

    /// "every 512 KiB allocated" or "every allocation".
    pub fn sampling_text(&self) -> String {
        match self.format {
            Format::HeapProfile => "every allocation (gperftools dump)".to_string(),
            Format::HeapV2 if self.rate <= 1 => "every allocation".to_string(),
            Format::HeapV2 => format!(
                "one sample per {} allocated on average; figures are estimates",
                crate::units::bytes(self.rate as f64)
            ),
        }
    }
}

fn shorten(s: &str) -> String {
    if s.len() > 60 {
        let mut end = 60;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "heap profile:    3:   300 [   5:   500] @ heap_v2/524288
     2:   200 [   3:   300] @ 0x1010 0x2020
     1:   100 [   2:   200] @ 0x1030

MAPPED_LIBRARIES:
00001000-00003000 r-xp 00000000 08:01 1234    /bin/prog with space
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 
PYTHON_FRAMES:
0xf000000000000001\tload\t/x/app.py\t12

PROCESS:
pid\t42
ppid\t7
cmdline\tpython3 -c pass
thread\t42\tpython3
thread\t43\ta b
FUTURE_SECTION:
whatever 1 2 3
";

    #[test]
    fn parses_good_dump() {
        let d = Dump::parse(GOOD).unwrap();
        assert_eq!(d.format, Format::HeapV2);
        assert_eq!(d.rate, 524288);
        assert_eq!(d.header.inuse_bytes, 300);
        assert_eq!(d.samples.len(), 2);
        assert_eq!(d.samples[0].stack, vec![0x1010, 0x2020]);
        assert_eq!(d.maps.len(), 2);
        assert_eq!(d.maps[0].path, "/bin/prog with space");
        assert_eq!(d.maps[0].inode, 1234);
        assert_eq!(d.maps[1].path, "");
        assert_eq!(d.extra_sections.len(), 1);
        assert_eq!(d.extra_sections[0].0, "FUTURE_SECTION");
        let p = d.process.as_ref().unwrap();
        assert_eq!((p.pid, p.ppid), (Some(42), Some(7)));
        assert_eq!(p.cmdline, "python3 -c pass");
        assert_eq!(
            p.threads,
            vec![(42, "python3".to_string()), (43, "a b".to_string())]
        );
        let py = &d.python_frames[&0xf000000000000001];
        assert_eq!(
            (py.function.as_str(), py.file.as_str(), py.line),
            ("load", "/x/app.py", 12)
        );
    }

    #[test]
    fn a_peak_profile_says_when_its_peak_was() {
        let text = format!("{GOOD}PEAK:\nthe sampled live heap at its peak: 300 bytes in use (estimated), 1.500 s after start\n");
        let d = Dump::parse(&text).unwrap();
        let notes = d.notes();
        assert!(notes.contains(&"peak profile: the sampled live heap at its peak: 300 bytes in use (estimated), 1.500 s after start".to_string()), "{notes:?}");
        assert!(!notes.iter().any(|n| n.contains("skipped section PEAK")));
    }

    #[test]
    fn truncations_and_garbage() {
        let cut = &GOOD[..GOOD.find("MAPPED").unwrap()];
        assert!(matches!(Dump::parse(cut), Err(DumpError::Truncated(_))));
        let cut = &GOOD[..GOOD.find("0x2020").unwrap() + 3];
        assert!(matches!(Dump::parse(cut), Err(DumpError::Truncated(_))));
        let cut = &GOOD[..GOOD.find("/bin/prog").unwrap() + 4];
        assert!(matches!(Dump::parse(cut), Err(DumpError::Truncated(_))));
        let cut = &GOOD[..GOOD.len() - 3];
        assert!(matches!(Dump::parse(cut), Err(DumpError::Truncated(_))));
        assert!(matches!(Dump::parse(""), Err(DumpError::Empty)));
        assert!(matches!(
            Dump::parse("hello\nworld\n"),
            Err(DumpError::NotADump(_))
        ));
        let bad = GOOD.replace("0x1030", "zz");
        assert!(matches!(Dump::parse(&bad), Err(DumpError::NotADump(_))));
    }

    #[test]
    fn unsampling_matches_pprof() {
        // One 1 MiB sample at rate 512 KiB: scale = 1/(1-e^-2).
        let (o, b) = unsample(1, 1 << 20, 512 << 10);
        let s = 1.0 / (1.0 - (-2.0f64).exp());
        assert!((o - s).abs() < 1e-9 && (b - s * (1 << 20) as f64).abs() < 1e-6);
        assert_eq!(unsample(0, 0, 100), (0.0, 0.0));
        assert_eq!(unsample(3, 30, 0), (3.0, 30.0));
    }

    #[test]
    fn names() {
        let (p, s) = pid_seq_from_name(Path::new("/x/prog.1234.0007.heap"));
        assert_eq!((p, s), (Some(1234), Some(7)));
        assert_eq!(pid_seq_from_name(Path::new("gp.0001.heap")), (None, None));
    }
}
