#!/usr/bin/env python3
"""`dml export` read by PyTorch itself: train the embedded digits for one epoch, export the
network as TorchScript, and check that `torch.jit.load(model.pt)` embeds the held-out digits as
`dml embed` does (to 1e-6).

The Rust tests check the same with LibTorch's loader (the C++ core `torch.jit.load` wraps); this
script closes the loop with the Python package a serving user has.

Run: .venv-ref/bin/python scripts/check_export.py [--dml target/release/dml]
"""

import argparse
import csv
import gzip
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def held_out_digits():
    """The digits dml holds out (classes 5-9, in file order), as dml's loader scales them."""
    path = os.path.join(ROOT, "crates", "dml-data", "data", "digits.csv.gz")
    with gzip.open(path, "rt") as f:
        rows = [list(map(int, r)) for r in csv.reader(f)]
    x = [r[:64] for r in rows if r[64] >= 5]
    return torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dml", default=os.path.join(ROOT, "target", "release", "dml"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        ckpt = os.path.join(run, "checkpoint.safetensors")
        model = os.path.join(tmp, "model.pt")
        emb = os.path.join(tmp, "e.npy")
        for cmd in (
            ["train", "--epochs", "1", "--output-dir", run],
            ["export", "--checkpoint", ckpt, "--to", model],
            ["embed", "--checkpoint", ckpt, "--out", emb],
        ):
            subprocess.run([args.dml, *cmd], check=True, capture_output=True)
        want = np.load(emb)
        module = torch.jit.load(model)
        with torch.no_grad():
            got = module(held_out_digits()).numpy()
    diff = float(np.abs(got - want).max())
    print(f"torch {torch.__version__}: {got.shape[0]} held-out digits, largest difference {diff:.2e}")
    if diff > 1e-6:
        sys.exit("the exported module does not embed as dml does")


if __name__ == "__main__":
    main()
