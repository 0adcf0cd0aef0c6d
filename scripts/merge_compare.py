#!/usr/bin/env python3
"""Joins grids of `dml compare` that were trained in separate output folders into one.

    python3 scripts/merge_compare.py runs/emoji-grid runs/emoji-grid-proxies
    dml compare --config configs/emoji-mobilenet.toml --output-dir runs/emoji-grid --tabulate

A long grid can be split over processes (one core each) by giving each a part of the cells and
its own `--output-dir`; this adds the runs of the other folders (`SRC`) to `DEST/compare.json`
and copies their run folders beside `DEST`'s, after checking that the grids are the same
(epochs, Recall@K) and that what both evaluated (the untrained network of a seed, the raw input,
the frozen backbone) is the same to 1e-9, as it is for runs of the same config and seeds. A run
`DEST` already holds is kept. `dml compare --tabulate` then redraws the table and the charts.

With `--baselines-only` it copies only the baselines (creating `DEST/compare.json` when there
is none): a part of a grid started in its own folder then skips the baselines another part
already evaluated (the raw input of a large set can take longer than a run).
"""

import argparse
import json
import os
import shutil
import sys


def same_metrics(a, b):
    """Equal up to 1e-9 in every number (metrics dicts, nested as compare.json has them)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_metrics(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_metrics(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9
    return a == b


def merge(dest, src, dest_dir, src_dir, cells=True):
    for key in ("epochs", "recall_at"):
        if dest[key] != src[key]:
            sys.exit(f"{src_dir}: {key} {src[key]} is not {dest_dir}'s {dest[key]}: another grid")
    for base in ("raw_input", "frozen_backbone"):
        if src.get(base) is None:
            continue
        if dest.get(base) is None:
            dest[base] = src[base]
        elif not same_metrics(
            dest[base].get("metrics", dest[base]), src[base].get("metrics", src[base])
        ):
            sys.exit(f"{src_dir}: its {base} baseline differs from {dest_dir}'s: another setup")
    have = {u["seed"]: u for u in dest["untrained"]}
    for u in src["untrained"]:
        if u["seed"] not in have:
            dest["untrained"].append(u)
        elif not same_metrics(have[u["seed"]]["metrics"], u["metrics"]):
            sys.exit(
                f"{src_dir}: the untrained network of seed {u['seed']} differs from "
                f"{dest_dir}'s: another config or version"
            )
    for seed in src["seeds"]:
        if seed not in dest["seeds"]:
            dest["seeds"].append(seed)
    added = 0
    for cell in src["cells"] if cells else []:
        into = next(
            (c for c in dest["cells"] if (c["loss"], c["miner"]) == (cell["loss"], cell["miner"])),
            None,
        )
        if into is None:
            into = {"loss": cell["loss"], "miner": cell["miner"], "runs": []}
            dest["cells"].append(into)
        seeds = {r["seed"] for r in into["runs"]}
        for run in cell["runs"]:
            if run["seed"] not in seeds:
                into["runs"].append(run)
                added += 1
        folder = f"{cell['loss']}-{cell['miner']}"
        if os.path.isdir(os.path.join(src_dir, folder)):
            shutil.copytree(
                os.path.join(src_dir, folder),
                os.path.join(dest_dir, folder),
                dirs_exist_ok=True,
            )
    return added


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dest", help="the grid folder to add to (its compare.json is rewritten)")
    p.add_argument("src", nargs="+", help="grid folders whose runs are added")
    p.add_argument("--baselines-only", action="store_true", help="copy the baselines, no runs")
    a = p.parse_args()
    path = os.path.join(a.dest, "compare.json")
    srcs = []
    for src_dir in a.src:
        with open(os.path.join(src_dir, "compare.json")) as f:
            srcs.append((src_dir, json.load(f)))
    if os.path.exists(path):
        with open(path) as f:
            dest = json.load(f)
    elif a.baselines_only:
        first = srcs[0][1]
        dest = {"recall_at": first["recall_at"], "epochs": first["epochs"], "seeds": [],
                "raw_input": None, "untrained": [], "frozen_backbone": None, "cells": []}
        os.makedirs(a.dest, exist_ok=True)
    else:
        sys.exit(f"{path} does not exist (give --baselines-only to start it from the baselines)")
    for src_dir, src in srcs:
        n = merge(dest, src, a.dest, src_dir, cells=not a.baselines_only)
        print(f"{src_dir}: {n} runs added to {path}")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dest, f, indent=2)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
