//! `memx jupyter ...`: handed to the memx Python package of the environment
//! this command was installed into (`<exe dir>/python -m memx jupyter`),
//! which writes the kernel spec for that interpreter.
//!
//! Owns: finding that interpreter. Must never: guess another Python (a
//! kernel spec names the interpreter that runs the kernel).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// The Python beside this binary: the environment's own interpreter when
/// `pip install memx` put this binary in its scripts directory.
fn python_beside_me() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own path: {e}"))?;
    let dir = exe.parent().unwrap_or(std::path::Path::new("/"));
    ["python3", "python"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "memx jupyter is part of the memx Python package, and there is no Python beside {}; \
                 run `python -m memx jupyter install` with the Python that has memx and ipykernel",
                exe.display()
            )
        })
}

/// Runs `<python> -m memx jupyter ARGS` in place of this process.
pub fn forward(args: Vec<OsString>) -> Result<i32, String> {
    let python = python_beside_me()?;
    let err = Command::new(&python)
        .args(["-m", "memx", "jupyter"])
        .args(args)
        .exec();
    Err(format!("cannot run {}: {err}", python.display()))
}
