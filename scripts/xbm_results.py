"""Cross-batch memory on and off: train configs/xbm/<loss>.toml with and without its [memory]
table on MNIST and Fashion-MNIST over several seeds with the `dml` binary, and tabulate every
held-out metric beside the raw-input and untrained baselines (issue #17, docs/results.md).

    cargo build --release -p dml
    python3 scripts/xbm_results.py --jobs 2          # trains what is missing, then tabulates
    python3 scripts/xbm_results.py --tabulate-only   # re-renders the table and the chart

Each run is `dml train` with `run.seed` set, written to runs/xbm/<set>/<loss>-<memory>/seed-<s>/
(`memory` is `on` or `off`; `off` is the same config without the [memory] table). A run whose
report.json exists is not trained again, so the script can be stopped and restarted. The
untrained network depends only on the seed (its weights are drawn before anything else), so the
first cell of each seed evaluates it, and the raw input is evaluated once per set. Writes
runs/xbm/results.{md,json}, and per set runs/xbm/<set>/compare.{json,md} and the MAP@R chart
runs/xbm/<set>/map_at_r.{png,svg} (drawn by `dml compare --tabulate`).
"""

import argparse
import concurrent.futures
import json
import pathlib
import re
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DML = ROOT / "target" / "release" / "dml"
LOSSES = ["contrastive", "multi_similarity"]
MEMORY = ["off", "on"]
SETS = {
    "mnist": 'kind = "mnist"\npath = "data/mnist"',
    "fashion-mnist": 'kind = "fashion_mnist"\npath = "data/fashion-mnist"',
}
METRICS = [
    ("precision_at_1", "P@1"),
    ("recall_at_8", "R@8"),
    ("r_precision", "R-prec."),
    ("map_at_r", "MAP@R"),
    ("nmi", "NMI"),
]


def config_text(data_set, loss, memory, seed, out_dir, eval_before, raw_input):
    text = (ROOT / "configs" / "xbm" / f"{loss}.toml").read_text()
    text = text.replace(SETS["mnist"], SETS[data_set])
    if memory == "off":
        text, n = re.subn(r"(?ms)^\[memory\]\n.*?\n\n", "", text)
        assert n == 1, "configs/xbm has one [memory] table followed by a blank line"
    text = re.sub(r"(?m)^seed = \d+$", f"seed = {seed}", text, count=1)
    text = re.sub(r'(?m)^output_dir = ".*"$', f"output_dir = {json.dumps(str(out_dir))}", text, count=1)
    text = re.sub(r'(?m)^name = ".*"$', f'name = "xbm-{data_set}-{loss}-{memory}"', text, count=1)
    extra = f"\neval_before = {'true' if eval_before else 'false'}\nplots = false\n"
    text = text.replace("[train]\n", "[train]" + extra, 1)
    text = text.replace("[eval]\n", f"[eval]\nraw_input = {'true' if raw_input else 'false'}\n", 1)
    return text


def run_dir(out, data_set, loss, memory, seed):
    return out / data_set / f"{loss}-{memory}" / f"seed-{seed}"


def train(out, job):
    data_set, loss, memory, seed, eval_before, raw_input = job
    d = run_dir(out, data_set, loss, memory, seed)
    if (d / "report.json").exists():
        return d, 0.0
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "run.toml"
    cfg.write_text(config_text(data_set, loss, memory, seed, d, eval_before, raw_input))
    start = time.time()
    with open(d / "train.log", "w") as log:
        subprocess.run([str(DML), "train", "--config", str(cfg)], cwd=ROOT, stdout=log, stderr=log, check=True)
    return d, time.time() - start


def summary(values):
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}


def cell(s):
    if s is None:
        return "–"
    pct = lambda v: f"{100 * v:.1f}"
    if s["n"] == 1:
        return pct(s["mean"])
    return f"{pct(s['mean'])} ({pct(s['min'])}–{pct(s['max'])})"


def tabulate(out, sets, seeds):
    result = {"seeds": seeds, "sets": {}}
    lines = [
        "Held-out metrics (%): the mean over the seeds and the (min–max) range; P × K = 4 × 8,",
        "1,500 steps; memory 8,192 from step 300 (configs/xbm/).",
        "",
    ]
    for data_set in sets:
        rows = {}
        raw, raw_report, untrained = None, None, {}
        for loss in LOSSES:
            for memory in MEMORY:
                runs = []
                for seed in seeds:
                    d = run_dir(out, data_set, loss, memory, seed)
                    if not (d / "report.json").exists():
                        continue
                    report = json.loads((d / "report.json").read_text())
                    if (report.get("raw_input") or {}).get("metrics"):
                        raw_report = report["raw_input"]
                        raw = raw_report["metrics"]
                    if report.get("initial_metrics"):
                        untrained[seed] = report["initial_metrics"]
                    runs.append({"seed": seed, "metrics": report["final_metrics"], "train_seconds": report["train_seconds"]})
                if runs:
                    rows[f"{loss}, memory {memory}"] = runs
        table = {}
        if raw:
            table["raw input (pixels)"] = {k: summary([raw[k]]) for k, _ in METRICS}
        if untrained:
            table["untrained network"] = {
                k: summary([m[k] for m in untrained.values()]) for k, _ in METRICS
            }
        for name, runs in rows.items():
            table[name] = {k: summary([r["metrics"][k] for r in runs]) for k, _ in METRICS}
            table[name]["train_seconds"] = summary([r["train_seconds"] for r in runs])
        result["sets"][data_set] = {"table": table, "runs": rows, "raw_input": raw, "untrained": untrained}
        chart(out, data_set, seeds, raw_report, untrained, rows)
        lines += [f"**{data_set}**", "", "| | " + " | ".join(h for _, h in METRICS) + " | train s |", "|---" * (len(METRICS) + 2) + "|"]
        for name, t in table.items():
            secs = f"{t['train_seconds']['mean']:.0f}" if "train_seconds" in t else ""
            lines.append(f"| {name} | " + " | ".join(cell(t.get(k)) for k, _ in METRICS) + f" | {secs} |")
        lines.append("")
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


def chart(out, data_set, seeds, raw_report, untrained, rows):
    """The set's runs as a `dml compare` report (each memory setting a column of the grid), so
    `dml compare --tabulate` draws the MAP@R chart beside the baselines."""
    report = {
        "recall_at": [1, 2, 4, 8],
        "epochs": 15,
        "seeds": seeds,
        "raw_input": raw_report,
        "untrained": [{"seed": s, "metrics": m} for s, m in sorted(untrained.items())],
        "cells": [],
    }
    for name, runs in rows.items():
        loss, memory = name.split(", ")
        report["cells"].append({"loss": loss, "miner": memory, "runs": runs})
    target = out / data_set
    (target / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    # The chart's title is the config's run name.
    text = (ROOT / "configs" / "xbm" / "contrastive.toml").read_text()
    text = re.sub(r'(?m)^name = ".*"$', f'name = "{data_set}, P4 x K8, cross-batch memory off / on"', text, count=1)
    (target / "chart.toml").write_text(text)
    subprocess.run(
        [str(DML), "compare", "--tabulate", "--config", str(target / "chart.toml"), "--output-dir", str(target)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="mnist,fashion-mnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (each uses one LibTorch thread)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "xbm"))
    ap.add_argument("--tabulate-only", action="store_true")
    a = ap.parse_args()
    sets = a.sets.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not a.tabulate_only:
        # Seeds outer, so every cell of the first seed is done first; the first cell of a seed
        # evaluates the untrained network, the very first of a set the raw input.
        jobs = []
        for seed in seeds:
            for data_set in sets:
                for loss in LOSSES:
                    for memory in MEMORY:
                        first = loss == LOSSES[0] and memory == MEMORY[0]
                        jobs.append((data_set, loss, memory, seed, first, first and seed == seeds[0]))
        with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
            futures = {pool.submit(train, out, job): job for job in jobs}
            for n, f in enumerate(concurrent.futures.as_completed(futures), 1):
                data_set, loss, memory, seed, _, _ = futures[f]
                path, secs = f.result()
                print(f"[{n}/{len(jobs)}] {data_set} {loss} memory {memory} seed {seed}: {secs:.0f} s ({path})", flush=True)
    tabulate(out, sets, seeds)


if __name__ == "__main__":
    main()
