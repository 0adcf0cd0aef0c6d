#!/usr/bin/env python3
"""MAP@R per held-out class, and where each class's R nearest neighbours come from.

The diagnostic behind docs/results.md's "Why Fashion-MNIST's held-out classes resist": which
class a trained network loses (or gains) against the baselines. Each input is an embedding file
written by `dml embed` (float32 .npy, n x d, labels beside it as <stem>.labels.npy), or the raw
held-out pixels with --raw (MNIST-format folder; classes given by --classes). Every item is a
query against all the others (itself left out), Euclidean distance on L2-normalised rows, R the
size of the query's class minus one: the definition of dml-eval's MAP@R, so the mean over all
queries equals the map_at_r of the run's report.

    dml embed --checkpoint runs/fashion-mnist/checkpoint.safetensors --out trained.npy
    python3 scripts/per_class_map.py --raw data/fashion-mnist --classes 5-9 \\
        untrained.npy trained.npy --names raw,untrained,trained \\
        --out docs/figures/fashion-mnist_per_class_map_at_r

Needs numpy (and matplotlib for the figure). Prints a Markdown table; with --out writes
<out>.png, <out>.svg and <out>.json.
"""

import argparse
import json
import os
import sys

import numpy as np


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def raw_pixels(folder, classes):
    """All images of the train and test files whose label is in `classes`, flattened."""
    xs, ys = [], []
    for stem in ("train", "t10k"):
        xs.append(read_idx(os.path.join(folder, f"{stem}-images-idx3-ubyte")))
        ys.append(read_idx(os.path.join(folder, f"{stem}-labels-idx1-ubyte")))
    x = np.concatenate(xs).reshape(-1, 28 * 28).astype(np.float32)
    y = np.concatenate(ys).astype(np.int64)
    keep = np.isin(y, classes)
    return x[keep], y[keep]


def per_query(x, y, chunk=1024):
    """(AP@R of every query, the share of each class among its R nearest neighbours)."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    classes, y_idx = np.unique(y, return_inverse=True)
    counts = np.bincount(y_idx)
    n = len(x)
    ap = np.zeros(n)
    mix = np.zeros((n, len(classes)))
    for start in range(0, n, chunk):
        sim = x[start : start + chunk] @ x.T  # ranking by cosine = ranking by distance
        for row, i in enumerate(range(start, min(start + chunk, n))):
            s = sim[row]
            s[i] = -np.inf
            r = counts[y_idx[i]] - 1
            if r == 0:
                continue
            top = np.argpartition(-s, r - 1)[:r]
            top = top[np.argsort(-s[top], kind="stable")]
            rel = y_idx[top] == y_idx[i]
            precision = np.cumsum(rel) / np.arange(1, r + 1)
            ap[i] = (precision * rel).sum() / r
            mix[i] = np.bincount(y_idx[top], minlength=len(classes)) / r
    return classes, y_idx, ap, mix


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("embeddings", nargs="*", help="files written by `dml embed`")
    ap.add_argument("--raw", help="MNIST-format folder: add the raw held-out pixels first")
    ap.add_argument("--classes", default="5-9", help="held-out classes for --raw, e.g. 5-9")
    ap.add_argument("--names", help="comma-separated column names (default: file stems)")
    ap.add_argument("--class-names", help="comma-separated names of the held-out classes")
    ap.add_argument("--out", help="write <out>.png, <out>.svg and <out>.json")
    args = ap.parse_args()

    inputs = []
    if args.raw:
        lo, hi = (int(v) for v in args.classes.split("-"))
        inputs.append(raw_pixels(args.raw, list(range(lo, hi + 1))))
    for path in args.embeddings:
        labels = path[: -len(".npy")] + ".labels.npy"
        inputs.append((np.load(path).astype(np.float32), np.load(labels).astype(np.int64)))
    if not inputs:
        sys.exit("nothing to measure: give embedding files and/or --raw")
    names = args.names.split(",") if args.names else (
        (["raw input"] if args.raw else []) + [os.path.basename(p)[:-4] for p in args.embeddings]
    )
    if len(names) != len(inputs):
        sys.exit(f"--names gives {len(names)} names for {len(inputs)} inputs")

    results = {}
    for name, (x, y) in zip(names, inputs):
        classes, y_idx, ap_q, mix = per_query(x, y)
        results[name] = {
            "classes": classes.tolist(),
            "map_at_r": float(ap_q.mean()),
            "per_class": [float(ap_q[y_idx == c].mean()) for c in range(len(classes))],
            "neighbour_mix": [mix[y_idx == c].mean(axis=0).tolist() for c in range(len(classes))],
        }
        print(f"{name}: MAP@R {ap_q.mean():.4f}", file=sys.stderr)
    classes = results[names[0]]["classes"]
    cnames = args.class_names.split(",") if args.class_names else [str(c) for c in classes]

    print("| class | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for c, cname in enumerate(cnames):
        row = [f"{100 * results[n]['per_class'][c]:.1f}" for n in names]
        print(f"| {cname} | " + " | ".join(row) + " |")
    print("| **all** | " + " | ".join(f"**{100 * results[n]['map_at_r']:.1f}**" for n in names) + " |")

    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump({"class_names": cnames, "results": results}, f, indent=1)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        width = 0.8 / len(names)
        for k, n in enumerate(names):
            xs = np.arange(len(cnames)) + (k - (len(names) - 1) / 2) * width
            ax.bar(xs, [100 * v for v in results[n]["per_class"]], width, label=n)
        ax.set_xticks(np.arange(len(cnames)), cnames)
        ax.set_ylabel("MAP@R (%)")
        ax.set_title("MAP@R per held-out class")
        ax.legend(fontsize=8, ncols=min(len(names), 3), loc="upper center", bbox_to_anchor=(0.5, -0.1))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        for ext in ("png", "svg"):
            fig.savefig(f"{args.out}.{ext}", dpi=120)


if __name__ == "__main__":
    main()
