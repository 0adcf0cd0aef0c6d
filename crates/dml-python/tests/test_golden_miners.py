"""pml's miners and faiss' k-NN reproduced through the Python API.

The fixtures come from scripts/fixtures/dml_python_pml.py (pml 2.9.0, faiss 1.15.1, torch 2.13),
which gives pml the embeddings, so pml computes its own distances (torch.cdist, matmul) and dml
its own (dml-kernels). Miners' tuples agree exactly, in pml's order where pml defines one
(torch.where's row-major order for the triplet- and pair-margin miners, anchor order for
batch-hard; ties to the lower index on both sides); the multi-similarity miner is compared as
sets, since pml orders each anchor's pairs with an unstable sort by value.
"""

import numpy as np
import pytest

import dml


@pytest.mark.parametrize("name", ["separate", "prefix"])
def test_knn_matches_faiss(pml_golden, name):
    meta, arrays = pml_golden
    case = meta["knn"][name]
    q, r = arrays[case["query"]], arrays[case["reference"]]
    dist, idx = dml.KNN()(q, case["k"], r, case["ref_includes_query"])
    np.testing.assert_array_equal(idx, np.array(case["indices"]))
    # faiss' IndexFlatL2 and dml both compute squared distances in the GEMM form, in float32.
    np.testing.assert_allclose(dist, np.array(case["distances"], dtype=np.float32), rtol=1e-5, atol=1e-5)


MINERS = {
    "batch_hard": lambda kw: dml.BatchHardMiner(**kw),
    "triplet_margin_all": lambda kw: dml.TripletMarginMiner(0.2, "all", **kw),
    "triplet_margin_hard": lambda kw: dml.TripletMarginMiner(0.2, "hard", **kw),
    "triplet_margin_semihard": lambda kw: dml.TripletMarginMiner(0.2, "semihard", **kw),
    "triplet_margin_easy": lambda kw: dml.TripletMarginMiner(0.2, "easy", **kw),
    "multi_similarity": lambda kw: dml.MultiSimilarityMiner(0.1, **kw),
}


def pml_distance(name):
    """Stand-ins for pml's distance objects: dml reads only their class name and attributes."""
    attrs = {
        "cosine": ("CosineSimilarity", dict(p=2, power=1, normalize_embeddings=True)),
        "lp_unnormalized": ("LpDistance", dict(p=2, power=1, normalize_embeddings=False)),
        "lp_squared": ("LpDistance", dict(p=2, power=2, normalize_embeddings=True)),
        "dot_unnormalized": ("DotProductSimilarity", dict(p=2, power=1, normalize_embeddings=False)),
    }[name]
    return type(attrs[0], (), attrs[1])()


@pytest.mark.parametrize("name", ["batch16", "batch32", "reference", "ties"])
def test_miners_match_pml(pml_golden, name):
    meta, arrays = pml_golden
    case = meta["miners"][name]
    x, y = arrays[case["embeddings"]], arrays[case["labels"]]
    extra = (arrays[case["ref_emb"]], arrays[case["ref_labels"]]) if "ref_emb" in case else ()
    checked = 0
    for run in case["runs"]:
        kw = {} if run["distance"] == "default" else {"distance": pml_distance(run["distance"])}
        for key, want_keys in run["outputs"].items():
            if key == "pair_margin":
                pm = want_keys
                miner = dml.PairMarginMiner(pm["pos_margin"], pm["neg_margin"], **kw)
                want_keys = pm["pairs"]
            else:
                miner = MINERS[key](kw)
            want = [arrays[k].astype(np.int64) for k in want_keys]
            got = miner(x, y, *extra)
            what = f"{name} {run['distance']} {key}"
            assert len(got) == len(want), what
            assert all(g.dtype == np.int64 for g in got), what
            if key == "multi_similarity":
                # pml sorts each anchor's pairs by value (unstable sort): compare as sets.
                for part in (slice(0, 2), slice(2, 4)):
                    g = sorted(zip(*[t.tolist() for t in got[part]]))
                    w = sorted(zip(*[t.tolist() for t in want[part]]))
                    assert g == w, what
            else:
                for g, w in zip(got, want):
                    np.testing.assert_array_equal(g, w, err_msg=what)
            checked += sum(len(w) for w in want)
    assert checked > 0
