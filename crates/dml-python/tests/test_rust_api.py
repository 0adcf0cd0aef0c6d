"""The Python API gives exactly what the Rust API gives on the same random inputs.

The Rust side is examples/rust_reference.rs, which calls dml-eval, dml-kernels and dml-sampling
directly; `cargo xtask test` builds it and names it in DML_RUST_REFERENCE (otherwise this test
runs it through `cargo run`). Labels go to Python as arbitrary integers (3·class + 5) and to Rust
as the class ids, so the densification of labels is checked too. Scores must be bit-identical.
"""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

import dml

ROOT = pathlib.Path(__file__).resolve().parents[3]


def run_reference(job: dict, tmp: pathlib.Path) -> dict:
    (tmp / "job.json").write_text(json.dumps(job))
    exe = os.environ.get("DML_RUST_REFERENCE")
    cmd = [exe] if exe else ["cargo", "run", "-q", "-p", "dml-python", "--example", "rust_reference", "--"]
    subprocess.run(cmd + [str(tmp / "job.json"), str(tmp / "out.json")], check=True, cwd=ROOT)
    return json.loads((tmp / "out.json").read_text())


def clustered(rng, n, d, n_classes, spread=1.0):
    y = rng.integers(0, n_classes, size=n)
    centres = rng.standard_normal((n_classes, d))
    return (centres[y] + spread * rng.standard_normal((n, d))).astype(np.float32), y


def user_labels(y):
    """What a user might pass: arbitrary, non-contiguous integer labels with the same classes."""
    return 3 * y + 5


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rust_reference")
    rng = np.random.default_rng(2024)
    arrays = {}

    def save(name, a):
        np.save(tmp / f"{name}.npy", a)
        arrays[name] = a
        return f"{name}.npy"

    x, y = clustered(rng, 300, 12, 7)
    y[:2] = 7  # one class of two items
    y[2] = 8  # one class of one item: a lone query
    xr, yr = clustered(rng, 220, 12, 6)
    evaluate_cases = [
        dict(query=save("x", x), query_labels=save("y", y), metric="euclidean",
             config=dict(recall_at=[1, 3, 10], nmi=True, ami=True, seed=3, mean_average_precision=True,
                         mean_reciprocal_rank=True, per_class=True)),
        dict(query=save("x", x), query_labels=save("y", y), metric="cosine",
             config=dict(recall_at=[1, 2, 4, 8], r_metrics=True, nmi=False, mean_average_precision=True,
                         ranking_depth="max_bin_count", cmc_at=[1, 5], oml_precision_at=[3], oml_map_at=[2, 7])),
        dict(query=save("x", x), query_labels=save("y", y), reference=save("xr", xr),
             reference_labels=save("yr", yr), metric="squared_euclidean",
             config=dict(recall_at=[1, 5], nmi=True, seed=1, kmeans_restarts=2, mean_reciprocal_rank=True,
                         ranking_depth=12, per_class=True)),
        dict(query=save("xq2", xr[:30]), query_labels=save("yq2", yr[:30]), reference=save("xr", xr),
             reference_labels=save("yr", yr), ref_includes_query=True, metric="dot",
             config=dict(recall_at=[2], nmi=False, mean_average_precision=True, per_class=True)),
    ]
    knn_cases = [
        dict(query=save("x", x), k=7, metric="euclidean"),
        dict(query=save("xq", x[:40]), reference=save("xr", xr), k=5, metric="dot"),
        dict(query=save("xq2", xr[:30]), reference=save("xr", xr), k=9, metric="cosine", ref_includes_query=True),
    ]
    b = rng.standard_normal((48, 16)).astype(np.float32)
    by = rng.integers(0, 6, size=48)
    br = rng.standard_normal((40, 16)).astype(np.float32)
    bry = rng.integers(0, 6, size=40)
    # Fresh miners for each side of a case; the random one seeded as the Rust side is (17).
    factories = [
        lambda: dml.BatchHardMiner(),
        lambda: dml.TripletMarginMiner(0.3, "semihard"),
        lambda: dml.TripletMarginMiner(0.1, "all", distance="squared_euclidean"),
        lambda: dml.MultiSimilarityMiner(0.2),
        lambda: dml.PairMarginMiner(0.3, 0.9),
        lambda: dml.DistanceWeightedMiner(0.5, 1.4, seed=17),
    ]
    miner_cases = []
    for factory in factories:
        m = factory()
        for with_ref in (False, True):
            if isinstance(m, dml.DistanceWeightedMiner) and with_ref:
                continue
            case = dict(embeddings=save("b", b), labels=save("by", by), config=m._config,
                        metric=m.metric, normalize=m.normalize_embeddings, seed=17, calls=2,
                        factory=factories.index(factory))
            if with_ref:
                case.update(ref_emb=save("br", br), ref_labels=save("bry", bry))
            miner_cases.append(case)
    pk_labels = np.concatenate([np.repeat(np.arange(9), [2, 3, 5, 8, 13, 4, 1, 6, 7])])
    pk_cases = [dict(labels=save("pk", pk_labels), p=3, k=4, seed=9, epochs=[0, 1, 5])]
    job = {"evaluate": evaluate_cases, "knn": knn_cases, "miners": miner_cases, "pk": pk_cases}
    out = run_reference(job, tmp)
    return job, arrays, out, factories


def load(arrays, name):
    return None if name is None else arrays[name.removesuffix(".npy")]


def test_evaluate_equals_rust(reference):
    job, arrays, out, _ = reference
    for case, want in zip(job["evaluate"], out["evaluate"]):
        got = dml.evaluate(
            load(arrays, case["query"]),
            user_labels(load(arrays, case["query_labels"])),
            load(arrays, case.get("reference")),
            None if "reference" not in case else user_labels(load(arrays, case["reference_labels"])),
            ref_includes_query=case.get("ref_includes_query", False),
            metric=case["metric"],
            **case["config"],
        )
        if "per_class" in want:
            # Rust keys the classes by id, Python by the caller's label.
            want["per_class"] = {int(user_labels(int(c))): v for c, v in want["per_class"].items()}
            assert len(want["per_class"]) > 1
        assert got == want
        assert got["n_queries_without_positive"] >= 1 or "reference" in case


def test_knn_equals_rust(reference):
    job, arrays, out, _ = reference
    for case, want in zip(job["knn"], out["knn"]):
        scores, idx = dml.knn(
            load(arrays, case["query"]),
            load(arrays, case.get("reference")),
            case["k"],
            metric=case["metric"],
            ref_includes_query=case.get("ref_includes_query", False),
        )
        np.testing.assert_array_equal(idx, np.array(want["indices"], dtype=np.int64))
        np.testing.assert_array_equal(scores, np.array(want["scores"], dtype=np.float32))


def test_miners_equal_rust(reference):
    job, arrays, out, factories = reference
    for case, want in zip(job["miners"], out["miners"]):
        # A fresh miner: a random one's stream must follow the Rust one call by call.
        miner = factories[case["factory"]]()
        args = [load(arrays, case["embeddings"]), user_labels(load(arrays, case["labels"]))]
        if "ref_emb" in case:
            args += [load(arrays, case["ref_emb"]), user_labels(load(arrays, case["ref_labels"]))]
        for call, w in enumerate(want):
            got = miner(*args)
            assert [g.tolist() for g in got] == w, f"{case['config']} call {call}"
            assert sum(len(g) for g in got) > 0, case["config"]


def test_pk_sampler_equals_rust(reference):
    job, arrays, out, _ = reference
    case, want = job["pk"][0], out["pk"][0]
    sampler = dml.PKSampler(user_labels(load(arrays, case["labels"])), case["p"], case["k"], case["seed"])
    for epoch, w in zip(case["epochs"], want):
        assert sampler.batches(epoch).tolist() == w
    sampler.set_epoch(5)
    assert list(sampler) == want[2]
