#!/bin/bash
# Trains configs/<set>.toml over seeds 0, 1, 2 with the release `dml` binary, one run after the
# other, each into runs/<set>/seed<N> with its log beside it (runs/<set>/seed<N>.log); a seed whose
# report.json is already there is skipped and one with a checkpoint but no report is resumed
# (`--resume`), so running it again after an interruption continues.
# Then prints the table of docs/results.md (scripts/many_class_table.py).
#     nohup scripts/many_class_seeds.sh glyphs > runs/glyphs.log 2>&1 &
set -euo pipefail
set_name=${1:?usage: scripts/many_class_seeds.sh NAME [config] (config defaults to configs/NAME.toml)}
config=${2:-configs/$set_name.toml}
cd "$(dirname "$0")/.."
dml=${DML:-./target/release/dml}
[ -n "${DML:-}" ] || cargo build --release -p dml --bin dml
mkdir -p "runs/$set_name"
for seed in 0 1 2; do
  out="runs/$set_name/seed$seed"
  if [ -f "$out/report.json" ]; then
    echo "seed $seed: $out/report.json is there, skipped"
    continue
  fi
  resume=()
  if [ -f "$out/checkpoint.safetensors" ]; then
    resume=(--resume)
  fi
  echo "seed $seed: training into $out ${resume[*]:-} ($(date -u +%FT%TZ))"
  "$dml" train --config "$config" --seed "$seed" --output-dir "$out" "${resume[@]}" >> "$out.log" 2>&1
  tail -n 12 "$out.log"
done
python3 scripts/many_class_table.py "runs/$set_name"/seed{0,1,2}
