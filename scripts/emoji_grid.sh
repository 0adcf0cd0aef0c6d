#!/bin/bash
# The "Sampling Matters" grid of issue #33 on the emoji set, with the ImageNet MobileNetV2 of
# configs/emoji-mobilenet.toml fine-tuned in every cell (500 steps), three seeds:
# contrastive, triplet and margin (learnable beta) x uniform, semi-hard, batch-hard and
# distance-weighted sampling, then multi-similarity with its miner, then Proxy-Anchor and the
# normalised softmax (no miner; their class vectors learn at 1e-2, a hundred times the
# backbone's rate, as the Proxy-Anchor paper sets them). Every part writes into
# runs/emoji-grid/ (compare.md, compare.json, the R@1 and MAP@R charts, the negatives'
# histograms); run again after an interruption, `dml compare` skips the finished runs and
# resumes a stopped one from its checkpoint.
#     nohup scripts/emoji_grid.sh > runs/emoji-grid.log 2>&1 &
# With two cores, `scripts/emoji_grid.sh pairs` and `scripts/emoji_grid.sh rest` run the two
# halves at once (the second into runs/emoji-grid-rest/), and
#     python3 scripts/merge_compare.py runs/emoji-grid runs/emoji-grid-rest
#     dml compare --config configs/emoji-mobilenet.toml --output-dir runs/emoji-grid --tabulate
# joins them: the runs are the same either way (each seed's runs start from the same weights
# and draw the same batches).
set -euo pipefail
cd "$(dirname "$0")/.."
dml=${DML:-./target/release/dml}
[ -n "${DML:-}" ] || cargo build --release -p dml --bin dml
part=${1:-all}
out=runs/emoji-grid
[ "$part" = rest ] && out=runs/emoji-grid-rest
base=(compare --config configs/emoji-mobilenet.toml --seeds 0,1,2 --output-dir "$out")
if [ "$part" != rest ]; then
  "$dml" "${base[@]}"
fi
if [ "$part" != pairs ]; then
  # A part in its own folder starts from the baselines the other part has evaluated, if any.
  if [ "$part" = rest ] && [ -f runs/emoji-grid/compare.json ]; then
    python3 scripts/merge_compare.py --baselines-only "$out" runs/emoji-grid
  fi
  "$dml" "${base[@]}" --losses proxy_anchor,normalized_softmax --miners none --loss-lr 1e-2
  "$dml" "${base[@]}" --losses multi_similarity --miners multi_similarity
fi
