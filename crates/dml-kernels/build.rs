//! With feature `tch`, bake an rpath to LibTorch into test binaries (see
//! `build/libtorch_rpath.rs` at the workspace root, which this mirrors); without it, do nothing,
//! so the ndarray kernels build on machines without LibTorch.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_TCH");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    // torch-sys reports a missing LibTorch itself; only add the rpath when we know where it is.
    if let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) {
        let lib = libtorch.join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch,--as-needed");
    }
}
