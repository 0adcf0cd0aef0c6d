//! Compiles the c10d shim (src/shim.cpp) against the LibTorch headers (`$LIBTORCH`) and gloo's
//! (`$DML_GLOO_INCLUDE`), both put in place by `cargo xtask libtorch`, and bakes the rpath to
//! LibTorch as build/libtorch_rpath.rs does for the other crates.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=DML_GLOO_INCLUDE");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!("LIBTORCH is not set: run `cargo xtask libtorch` from the workspace root");
    };
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
    let gloo = std::env::var_os("DML_GLOO_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("DML_GLOO_INCLUDE is not set: run `cargo xtask libtorch`"));
    if !gloo.join("gloo/algorithm.h").exists() {
        panic!(
            "gloo's headers not found at {}: run `cargo xtask libtorch` to install them",
            gloo.display()
        );
    }
    let include = libtorch.join("include");
    cc::Build::new()
        .cpp(true)
        .file("src/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DUSE_C10D_GLOO")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // LibTorch's headers warn under C++17 (bit-field initialisers); they are not ours.
        .flag("-w")
        .compile("dml_distributed_shim");
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch,--as-needed");
}
