"""The package's API against naive NumPy implementations, its input kinds and its errors."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dml


def clustered(rng, n, d, n_classes, spread=1.0):
    y = rng.integers(0, n_classes, size=n)
    centres = rng.standard_normal((n_classes, d))
    return (centres[y] + spread * rng.standard_normal((n, d))).astype(np.float32), y


def naive_distances(q, r, metric):
    q64, r64 = q.astype(np.float64), r.astype(np.float64)
    if metric in ("euclidean", "squared_euclidean"):
        d2 = ((q64[:, None, :] - r64[None, :, :]) ** 2).sum(-1)
        return d2 if metric == "squared_euclidean" else np.sqrt(d2)
    if metric == "cosine":
        q64 = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
        r64 = r64 / np.linalg.norm(r64, axis=1, keepdims=True)
    return -(q64 @ r64.T)  # similarities, negated so that smaller is closer


# --- k-NN ------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", dml.METRICS)
def test_knn_matches_brute_force(metric):
    rng = np.random.default_rng(1)
    q = rng.standard_normal((40, 16)).astype(np.float32)
    r = rng.standard_normal((150, 16)).astype(np.float32)
    scores, idx = dml.knn(q, r, 6, metric=metric)
    d = naive_distances(q, r, metric)
    want = np.argsort(d, axis=1, kind="stable")[:, :6]
    np.testing.assert_array_equal(idx, want)
    sign = -1.0 if metric in ("cosine", "dot") else 1.0
    np.testing.assert_allclose(sign * scores, np.take_along_axis(d, want, 1), rtol=1e-4, atol=1e-4)
    assert scores.dtype == np.float32 and idx.dtype == np.int64


def test_knn_leave_one_out_and_prefix():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((60, 5)).astype(np.float32)
    d = naive_distances(x, x, "euclidean")
    np.fill_diagonal(d, np.inf)
    want = np.argsort(d, axis=1, kind="stable")[:, :4]
    _, idx = dml.knn(x, None, 4)
    np.testing.assert_array_equal(idx, want)
    # The query as the first rows of a longer reference: each row leaves only itself out.
    extra = rng.standard_normal((30, 5)).astype(np.float32)
    ref = np.concatenate([x[:20], extra])
    d = naive_distances(x[:20], ref, "euclidean")
    d[np.arange(20), np.arange(20)] = np.inf
    _, idx = dml.knn(x[:20], ref, 4, ref_includes_query=True)
    np.testing.assert_array_equal(idx, np.argsort(d, axis=1, kind="stable")[:, :4])
    with pytest.raises(ValueError, match="query row 0 differs from reference row 0"):
        dml.knn(x[:20] + 1, ref, 4, ref_includes_query=True)


def test_knn_callable_follows_pmls_contract():
    rng = np.random.default_rng(3)
    r = rng.standard_normal((50, 8)).astype(np.float32)
    dist, idx = dml.KNN()(r[:10], 3, r, True)
    assert dist.shape == idx.shape == (10, 3)
    assert not (idx == np.arange(10)[:, None]).any()  # each query left out of its own list
    d = naive_distances(r[:10], r, "squared_euclidean")
    d[np.arange(10), np.arange(10)] = np.inf
    np.testing.assert_array_equal(idx, np.argsort(d, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(dist, np.sort(d, axis=1)[:, :3], rtol=1e-4)


# --- evaluate --------------------------------------------------------------------------------


def naive_scores(x, y, ks):
    """Leave-one-out Recall@K, P@1, R-precision and MAP@R straight from their definitions."""
    d = naive_distances(x, x, "euclidean")
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    recall = {k: [] for k in ks}
    p1, rp, mapr = [], [], []
    for i in range(len(x)):
        r = int((y == y[i]).sum()) - 1
        if r == 0:
            continue
        rel = (y[order[i, : len(x) - 1]] == y[i]).astype(float)
        for k in ks:
            recall[k].append(rel[:k].max())
        p1.append(rel[0])
        rp.append(rel[:r].sum() / r)
        prec = np.cumsum(rel[:r]) / np.arange(1, r + 1)
        mapr.append((prec * rel[:r]).sum() / r)
    out = {f"recall_at_{k}": np.mean(v) for k, v in recall.items()}
    out.update(precision_at_1=np.mean(p1), r_precision=np.mean(rp), map_at_r=np.mean(mapr))
    return out


def test_evaluate_matches_definitions():
    rng = np.random.default_rng(4)
    x, y = clustered(rng, 250, 8, 6, spread=1.3)
    y[0] = 99  # a lone query
    got = dml.evaluate(x, y, recall_at=(1, 2, 5), nmi=False)
    want = naive_scores(x, y, (1, 2, 5))
    for key, value in want.items():
        assert abs(got[key] - value) < 1e-12, key
    assert got["n_queries"] == 250 and got["n_queries_without_positive"] == 1
    assert got["nmi"] is None


def test_evaluate_with_a_gallery_and_clustering():
    rng = np.random.default_rng(5)
    x, y = clustered(rng, 200, 4, 3, spread=0.05)
    got = dml.evaluate(x[:80], y[:80], x[80:], y[80:], ami=True)
    assert got["precision_at_1"] == 1.0 and got["map_at_r"] == 1.0
    assert abs(got["nmi"] - 1.0) < 1e-12 and abs(got["ami"] - 1.0) < 1e-12


def test_evaluate_takes_either_kmeans_seeding_and_names_a_wrong_one():
    rng = np.random.default_rng(6)
    x, y = clustered(rng, 120, 4, 3, spread=0.05)
    for seeding in ("k-means||", "k-means++"):
        got = dml.evaluate(x, y, ami=True, kmeans_seeding=seeding)
        assert abs(got["nmi"] - 1.0) < 1e-12 and abs(got["ami"] - 1.0) < 1e-12, seeding
    with pytest.raises(ValueError, match="kmeans_seeding|k-means"):
        dml.evaluate(x, y, kmeans_seeding="random")


# --- inputs ----------------------------------------------------------------------------------


class ArrayLike:
    """Only ``__array__``."""

    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a


class DLPackOnly:
    """Only the DLPack protocol (as a tensor of another framework on the CPU would offer)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_every_input_kind_gives_the_same_answer():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((30, 4)).astype(np.float32)
    want = dml.knn(x, None, 3)[1]
    for variant in (
        x.tolist(),
        x.astype(np.float64),
        np.asfortranarray(x),
        np.concatenate([x, x], axis=1)[:, ::2][:, :4] * 0 + x,  # a strided view
        ArrayLike(x),
        DLPackOnly(x),
    ):
        np.testing.assert_array_equal(dml.knn(variant, None, 3)[1], want)
    # Labels of any integer dtype, as NumPy arrays, lists or DLPack.
    y = rng.integers(0, 3, size=30)
    m = dml.evaluate(x, y, nmi=False)
    for labels in (y.astype(np.int32), y.astype(np.uint8), y.tolist(), (y - 10).astype(np.int16), DLPackOnly(y)):
        assert dml.evaluate(x, labels, nmi=False) == m


def test_torch_is_never_imported():
    code = textwrap.dedent(
        """
        import sys, numpy as np, dml
        x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
        y = np.arange(64) % 4
        dml.evaluate(x, y); dml.knn(x, None, 3); dml.KNN()(x, 3, x, True)
        for m in (dml.BatchHardMiner(), dml.TripletMarginMiner(), dml.MultiSimilarityMiner(),
                  dml.DistanceWeightedMiner(seed=0), dml.PairMarginMiner()):
            m(x, y)
        list(dml.PKSampler(y, 2, 4))
        dml.AccuracyCalculator(include=("precision_at_1", "NMI")).get_accuracy(x, y)
        assert "torch" not in sys.modules, "torch was imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- miners ----------------------------------------------------------------------------------


def test_miner_tuples_are_valid_and_int64():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((32, 8)).astype(np.float32)
    y = rng.integers(0, 4, size=32)
    for miner in (dml.BatchHardMiner(), dml.TripletMarginMiner(0.5), dml.DistanceWeightedMiner(seed=1)):
        a, p, n = miner(x, y)
        assert a.dtype == p.dtype == n.dtype == np.int64 and len(a) > 0
        assert (y[a] == y[p]).all() and (a != p).all() and (y[a] != y[n]).all()
    for miner in (dml.MultiSimilarityMiner(0.5), dml.PairMarginMiner(0.3, 1.2)):
        a1, p, a2, n = miner(x, y)
        assert len(a1) > 0 and len(a2) > 0
        assert (y[a1] == y[p]).all() and (a1 != p).all() and (y[a2] != y[n]).all()


def test_miners_take_any_integer_labels():
    # Labels are only compared: negative, beyond 32 bits, unsigned 64-bit, small dtypes, lists,
    # and a batch against a reference set whose labels do not fit 32 bits either, all give the
    # tuples of the same classes numbered 0, 1, 2, ...
    rng = np.random.default_rng(9)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    r = rng.standard_normal((30, 8)).astype(np.float32)
    y, ry = rng.integers(0, 5, size=40), rng.integers(0, 5, size=30)
    values = np.array([-7, 2**40, 3, -(2**62), 2**32], dtype=np.int64)
    for miner in (dml.BatchHardMiner(), dml.PairMarginMiner(0.3, 1.2), dml.MultiSimilarityMiner(0.5)):
        want = [t.tolist() for t in miner(x, y)]
        want_ref = [t.tolist() for t in miner(x, y, r, ry)]
        assert len(want[0]) > 0 and len(want_ref[0]) > 0
        for labels in (values[y], values[y].tolist(), y.astype(np.uint8), y.astype(np.uint64) + np.uint64(2**63)):
            assert [t.tolist() for t in miner(x, labels)] == want
        assert [t.tolist() for t in miner(x, values[y], r, values[ry])] == want_ref
        # A label of the reference set that equals no batch label, beyond 32 bits, stays apart.
        odd = values[ry].copy()
        odd[0] = 2**50
        got = miner(x, values[y], r, odd)
        renumbered = ry.copy()
        renumbered[0] = 99
        assert [t.tolist() for t in got] == [t.tolist() for t in miner(x, y, r, renumbered)]


def test_batch_hard_picks_by_hand():
    # On a line (normalisation off): anchor 0's farthest positive is 2, its closest negative 3.
    x = np.array([[0.0], [1.0], [2.5], [3.0], [7.0]], dtype=np.float32)
    y = [0, 0, 0, 1, 1]
    a, p, n = dml.BatchHardMiner(distance="euclidean")(x, y)
    assert list(zip(a.tolist(), p.tolist(), n.tolist())) == [(0, 2, 3), (1, 2, 3), (2, 0, 3), (3, 4, 2), (4, 3, 2)]


def test_distance_weighted_is_seeded():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((40, 16)).astype(np.float32)
    y = rng.integers(0, 5, size=40)
    first = [t.tolist() for t in dml.DistanceWeightedMiner(seed=5)(x, y)]
    again = [t.tolist() for t in dml.DistanceWeightedMiner(seed=5)(x, y)]
    other = [t.tolist() for t in dml.DistanceWeightedMiner(seed=6)(x, y)]
    assert first == again and first != other


# --- PK sampler ------------------------------------------------------------------------------


def test_pk_sampler_covers_every_item_each_epoch():
    labels = np.repeat([10, 20, 30, 40, 50, 60], [2, 5, 9, 4, 1, 12])
    sampler = dml.PKSampler(labels, p=3, k=4, seed=1)
    assert sampler.excluded_classes == [50] and sampler.n_excluded_items == 1
    assert sampler.batch_size == 12 and sampler.n_classes == 5
    epochs = []
    for _ in range(3):
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for batch in batches:
            assert len(batch) == 12
            groups = [labels[batch[i : i + 4]] for i in range(0, 12, 4)]
            assert all(len(set(g)) == 1 for g in groups)  # k consecutive items per class
            assert len({g[0] for g in groups}) == 3  # p distinct classes
        seen = {i for b in batches for i in b}
        assert seen == set(np.flatnonzero(labels != 50).tolist())
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]


def test_pk_sampler_as_torch_batch_sampler_protocol():
    sampler = dml.PKSampler([0, 0, 1, 1, 2, 2], p=2, k=2, seed=0)
    it = iter(sampler)
    assert all(isinstance(i, int) for i in next(it))


# --- errors ----------------------------------------------------------------------------------


def test_dml_errors_arrive_with_their_message():
    x = np.zeros((10, 3), dtype=np.float32)
    y = np.arange(10) % 2
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value in embeddings at row 3, column 1"):
        dml.evaluate(bad, y)
    with pytest.raises(ValueError, match=r"non-finite value in query at row 3, column 1"):
        dml.knn(bad, x, 2)
    with pytest.raises(ValueError, match=r"k = 10 is invalid: it must be between 1 and 9"):
        dml.knn(x, None, 10)
    with pytest.raises(ValueError, match=r"dimension mismatch"):
        dml.knn(x, np.zeros((4, 2), dtype=np.float32), 1)
    with pytest.raises(ValueError, match=r"unknown metric 'manhattan'"):
        dml.knn(x, None, 1, metric="manhattan")
    with pytest.raises(ValueError, match=r"query has 10 rows but query_labels has 9 labels"):
        dml.evaluate(x, y[:9])
    with pytest.raises(ValueError, match=r"none of the 10 queries has a same-class reference"):
        dml.evaluate(x, np.arange(10))
    with pytest.raises(ValueError, match=r"p = 3 classes per batch but only 2 classes have at least 2 items"):
        dml.PKSampler(y, 3, 2)
    with pytest.raises(ValueError, match=r"cut-offs must be finite with 0 <= cutoff < nonzero_loss_cutoff"):
        dml.DistanceWeightedMiner(cutoff=2.0)
    with pytest.raises(ValueError, match=r"epsilon must be finite and non-negative, got -1"):
        dml.MultiSimilarityMiner(-1.0)
    with pytest.raises(ValueError, match=r"non-finite value in embeddings at row 3, column 1"):
        dml.BatchHardMiner(distance="euclidean")(bad, y)


def test_wrong_kinds_of_input_are_type_errors():
    x = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(TypeError, match="integer class labels, got dtype float64"):
        dml.evaluate(x, [0.0, 0.0, 1.0, 1.0])
    with pytest.raises(TypeError, match="must hold real numbers"):
        dml.knn(np.array([["a", "b"]]), None, 1)
    with pytest.raises(ValueError, match=r"query must be a 2-D array \(n × d\), got shape \(4,\)"):
        dml.knn(np.zeros(4), None, 1)


def test_accuracy_calculator_refuses_what_it_does_not_support():
    with pytest.raises(ValueError, match="knn_func is not supported.*dml.KNN"):
        dml.AccuracyCalculator(knn_func=lambda *a: None)
    with pytest.raises(ValueError, match="kmeans_func is not supported"):
        dml.AccuracyCalculator(kmeans_func=lambda *a: None)
    with pytest.raises(ValueError, match="label_comparison_fn is not supported"):
        dml.AccuracyCalculator(label_comparison_fn=lambda a, b: a == b)
    with pytest.raises(TypeError, match="Arguments must be of type tuple"):
        dml.AccuracyCalculator(include="NMI")
    with pytest.raises(ValueError, match="Primary metrics must be one or more of"):
        dml.AccuracyCalculator(include=("recall_at_1",))
    with pytest.raises(ValueError, match="mutually exclusive"):
        dml.AccuracyCalculator(avg_of_avgs=True, return_per_class=True)
    with pytest.raises(ValueError, match="k must be an integer greater than 0"):
        dml.AccuracyCalculator(k=0)

    class WithCustomMetric(dml.AccuracyCalculator):
        def calculate_precision_at_2(self, knn_labels, query_labels, **kwargs):
            return 0.0

    with pytest.raises(TypeError, match=r"adds \['calculate_precision_at_2'\]"):
        WithCustomMetric()
    x = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    y = np.arange(30) % 3
    with pytest.raises(ValueError, match=r"k=5 is less than the largest class \(9 same-class references\)"):
        dml.AccuracyCalculator(include=("r_precision",), k=5).get_accuracy(x, y)
    with pytest.raises(ValueError, match="first len\\(query\\) elements of reference must be equal to query"):
        dml.AccuracyCalculator(include=("precision_at_1",)).get_accuracy(x, y, x[::-1], y, ref_includes_query=True)


def test_miners_refuse_what_they_do_not_support():
    with pytest.raises(ValueError, match="type_of_triplets must be one of"):
        dml.TripletMarginMiner(type_of_triplets="hardest")
    with pytest.raises(ValueError, match="DistanceWeightedMiner needs Euclidean distances"):
        dml.DistanceWeightedMiner(distance="cosine")

    class SNRDistance:
        pass

    with pytest.raises(ValueError, match="is not supported"):
        dml.BatchHardMiner(distance=SNRDistance())
    with pytest.raises(ValueError, match="ref_emb and ref_labels go together"):
        dml.BatchHardMiner()(np.zeros((4, 2), np.float32), [0, 0, 1, 1], np.zeros((4, 2), np.float32))


def test_all_lone_queries_give_nan_like_pml():
    rng = np.random.default_rng(9)
    q, r = rng.standard_normal((6, 3)), rng.standard_normal((8, 3))
    with pytest.warns(UserWarning, match="None of the query labels are in the reference set"):
        got = dml.AccuracyCalculator(include=("precision_at_1", "NMI")).get_accuracy(q, [5, 5, 5, 6, 6, 6], r, [0] * 8)
    assert math.isnan(got["precision_at_1"]) and 0.0 <= got["NMI"] <= 1.0
