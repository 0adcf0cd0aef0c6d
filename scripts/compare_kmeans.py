#!/usr/bin/env python3
"""NMI and AMI of dml's k-means against scikit-learn's and faiss' on generated clustered embeddings.

The table of docs/clustering.md. For each generated set (L2-normalised Gaussian clusters around
random class centres, noisy enough that the clusters overlap, as half-trained embeddings do) and
each of five seeds, the NMI between the classes and a k-means clustering with k = number of
classes, from:

- dml, with each of its seedings: `dml eval --no-r-metrics --seed S --kmeans-seeding X --json`,
  X = `k-means||` (the default, k-means‖) and `k-means++` (greedy k-means++, scikit-learn's
  seeding), then Lloyd to convergence;
- scikit-learn: `KMeans(n_clusters=k, n_init=1, random_state=S)` (its defaults otherwise);
- faiss: `faiss.Kmeans(d, k, niter=20, seed=S)`, what pytorch-metric-learning's
  AccuracyCalculator runs.

NMI and AMI are scikit-learn's `normalized_mutual_info_score` and `adjusted_mutual_info_score`
for the two Python sides and dml's own for dml (the functions agree to 1e-12 and 1e-10, see
crates/dml-eval/tests/clustering.rs). Two tables: NMI, then AMI of the same clusterings.

Usage (after `cargo build --release -p dml` and `cargo xtask pyref`):

    .venv-ref/bin/python scripts/compare_kmeans.py [--dml target/release/dml] [--out docs/clustering.md]
"""

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import faiss
import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

SEEDS = [0, 1, 2, 3, 4]
# (name, classes, items per class, dimension, noise scale relative to the centres' spread)
SETS = [
    ("10 classes", 10, 300, 32, 1.6),
    ("60 classes", 60, 52, 64, 1.2),
    ("100 classes", 100, 50, 64, 1.4),
    ("300 classes", 300, 20, 64, 1.0),
    ("1,000 classes", 1000, 10, 128, 1.1),
    # The size of the k-means benchmark row, where k-means‖ runs (at least 64 points a centre).
    ("1,000 classes", 1000, 100, 128, 1.1),
]


def make_set(n_classes, per_class, d, noise, seed=12345):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d)).astype(np.float32)
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] + noise * rng.standard_normal((labels.size, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels.astype(np.int64)


SEEDINGS = [("k-means‖", "k-means||"), ("k-means++", "k-means++")]


def dml_nmi(dml, x_path, y_path, seed, seeding):
    out = subprocess.run(
        [dml, "eval", "--embeddings", x_path, "--labels", y_path, "--no-r-metrics", "--ami",
         "--seed", str(seed), "--kmeans-seeding", seeding, "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    m = json.loads(out.strip().splitlines()[-1])
    return m["nmi"], m["ami"]


def sklearn_nmi(x, y, k, seed):
    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    return normalized_mutual_info_score(y, km.labels_), adjusted_mutual_info_score(y, km.labels_)


def faiss_nmi(x, y, k, seed):
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, verbose=False)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return (normalized_mutual_info_score(y, assign[:, 0]),
            adjusted_mutual_info_score(y, assign[:, 0]))


def spread(values):
    v = np.asarray(values)
    return f"{v.mean():.4f} ({v.min():.4f}–{v.max():.4f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dml", default="target/release/dml")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()
    tables = {"NMI": [], "AMI": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, c, per, d, noise in SETS:
            x, y = make_set(c, per, d, noise)
            xp, yp = str(Path(tmp) / "x.npy"), str(Path(tmp) / "y.npy")
            np.save(xp, x)
            np.save(yp, y)
            ours = [[dml_nmi(args.dml, xp, yp, s, flag) for s in SEEDS] for _, flag in SEEDINGS]
            sk = [sklearn_nmi(x, y, c, s) for s in SEEDS]
            fa = [faiss_nmi(x, y, c, s) for s in SEEDS]
            for col, score in enumerate(tables):
                o = [[v[col] for v in vals] for vals in ours]
                s_, f = ([v[col] for v in vals] for vals in (sk, fa))
                verdicts = []
                for values in o:
                    mean = np.mean(values)
                    verdicts.append("inside" if min(s_) <= mean <= max(s_) else (
                        "above" if mean > max(s_) else "**below**"))
                tables[score].append((name, f"{x.shape[0]:,} × {d}", *map(spread, o),
                                      spread(s_), spread(f), " / ".join(verdicts)))
                print(score, " | ".join(tables[score][-1]), flush=True)
    text = ""
    for score, rows in tables.items():
        header = (f"| set | items × dim | dml {score}, k-means‖ (default), mean (min–max) "
                  "| dml, k-means++ | scikit-learn | faiss (pml) "
                  "| dml's means (‖ / ++) against scikit-learn's range |\n"
                  "|---|---|---|---|---|---|---|\n")
        text += header + "".join("| " + " | ".join(r) + " |\n" for r in rows) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
