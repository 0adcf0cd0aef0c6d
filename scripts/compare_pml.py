#!/usr/bin/env python3
"""Loss x miner grids of `dml`, trained with pytorch-metric-learning (pml), over seeds.

The reference side of docs/results.md. By default it trains the loss x miner grid of `dml compare`
with configs/fashion-mnist.toml's settings, mirroring dml as closely as two libraries allow; with
`--seeds`, `--steps`, `--random-crop-padding` and the multi-similarity loss and miner it also runs
single recipes (e.g. MNIST) over several seeds, next to two baselines:

* data: the four IDX files in `--data` (MNIST or Fashion-MNIST, plain or `.gz`; train and t10k
  files joined, as dml-data does, 70,000 images), pixels scaled to [0, 1], the first half of the
  classes (0-4) train, the rest (5-9) held out;
* network: dml-models' ConvNet (per block: 3x3 conv, padding 1, no bias, batch norm, ReLU, 2x2
  max pool; global average pool; linear head; L2 normalisation), initialised as dml-models
  initialises it (weights Kaiming-uniform with the ReLU gain, fan-in, tch's default; head bias
  U(-1/sqrt(fan_in), +); batch-norm scale 1 and shift 0, PyTorch's default, which dml-models
  sets explicitly since tch's default scale is U(0, 1));
* batches: pml's MPerClassSampler, P classes x K items (with 5 training classes and P = 5 every
  batch holds every class, as dml's PkSampler's do), `--batches-per-epoch` batches per epoch for
  `--epochs` epochs, or `--steps` batches in all;
* augmentation (`--random-crop-padding N`, off by default): torchvision's RandomCrop(28,
  padding=N) with zero fill, drawn independently per image and batch from a torch Generator
  seeded with the run's seed;
* optimiser: Adam (lr, betas 0.9/0.999, eps 1e-8, no weight decay), the margin loss's beta in its
  own group at `loss_lr`; `--schedule cosine` (the default) is dml's cosine schedule (factor
  min + (1 - min)(1 + cos(pi t))/2 per step, t = fraction of the run done before the step, min =
  `--min-factor`), `--schedule constant` keeps the learning rates fixed;
* losses with dml's (= pml's) defaults: ContrastiveLoss(pos_margin=0, neg_margin=1),
  TripletMarginLoss(margin=0.05), MarginLoss(margin=0.2, beta=1.2, nu=0, learn_beta=True),
  MultiSimilarityLoss(alpha=2, beta=50, base=0.5);
* miners: `uniform` is written here (pml has no such miner): for every ordered positive pair
  (a, p) one negative of a drawn uniformly at random, dml's UniformMiner definition;
  `semi_hard` TripletMarginMiner(margin=0.2, type_of_triplets="semihard"); `batch_hard`
  BatchHardMiner(); `distance_weighted` DistanceWeightedMiner(cutoff=0.5,
  nonzero_loss_cutoff=1.4); `multi_similarity` MultiSimilarityMiner(epsilon=0.1); `none` no
  miner (the loss sees every pair or triplet of the batch);
* evaluation on every held-out item, each query left out of its own neighbours, Euclidean
  distances, exact and blocked: Recall@K, precision_at_1 (= Recall@1), and the R-metrics of
  Musgrave et al., "A Metric Learning Reality Check" (R = number of other held-out items of the
  query's class; r_precision = fraction of the R nearest neighbours of that class; map_at_r =
  (1/R) sum_{i<=R} P(i) rel(i); queries with R = 0 left out), averaged over queries; NMI of
  k-means++ clusters (scikit-learn, one init, random_state = seed, as many clusters as classes)
  against the labels;
* baselines (skip with `--skip-baselines`): the raw input (held-out images flattened to 784-d,
  L2-normalised), once, and the untrained network of each seed (the initialisation its runs start
  from, batch norm in eval mode).

Every seed of `--seeds` (or the single `--seed`, default 0) trains every loss x miner cell.
`--self-test` checks the evaluation against a naive O(n^2) loop and pml's AccuracyCalculator,
and the vectorised random crop against a per-image loop, then exits.

Usage (from the repository root, with the reference environment of `cargo xtask pyref`):

    # the Fashion-MNIST grid of docs/results.md
    .venv-ref/bin/python scripts/compare_pml.py --epochs 4 --batches-per-epoch 100 \
        --out runs/pml-compare/compare_pml.json

    # one recipe on MNIST over three seeds
    .venv-ref/bin/python scripts/compare_pml.py --data data/mnist --losses multi_similarity \
        --miners multi_similarity --p 5 --k 32 --steps 1500 --random-crop-padding 2 --lr 1e-3 \
        --schedule cosine --min-factor 0.05 --channels 32,64,128 --embedding-dim 64 \
        --seeds 0,1,2 --threads 1 --out runs/pml-mnist/compare_pml.json

It prints progress, then a markdown table (percentages; mean (min-max) over seeds), and writes
the JSON (`--out`: settings, versions, `raw_input`, `untrained`, `runs` and a per-cell `summary`)
after every run, so that a partial run keeps what it finished.
"""

import argparse
import gzip
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
from threadpoolctl import threadpool_limits

# The metrics of every evaluation, in the order of the JSON (plus recall_at_K for each K).
R_METRICS = ("precision_at_1", "r_precision", "map_at_r")


def read_idx(path):
    """An IDX file as a numpy array; `path` may also name a gzipped `path.gz`."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
    elif os.path.exists(path + ".gz"):
        with gzip.open(path + ".gz", "rb") as f:
            data = f.read()
    else:
        raise FileNotFoundError(f"{path} (or {path}.gz)")
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
    """The official test file (10,000 images) as an IDX folder of its own: its first 5,000 items
    as `train-*`, the last 5,000 as `t10k-*`, so that dml-data (which joins the two) sees exactly
    the 10,000 test images in their original order."""
    x = read_idx(os.path.join(src, "t10k-images-idx3-ubyte"))
    y = read_idx(os.path.join(src, "t10k-labels-idx1-ubyte"))
    os.makedirs(dst, exist_ok=True)
    half = len(y) // 2
    for prefix, sl in (("train", slice(0, half)), ("t10k", slice(half, None))):
        write_idx(os.path.join(dst, f"{prefix}-images-idx3-ubyte"), x[sl])
        write_idx(os.path.join(dst, f"{prefix}-labels-idx1-ubyte"), y[sl])


def load_idx_folder(root):
    """The train and t10k IDX files of an MNIST-format folder, joined: images (N, 1, 28, 28) in
    [0, 1] and int64 labels."""
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
    if kind == "multi_similarity":
        return losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    raise ValueError(f"unknown loss {kind}")


def make_miner(kind):
    """The miner, or None for `none` (the loss then sees every pair or triplet of the batch)."""
    if kind == "none":
        return None
    if kind == "uniform":
        return UniformMiner()
    if kind == "semi_hard":
        return miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    if kind == "batch_hard":
        return miners.BatchHardMiner()
    if kind == "distance_weighted":
        return miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
    if kind == "multi_similarity":
        return miners.MultiSimilarityMiner(epsilon=0.1)
    raise ValueError(f"unknown miner {kind}")


def crop_offsets(batch, padding, generator):
    """Top-left corners (row, column) of RandomCrop windows, each in [0, 2 * padding]."""
    return torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator)


def crop_at(x, padding, offsets):
    """x (B, C, H, W) zero-padded by `padding` on every side, then the H x W window of image b
    whose top-left corner is offsets[b], gathered for the whole batch at once."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(h)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(w)  # (B, W)
    bi = torch.arange(b)[:, None, None]
    # Advanced indices split by a slice: the indexed dimensions come first, (B, H, W, C).
    out = padded[bi, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop(x, padding, generator):
    """torchvision's RandomCrop(size of x, padding=padding) with zero fill, per image."""
    if padding <= 0:
        return x
    return crop_at(x, padding, crop_offsets(len(x), padding, generator))


@torch.no_grad()
def embed(model, x, batch_size):
    model.eval()
    out = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def knn_metrics(emb, labels, recall_at, block=1024):
    """Recall@K, precision_at_1, r_precision and map_at_r with Euclidean distances, every item a
    query with itself left out of its neighbours. Exact: each block of queries gets its
    max(R) nearest neighbours (R = number of other items of the query's class) by topk. The
    R-metrics average over the queries with R > 0, as pml's AccuracyCalculator does."""
    emb = emb.float()
    labels = labels.long()
    n = len(emb)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    r_all = counts[inverse] - 1
    depth = min(n - 1, max(int(r_all.max()), max(recall_at), 1))
    ranks = torch.arange(1, depth + 1, dtype=torch.float64)
    sq = (emb * emb).sum(1)
    hits = {k: 0 for k in recall_at}
    p1 = 0
    r_prec_sum = 0.0
    map_sum = 0.0
    n_r = 0
    for s in range(0, n, block):
        q = emb[s : s + block]
        # |e|^2 - 2 q.e: the squared distance less |q|^2, which orders each row as it does.
        d = torch.addmm(sq[None, :], q, emb.T, alpha=-2.0)
        rows = torch.arange(len(q))
        d[rows, rows + s] = float("inf")
        idx = d.topk(depth, dim=1, largest=False).indices
        del d
        match = labels[idx] == labels[s : s + block, None]
        for k in recall_at:
            hits[k] += int(match[:, :k].any(1).sum())
        p1 += int(match[:, 0].sum())
        r = r_all[s : s + block]
        rel = match & (ranks[None, :] <= r[:, None])  # relevant and among the first R
        cum = rel.cumsum(1)
        valid = r > 0
        rr = r.clamp_min(1)
        r_prec = cum.gather(1, (rr - 1)[:, None]).squeeze(1).double() / rr
        ap = (cum.double() / ranks * rel).sum(1) / rr
        r_prec_sum += float(r_prec[valid].sum())
        map_sum += float(ap[valid].sum())
        n_r += int(valid.sum())
    metrics = {f"recall_at_{k}": hits[k] / n for k in recall_at}
    metrics["precision_at_1"] = p1 / n
    metrics["r_precision"] = r_prec_sum / n_r if n_r else float("nan")
    metrics["map_at_r"] = map_sum / n_r if n_r else float("nan")
    return metrics


def evaluate(emb, labels, recall_at, seed, block=1024):
    """knn_metrics and NMI of k-means on the held-out embeddings."""
    metrics = knn_metrics(emb, labels, recall_at, block)
    y = labels.numpy()
    n_classes = len(np.unique(y))
    km = KMeans(n_clusters=n_classes, init="k-means++", n_init=1, random_state=seed)
    pred = km.fit_predict(emb.numpy().astype(np.float64))
    metrics["nmi"] = float(normalized_mutual_info_score(y, pred))
    return metrics


def naive_metrics(emb, labels, recall_at):
    """knn_metrics by the definitions, one query at a time in plain Python (self-test only)."""
    e = emb.double().tolist()
    y = labels.tolist()
    n = len(y)
    out = {f"recall_at_{k}": 0.0 for k in recall_at}
    p1 = r_prec = ap_sum = 0.0
    n_r = 0
    for i in range(n):
        dist = [(sum((a - b) ** 2 for a, b in zip(e[i], e[j])), j) for j in range(n) if j != i]
        neigh = [y[j] for _, j in sorted(dist)]
        for k in recall_at:
            out[f"recall_at_{k}"] += float(y[i] in neigh[:k])
        p1 += float(neigh[0] == y[i])
        r = sum(1 for j in range(n) if j != i and y[j] == y[i])
        if r == 0:
            continue
        n_r += 1
        r_prec += sum(1 for c in neigh[:r] if c == y[i]) / r
        found = 0
        ap = 0.0
        for pos, c in enumerate(neigh[:r], start=1):
            if c == y[i]:
                found += 1
                ap += found / pos
        ap_sum += ap / r
    out = {key: v / n for key, v in out.items()}
    out["precision_at_1"] = p1 / n
    out["r_precision"] = r_prec / n_r
    out["map_at_r"] = ap_sum / n_r
    return out


def self_test(threads):
    """Evaluation against the naive loop and pml's AccuracyCalculator; crop against a loop."""
    g = torch.Generator().manual_seed(0)
    recall_at = [1, 2, 4, 8]
    # Uneven classes, one of a single item (R = 0, left out of the R-metrics).
    labels = torch.tensor([0] * 17 + [1] * 9 + [2] * 23 + [3] * 1 + [4] * 12)
    labels = labels[torch.randperm(len(labels), generator=g)]
    emb = F.normalize(torch.randn(len(labels), 6, generator=g), dim=1)
    emb = emb + 0.5 * F.one_hot(labels, 6)[:, :6].float()  # some structure, not perfect
    fast = knn_metrics(emb, labels, recall_at, block=7)
    slow = naive_metrics(emb, labels, recall_at)
    diff = max(abs(fast[k] - slow[k]) for k in slow)
    print(f"self-test: blocked vs naive loop, n={len(labels)}: max |diff| {diff:.2e}")
    assert diff < 1e-9, (fast, slow)

    x = torch.rand(11, 2, 28, 28, generator=g)
    pad = 3
    off = crop_offsets(len(x), pad, g)
    loop = torch.stack(
        [F.pad(xi, (pad,) * 4)[:, r : r + 28, c : c + 28] for xi, (r, c) in zip(x, off.tolist())]
    )
    assert torch.equal(crop_at(x, pad, off), loop)
    many = crop_offsets(10000, pad, g)
    assert int(many.min()) == 0 and int(many.max()) == 2 * pad
    print("self-test: vectorised random crop equals the per-image loop")

    try:
        import faiss
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    except ImportError as e:
        print(f"self-test: pml AccuracyCalculator check skipped ({e})")
    else:
        if threads > 0:
            faiss.omp_set_num_threads(threads)
        labels = torch.randint(0, 7, (400,), generator=g)
        emb = F.normalize(torch.randn(400, 16, generator=g) + 1.5 * F.one_hot(labels, 16).float(), dim=1)
        ours = knn_metrics(emb, labels, recall_at)
        calc = AccuracyCalculator(
            include=("mean_average_precision_at_r", "r_precision", "precision_at_1"),
            k="max_bin_count",
            device=torch.device("cpu"),
        )
        ref = calc.get_accuracy(emb, labels, emb, labels, ref_includes_query=True)
        pairs = {
            "map_at_r": "mean_average_precision_at_r",
            "r_precision": "r_precision",
            "precision_at_1": "precision_at_1",
        }
        diff = max(abs(ours[a] - ref[b]) for a, b in pairs.items())
        shown = ", ".join(f"{a} {ours[a]:.6f} vs {ref[b]:.6f}" for a, b in pairs.items())
        print(f"self-test: vs pml AccuracyCalculator, n=400: {shown}; max |diff| {diff:.2e}")
        assert diff < 1e-6, (ours, ref)
    print("self-test OK")


def lr_factor(args, progress):
    """Learning-rate factor at `progress` epochs done (fractional)."""
    if args.schedule == "constant":
        return 1.0
    t = min(max(progress / args.epochs, 0.0), 1.0)
    return args.min_factor + (1.0 - args.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


def train_run(args, loss_kind, miner_kind, seed, data):
    x_tr, y_tr, x_te, y_te = data
    torch.manual_seed(seed)
    np.random.seed(seed)
    c_f.NUMPY_RANDOM = np.random.RandomState(seed)
    model = ConvNet(args.channels, args.embedding_dim)
    loss_fn = make_loss(loss_kind)
    miner = make_miner(miner_kind)
    crop_gen = torch.Generator().manual_seed(seed)
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
    total = args.epochs * args.batches_per_epoch
    step = 0
    start = time.perf_counter()
    last_loss = float("nan")
    for epoch in range(args.epochs):
        model.train()
        idx = torch.tensor(list(iter(sampler)), dtype=torch.long)
        n_batches = len(idx) // batch
        for b in range(n_batches):
            f = lr_factor(args, epoch + b / n_batches)
            for g, lr in zip(opt.param_groups, base_lrs):
                g["lr"] = lr * f
            sel = idx[b * batch : (b + 1) * batch]
            xb = random_crop(x_tr[sel], args.random_crop_padding, crop_gen)
            lab = y_tr[sel]
            emb = model(xb)
            tuples = miner(emb, lab) if miner is not None else None
            loss = loss_fn(emb, lab, tuples)
            last_loss = float(loss.detach())
            step += 1
            if not math.isfinite(last_loss):
                raise RuntimeError(f"non-finite loss {last_loss} at step {step} (epoch {epoch + 1})")
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % args.log_every == 0 or step == total:
                elapsed = time.perf_counter() - start
                print(
                    f"    step {step}/{total}  loss {last_loss:.4f}  lr factor {f:.3f}  "
                    f"{elapsed:.0f} s ({elapsed / step:.3f} s/step)",
                    flush=True,
                )
    train_seconds = time.perf_counter() - start
    e0 = time.perf_counter()
    emb = embed(model, x_te, args.eval_batch_size)
    metrics = evaluate(emb, y_te, args.recall_at, seed, args.eval_block)
    return {
        "loss": loss_kind,
        "miner": miner_kind,
        "seed": seed,
        "metrics": metrics,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - e0,
        "last_batch_loss": last_loss,
    }


def untrained_run(args, seed, x_te, y_te):
    """The network as the runs of `seed` start from it (batch norm in eval mode)."""
    torch.manual_seed(seed)
    model = ConvNet(args.channels, args.embedding_dim)
    e0 = time.perf_counter()
    emb = embed(model, x_te, args.eval_batch_size)
    metrics = evaluate(emb, y_te, args.recall_at, seed, args.eval_block)
    return {"seed": seed, "metrics": metrics, "eval_seconds": time.perf_counter() - e0}


def raw_input_run(args, x_te, y_te):
    """Held-out images flattened and L2-normalised."""
    e0 = time.perf_counter()
    emb = F.normalize(x_te.flatten(1), p=2, dim=1)
    metrics = evaluate(emb, y_te, args.recall_at, args.seeds[0], args.eval_block)
    return {"metrics": metrics, "eval_seconds": time.perf_counter() - e0}


def stats(values):
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def summarise(items):
    """Per metric (and train_seconds where present) mean, min and max over `items`."""
    ok = [r for r in items if "metrics" in r]
    if not ok:
        return {}
    out = {k: stats([r["metrics"][k] for r in ok]) for k in ok[0]["metrics"]}
    if "train_seconds" in ok[0]:
        out["train_seconds"] = stats([r["train_seconds"] for r in ok])
    return out


def summary(args, runs):
    cells = []
    for lk in args.losses:
        for mk in args.miners:
            rs = [r for r in runs if r["loss"] == lk and r["miner"] == mk]
            if not rs:
                continue
            cells.append(
                {
                    "loss": lk,
                    "miner": mk,
                    "seeds": [r["seed"] for r in rs if "metrics" in r],
                    "failed_seeds": [r["seed"] for r in rs if "metrics" not in r],
                    **summarise(rs),
                }
            )
    return cells


def fmt(s, scale=100.0, digits=1):
    if not s:
        return "—"
    mean, lo, hi = (scale * s[k] for k in ("mean", "min", "max"))
    if lo == hi:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


TABLE_COLUMNS = (("P@1", "precision_at_1"), ("R-prec", "r_precision"), ("MAP@R", "map_at_r"),
                 ("R@1", "recall_at_1"), ("NMI", "nmi"))


def markdown(raw, untrained, cells):
    s = "| loss | miner |" + "".join(f" {name} |" for name, _ in TABLE_COLUMNS) + " train s |\n"
    s += "|---|---|" + "---:|" * (len(TABLE_COLUMNS) + 1) + "\n"

    def row(first, second, st, train):
        vals = "".join(f" {fmt(st.get(key))} |" for _, key in TABLE_COLUMNS)
        return f"| {first} | {second} |{vals} {train} |\n"

    if raw is not None:
        s += row("*raw input*", "", summarise([raw]), "—")
    if untrained:
        s += row("*untrained network*", "", summarise(untrained), "—")
    for c in cells:
        n_ok, n_fail = len(c["seeds"]), len(c["failed_seeds"])
        miner = c["miner"] + (f" ({n_ok}/{n_ok + n_fail} seeds)" if n_fail else "")
        if not n_ok:
            s += f"| {c['loss']} | {miner} |" + " failed |" * (len(TABLE_COLUMNS) + 1) + "\n"
            continue
        s += row(c["loss"], miner, c, fmt(c["train_seconds"], scale=1.0, digits=0))
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/fashion-mnist",
                    help="MNIST-format IDX folder (MNIST or Fashion-MNIST, plain or .gz)")
    ap.add_argument("--losses", default="contrastive,triplet,margin",
                    help="contrastive, triplet, margin, multi_similarity")
    ap.add_argument("--miners", default="uniform,semi_hard,batch_hard,distance_weighted",
                    help="uniform, semi_hard, batch_hard, distance_weighted, multi_similarity, none")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batches-per-epoch", type=int, default=100)
    ap.add_argument("--steps", type=int, help="N batches in all (one epoch of N batches); "
                    "overrides --epochs and --batches-per-epoch")
    ap.add_argument("--p", type=int, default=5)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--random-crop-padding", type=int, default=0,
                    help="train-time RandomCrop(28, padding=N), zero fill (0: off)")
    ap.add_argument("--channels", default="32,64,128")
    ap.add_argument("--embedding-dim", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--loss-lr", type=float, default=1e-2)
    ap.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    ap.add_argument("--min-factor", type=float, default=0.05)
    ap.add_argument("--eval-batch-size", type=int, default=128,
                    help="images per forward pass when embedding the held-out set")
    ap.add_argument("--eval-block", type=int, default=1024, help="queries per k-NN block")
    ap.add_argument("--recall-at", default="1,2,4,8")
    ap.add_argument("--seed", type=int, help="a single seed (default 0)")
    ap.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (instead of --seed)")
    ap.add_argument("--skip-baselines", action="store_true",
                    help="do not evaluate the raw input and the untrained networks")
    ap.add_argument("--log-every", type=int, default=100, help="print training progress every N steps")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    ap.add_argument("--out", default="runs/pml-compare/compare_pml.json")
    ap.add_argument(
        "--write-t10k-split",
        metavar="DIR",
        help="write the 10,000 test images of --data as an IDX folder DIR (see write_t10k_split) and exit",
    )
    ap.add_argument("--self-test", action="store_true", help="check the evaluation and the crop, and exit")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)  # k-means (OpenMP, BLAS)
    if args.self_test:
        self_test(args.threads)
        return
    if args.write_t10k_split:
        write_t10k_split(args.data, args.write_t10k_split)
        print(f"wrote {args.write_t10k_split}")
        return
    if args.seeds is not None and args.seed is not None:
        ap.error("give --seed or --seeds, not both")
    if args.seeds is not None:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    else:
        args.seeds = [args.seed if args.seed is not None else 0]
    if args.steps is not None:
        args.epochs, args.batches_per_epoch = 1, args.steps
    args.channels = [int(c) for c in args.channels.split(",")]
    args.recall_at = [int(k) for k in args.recall_at.split(",")]
    args.losses = args.losses.split(",")
    args.miners = args.miners.split(",")
    for lk in args.losses:
        make_loss(lk)
    for mk in args.miners:
        make_miner(mk)

    x, y = load_idx_folder(args.data)
    classes = sorted(set(y.tolist()))
    train_classes = set(classes[: len(classes) // 2])
    tr = torch.tensor([int(c) in train_classes for c in y])
    data = (x[tr], y[tr], x[~tr], y[~tr])
    print(
        f"pml: {args.data}: {len(y)} images, {int(tr.sum())} train (classes "
        f"{sorted(train_classes)}), {int((~tr).sum())} held out; seeds {args.seeds}; "
        f"{args.epochs} x {args.batches_per_epoch} batches of {args.p} x {args.k}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )

    raw, untrained, runs = None, [], []
    wall = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    def write():
        report = {
            "settings": {k: v for k, v in vars(args).items()},
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "raw_input": raw["metrics"] if raw else None,
            "raw_input_eval_seconds": raw["eval_seconds"] if raw else None,
            "untrained": untrained,
            "untrained_summary": summarise(untrained),
            "runs": runs,
            "summary": summary(args, runs),
            "wall_seconds": time.perf_counter() - wall,
        }
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)

    def brief(m):
        return (f"P@1 {100 * m['precision_at_1']:.1f}, R-prec {100 * m['r_precision']:.1f}, "
                f"MAP@R {100 * m['map_at_r']:.1f}, NMI {100 * m['nmi']:.1f}")

    if not args.skip_baselines:
        print("pml: evaluating the raw input", flush=True)
        raw = raw_input_run(args, data[2], data[3])
        print(f"  raw input: {brief(raw['metrics'])}; eval {raw['eval_seconds']:.1f} s", flush=True)
        write()
    n_runs = len(args.seeds) * len(args.losses) * len(args.miners)
    for seed in args.seeds:
        if not args.skip_baselines:
            print(f"pml: seed {seed}: evaluating the untrained network", flush=True)
            u = untrained_run(args, seed, data[2], data[3])
            untrained.append(u)
            print(f"  untrained, seed {seed}: {brief(u['metrics'])}; eval {u['eval_seconds']:.1f} s",
                  flush=True)
            write()
        for lk in args.losses:
            for mk in args.miners:
                print(f"pml: run {len(runs) + 1}/{n_runs}: seed {seed}, {lk} loss, {mk} miner",
                      flush=True)
                try:
                    run = train_run(args, lk, mk, seed, data)
                except Exception as e:  # a failed run is reported, not hidden
                    run = {"loss": lk, "miner": mk, "seed": seed, "error": f"{type(e).__name__}: {e}"}
                    print(f"  failed: {run['error']}", flush=True)
                else:
                    print(
                        f"  done: seed {seed}, {lk} + {mk}: train {run['train_seconds']:.0f} s, "
                        f"eval {run['eval_seconds']:.1f} s, last batch loss "
                        f"{run['last_batch_loss']:.4f}; {brief(run['metrics'])}",
                        flush=True,
                    )
                runs.append(run)
                write()
    print(markdown(raw, untrained, summary(args, runs)), end="")
    print(f"wall time {time.perf_counter() - wall:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
