//! `memx plot`: memory over time from a `<prefix>.<pid>.stats` file, as a
//! hand-written SVG line chart with the dump moments marked.
//!
//! ```text
//! # memx stats v1 pid=<pid> start_unix_ms=<ms>
//! # time_ms in_use_bytes cached_bytes mapped_bytes rss_bytes
//! <t> <in_use> <cached> <mapped> <rss>
//! # dump <t> <path of the dump file>
//! ```

use std::fmt::Write as _;
use std::path::Path;

use crate::units::bytes;

pub const SERIES: [&str; 4] = ["in use", "cached", "mapped", "RSS"];
const COLORS: [&str; 4] = ["#d62728", "#ff7f0e", "#1f77b4", "#2ca02c"];

#[derive(Debug, Default)]
pub struct Stats {
    pub pid: Option<u32>,
    pub start_unix_ms: Option<u64>,
    /// (time_ms, [in_use, cached, mapped, rss])
    pub points: Vec<(u64, [u64; 4])>,
    /// (time_ms, dump path)
    pub dumps: Vec<(u64, String)>,
}

pub fn parse(text: &str) -> Result<Stats, String> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let rest = first
        .strip_prefix("# memx stats v1")
        .ok_or("not a memx stats file (the first line is not `# memx stats v1 ...`)")?;
    let mut st = Stats::default();
    for kv in rest.split_whitespace() {
        if let Some(v) = kv.strip_prefix("pid=") {
            st.pid = v.parse().ok();
        } else if let Some(v) = kv.strip_prefix("start_unix_ms=") {
            st.start_unix_ms = v.parse().ok();
        }
    }
    let all: Vec<&str> = lines.collect();
    let complete = text.ends_with('\n');
    for (i, line) in all.iter().enumerate() {
        let last_partial = i + 1 == all.len() && !complete;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(d) = t.strip_prefix("# dump ") {
            if last_partial {
                continue;
            }
            let (time, path) = d.trim().split_once(char::is_whitespace).unwrap_or((d, ""));
            if let Ok(time) = time.parse() {
                st.dumps.push((time, path.trim().to_string()));
            }
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        let nums: Vec<Option<u64>> = t.split_whitespace().map(|f| f.parse().ok()).collect();
        match nums.as_slice() {
            [Some(t), Some(a), Some(b), Some(c), Some(d), ..] if !last_partial => {
                st.points.push((*t, [*a, *b, *c, *d]))
            }
            // A line being written while we read: ignore it.
            _ if last_partial => {}
            _ => return Err(format!("line {} is not a stats line: `{t}`", i + 2)),
        }
    }
    Ok(st)
}

pub fn load(path: &Path) -> Result<Stats, String> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{}: no such file", path.display()),
        std::io::ErrorKind::InvalidData => {
            format!("{}: not a memx stats file (binary data)", path.display())
        }
        _ => format!("{}: {e}", path.display()),
    })?;
    if text.trim().is_empty() {
        return Err(format!("{}: empty file", path.display()));
    }
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A "nice" step (1, 2 or 5 × 10^k) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if span <= 0.0 {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm < 1.5 {
        1.0
    } else if norm < 3.5 {
        2.0
    } else if norm < 7.5 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Byte ticks at powers of two of KiB/MiB/GiB: step = 1, 2 or 5 × unit × 10^k.
fn byte_unit(max: f64) -> (f64, &'static str) {
    if max >= (1u64 << 30) as f64 {
        ((1u64 << 30) as f64, "GiB")
    } else if max >= (1u64 << 20) as f64 {
        ((1u64 << 20) as f64, "MiB")
    } else if max >= 1024.0 {
        (1024.0, "KiB")
    } else {
        (1.0, "B")
    }
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

pub fn svg(st: &Stats, title: &str) -> Result<String, String> {
    if st.points.is_empty() {
        return Err("no samples in the stats file yet".into());
    }
    let (w, h) = (960.0f64, 540.0f64);
    let (ml, mr, mt, mb) = (80.0, 150.0, 50.0, 55.0);
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    // Time runs from the start of profiling.
    let t0 = 0u64;
    let t_max = st
        .points
        .iter()
        .map(|p| p.0)
        .chain(st.dumps.iter().map(|d| d.0))
        .max()
        .unwrap_or(0)
        .max(t0 + 1);
    let y_max_raw = st
        .points
        .iter()
        .flat_map(|p| p.1.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (unit, unit_name) = byte_unit(y_max_raw);
    let y_step = nice_step(y_max_raw / unit, 5.0) * unit;
    let y_max = (y_max_raw / y_step).ceil() * y_step;
    let span_s = (t_max - t0) as f64 / 1000.0;
    let x_step = nice_step(span_s, 8.0);
    let x = |t: u64| ml + ((t - t0) as f64 / 1000.0) / span_s * pw;
    let y = |v: f64| mt + ph - v / y_max * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{w}" height="{h}" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    // Grid and axes.
    let mut v = 0.0;
    while v <= y_max + 1e-6 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} {unit_name}</text>"##,
            ml + pw,
            ml - 6.0,
            yy + 4.0,
            fmt_num(v / unit)
        );
        v += y_step;
    }
    let mut tt = 0.0;
    while tt <= span_s + 1e-9 {
        let xx = ml + tt / span_s * pw;
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{mt}" x2="{xx:.1}" y2="{:.1}" stroke="#f0f0f0"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            mt + ph,
            mt + ph + 16.0,
            fmt_num(tt)
        );
        tt += x_step;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start (s)</text>"##,
        ml + pw / 2.0,
        h - 12.0
    );
    // Dump markers.
    for (t, path) in &st.dumps {
        let xx = x(*t);
        let name = crate::symbolize::basename(path);
        let _ = writeln!(
            s,
            r##"<g class="dump"><title>dump at {} s: {}</title><line x1="{xx:.1}" y1="{mt}" x2="{xx:.1}" y2="{:.1}" stroke="#7f7f7f" stroke-dasharray="4,3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="end" transform="rotate(-90 {:.1} {:.1})">{}</text></g>"##,
            fmt_num(*t as f64 / 1000.0),
            escape(path),
            mt + ph,
            xx - 3.0,
            mt + 4.0,
            xx - 3.0,
            mt + 4.0,
            escape(name)
        );
    }
    // Curves.
    for (k, (name, color)) in SERIES.iter().zip(COLORS).enumerate() {
        let pts: Vec<String> = st
            .points
            .iter()
            .map(|(t, vals)| format!("{:.1},{:.1}", x(*t), y(vals[k] as f64)))
            .collect();
        let last = st.points.last().map(|p| p.1[k]).unwrap_or(0);
        let peak = st.points.iter().map(|p| p.1[k]).max().unwrap_or(0);
        let _ = writeln!(
            s,
            r#"<polyline class="series" fill="none" stroke="{color}" stroke-width="1.8" points="{}"><title>{name}: peak {}, last {}</title></polyline>"#,
            pts.join(" "),
            bytes(peak as f64),
            bytes(last as f64)
        );
        let ly = mt + 10.0 + k as f64 * 36.0;
        let lx = ml + pw + 14.0;
        let _ = writeln!(
            s,
            r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{name}</text><text x="{:.1}" y="{:.1}" font-size="10" fill="#555">peak {}</text>"##,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            lx + 24.0,
            ly + 18.0,
            bytes(peak as f64)
        );
    }
    if !st.dumps.is_empty() {
        let ly = mt + 10.0 + 4.0 * 36.0;
        let lx = ml + pw + 14.0;
        let _ = writeln!(
            s,
            r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="#7f7f7f" stroke-dasharray="4,3"/><text x="{:.1}" y="{:.1}">heap dump</text>"##,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_draws() {
        let text = "# memx stats v1 pid=42 start_unix_ms=1000\n# time_ms in_use_bytes cached_bytes mapped_bytes rss_bytes\n0 10 20 30 40\n100 1000 20 3000000 4000000\n# dump 100 /tmp/p.42.0001.heap\n150 5";
        let st = parse(text).unwrap();
        assert_eq!(st.pid, Some(42));
        assert_eq!(st.points.len(), 2);
        assert_eq!(st.dumps, vec![(100, "/tmp/p.42.0001.heap".to_string())]);
        let svg = svg(&st, "t <&>").unwrap();
        assert!(svg.contains("p.42.0001.heap"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert!(parse("hello\n").is_err());
        assert!(parse("# memx stats v1\nfoo bar\n1 2\n").is_err());
    }
}
