//! `memx flamegraph`: folded stacks of a dump, drawn by inferno.

use crate::profile::{By, SymProfile};
use crate::units::bytes;

/// Folded stacks (`outer;inner bytes`), one line per distinct stack.
pub fn folded(p: &SymProfile, alloc: bool, by: By) -> Vec<String> {
    let mut acc: std::collections::BTreeMap<String, f64> = Default::default();
    for s in &p.samples {
        let (_, b) = s.est.pick(alloc);
        if b <= 0.0 {
            continue;
        }
        let names = if s.stack.is_empty() {
            vec![crate::profile::UNKNOWN.to_string()]
        } else {
            p.stack_names(s, by)
        };
        let key = names
            .iter()
            .map(|n| n.replace([';', '\n'], ","))
            .collect::<Vec<_>>()
            .join(";");
        *acc.entry(key).or_default() += b;
    }
    acc.into_iter()
        .filter_map(|(k, v)| {
            let v = v.round() as u64;
            (v > 0).then(|| format!("{k} {v}"))
        })
        .collect()
}

pub fn svg(p: &SymProfile, alloc: bool, by: By) -> Result<Vec<u8>, String> {
    let lines = folded(p, alloc, by);
    let what = if alloc { "allocated" } else { "in-use" };
    if lines.is_empty() {
        return Err(format!(
            "{}: no {what} bytes to draw{}",
            p.dump.path.display(),
            if alloc { "" } else { " (try --alloc)" }
        ));
    }
    let t = p.total();
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = format!("memx: {what} bytes");
    opts.subtitle = Some(format!(
        "{} — {} in use, {} allocated since start",
        crate::report::describe(&p.dump),
        bytes(t.inuse_bytes),
        bytes(t.alloc_bytes)
    ));
    opts.count_name = "bytes".to_string();
    opts.name_type = "Function:".to_string();
    opts.colors =
        inferno::flamegraph::color::Palette::Basic(inferno::flamegraph::color::BasicPalette::Mem);
    opts.hash = true;
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(|s| s.as_str()), &mut out)
        .map_err(|e| format!("drawing the flame graph: {e}"))?;
    Ok(out)
}
