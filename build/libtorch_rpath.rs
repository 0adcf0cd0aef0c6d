//! Build script shared by every crate whose tests or binaries link LibTorch.
//!
//! Cargo puts link-search folders on the loader path only when they lie inside `target/`, so
//! without this a test binary would not find `libtorch_cpu.so` at run time. We bake an rpath to
//! `$LIBTORCH/lib` (set by `.cargo/config.toml` to `.libtorch/current`, a symlink to the installed
//! variant), so `cargo test`, `cargo run` and the built binaries run with nothing exported.
//!
//! `--no-as-needed -ltorch` keeps `libtorch.so` in the binary's NEEDED list even though no symbol
//! is taken from it directly: on a CUDA install that library is what pulls in `libtorch_cuda.so`,
//! and without it CUDA silently reports "not available" (tch-rs issues #980, #907).

use std::path::PathBuf;

// Also compiled as a module of crates/dml-distributed/build.rs, which calls `link_libtorch`
// after compiling its shim; there `main` is unused.
#[allow(dead_code)]
fn main() {
    link_libtorch();
}

/// Checks that LibTorch is installed (with the advice to install it if not), bakes the rpath and
/// keeps `libtorch.so` needed; returns `$LIBTORCH`.
pub fn link_libtorch() -> PathBuf {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!("LIBTORCH is not set: run `cargo xtask libtorch` from the workspace root");
    };
    // Rerun when the install changes or disappears (torch-sys itself only watches the variable),
    // so a deleted LibTorch gives the message below instead of a loader error at run time.
    println!(
        "cargo:rerun-if-changed={}",
        libtorch.join("build-version").display()
    );
    if !libtorch.join("build-version").exists() {
        panic!(
            "LibTorch not found at {}: run `cargo xtask libtorch` to install it",
            libtorch.display()
        );
    }
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch,--as-needed");
    libtorch
}
