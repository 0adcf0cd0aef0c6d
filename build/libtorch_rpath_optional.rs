//! Build script for the crates that do not need LibTorch themselves (dml-kernels without its
//! `tch` feature, dml-sampling, dml-eval) but whose test binaries still link it when the whole
//! workspace is built together: Cargo unifies features across the packages of one build, so
//! `cargo test --workspace` compiles dml-kernels with `tch` for everyone, and the test binary of
//! dml-eval then needs `libtorch_cpu.so` at run time.
//!
//! So: when LibTorch is installed, bake the same rpath as `libtorch_rpath.rs`; when it is not,
//! do nothing, and these crates build and test on a machine without LibTorch.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        return;
    };
    let lib = libtorch.join("lib");
    if lib.is_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
