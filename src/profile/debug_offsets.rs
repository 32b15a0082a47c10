//! The interpreter's own description of its layout, 3.13+: `_PyRuntime`
//! begins with `_Py_DebugOffsets` (cookie "xdebugpy", the version as
//! PY_VERSION_HEX, `free_threaded`, then groups of u64 offsets: runtime,
//! interpreter, thread state, frame, code, object, ... unicode, gc). The
//! struct itself changes between minor versions (fields are inserted), so
//! where each offset lives is keyed on its version field; offsets may move
//! between patch releases, so they are read, never assumed.
//!
//! Known struct versions: 3.13 (checked against 3.13.0's header and, at
//! start-up, against python.rs's table). 3.14 inserts fields (and tags
//! `f_executable`: low bit set, 1 = NULL; adds frame owner values,
//! `FRAME_OWNED_BY_INTERPRETER` = 3, C stack = 4): not verified here (no
//! 3.14 to run), so a newer version turns Python frames off with one line.
//!
//! Two values the struct lacks come from elsewhere: `_co_firsttraceable`
//! (from the 3.13 table: it only decides whether a frame is still in its
//! prologue) and sizeof(PyCompactUnicodeObject) = sizeof(PyASCIIObject)
//! + 16 (utf8_length, utf8), as in 3.12–3.14.
//!
//! Owns: nothing. Must never: be used from the allocation path (it runs
//! once, from `python::detect`).

use super::python::Layout;

pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// Why the offsets cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A struct version newer than any known here (PY_VERSION_HEX).
    Newer(u64),
    /// A free-threaded build (objects and frames laid out differently).
    FreeThreaded,
}

/// Word indices of the 3.13 struct's fields (`char cookie[8]` is word 0).
mod v3_13 {
    pub const FREE_THREADED: usize = 2;
    pub const TS_CURRENT_FRAME: usize = 23;
    pub const FRAME_PREVIOUS: usize = 29;
    pub const FRAME_EXECUTABLE: usize = 30;
    pub const FRAME_INSTR_PTR: usize = 31;
    pub const FRAME_OWNER: usize = 33;
    pub const CODE_FILENAME: usize = 35;
    pub const CODE_NAME: usize = 36;
    pub const CODE_ADAPTIVE: usize = 43;
    pub const UNICODE_ASCII_SIZE: usize = 70;
    /// Words in the struct.
    pub const LEN: usize = 73;
}

/// Words to read from `_PyRuntime` (enough for every known version).
pub const WORDS: usize = v3_13::LEN;

/// The layout `words` (the start of `_PyRuntime`, cookie checked by the
/// caller) describe; `table` supplies what the struct lacks.
pub fn layout(words: &[u64; WORDS], table: &Layout) -> Result<Layout, Refusal> {
    let version = words[1];
    let (major, minor) = (version >> 24, (version >> 16) & 0xff);
    if (major, minor) != (3, 13) {
        return Err(Refusal::Newer(version));
    }
    use v3_13::*;
    if words[FREE_THREADED] != 0 {
        return Err(Refusal::FreeThreaded);
    }
    let w = |i: usize| words[i] as usize;
    Ok(Layout {
        minor: 13,
        ts_frame: w(TS_CURRENT_FRAME),
        cframe_current: None,
        f_back: w(FRAME_PREVIOUS),
        f_code: w(FRAME_EXECUTABLE),
        f_instr: w(FRAME_INSTR_PTR),
        f_owner: w(FRAME_OWNER),
        f_is_entry: None,
        co_filename: w(CODE_FILENAME),
        co_name: w(CODE_NAME),
        co_code_adaptive: w(CODE_ADAPTIVE),
        co_firsttraceable: table.co_firsttraceable,
        ascii_size: w(UNICODE_ASCII_SIZE),
        compact_size: w(UNICODE_ASCII_SIZE) + 16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::python::LAYOUTS;

    /// A 3.13.0 `_Py_DebugOffsets` as its header lays it out, with the
    /// values of python.rs's 3.13 table where they are the same fields.
    fn v313(free_threaded: u64) -> [u64; WORDS] {
        let t = LAYOUTS.iter().find(|l| l.minor == 13).unwrap();
        let mut w = [0u64; WORDS];
        w[0] = u64::from_le_bytes(*COOKIE);
        w[1] = 0x030d_00f0;
        w[v3_13::FREE_THREADED] = free_threaded;
        w[v3_13::TS_CURRENT_FRAME] = t.ts_frame as u64;
        w[v3_13::FRAME_PREVIOUS] = t.f_back as u64;
        w[v3_13::FRAME_EXECUTABLE] = t.f_code as u64;
        w[v3_13::FRAME_INSTR_PTR] = t.f_instr as u64;
        w[v3_13::FRAME_OWNER] = t.f_owner as u64;
        w[v3_13::CODE_FILENAME] = t.co_filename as u64;
        w[v3_13::CODE_NAME] = t.co_name as u64;
        w[v3_13::CODE_ADAPTIVE] = t.co_code_adaptive as u64;
        w[v3_13::UNICODE_ASCII_SIZE] = t.ascii_size as u64;
        w
    }

    #[test]
    fn the_3_13_offsets_give_the_3_13_table() {
        let t = LAYOUTS.iter().find(|l| l.minor == 13).unwrap();
        assert_eq!(layout(&v313(0), t), Ok(*t));
    }

    #[test]
    fn newer_versions_and_free_threaded_builds_are_refused() {
        let t = LAYOUTS.iter().find(|l| l.minor == 13).unwrap();
        assert_eq!(layout(&v313(1), t), Err(Refusal::FreeThreaded));
        let mut w = v313(0);
        w[1] = 0x030e_00f0;
        assert_eq!(layout(&w, t), Err(Refusal::Newer(0x030e_00f0)));
    }
}
