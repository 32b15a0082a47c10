//! `memx pprof`: a dump as a gzip'd profile.proto (github.com/google/pprof,
//! proto/profile.proto), encoded by hand.
//!
//! Sample types, in Go's heap-profile order: alloc_objects/count,
//! alloc_space/bytes, inuse_objects/count, inuse_space/bytes (the default).
//! Values are the unsampled estimates, rounded. Locations carry the return
//! address minus one (as pprof's own legacy-heap parser does), their mapping
//! and their (inlined) lines; memx's own frames are left out.

use std::collections::HashMap;
use std::io::Write;

use crate::dump::Dump;
use crate::symbolize::Symbolizer;

#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    /// A varint field (uint64/int64/bool), left out when zero.
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v);
        }
    }
    fn int(&mut self, field: u32, v: i64) {
        self.uint(field, v as u64);
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn packed(&mut self, field: u32, vals: impl Iterator<Item = u64>) {
        let mut inner = Buf::default();
        for v in vals {
            inner.varint(v);
        }
        if !inner.0.is_empty() {
            self.bytes(field, &inner.0);
        }
    }
}

#[derive(Default)]
struct Strings {
    list: Vec<String>,
    index: HashMap<String, u64>,
}

impl Strings {
    fn id(&mut self, s: &str) -> u64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u64;
        self.list.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

fn value_type(strings: &mut Strings, ty: &str, unit: &str) -> Vec<u8> {
    let mut b = Buf::default();
    b.uint(1, strings.id(ty));
    b.uint(2, strings.id(unit));
    b.0
}

/// The uncompressed profile.proto bytes.
pub fn encode(dump: &Dump) -> Vec<u8> {
    let mut strings = Strings::default();
    strings.id("");
    let mut out = Buf::default();

    // 1: sample_type
    for (t, u) in [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ] {
        let v = value_type(&mut strings, t, u);
        out.bytes(1, &v);
    }

    let mut sym = Symbolizer::new(dump);
    sym.quiet = true;
    let mut loc_ids: HashMap<u64, Option<u64>> = HashMap::new();
    let mut locations: Vec<Vec<u8>> = Vec::new();
    let mut mapping_ids: HashMap<usize, u64> = HashMap::new();
    let mut mapping_order: Vec<usize> = Vec::new();
    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut function_msgs: Vec<Vec<u8>> = Vec::new();
    let mut mapping_has_lines: HashMap<usize, bool> = HashMap::new();
    let bytes_key = strings.id("bytes");

    // 2: sample
    for s in &dump.samples {
        let mut ids = Vec::with_capacity(s.stack.len());
        for &addr in &s.stack {
            let id = *loc_ids.entry(addr).or_insert_with(|| {
                let r = sym.resolve(addr);
                if r.frames.iter().all(|f| f.hidden) {
                    return None;
                }
                let id = locations.len() as u64 + 1;
                let mut loc = Buf::default();
                loc.uint(1, id);
                if let Some(m) = r.map {
                    let next = mapping_ids.len() as u64 + 1;
                    let mid = *mapping_ids.entry(m).or_insert_with(|| {
                        mapping_order.push(m);
                        next
                    });
                    loc.uint(2, mid);
                    let has = r.frames.iter().any(|f| f.line.is_some());
                    *mapping_has_lines.entry(m).or_default() |= has;
                }
                if !r.python {
                    loc.uint(3, addr.saturating_sub(1));
                }
                for f in &r.frames {
                    let file = f.file.clone().unwrap_or_default();
                    let fkey = (f.function.clone(), file.clone());
                    let next = function_msgs.len() as u64 + 1;
                    let fid = *functions.entry(fkey).or_insert_with(|| {
                        let mut fm = Buf::default();
                        fm.uint(1, next);
                        let name = strings.id(&f.function);
                        fm.uint(2, name);
                        fm.uint(3, name);
                        fm.uint(4, strings.id(&file));
                        function_msgs.push(fm.0);
                        next
                    });
                    let mut line = Buf::default();
                    line.uint(1, fid);
                    line.int(2, f.line.unwrap_or(0) as i64);
                    loc.bytes(4, &line.0);
                }
                locations.push(loc.0);
                Some(id)
            });
            if let Some(id) = id {
                ids.push(id);
            }
        }
        let e = &s.est;
        let values = [e.alloc_objs, e.alloc_bytes, e.inuse_objs, e.inuse_bytes];
        let mut sm = Buf::default();
        sm.packed(1, ids.into_iter());
        sm.packed(2, values.iter().map(|v| v.round() as i64 as u64));
        // A "bytes" label with the average object size, as Go writes.
        let (c, b) = if s.raw.alloc_objs > 0 {
            (s.raw.alloc_objs, s.raw.alloc_bytes)
        } else {
            (s.raw.inuse_objs, s.raw.inuse_bytes)
        };
        if let Some(avg) = b.checked_div(c) {
            let mut label = Buf::default();
            label.uint(1, bytes_key);
            label.int(3, avg as i64);
            label.uint(4, bytes_key);
            sm.bytes(3, &label.0);
        }
        out.bytes(2, &sm.0);
    }

    // 3: mapping
    for (i, &m) in mapping_order.iter().enumerate() {
        let e = &dump.maps[m];
        let mut mm = Buf::default();
        mm.uint(1, i as u64 + 1);
        mm.uint(2, e.start);
        mm.uint(3, e.end);
        mm.uint(4, e.offset);
        mm.uint(5, strings.id(e.file_path()));
        if let Some(id) = sym.build_id(m) {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            mm.uint(6, strings.id(&hex));
        }
        let lines = mapping_has_lines.get(&m).copied().unwrap_or(false) as u64;
        mm.uint(7, 1);
        mm.uint(8, lines);
        mm.uint(9, lines);
        mm.uint(10, lines);
        out.bytes(3, &mm.0);
    }
    // 4: location, 5: function
    for l in &locations {
        out.bytes(4, l);
    }
    for f in &function_msgs {
        out.bytes(5, f);
    }
    let space = strings.id("space");
    let bytes_unit = strings.id("bytes");
    let default_type = strings.id("inuse_space");
    let comment = strings.id(&format!("memx heap dump {}", dump.path.display()));
    let mtime = std::fs::metadata(&dump.path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let drop_frames = strings.id(crate::profile::ALLOC_FUNCTIONS_RE);
    // 6: string_table
    for s in &strings.list {
        out.bytes(6, s.as_bytes());
    }
    // 7: drop_frames (pprof starts stacks below these)
    out.int(7, drop_frames as i64);
    // 9: time_nanos
    out.int(9, mtime);
    // 11: period_type, 12: period
    let mut pt = Buf::default();
    pt.uint(1, space);
    pt.uint(2, bytes_unit);
    out.bytes(11, &pt.0);
    out.int(12, dump.rate as i64);
    // 13: comment, 14: default_sample_type
    out.packed(13, std::iter::once(comment));
    out.int(14, default_type as i64);
    out.0
}

/// gzip'd profile.proto.
pub fn gzip(dump: &Dump) -> Result<Vec<u8>, String> {
    let raw = encode(dump);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&raw)
        .and_then(|_| enc.finish())
        .map_err(|e| format!("compressing: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut b = Buf::default();
        b.varint(300);
        assert_eq!(b.0, vec![0xac, 0x02]);
        let mut b = Buf::default();
        b.int(1, -1);
        assert_eq!(b.0.len(), 11);
    }
}
