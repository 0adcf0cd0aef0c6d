"""The results table of docs/results.md from `dml train` runs over several seeds.

Reads <run>/report.json of each run folder given (one per seed) and prints one markdown table:
the raw input, the untrained network, the frozen pretrained backbone (when the runs have one) and
the trained network, each metric in percent as the mean
over the runs followed by the (min–max) range, plus the training seconds. Standard library only:
    python3 scripts/many_class_table.py runs/emoji/seed0 runs/emoji/seed1 runs/emoji/seed2
"""
import json
import pathlib
import sys

METRICS = [
    ("recall_at_1", "R@1"),
    ("recall_at_2", "R@2"),
    ("recall_at_4", "R@4"),
    ("recall_at_8", "R@8"),
    ("precision_at_1", "P@1"),
    ("r_precision", "R-prec"),
    ("map_at_r", "MAP@R"),
    ("nmi", "NMI"),
]


def cell(values):
    values = [100 * v for v in values]
    mean = sum(values) / len(values)
    if len(values) == 1 or max(values) - min(values) < 0.05:
        return f"{mean:.1f}"
    return f"{mean:.1f} ({min(values):.1f}–{max(values):.1f})"


reports = [json.loads((pathlib.Path(d) / "report.json").read_text()) for d in sys.argv[1:]]
rows = [
    ("*raw input*", [(r.get("raw_input") or {}).get("metrics") for r in reports]),
    ("*untrained network*", [r["initial_metrics"] for r in reports]),
    ("*frozen backbone*", [r.get("frozen_backbone") for r in reports]),
    ("trained", [r["final_metrics"] for r in reports]),
]
print("| | " + " | ".join(name for _, name in METRICS) + " | runs |")
print("|---|" + "---:|" * len(METRICS) + "---:|")
for label, metrics in rows:
    if any(m is None for m in metrics):
        continue
    cells = [cell([m[key] for m in metrics]) for key, _ in METRICS]
    print(f"| {label} | " + " | ".join(cells) + f" | {len(metrics)} |")
seconds = [r["train_seconds"] for r in reports]
print()
print(
    f"Training seconds per run: {sum(seconds) / len(seconds):.0f} "
    f"({min(seconds):.0f}–{max(seconds):.0f}), epochs {reports[0]['epochs']}"
)
