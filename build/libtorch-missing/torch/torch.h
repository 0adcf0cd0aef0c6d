// dml: reached only when LibTorch is not installed in this checkout.
//
// `.cargo/config.toml` puts this folder on the C++ include path through CPLUS_INCLUDE_PATH, which
// gcc searches only after the `-I` folders torch-sys passes for the real LibTorch: with LibTorch
// installed this file is never seen; without it, torch-sys's C++ wrapper stops here with the fix,
// instead of with "torch/torch.h: No such file or directory".
#error "LibTorch is not installed in this checkout: run `cargo xtask libtorch` (or `cargo xtask test`, which installs it first), then build again"
#include <dml_stops_here__run_cargo_xtask_libtorch>
