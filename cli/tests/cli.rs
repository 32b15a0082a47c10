//! End-to-end tests of the `memx` command on dumps this test run makes: C and
//! C++ programs with known allocation sites (tests/data/), run under
//! target/release/libmemx.so (`make build` first; `make cli-tests` does).
//!
//! Nothing here depends on timing: programs that need a dump mid-run raise
//! their dump signal and wait for the file; `memx snapshot` waits for the
//! new file with a generous ceiling.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

fn memx_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memx"))
}

fn memx() -> Command {
    let lib = memx_bin().with_file_name("libmemx.so");
    assert!(
        lib.is_file(),
        "{} is missing: build the library first (make build)",
        lib.display()
    );
    let mut c = Command::new(memx_bin());
    c.env_remove("MEMX_LIB").env_remove("MEMX_PROFILE");
    c
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("memx-cli-tests")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// Compiles tests/data/<src> once per test process (-g -O1 -fno-inline).
fn program(src: &str) -> PathBuf {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(src) {
        return p.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("memx-cli-tests/bin");
    std::fs::create_dir_all(&dir).unwrap();
    let stem = src.split('.').next().unwrap();
    let out = dir.join(stem);
    compile(src, &out);
    map.insert(src.to_string(), out.clone());
    out
}

fn compile(src: &str, out: &Path) {
    let cc = if src.ends_with(".cc") { "g++" } else { "gcc" };
    let st = Command::new(cc)
        .args(["-g", "-O1", "-fno-inline", "-o"])
        .arg(out)
        .arg(data(src))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(st.success(), "{cc} failed on {src}");
}

/// The line of `marker` in tests/data/<src>.
fn site_line(src: &str, marker: &str) -> u32 {
    let text = std::fs::read_to_string(data(src)).unwrap();
    let i = text
        .lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} not in {src}"));
    i as u32 + 1
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `memx ARGS INPUT -o OUT`, which must succeed.
fn write_output(
    args: &[&str],
    input: impl AsRef<std::ffi::OsStr>,
    out: impl AsRef<std::ffi::OsStr>,
) {
    ok(memx()
        .args(args)
        .arg(input)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap());
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "memx failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `prog` under `memx run` with profile prefix <dir>/<name>; returns
/// the output and the dumps it wrote, in order.
fn memx_run(dir: &Path, name: &str, opts: &[&str], cmd: &[&OsStrRef]) -> (Output, Vec<PathBuf>) {
    let prefix = dir.join(name);
    let out = memx()
        .arg("run")
        .arg("--profile")
        .arg(&prefix)
        .args(opts)
        .arg("--")
        .args(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    (out, dumps(dir, name))
}

type OsStrRef = std::ffi::OsStr;

fn dumps(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            // The numbered dumps (not the peak profile, `.peak.heap`).
            n.starts_with(&format!("{name}.")) && n.ends_with(".heap") && !n.ends_with(".peak.heap")
        })
        .collect();
    v.sort();
    v
}

/// The table row whose last column is exactly `key`, split in columns.
fn row<'a>(report: &'a str, key: &str) -> Vec<&'a str> {
    let line = report
        .lines()
        .find(|l| l.ends_with(&format!("  {key}")))
        .unwrap_or_else(|| panic!("no row `{key}` in:\n{report}"));
    line[..line.len() - key.len()].split_whitespace().collect()
}

/// grow.c under memx with every allocation sampled: dumps 1, 2 and at exit.
fn grow_dumps(test: &str) -> (PathBuf, Vec<PathBuf>) {
    let dir = scratch(test);
    let prog = program("grow.c");
    let (out, dumps) = memx_run(
        &dir,
        "grow",
        &["--sample", "1", "--stats-interval", "1"],
        &[prog.as_os_str()],
    );
    let stderr = text(&out.stderr);
    ok(out);
    assert_eq!(dumps.len(), 3, "grow.c should leave three dumps: {dumps:?}");
    // The run's summary: where the dumps are, the top in-use site.
    let two = site_line("grow.c", "SITE_TWO");
    assert!(
        stderr.contains("memx: exit status 0; 3 dumps in"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "top in-use site: site_two (grow.c:{two}), 586 KiB"
        )),
        "{stderr}"
    );
    (dir, dumps)
}

#[test]
fn run_passes_exit_code_and_environment() {
    let dir = scratch("run_env");
    let (out, _) = memx_run(
        &dir,
        "sh",
        &[
            "--sample",
            "4096",
            "--limit",
            "1G",
            "--stats-interval",
            "50",
            "--signal",
            "USR1",
            "--python-all",
            "--native-stacks",
        ],
        &[
            "sh".as_ref(),
            "-c".as_ref(),
            "echo $MEMX_PROFILE_SAMPLE $MEMX_HEAP_LIMIT $MEMX_STATS_INTERVAL $MEMX_PROFILE_SIGNAL $PYTHONMALLOC $MEMX_PROFILE_NATIVE; echo $LD_PRELOAD; echo $MEMX_PROFILE; exit 7".as_ref(),
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "4096 1G 50 USR1 malloc 1");
    assert!(lines[1].ends_with("/libmemx.so"), "{}", lines[1]);
    assert_eq!(lines[2], dir.join("sh").to_str().unwrap());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("memx: exit status 7"), "{stderr}");

    // A bad option value is refused before anything runs.
    let out = memx()
        .args(["run", "--sample", "lots", "--", "true"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--sample lots"));
    // A missing command.
    let out = memx()
        .args(["run", "--", "/nonexistent/program"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot run /nonexistent/program"));
}

#[test]
fn run_summarises_and_report_names_functions_and_lines() {
    let (_dir, dumps) = grow_dumps("report");
    let one = site_line("grow.c", "SITE_ONE");
    let two = site_line("grow.c", "SITE_TWO");
    let temp = site_line("grow.c", "SITE_TEMP");

    // Dump 2: 150 × 1000 B at site_one, 300 × 2000 B at site_two in use.
    let r = ok(memx()
        .args(["report", "--by", "line"])
        .arg(&dumps[1])
        .output()
        .unwrap());
    assert!(r.contains("Sampling: every allocation"), "{r}");
    let two_row = row(&r, &format!("site_two (grow.c:{two})"));
    assert_eq!(two_row[0..2], ["586", "KiB"], "{r}"); // 600000 B
    assert_eq!(two_row[7], "300", "{r}");
    let one_row = row(&r, &format!("site_one (grow.c:{one})"));
    assert_eq!(one_row[7], "150", "{r}");
    // Sorted by flat: site_two first.
    let first = r
        .lines()
        .skip_while(|l| !l.contains("flat%"))
        .nth(1)
        .unwrap();
    assert!(first.contains("site_two"), "{r}");
    // Freed memory is not in use, but was allocated.
    assert!(!r.contains("site_temp"), "{r}");
    let r = ok(memx()
        .args(["report", "--alloc", "--by", "line", "--top", "3"])
        .arg(&dumps[1])
        .output()
        .unwrap());
    let temp_row = row(&r, &format!("site_temp (grow.c:{temp})"));
    assert_eq!(temp_row[7], "1000", "{r}");
    assert!(r.contains("top 3 of"), "{r}");

    // By function, main's cumulative share covers both sites.
    let r = ok(memx().arg("report").arg(&dumps[1]).output().unwrap());
    let main_row = row(&r, "main");
    assert_eq!(main_row[0..2], ["0", "B"], "{r}");
    assert!(row(&r, "site_two").len() == 8, "{r}");

    // By stack: the caller chain under site_two.
    let r = ok(memx()
        .args(["report", "--by", "stack"])
        .arg(&dumps[1])
        .output()
        .unwrap());
    let at = r.find(&format!("site_two (grow.c:{two})")).unwrap();
    let next = r[at..].lines().nth(1).unwrap();
    assert!(next.trim_start().starts_with("main (grow.c:"), "{r}");
    // memx's own frames are never shown.
    assert!(!r.contains("libmemx"), "{r}");
}

#[test]
fn diff_shows_growth_per_site() {
    let (_dir, dumps) = grow_dumps("diff");
    let one = site_line("grow.c", "SITE_ONE");
    let two = site_line("grow.c", "SITE_TWO");
    let d = ok(memx()
        .args(["diff", "--by", "line"])
        .arg(&dumps[0])
        .arg(&dumps[1])
        .output()
        .unwrap());
    let grew: Vec<&str> = d
        .lines()
        .skip_while(|l| !l.starts_with("Grew:"))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(grew.len(), 2, "{d}");
    assert!(
        grew[0].ends_with(&format!("site_two (grow.c:{two})")),
        "{d}"
    );
    assert!(
        grew[1].ends_with(&format!("site_one (grow.c:{one})")),
        "{d}"
    );
    let two_cols: Vec<&str> = grew[0].split_whitespace().collect();
    assert_eq!(two_cols[0..3], ["+586", "KiB", "+300"], "{d}");
    let one_cols: Vec<&str> = grew[1].split_whitespace().collect();
    assert_eq!(one_cols[0..3], ["+48.8", "KiB", "+50"], "{d}");
    assert!(d.contains("(+635 KiB, +350 objects)"), "{d}");

    // The other way round it shrank.
    let d = ok(memx()
        .arg("diff")
        .arg(&dumps[1])
        .arg(&dumps[0])
        .output()
        .unwrap());
    assert!(d.contains("(nothing grew)"), "{d}");
    assert!(d.contains("Shrank: 2"), "{d}");
}

/// A minimal protobuf reader: (field, varint or bytes) of one message.
enum Val<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let x = b[*i];
        *i += 1;
        v |= ((x & 0x7f) as u64) << shift;
        if x < 0x80 {
            return v;
        }
        shift += 7;
    }
}

fn fields(b: &[u8]) -> Vec<(u64, Val<'_>)> {
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let key = varint(b, &mut i);
        let v = match key & 7 {
            0 => Val::Int(varint(b, &mut i)),
            2 => {
                let n = varint(b, &mut i) as usize;
                i += n;
                Val::Bytes(&b[i - n..i])
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push((key >> 3, v));
    }
    out
}

fn ints(v: &Val) -> Vec<u64> {
    match v {
        Val::Int(x) => vec![*x],
        Val::Bytes(b) => {
            let mut i = 0;
            let mut o = Vec::new();
            while i < b.len() {
                o.push(varint(b, &mut i));
            }
            o
        }
    }
}

fn int_field(b: &[u8], f: u64) -> u64 {
    fields(b)
        .iter()
        .find(|(k, _)| *k == f)
        .map(|(_, v)| ints(v)[0])
        .unwrap_or(0)
}

struct Decoded {
    strings: Vec<String>,
    sample_types: Vec<(String, String)>,
    /// (location ids, values)
    samples: Vec<(Vec<u64>, Vec<i64>)>,
    /// location id → (mapping id, [(function id, line)])
    locations: HashMap<u64, (u64, Vec<(u64, i64)>)>,
    /// function id → name
    functions: HashMap<u64, String>,
    /// mapping id → file name
    mappings: HashMap<u64, String>,
    period: i64,
    period_type: (String, String),
    default_sample_type: String,
}

fn decode(gz: &[u8]) -> Decoded {
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "not gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .unwrap();
    let top = fields(&raw);
    let strings: Vec<String> = top
        .iter()
        .filter(|(k, _)| *k == 6)
        .map(|(_, v)| match v {
            Val::Bytes(b) => String::from_utf8(b.to_vec()).unwrap(),
            _ => panic!("string_table entry is not bytes"),
        })
        .collect();
    assert_eq!(strings[0], "", "string_table[0] must be empty");
    let s = |i: u64| strings[i as usize].clone();
    let vt = |b: &[u8]| (s(int_field(b, 1)), s(int_field(b, 2)));
    let mut d = Decoded {
        sample_types: Vec::new(),
        samples: Vec::new(),
        locations: HashMap::new(),
        functions: HashMap::new(),
        mappings: HashMap::new(),
        period: 0,
        period_type: (String::new(), String::new()),
        default_sample_type: String::new(),
        strings: strings.clone(),
    };
    for (k, v) in &top {
        match (k, v) {
            (1, Val::Bytes(b)) => d.sample_types.push(vt(b)),
            (2, Val::Bytes(b)) => {
                let mut locs = Vec::new();
                let mut vals = Vec::new();
                for (k, v) in fields(b) {
                    match k {
                        1 => locs.extend(ints(&v)),
                        2 => vals.extend(ints(&v).into_iter().map(|x| x as i64)),
                        _ => {}
                    }
                }
                d.samples.push((locs, vals));
            }
            (3, Val::Bytes(b)) => {
                d.mappings.insert(int_field(b, 1), s(int_field(b, 5)));
            }
            (4, Val::Bytes(b)) => {
                let mut lines = Vec::new();
                for (k, v) in fields(b) {
                    if let (4, Val::Bytes(l)) = (k, v) {
                        lines.push((int_field(l, 1), int_field(l, 2) as i64));
                    }
                }
                d.locations
                    .insert(int_field(b, 1), (int_field(b, 2), lines));
            }
            (5, Val::Bytes(b)) => {
                d.functions.insert(int_field(b, 1), s(int_field(b, 2)));
            }
            (11, Val::Bytes(b)) => d.period_type = vt(b),
            (12, v) => d.period = ints(v)[0] as i64,
            (14, v) => d.default_sample_type = s(ints(v)[0]),
            _ => {}
        }
    }
    d
}

impl Decoded {
    /// Innermost (function, line) of a sample.
    fn leaf(&self, locs: &[u64]) -> (String, i64) {
        let (_, lines) = &self.locations[&locs[0]];
        let (f, l) = lines[0];
        (self.functions[&f].clone(), l)
    }

    fn sum(&self, col: usize, leaf: Option<&str>) -> i64 {
        self.samples
            .iter()
            .filter(|(locs, _)| leaf.is_none_or(|f| self.leaf(locs).0 == f))
            .map(|(_, v)| v[col])
            .sum()
    }
}

#[test]
fn pprof_decodes_with_the_right_totals() {
    let (dir, dumps) = grow_dumps("pprof");
    let out = dir.join("heap.pb.gz");
    write_output(&["pprof"], &dumps[1], &out);
    let d = decode(&std::fs::read(&out).unwrap());
    let pairs = |a: &[(&str, &str)]| -> Vec<(String, String)> {
        a.iter()
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect()
    };
    assert_eq!(
        d.sample_types,
        pairs(&[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes")
        ])
    );
    assert_eq!(d.period_type, ("space".to_string(), "bytes".to_string()));
    assert_eq!(d.period, 1);
    assert_eq!(d.default_sample_type, "inuse_space");

    // Totals equal the dump header's (every allocation sampled: no scaling).
    let header = std::fs::read_to_string(&dumps[1]).unwrap();
    let nums: Vec<i64> = header
        .lines()
        .next()
        .unwrap()
        .replace(['[', ']', ':'], " ")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (inuse_objs, inuse_bytes, alloc_objs, alloc_bytes) = (nums[0], nums[1], nums[2], nums[3]);
    assert_eq!(d.sum(0, None), alloc_objs);
    assert_eq!(d.sum(1, None), alloc_bytes);
    assert_eq!(d.sum(2, None), inuse_objs);
    assert_eq!(d.sum(3, None), inuse_bytes);

    // Per site.
    assert_eq!(d.sum(3, Some("site_two")), 600_000);
    assert_eq!(d.sum(2, Some("site_two")), 300);
    assert_eq!(d.sum(3, Some("site_one")), 150_000);
    assert_eq!(d.sum(1, Some("site_temp")), 1_024_000);
    assert_eq!(d.sum(3, Some("site_temp")), 0);
    let two = site_line("grow.c", "SITE_TWO") as i64;
    let (locs, _) = d
        .samples
        .iter()
        .find(|(l, _)| d.leaf(l).0 == "site_two")
        .unwrap();
    assert_eq!(d.leaf(locs).1, two);
    // Its caller is main, in the grow binary's mapping.
    let (map, lines) = &d.locations[&locs[1]];
    assert_eq!(d.functions[&lines[0].0], "main");
    assert!(d.mappings[map].ends_with("/bin/grow"), "{:?}", d.mappings);
    // No location of memx's own.
    assert!(d.mappings.values().all(|m| !m.contains("libmemx")));
    assert!(d.strings.iter().any(|s| s.ends_with("grow.c")));
}

/// Appends each attribute value of `e`, one per line.
fn push_attributes(e: &quick_xml::events::BytesStart, all: &mut String) {
    for a in e.attributes() {
        all.push_str(
            &a.unwrap()
                .normalized_value(quick_xml::XmlVersion::Explicit1_0)
                .unwrap(),
        );
        all.push('\n');
    }
}

/// Parses an SVG with quick-xml (well-formed, matching end tags) and
/// returns all its text and attribute values.
fn xml_text(svg: &[u8]) -> String {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_reader(svg);
    let mut buf = Vec::new();
    let mut all = String::new();
    let mut depth = 0i32;
    let mut roots = 0;
    loop {
        match r.read_event_into(&mut buf) {
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) => {
                if depth == 0 {
                    roots += 1;
                    assert_eq!(e.name().as_ref(), b"svg");
                }
                depth += 1;
                push_attributes(&e, &mut all);
            }
            Ok(Event::Empty(e)) => push_attributes(&e, &mut all),
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Text(t)) => {
                all.push_str(&t.decode().unwrap());
                all.push('\n');
            }
            Ok(_) => {}
            Err(e) => panic!("SVG is not well-formed XML at {}: {e}", r.buffer_position()),
        }
        buf.clear();
    }
    assert_eq!(depth, 0, "unclosed elements");
    assert_eq!(roots, 1, "one <svg> root");
    all
}

#[test]
fn flamegraph_is_xml_with_the_sites() {
    let (dir, dumps) = grow_dumps("flame");
    let out = dir.join("heap.svg");
    write_output(&["flamegraph"], &dumps[1], &out);
    let t = xml_text(&std::fs::read(&out).unwrap());
    assert!(t.contains("site_one"), "site_one missing");
    assert!(t.contains("site_two"), "site_two missing");
    assert!(t.contains("main"), "main missing");
    assert!(!t.contains("site_temp"), "freed memory in the in-use graph");
    // Allocated bytes include the freed site.
    let out = dir.join("alloc.svg");
    write_output(&["flamegraph", "--alloc", "--by", "line"], &dumps[1], &out);
    let t = xml_text(&std::fs::read(&out).unwrap());
    let temp = site_line("grow.c", "SITE_TEMP");
    assert!(
        t.contains(&format!("site_temp (grow.c:{temp})")),
        "site_temp missing"
    );
    // Folded stacks.
    let f = ok(memx()
        .args(["flamegraph", "--folded"])
        .arg(&dumps[1])
        .output()
        .unwrap());
    assert!(
        f.lines().any(|l| l.ends_with(";main;site_two 600000")),
        "{f}"
    );
}

#[test]
fn plot_is_xml_with_curves_and_dumps() {
    let (dir, dumps) = grow_dumps("plot");
    let stats: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "stats"))
        .collect();
    assert_eq!(stats.len(), 1, "one stats file expected");
    let out = dir.join("mem.svg");
    write_output(&["plot"], &stats[0], &out);
    let svg = std::fs::read(&out).unwrap();
    let t = xml_text(&svg);
    for d in &dumps {
        let name = d.file_name().unwrap().to_str().unwrap();
        assert!(t.contains(name), "dump {name} not marked");
    }
    for s in ["in use", "cached", "mapped", "RSS"] {
        assert!(t.contains(s), "series {s} missing");
    }
    assert_eq!(text(&svg).matches("<polyline").count(), 4);
}

#[test]
fn snapshot_of_a_running_process() {
    let dir = scratch("snapshot");
    let prog = program("waiter.c");
    let mut child = memx()
        .arg("run")
        .arg("--sample")
        .arg("1")
        .arg("--profile")
        .arg(dir.join("waiter"))
        .arg("--")
        .arg(&prog)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line
        .trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("waiter said {line:?}"))
        .parse()
        .unwrap();
    let snap = memx()
        .args([
            "snapshot",
            &pid.to_string(),
            "--by",
            "line",
            "--timeout",
            "60",
        ])
        .output()
        .unwrap();
    // A snapshot's report is the report of the dump it waited for, with
    // every view option applied (it once ignored --python-only).
    let only = ["--by", "line", "--python-only", "--timeout", "60"];
    let snap_only = memx()
        .args(["snapshot", &pid.to_string()])
        .args(only)
        .output()
        .unwrap();
    // Let the program finish whatever happened.
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let r = ok(snap);
    let held = site_line("waiter.c", "SITE_HELD");
    let held_row = row(&r, &format!("held_site (waiter.c:{held})"));
    assert_eq!(held_row[7], "200", "{r}");
    assert_eq!(status.code(), Some(3), "exit status passed through: {err}");
    let snap_err = text(&snap_only.stderr);
    let snap_path = snap_err
        .lines()
        .find_map(|l| l.strip_prefix("memx: new dump "))
        .unwrap_or_else(|| panic!("snapshot named no dump: {snap_err}"));
    let only_report = ok(snap_only);
    assert!(!only_report.contains("held_site"), "{only_report}");
    let from_file = memx()
        .arg("report")
        .arg(snap_path)
        .args(&only[..3])
        .output()
        .unwrap();
    assert_eq!(only_report, ok(from_file));
    // The two snapshots and the at-exit dump.
    assert_eq!(dumps(&dir, "waiter").len(), 3);

    // The test process itself does not run memx.
    let out = memx()
        .args(["snapshot", &std::process::id().to_string()])
        .output()
        .unwrap();
    one_line_error(&out, "is not running memx");
}

fn one_line_error(out: &Output, needle: &str) {
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {e}");
    assert_eq!(e.lines().count(), 1, "one line expected: {e}");
    assert!(e.starts_with("memx: ") && e.contains(needle), "{e}");
}

#[test]
fn errors_are_one_line() {
    let (dir, dumps) = grow_dumps("errors");
    let missing = dir.join("nothing.heap");
    for cmd in ["report", "flamegraph", "pprof"] {
        let out = memx().arg(cmd).arg(&missing).output().unwrap();
        one_line_error(&out, "no such file");
    }
    let out = memx().arg("report").arg(data("grow.c")).output().unwrap();
    one_line_error(&out, "not a memx heap dump");
    let full = std::fs::read(&dumps[1]).unwrap();
    for cut in [full.len() / 3, full.len() - 5] {
        let p = dir.join("cut.heap");
        std::fs::write(&p, &full[..cut]).unwrap();
        let out = memx().arg("report").arg(&p).output().unwrap();
        one_line_error(&out, "truncated dump");
    }
    let empty = dir.join("empty.heap");
    std::fs::write(&empty, "").unwrap();
    one_line_error(&memx().arg("report").arg(&empty).output().unwrap(), "empty");
    one_line_error(
        &memx().arg("plot").arg(&dumps[1]).output().unwrap(),
        "not a memx stats file",
    );
    one_line_error(
        &memx().args(["diff"]).arg(&dumps[1]).output().unwrap(),
        "two dumps",
    );
    one_line_error(
        &memx().args(["snapshot", "999999999"]).output().unwrap(),
        "no process",
    );
    one_line_error(
        &memx()
            .args(["report", "--bogus"])
            .arg(&dumps[1])
            .output()
            .unwrap(),
        "unknown option",
    );
}

#[test]
fn moved_or_stripped_binaries_give_module_offsets() {
    let dir = scratch("stripped");
    for (name, how) in [("moved", "rm"), ("stripped", "strip")] {
        let bin = dir.join(format!("grow_{name}"));
        compile("grow.c", &bin);
        let (out, dumps) = memx_run(&dir, name, &["--sample", "1"], &[bin.as_os_str()]);
        ok(out);
        let last = dumps.last().unwrap();
        let st = Command::new(how).arg(&bin).status().unwrap();
        assert!(st.success());
        let out = memx()
            .args(["report", "--by", "line"])
            .arg(last)
            .output()
            .unwrap();
        let r = ok(out.clone());
        assert!(!r.contains("site_two"), "{r}");
        assert!(r.contains(&format!("grow_{name}+0x")), "{r}");
        if how == "rm" {
            assert!(text(&out.stderr).contains(&format!("cannot read {}", bin.display())));
        }
        // pprof and flame graphs cope too.
        write_output(&["pprof"], last, dir.join(format!("{name}.pb.gz")));
        write_output(&["flamegraph"], last, dir.join(format!("{name}.svg")));
    }
}

#[test]
fn cxx_names_are_demangled() {
    let dir = scratch("cxx");
    let prog = program("demo.cc");
    let (out, dumps) = memx_run(&dir, "demo", &["--sample", "1"], &[prog.as_os_str()]);
    ok(out);
    let r = ok(memx()
        .args(["report", "--by", "line"])
        .arg(dumps.last().unwrap())
        .output()
        .unwrap());
    let line = site_line("demo.cc", "SITE_CXX");
    let cols = row(&r, &format!("demo::Holder::grow(int) (demo.cc:{line})"));
    assert_eq!(cols[7], "100", "{r}");
}

#[test]
fn sampled_estimates_are_unsampled() {
    // Default sampling (one sample per 512 KiB on average).
    let dir = scratch("sampled");
    let prog = program("churn.c");
    let (out, dumps) = memx_run(&dir, "churn", &[], &[prog.as_os_str()]);
    ok(out);
    let pb = dir.join("churn.pb.gz");
    write_output(&["pprof"], dumps.last().unwrap(), &pb);
    let d = decode(&std::fs::read(&pb).unwrap());
    assert!(
        d.period > 1,
        "default sampling expected, period {}",
        d.period
    );
    // 256 MiB allocated at churn_site: about 512 samples, so ±25% is more
    // than 5 standard deviations.
    let churn = d.sum(1, Some("churn_site")) as f64;
    let want = 256.0 * 1024.0 * 1024.0;
    assert!(
        (churn - want).abs() < 0.25 * want,
        "churn_site estimate {churn} for {want}"
    );
    assert_eq!(d.sum(3, Some("churn_site")), 0, "all of it was freed");
    assert!(d.sum(3, Some("kept_site")) > 0, "kept_site holds 8 MiB");
    let r = ok(memx()
        .args(["report"])
        .arg(dumps.last().unwrap())
        .output()
        .unwrap());
    assert!(r.contains("figures are estimates"), "{r}");
}

#[test]
fn gperftools_dumps_are_read_too() {
    let tcmalloc = Path::new("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4");
    assert!(
        tcmalloc.is_file(),
        "{} missing (package libgoogle-perftools4; scripts/install-deps.sh installs it)",
        tcmalloc.display()
    );
    let dir = scratch("gperftools");
    let prog = program("grow.c");
    let st = Command::new(&prog)
        .env("HEAPPROFILE", dir.join("gp"))
        .env("LD_PRELOAD", tcmalloc)
        .env_remove("MEMX_PROFILE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let dump = dir.join("gp.0001.heap");
    let r = ok(memx()
        .args(["report", "--by", "line"])
        .arg(&dump)
        .output()
        .unwrap());
    let two = site_line("grow.c", "SITE_TWO");
    assert_eq!(
        row(&r, &format!("site_two (grow.c:{two})"))[7],
        "300",
        "{r}"
    );
    assert!(r.contains("(gperftools)"), "{r}");
}

#[test]
fn stripped_module_is_named_in_the_report_and_symbols_dir_restores_names() {
    let dir = scratch("stripped");
    let full = program("grow.c");
    let stripped = dir.join("grow");
    std::fs::copy(&full, &stripped).unwrap();
    let st = Command::new("strip").arg(&stripped).status().unwrap();
    assert!(st.success(), "strip failed");
    let (out, dumps) = memx_run(&dir, "g", &["--sample", "1"], &[stripped.as_os_str()]);
    ok(out);
    let last = dumps.last().expect("no dump");
    let r = ok(memx().arg("report").arg(last).output().unwrap());
    assert!(r.contains("Note: no symbols for grow ("), "{r}");
    assert!(r.contains("--symbols DIR"), "{r}");
    assert!(r.contains("grow+0x") && !r.contains("site_two"), "{r}");

    // By name: DIR/grow.debug (an unstripped copy).
    let by_name = dir.join("by-name");
    std::fs::create_dir_all(&by_name).unwrap();
    std::fs::copy(&full, by_name.join("grow.debug")).unwrap();
    let r = ok(memx()
        .args(["report", "--by", "line", "--symbols"])
        .arg(&by_name)
        .arg(last)
        .output()
        .unwrap());
    let two = site_line("grow.c", "SITE_TWO");
    assert!(r.contains(&format!("site_two (grow.c:{two})")), "{r}");
    assert!(!r.contains("no symbols for grow"), "{r}");

    // By build id: DIR/.build-id/xx/yyyy.debug holding only debug info.
    let id = Command::new("readelf")
        .arg("-n")
        .arg(&stripped)
        .output()
        .unwrap();
    let id = text(&id.stdout);
    let hex = id
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("grow has no build id")
        .trim()
        .to_string();
    let by_id = dir.join("by-id/.build-id").join(&hex[..2]);
    std::fs::create_dir_all(&by_id).unwrap();
    let st = Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&full)
        .arg(by_id.join(format!("{}.debug", &hex[2..])))
        .status()
        .unwrap();
    assert!(st.success(), "objcopy failed");
    let r = ok(memx()
        .args(["report", "--symbols"])
        .arg(dir.join("by-id"))
        .arg(last)
        .output()
        .unwrap());
    assert!(r.contains("site_two"), "{r}");
    assert!(!r.contains("no symbols for grow"), "{r}");
}

/// The real interpreter behind `python3` (a pyenv shim is a script, which
/// LD_PRELOAD would reach only through its children).
fn python() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3 is needed for the Python tests");
    PathBuf::from(text(&out.stdout).trim())
}

/// cache.py under memx run: its two dumps (make_cache, then leak_more).
fn python_dumps(test: &str) -> (PathBuf, Vec<PathBuf>) {
    let dir = scratch(test);
    let py = python();
    let (out, dumps) = memx_run(
        &dir,
        "cache",
        &["--sample", "65536"],
        &[py.as_os_str(), data("cache.py").as_os_str()],
    );
    let stderr = text(&out.stderr);
    ok(out);
    assert!(dumps.len() >= 2, "{dumps:?}");
    // memx run's summary speaks in Python lines too.
    let leak = site_line("cache.py", "SITE_LEAK");
    assert!(
        stderr.contains(&format!("top site there: leak_more (cache.py:{leak})")),
        "{stderr}"
    );
    (dir, dumps)
}

/// Whether `name` is a frame of the interpreter's C code that a
/// Python-first view must not show between Python frames.
fn interpreter_frame(name: &str) -> bool {
    name.starts_with("_Py")
        || name.starts_with("Py")
        || name.contains("_vectorcall")
        || name.starts_with("cfunction_")
        || name.starts_with("method_")
        || name.starts_with("slot_")
}

#[test]
fn python_dumps_read_python_first_by_default() {
    let (dir, dumps) = python_dumps("python_first");
    let (cache, leak) = (
        site_line("cache.py", "SITE_CACHE"),
        site_line("cache.py", "SITE_LEAK"),
    );
    let cache_row = format!("make_cache (cache.py:{cache})");
    let leak_row = format!("leak_more (cache.py:{leak})");
    // report: Python lines, no interpreter functions.
    let r = ok(memx().arg("report").arg(&dumps[1]).output().unwrap());
    assert!(r.contains("by line"), "{r}");
    let (c, l) = (row(&r, &cache_row), row(&r, &leak_row));
    assert!(c[1] == "MiB" && l[1] == "MiB", "{r}");
    assert!(
        !r.contains("PyByteArray") && !r.contains("_PyObject"),
        "{r}"
    );
    assert!(r.contains("Process: pid "), "no process line:\n{r}");
    // --native: the recorded stacks, interpreter functions and all.
    let n = ok(memx()
        .args(["report", "--native", "--by", "stack"])
        .arg(&dumps[1])
        .output()
        .unwrap());
    assert!(n.contains("PyByteArray") || n.contains("_PyObject"), "{n}");
    // diff: what leak_more added, by line.
    let d = ok(memx()
        .arg("diff")
        .arg(&dumps[0])
        .arg(&dumps[1])
        .output()
        .unwrap());
    let grew = d.split("Shrank:").next().unwrap();
    assert!(row(grew, &leak_row)[0].starts_with('+'), "{d}");
    // flamegraph: Python functions, no interpreter frame between two
    // Python frames (folded stacks say which frames a stack has).
    let f = ok(memx()
        .args(["flamegraph", "--folded"])
        .arg(&dumps[1])
        .output()
        .unwrap());
    let line = f
        .lines()
        .find(|l| l.contains(";leak_more"))
        .unwrap_or_else(|| panic!("no leak_more stack:\n{f}"));
    let frames: Vec<&str> = line.rsplit_once(' ').unwrap().0.split(';').collect();
    assert_eq!(&frames[..2], &["<module>", "leak_more"], "{line}");
    for s in f.lines() {
        let frames: Vec<&str> = s.rsplit_once(' ').unwrap().0.split(';').collect();
        let py: Vec<usize> = (0..frames.len())
            .filter(|&i| {
                frames[i] == "<module>" || frames[i].ends_with("_cache") || frames[i] == "leak_more"
            })
            .collect();
        if let (Some(&a), Some(&b)) = (py.first(), py.last()) {
            for fr in &frames[a..b] {
                assert!(!interpreter_frame(fr), "interpreter frame {fr} in {s}");
            }
        }
    }
    let svg = dir.join("cache.svg");
    write_output(&["flamegraph"], &dumps[1], &svg);
    let t = xml_text(&std::fs::read(&svg).unwrap());
    assert!(t.contains("make_cache") && t.contains("leak_more"), "{t}");
    assert!(
        !t.contains("_PyEval_EvalFrameDefault"),
        "interpreter frames in the SVG"
    );
    // Two dumps of one process: each is its whole heap at one moment, so
    // --merge keeps the newest and says so (adding them would count the
    // cache twice).
    let out = memx()
        .args(["report", "--merge"])
        .args(&dumps[..2])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(err.contains("newest dump only"), "{err}");
    let m = ok(out);
    assert!(!m.contains("more dump"), "{m}");
    assert_eq!(row(&m, &cache_row)[1], "MiB", "{m}");
}

#[test]
fn run_lists_the_dumps_of_every_process() {
    let dir = scratch("pool");
    let py = python();
    let (out, dumps) = memx_run(
        &dir,
        "pool",
        &[],
        &[py.as_os_str(), data("pool.py").as_os_str()],
    );
    let stderr = text(&out.stderr);
    let stdout = ok(out);
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let main = words[1];
    let workers = &words[3..];
    assert!(!workers.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("pid {main} (the command)")),
        "{stderr}"
    );
    for w in workers {
        assert!(
            stderr.contains(&format!("pid {w}, parent {main}: ")),
            "worker {w} not listed with its parent:\n{stderr}"
        );
        let mine: Vec<&PathBuf> = dumps
            .iter()
            .filter(|d| d.to_string_lossy().contains(&format!(".{w}.")))
            .collect();
        let r = ok(memx().arg("report").arg(mine[0]).output().unwrap());
        assert!(r.contains("pool_work (pool.py:"), "{r}");
        assert!(
            r.contains(&format!("Process: pid {w} (parent {main}")),
            "{r}"
        );
    }
    assert!(stderr.contains("memx report --merge"), "{stderr}");
    let m = ok(memx()
        .args(["report", "--merge"])
        .args(&dumps)
        .output()
        .unwrap());
    assert!(m.contains("more dump"), "dumps of several processes: {m}");
    assert!(m.contains("pool_work (pool.py:"), "{m}");
}
