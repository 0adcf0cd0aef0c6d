#!/usr/bin/env python3
"""Training steps per second of one process against `dml launch --nproc 2`, on this machine.

The MNIST ConvNet of configs/mnist.toml with a P 4 x K 32 batch (each of two ranks embeds 2
classes x 32; MNIST's training split has 5 classes), one LibTorch thread per process, N steps; the two sides alternate for several
rounds and the table gives the median steps/s of each and their ratio. Timing is the report's
`train_seconds` (training steps only; rank 0's evaluation afterwards is not counted).

    cargo build --release -p dml && python3 scripts/distributed_steps.py --rounds 3 --steps 40

Needs `cargo xtask data mnist` first.
"""

import argparse
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DML = ROOT / "target" / "release" / "dml"


def config(out: pathlib.Path, steps: int, p: int, k: int) -> str:
    return f"""
[run]
name = "dist-steps"
seed = 0
device = "cpu"
threads = 1
output_dir = "{out}"
[data]
kind = "mnist"
path = "{ROOT / 'data' / 'mnist'}"
[transform.train]
crop = {{ kind = "random_crop", size = 28, padding = 2 }}
[model]
kind = "conv_net"
channels = [32, 64, 128]
embedding_dim = 64
normalize = true
[batch]
p = {p}
k = {k}
batches_per_epoch = {steps}
eval_batch_size = 1024
[miner]
kind = "multi_similarity"
[loss]
kind = "multi_similarity"
[optimizer]
kind = "adam"
lr = 1e-3
[train]
epochs = 1
eval_before = false
plots = false
progress = false
[eval]
raw_input = false
nmi = false
r_metrics = false
recall_at = [1]
"""


def run(nproc: int, steps: int, p: int, k: int, work: pathlib.Path) -> float:
    out = work / f"run-{nproc}"
    if out.exists():
        shutil.rmtree(out)
    cfg = work / f"config-{nproc}.toml"
    cfg.write_text(config(out, steps, p, k))
    cmd = [str(DML), "train", "--config", str(cfg)]
    if nproc > 1:
        cmd = [str(DML), "launch", "--nproc", str(nproc), "--"] + cmd[1:]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    report = json.loads((out / "report.json").read_text())
    return steps / report["train_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--p", type=int, default=4)
    ap.add_argument("--k", type=int, default=32)
    a = ap.parse_args()
    if not DML.exists():
        sys.exit(f"{DML} missing: cargo build --release -p dml")
    rates = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        for r in range(a.rounds):
            for nproc in (1, 2) if r % 2 == 0 else (2, 1):
                rate = run(nproc, a.steps, a.p, a.k, work)
                rates[nproc].append(rate)
                print(f"round {r + 1}: {nproc} process(es): {rate:.2f} steps/s", file=sys.stderr, flush=True)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    ratios = [b / a_ for a_, b in zip(rates[1], rates[2])]
    print(f"| setup | steps/s (median, min–max over {a.rounds} rounds) | items/s |")
    print("|---|---|---|")
    b = a.p * a.k
    print(f"| 1 process, 1 thread | {one:.2f} ({min(rates[1]):.2f}–{max(rates[1]):.2f}) | {one * b:.0f} |")
    print(f"| `dml launch --nproc 2`, 1 thread each | {two:.2f} ({min(rates[2]):.2f}–{max(rates[2]):.2f}) | {two * b:.0f} |")
    print(f"\n2 processes / 1 process: {statistics.median(ratios):.2f}x (per round {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
