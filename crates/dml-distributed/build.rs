//! Compiles the c10d shim (src/shim.cpp) against the LibTorch headers (`$LIBTORCH`) and gloo's
//! (`$DML_GLOO_INCLUDE`), both put in place by `cargo xtask libtorch`, and bakes the rpath to
//! LibTorch with build/libtorch_rpath.rs, as for the other crates.
//!
//! When LibTorch is the CUDA one (`$LIBTORCH/lib/libtorch_cuda.so` exists, after
//! `cargo xtask libtorch --cuda`), the shim's NCCL part is compiled too (`DML_WITH_NCCL`,
//! `USE_C10D_NCCL`), against the CUDA runtime and NCCL headers of the nvidia packages that the
//! torch wheel installed beside it (or the folders in `$DML_CUDA_INCLUDE`, `:`-separated), and
//! the crate gets `--cfg dml_nccl`.

use std::path::{Path, PathBuf};

#[path = "../../build/libtorch_rpath.rs"]
mod rpath;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-env-changed=DML_GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=DML_CUDA_INCLUDE");
    println!("cargo::rustc-check-cfg=cfg(dml_nccl)");
    // The LibTorch check, its rpath and `libtorch.so` kept needed: as for every crate that links
    // tch.
    let libtorch = rpath::link_libtorch();
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
    let lib = libtorch.join("lib");
    // Which variant `current` points at decides this; switching variants (`cargo xtask
    // libtorch [--cuda]`) cleans this crate so that the script reruns.
    let nccl = lib.join("libtorch_cuda.so").exists();
    let mut build = cc::Build::new();
    build
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
        .flag("-w");
    if nccl {
        for dir in cuda_includes(&lib) {
            build.include(dir);
        }
        build.flag("-DDML_WITH_NCCL").flag("-DUSE_C10D_NCCL");
    }
    build.compile("dml_distributed_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if nccl {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-cfg=dml_nccl");
    }
}

/// The folders holding `cuda_runtime_api.h` (with cuBLAS', cuSPARSE's and cuSOLVER's headers,
/// which ATen's CUDA headers include) and `nccl.h`: `$DML_CUDA_INCLUDE`, else the torch wheel's
/// nvidia packages (`site-packages/nvidia/{cu13,nccl}/include`, found from the real path of
/// `$LIBTORCH/lib`, which is `site-packages/torch/lib`).
fn cuda_includes(lib: &Path) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = match std::env::var_os("DML_CUDA_INCLUDE") {
        Some(v) if !v.is_empty() => std::env::split_paths(&v).collect(),
        _ => {
            let site = lib
                .canonicalize()
                .ok()
                .and_then(|l| Some(l.parent()?.parent()?.to_path_buf()));
            let nvidia = site.map(|s| s.join("nvidia")).unwrap_or_default();
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(&nvidia)
                .map(|it| {
                    it.filter_map(|e| e.ok().map(|e| e.path().join("include")))
                        .filter(|d| d.is_dir())
                        .collect()
                })
                .unwrap_or_default();
            dirs.sort();
            dirs
        }
    };
    for header in ["cuda_runtime_api.h", "nccl.h", "cublas_v2.h", "cusparse.h"] {
        if !dirs.iter().any(|d| d.join(header).exists()) {
            panic!(
                "{header} not found in {dirs:?}: the NCCL part of dml-distributed's shim needs \
                 the CUDA runtime and NCCL headers of the packages LibTorch was built with. \
                 Run `cargo xtask libtorch --cuda` (the torch wheel's nvidia packages ship them), \
                 or set DML_CUDA_INCLUDE to the folders that hold them"
            );
        }
    }
    dirs
}
