#!/bin/bash
# Issue #33's glyph rows: the ImageNet MobileNetV2 of configs/glyphs-mobilenet.toml fine-tuned on
# the CJK glyphs (6 epochs of 100 batches), three seeds: multi-similarity with its miner (the
# first recipe tried), the best pair recipe of the emoji grid (scripts/emoji_grid.sh: contrastive
# loss with batch-hard mining) and its best proxy recipe (the normalised softmax, class vectors
# at 1e-2, a hundred times the backbone's rate), beside the frozen backbone and the untrained
# network (the raw pixels are configs/glyphs.toml's baseline, on the same held-out items).
# Everything goes into runs/glyphs-grid/ (compare.md, compare.json, the R@1 and MAP@R charts);
# run again after an interruption to continue.
#     nohup scripts/glyphs_grid.sh > runs/glyphs-grid.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
dml=${DML:-./target/release/dml}
[ -n "${DML:-}" ] || cargo build --release -p dml --bin dml
base=(compare --config configs/glyphs-mobilenet.toml --seeds 0,1,2 --output-dir runs/glyphs-grid)
"$dml" "${base[@]}" --losses multi_similarity --miners multi_similarity
"$dml" "${base[@]}" --losses contrastive --miners batch_hard
"$dml" "${base[@]}" --losses normalized_softmax --miners none --loss-lr 1e-2
