//! With the `wheel` feature (which the Python package's build, maturin,
//! turns on): builds libmemx.so, the allocator crate at the top of this
//! workspace, and puts it into the Python package (python/memx/), where
//! maturin picks it up as package data beside the `memx` command. Without
//! the feature it does nothing: `cargo build --workspace` builds the
//! library itself.
//!
//! The library is built by a cargo of its own into a target directory of
//! its own (under OUT_DIR), so it never waits on this build's locks.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_WHEEL").is_none() {
        return;
    }
    let cli = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = cli
        .parent()
        .expect("cli/ is inside the workspace")
        .to_path_buf();
    let dest = root.join("python/memx/libmemx.so");
    // A deleted copy is made again. The copy keeps the built library's
    // mtime, so an unchanged one does not make this script run again.
    for input in ["src", "Cargo.toml", "Cargo.lock", "python/memx/libmemx.so"] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    let target_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("lib");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--lib", "-p", "memx", "--target-dir"])
        .arg(&target_dir);
    // What cargo told this script about this build (features, flags for the
    // `memx` binary, the target's linker) is not for the library's build;
    // the jobserver (CARGO_MAKEFLAGS) is shared.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        let cargo_own = k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_MAKEFLAGS";
        if cargo_own || k == "RUSTFLAGS" || k == "RUSTC_WRAPPER" {
            cmd.env_remove(&*k);
        }
    }
    let status = cmd.status().expect("cannot run cargo to build libmemx.so");
    assert!(status.success(), "building libmemx.so failed: {status}");
    let lib = target_dir.join("release/libmemx.so");
    std::fs::copy(&lib, &dest)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", lib.display(), dest.display()));
    let built = std::fs::metadata(&lib).and_then(|m| m.modified());
    let kept = built.and_then(|t| {
        std::fs::File::options()
            .write(true)
            .open(&dest)?
            .set_modified(t)
    });
    kept.unwrap_or_else(|e| panic!("cannot set the mtime of {}: {e}", dest.display()));
}
