#!/bin/bash
# The "Sampling Matters" grid of issue #33 on the emoji set, with the ImageNet MobileNetV2 of
# configs/emoji-mobilenet.toml fine-tuned in every cell (500 steps), three seeds:
# contrastive, triplet and margin (learnable beta) x uniform, semi-hard, batch-hard and
# distance-weighted sampling, then multi-similarity with its miner, then Proxy-Anchor and the
# normalised softmax (no miner). Every part writes into runs/emoji-grid/ (compare.md, compare.json,
# the R@1 and MAP@R charts); run again after an interruption, `dml compare` skips the finished
# runs and resumes a stopped one from its checkpoint.
#     nohup scripts/emoji_grid.sh > runs/emoji-grid.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
dml=${DML:-./target/release/dml}
[ -n "${DML:-}" ] || cargo build --release -p dml --bin dml
base=(compare --config configs/emoji-mobilenet.toml --seeds 0,1,2 --output-dir runs/emoji-grid)
"$dml" "${base[@]}"
"$dml" "${base[@]}" --losses multi_similarity --miners multi_similarity
"$dml" "${base[@]}" --losses proxy_anchor,normalized_softmax --miners none
