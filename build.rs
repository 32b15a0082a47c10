//! Links the stack unwinder (`src/sys/unwind.rs`) statically from the C
//! compiler's libgcc_eh.a, so that libmemx.so does not load libgcc_s.so.1
//! into every program: that shared library and the relocations the loader
//! applies to it cost about 80 KiB of resident memory in each process,
//! which is most of what a small program's peak RSS grows by under memx.
//! The static copy's symbols are not exported (only the `#[no_mangle]`
//! functions are), so C++ exceptions keep using the program's own
//! unwinder. Where no libgcc_eh.a is found, libgcc_s is linked as before.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let found = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| Path::new(p).is_absolute() && Path::new(p).exists());
    match found {
        Some(path) => {
            let dir = Path::new(&path).parent().expect("a file has a folder");
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static=gcc_eh");
        }
        None => println!("cargo:rustc-link-lib=dylib=gcc_s"),
    }
}
