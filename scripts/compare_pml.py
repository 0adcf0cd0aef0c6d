#!/usr/bin/env python3
"""The loss x miner grid of `dml compare`, trained with pytorch-metric-learning (pml).

The reference side of docs/results.md. It mirrors configs/fashion-mnist.toml as closely as two
libraries allow:

* data: the four Fashion-MNIST IDX files in data/fashion-mnist (train and test files joined, as
  dml-data does), pixels scaled to [0, 1], classes 0-4 train, 5-9 held out;
* network: dml-models' ConvNet (per block: 3x3 conv, padding 1, no bias, batch norm, ReLU, 2x2
  max pool; global average pool; linear head; L2 normalisation), initialised as tch initialises
  it (weights Kaiming-uniform with the ReLU gain, fan-in; head bias U(-1/sqrt(fan_in), +));
* batches: pml's MPerClassSampler, P classes x K items (with 5 training classes and P = 5 every
  batch holds every class, as dml's PkSampler's do), `batches_per_epoch` batches per epoch;
* optimiser: Adam (lr, betas 0.9/0.999, eps 1e-8, no weight decay), the margin loss's beta in its
  own group at `loss_lr`, the cosine schedule of dml (factor min + (1 - min)(1 + cos(pi t))/2 per
  step, t = fraction of the run done before the step);
* losses with dml's (= pml's) defaults: ContrastiveLoss(pos_margin=0, neg_margin=1),
  TripletMarginLoss(margin=0.05), MarginLoss(margin=0.2, beta=1.2, nu=0, learn_beta=True);
* miners: `uniform` is written here (pml has no such miner): for every ordered positive pair
  (a, p) one negative of a drawn uniformly at random, dml's UniformMiner definition;
  `semi_hard` TripletMarginMiner(margin=0.2, type_of_triplets="semihard"); `batch_hard`
  BatchHardMiner(); `distance_weighted` DistanceWeightedMiner(cutoff=0.5,
  nonzero_loss_cutoff=1.4);
* evaluation on every held-out item, each query left out of its own neighbours: Recall@K with
  Euclidean distances (exact, blocked), NMI of k-means++ clusters (scikit-learn, one init, as many
  clusters as classes) against the labels.

Usage (from the repository root, with the reference environment of `cargo xtask pyref`):

    .venv-ref/bin/python scripts/compare_pml.py --epochs 4 --batches-per-epoch 100 \
        --out runs/pml-compare/compare_pml.json

It prints the markdown table and writes the JSON (cells, settings, wall times).
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as c_f
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path, array):
    header = (0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_t10k_split(src, dst):
    """The official Fashion-MNIST test file (10,000 images) as an IDX folder of its own: its
    first 5,000 items as `train-*`, the last 5,000 as `t10k-*`, so that dml-data (which joins the
    two) sees exactly the 10,000 test images in their original order."""
    x = read_idx(os.path.join(src, "t10k-images-idx3-ubyte"))
    y = read_idx(os.path.join(src, "t10k-labels-idx1-ubyte"))
    os.makedirs(dst, exist_ok=True)
    half = len(y) // 2
    for prefix, sl in (("train", slice(0, half)), ("t10k", slice(half, None))):
        write_idx(os.path.join(dst, f"{prefix}-images-idx3-ubyte"), x[sl])
        write_idx(os.path.join(dst, f"{prefix}-labels-idx1-ubyte"), y[sl])


def load_fashion(root):
    xs, ys = [], []
    for prefix in ("train", "t10k"):
        xs.append(read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte")))
        ys.append(read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte")))
    x = np.concatenate(xs).astype(np.float32)[:, None, :, :] / 255.0
    y = np.concatenate(ys).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


class ConvNet(torch.nn.Module):
    def __init__(self, channels, embedding_dim, in_channels=1):
        super().__init__()
        blocks = []
        c_in = in_channels
        for c_out in channels:
            conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            torch.nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
            blocks += [
                conv,
                torch.nn.BatchNorm2d(c_out),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.backbone = torch.nn.Sequential(*blocks)
        self.head = torch.nn.Linear(c_in, embedding_dim)
        torch.nn.init.kaiming_uniform_(self.head.weight, nonlinearity="relu")
        bound = 1.0 / math.sqrt(c_in)
        torch.nn.init.uniform_(self.head.bias, -bound, bound)

    def forward(self, x):
        x = self.backbone(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return F.normalize(self.head(x), p=2, dim=1)


class UniformMiner(miners.BaseMiner):
    """For every ordered positive pair (a, p), one negative of a uniformly at random."""

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        same = labels[:, None] == ref_labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        a, p = torch.where(same & ~eye)
        neg = ~same
        # One uniform draw among each anchor's negatives.
        n = torch.multinomial(neg[a].float(), 1).squeeze(1)
        return a, p, n


def make_loss(kind):
    if kind == "contrastive":
        return losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
    if kind == "triplet":
        return losses.TripletMarginLoss(margin=0.05)
    if kind == "margin":
        return losses.MarginLoss(margin=0.2, nu=0.0, beta=1.2, learn_beta=True)
    raise ValueError(f"unknown loss {kind}")


def make_miner(kind):
    if kind == "uniform":
        return UniformMiner()
    if kind == "semi_hard":
        return miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    if kind == "batch_hard":
        return miners.BatchHardMiner()
    if kind == "distance_weighted":
        return miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
    raise ValueError(f"unknown miner {kind}")


@torch.no_grad()
def embed(model, x, batch_size):
    model.eval()
    out = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def evaluate(emb, labels, recall_at, seed, block=2048):
    """Recall@K (each query left out) and NMI of k-means on the held-out embeddings."""
    kmax = max(recall_at)
    n = len(emb)
    sq = (emb * emb).sum(1)
    hits = {k: 0 for k in recall_at}
    for s in range(0, n, block):
        q = emb[s : s + block]
        d = (sq[s : s + block, None] + sq[None, :] - 2.0 * q @ emb.T).clamp_min(0.0)
        rows = torch.arange(len(q))
        d[rows, rows + s] = float("inf")
        idx = d.topk(kmax, dim=1, largest=False).indices
        match = labels[idx] == labels[s : s + block, None]
        for k in recall_at:
            hits[k] += int(match[:, :k].any(1).sum())
    metrics = {f"recall_at_{k}": hits[k] / n for k in recall_at}
    y = labels.numpy()
    n_classes = len(np.unique(y))
    km = KMeans(n_clusters=n_classes, init="k-means++", n_init=1, random_state=seed)
    pred = km.fit_predict(emb.numpy().astype(np.float64))
    metrics["nmi"] = float(normalized_mutual_info_score(y, pred))
    return metrics


def cosine_factor(progress, epochs, min_factor):
    t = min(max(progress / epochs, 0.0), 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


def train_cell(args, loss_kind, miner_kind, data):
    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    c_f.NUMPY_RANDOM = np.random.RandomState(args.seed)
    model = ConvNet(args.channels, args.embedding_dim)
    loss_fn = make_loss(loss_kind)
    miner = make_miner(miner_kind)
    groups = [{"params": model.parameters(), "lr": args.lr}]
    loss_params = list(loss_fn.parameters())
    if loss_params:
        groups.append({"params": loss_params, "lr": args.loss_lr})
    opt = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in opt.param_groups]
    batch = args.p * args.k
    sampler = MPerClassSampler(
        y_tr.numpy(),
        m=args.k,
        batch_size=batch,
        length_before_new_iter=batch * args.batches_per_epoch,
    )
    start = time.perf_counter()
    last_loss = float("nan")
    for epoch in range(args.epochs):
        model.train()
        idx = torch.tensor(list(iter(sampler)), dtype=torch.long)
        n_batches = len(idx) // batch
        for b in range(n_batches):
            f = cosine_factor(epoch + b / n_batches, args.epochs, args.min_factor)
            for g, lr in zip(opt.param_groups, base_lrs):
                g["lr"] = lr * f
            sel = idx[b * batch : (b + 1) * batch]
            emb = model(x_tr[sel])
            lab = y_tr[sel]
            tuples = miner(emb, lab)
            loss = loss_fn(emb, lab, tuples)
            last_loss = float(loss.detach())
            if not math.isfinite(last_loss):
                raise RuntimeError(f"non-finite loss {last_loss} at epoch {epoch + 1}")
            opt.zero_grad()
            loss.backward()
            opt.step()
    train_seconds = time.perf_counter() - start
    e0 = time.perf_counter()
    emb = embed(model, x_te, args.eval_batch_size)
    metrics = evaluate(emb, y_te, args.recall_at, args.seed)
    return {
        "loss": loss_kind,
        "miner": miner_kind,
        "metrics": metrics,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - e0,
        "last_batch_loss": last_loss,
    }


def markdown(cells, recall_at):
    s = "| loss | miner |" + "".join(f" R@{k} |" for k in recall_at) + " NMI |\n"
    s += "|---|---|" + "---:|" * len(recall_at) + "---:|\n"
    for c in cells:
        s += f"| {c['loss']} | {c['miner']} |"
        if "error" in c:
            s += " failed |" * (len(recall_at) + 1) + "\n"
            continue
        for k in recall_at:
            s += f" {100 * c['metrics'][f'recall_at_{k}']:.1f} |"
        s += f" {100 * c['metrics']['nmi']:.1f} |\n"
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/fashion-mnist")
    ap.add_argument("--losses", default="contrastive,triplet,margin")
    ap.add_argument("--miners", default="uniform,semi_hard,batch_hard,distance_weighted")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batches-per-epoch", type=int, default=100)
    ap.add_argument("--p", type=int, default=5)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--channels", default="32,64,128")
    ap.add_argument("--embedding-dim", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--loss-lr", type=float, default=1e-2)
    ap.add_argument("--min-factor", type=float, default=0.05)
    ap.add_argument("--eval-batch-size", type=int, default=1024)
    ap.add_argument("--recall-at", default="1,2,4,8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    ap.add_argument("--out", default="runs/pml-compare/compare_pml.json")
    ap.add_argument(
        "--write-t10k-split",
        metavar="DIR",
        help="write the 10,000 test images of --data as an IDX folder DIR (see write_t10k_split) and exit",
    )
    args = ap.parse_args()
    if args.write_t10k_split:
        write_t10k_split(args.data, args.write_t10k_split)
        print(f"wrote {args.write_t10k_split}")
        return
    args.channels = [int(c) for c in args.channels.split(",")]
    args.recall_at = [int(k) for k in args.recall_at.split(",")]
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    x, y = load_fashion(args.data)
    classes = sorted(set(y.tolist()))
    train_classes = set(classes[: len(classes) // 2])
    tr = torch.tensor([int(c) in train_classes for c in y])
    data = (x[tr], y[tr], x[~tr], y[~tr])

    cells = []
    wall = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for lk in args.losses.split(","):
        for mk in args.miners.split(","):
            print(f"pml: training {lk} loss with {mk} miner", flush=True)
            try:
                cell = train_cell(args, lk, mk, data)
            except Exception as e:  # a failed cell is reported, not hidden
                cell = {"loss": lk, "miner": mk, "error": f"{type(e).__name__}: {e}"}
            print(f"  {cell}", flush=True)
            cells.append(cell)
            report = {
                "settings": {k: v for k, v in vars(args).items()},
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "cells": cells,
                "wall_seconds": time.perf_counter() - wall,
            }
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)
    print(markdown(cells, args.recall_at), end="")
    print(f"wall time {time.perf_counter() - wall:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
