#!/usr/bin/env bash
# The NCCL backend of dml-distributed on one GPU (world size 1): all_reduce, all_gather,
# broadcast and barrier on CUDA tensors, with value checks (crates/dml-distributed/tests/nccl.rs).
#
#   scripts/nccl_smoke.sh          # on a machine with an NVIDIA GPU and driver
#
# Installs the CUDA LibTorch first if needed (`cargo xtask libtorch --cuda`: ~3 GB of PyPI
# wheels, once) and leaves it active; `cargo xtask libtorch` switches back to the CPU one.
# CUDA_VISIBLE_DEVICES picks the GPU (the test uses device 0 of those visible).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo xtask libtorch --cuda
cargo test -p dml-distributed --test nccl -- --ignored --nocapture
