#!/bin/bash
# The proxy losses' rate and steps on the emoji (docs/results.md, "The proxy losses' rate and
# steps on the emoji", after the "Sampling Matters" grid). Proxy-Anchor and the normalised
# softmax (no miner)
# on the fine-tuned MobileNetV2 recipe of configs/emoji-mobilenet.toml, unchanged (backbone 1e-4,
# head 1e-3, cosine schedule, backbone frozen for the first epoch) but for the rate of the loss's
# own parameters (optimizer.loss_lr, the proxies / class vectors) and the epochs:
#   stage1 LOSS   loss_lr 1e-3, 1e-2, 1e-1 at 5 epochs (500 steps), seed 0; for Proxy-Anchor,
#                 1e-4 too when all three collapse (the run's report.json says `collapse`)
#   stage2 LOSS   the loss's best loss_lr of stage 1 (MAP@R) at 20 epochs (2,000 steps; the
#                 cosine schedule spans the run), seed 0
#   stage3 SEED   seed SEED of the best seed-0 cell of either stage, same epochs and rate
#   pair EPOCHS   the reference at the same budget: the grid's best pair cell (contrastive with
#                 batch-hard mining, the recipe's own [loss] and [miner]) at EPOCHS, seed 0, in
#                 runs/proxy-sweep/contrastive/e<epochs>-lrna-s0/
#   table         every finished run in one markdown table (runs/proxy-sweep/summary.md)
#   all           stage1 and stage2 of both losses, stage3 1 and 2, then table, in one process
#                 (not pair)
# The raw-input and frozen-backbone baselines are skipped ([eval] of the derived config
# runs/proxy-sweep/emoji-mobilenet-proxies.toml, written here from configs/emoji-mobilenet.toml);
# docs/results.md has them for this recipe. Each run is its own `dml compare` grid of one cell in
# runs/proxy-sweep/<loss>/e<epochs>-lr<loss_lr>-s<seed>/ (compare.md, compare.json, and the
# run's folder <loss>-none/ with report.json and metrics.jsonl). Resumable: run the same part
# again after an interruption, `dml compare` skips finished runs and resumes a stopped one from
# its checkpoint. Needs `cargo xtask data emoji` and `cargo xtask weights mobilenet-v2`.
# With two cores, one process per loss, then one per loss again, then one per seed:
#     nohup scripts/proxy_sweep.sh stage1 proxy_anchor > runs/proxy-sweep/pa1.log 2>&1 &
#     nohup scripts/proxy_sweep.sh stage1 normalized_softmax > runs/proxy-sweep/ns1.log 2>&1 &
#     (then stage2 proxy_anchor / stage2 normalized_softmax, then stage3 1 / stage3 2, then
#     pair 5 / pair 20, then table)
# DML=path/to/dml uses that binary instead of building ./target/release/dml.
set -euo pipefail
cd "$(dirname "$0")/.."

root=runs/proxy-sweep
cfg=$root/emoji-mobilenet-proxies.toml

make_config() {
  [ -f "$cfg" ] && return
  mkdir -p "$root"
  {
    echo "# Derived from configs/emoji-mobilenet.toml by scripts/proxy_sweep.sh: only output_dir"
    echo "# and [eval] differ (raw_input = false, frozen_backbone = false)."
    echo
    sed -e 's|^output_dir = .*|output_dir = "runs/proxy-sweep"|' \
        -e 's|^\[eval\]$|[eval]\nraw_input = false\nfrozen_backbone = false|' \
        configs/emoji-mobilenet.toml
  } > "$cfg.tmp"
  mv "$cfg.tmp" "$cfg"
}

# cell LOSS LOSS_LR EPOCHS SEED: one run; its wall time (training and evaluation, of the
# process that finished it: a resumed run's counts from the resumption) goes to wall_seconds
# beside compare.json. The table's training seconds are the epochs' own, summed.
cell() {
  local dir=$root/$1/e$3-lr$2-s$4 start
  echo "== $(date -u +%FT%TZ) $1 loss_lr $2 epochs $3 seed $4 -> $dir"
  start=$(date +%s)
  "$dml" compare --config "$cfg" --losses "$1" --miners none --loss-lr "$2" --epochs "$3" \
    --seeds "$4" --output-dir "$dir"
  [ -f "$dir/wall_seconds" ] || echo $(($(date +%s) - start)) > "$dir/wall_seconds"
  echo "== $(date -u +%FT%TZ) done $dir"
}

# best [LOSS]: "loss loss_lr epochs" of the best finished seed-0 run by MAP@R (of LOSS at 5
# epochs when LOSS is given, else of either proxy loss at any epochs).
best() {
  python3 - "$root" "${1:-}" <<'EOF'
import glob, json, os, re, sys
root, loss = sys.argv[1], sys.argv[2]
pattern = f"{root}/{loss}/e5-lr*-s0" if loss else f"{root}/{{proxy_anchor,normalized_softmax}}/e*-lr*-s0"
best = None
dirs = glob.glob(pattern) if loss else [d for l in ("proxy_anchor", "normalized_softmax")
                                        for d in glob.glob(f"{root}/{l}/e*-lr*-s0")]
for d in dirs:
    try:
        c = json.load(open(os.path.join(d, "compare.json")))
    except OSError:
        continue
    for cell in c["cells"]:
        for r in cell["runs"]:
            m = (r.get("metrics") or {}).get("map_at_r")
            if m is not None and (best is None or m > best[0]):
                e, lr, _ = re.fullmatch(r"e(\d+)-lr(.+)-s(\d+)", os.path.basename(d)).groups()
                best = (m, cell["loss"], lr, e)
if best is None:
    sys.exit(f"no finished run matches {pattern}")
print(*best[1:])
EOF
}

# collapsed LOSS LOSS_LR EPOCHS SEED: whether that run's report says its embeddings collapsed.
collapsed() {
  python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("collapse") else 1)' \
    "$root/$1/e$3-lr$2-s$4/$1-none/report.json"
}

# pair EPOCHS: contrastive + batch_hard (no loss parameters: loss_lr "na") at EPOCHS, seed 0.
pair() {
  local dir=$root/contrastive/e$1-lrna-s0 start
  echo "== $(date -u +%FT%TZ) contrastive batch_hard epochs $1 seed 0 -> $dir"
  start=$(date +%s)
  "$dml" compare --config "$cfg" --losses contrastive --miners batch_hard --epochs "$1" \
    --seeds 0 --output-dir "$dir"
  [ -f "$dir/wall_seconds" ] || echo $(($(date +%s) - start)) > "$dir/wall_seconds"
  echo "== $(date -u +%FT%TZ) done $dir"
}

stage1() {
  local lr all=1
  for lr in 1e-3 1e-2 1e-1; do
    cell "$1" "$lr" 5 0
    collapsed "$1" "$lr" 5 0 || all=0
  done
  if [ "$1" = proxy_anchor ] && [ "$all" = 1 ]; then
    cell "$1" 1e-4 5 0
  fi
}

stage2() {
  local b
  b=($(best "$1"))
  cell "$1" "${b[1]}" 20 0
}

stage3() {
  local b
  b=($(best))
  cell "${b[0]}" "${b[1]}" "${b[2]}" "$1"
}

table() {
  python3 - "$root" <<'EOF' | tee "$root/summary.md"
import glob, json, os, re, sys
root = sys.argv[1]
print("| loss | miner | loss_lr | epochs | steps | seed | R@1 | P@1 | R-prec | MAP@R | NMI | spread | untrained spread | train s | wall s | collapse |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
rows = []
for d in glob.glob(f"{root}/*/e*-s*"):
    loss = os.path.basename(os.path.dirname(d))
    name = re.fullmatch(r"e(\d+)(?:-lr(.+))?-s(\d+)", os.path.basename(d))
    if name is None:
        continue
    e, lr, s = name.groups()
    lr = lr or "na"
    runs = glob.glob(os.path.join(d, f"{loss}-*"))
    if not runs:
        continue
    run = runs[0]
    miner = os.path.basename(run)[len(loss) + 1:]
    try:
        rep = json.load(open(os.path.join(run, "report.json")))
    except OSError:
        continue
    m = rep.get("final_metrics")
    if not m:
        continue
    r1 = m.get("recall_at_1")
    spread, epoch_seconds = None, {}
    for line in open(os.path.join(run, "metrics.jsonl")):
        j = json.loads(line)
        if j.get("spread") is not None:
            spread = j["spread"]
        epoch_seconds[j["epoch"]] = j.get("train_seconds") or 0.0
    c = json.load(open(os.path.join(d, "compare.json")))
    us = next((u.get("spread") for u in c["untrained"] if u["seed"] == int(s)), None)
    try:
        wall = open(os.path.join(d, "wall_seconds")).read().strip()
    except OSError:
        wall = ""
    fmt = lambda x: "" if x is None else f"{100 * x:.1f}"
    rows.append((loss, int(e), float(lr) if lr != "na" else 0.0, int(s), "| " + " | ".join([
        loss, miner, lr, e, str(100 * int(e)), s, fmt(r1), fmt(m["precision_at_1"]),
        fmt(m.get("r_precision")), fmt(m.get("map_at_r")), fmt(m.get("nmi")),
        "" if spread is None else f"{spread:.4f}", "" if us is None else f"{us:.4f}",
        f"{sum(epoch_seconds.values()):.0f}", wall, "yes" if rep.get("collapse") else "no"]) + " |"))
for r in sorted(rows):
    print(r[-1])
EOF
}

main() {
  dml=${DML:-./target/release/dml}
  [ -n "${DML:-}" ] || cargo build --release -p dml --bin dml
  make_config
  case "${1:-all}" in
    stage1) stage1 "${2:?stage1 needs a loss}" ;;
    stage2) stage2 "${2:?stage2 needs a loss}" ;;
    stage3) stage3 "${2:?stage3 needs a seed}" ;;
    pair) pair "${2:?pair needs the epochs}" ;;
    table) table ;;
    all)
      stage1 proxy_anchor; stage1 normalized_softmax
      stage2 proxy_anchor; stage2 normalized_softmax
      stage3 1; stage3 2
      table ;;
    *) echo "usage: $0 [stage1 LOSS | stage2 LOSS | stage3 SEED | pair EPOCHS | table | all]" >&2; exit 2 ;;
  esac
}

main "$@"; exit
