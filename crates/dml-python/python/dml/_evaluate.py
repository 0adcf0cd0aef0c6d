"""``dml.evaluate``: every dml retrieval and clustering score in one exact, streaming pass."""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from . import _dml
from ._convert import Labels, as_matrix, check_rows
from ._knn import _check_metric


def _depth(ranking_depth: Any) -> Any:
    if ranking_depth is None or ranking_depth == "whole":
        return "whole"
    if ranking_depth == "max_bin_count":
        return "max_bin_count"
    if isinstance(ranking_depth, (int, np.integer)) and not isinstance(ranking_depth, bool) and ranking_depth > 0:
        return int(ranking_depth)
    raise ValueError(f"ranking_depth must be None, 'whole', 'max_bin_count' or a positive int, got {ranking_depth!r}")


def _ks(name: str, ks: Sequence[int]) -> list[int]:
    out = [int(k) for k in ks]
    if any(k < 1 for k in out):
        raise ValueError(f"{name} contains k = {min(out)}; every k must be at least 1")
    return out


def run(
    q: np.ndarray,
    labels: Labels,
    r: np.ndarray | None,
    metric: str,
    config: dict[str, Any],
    ref_includes_query: bool,
) -> dict[str, Any]:
    """The native call on converted inputs; per-class keys turned back into the caller's labels."""
    rl = labels.ids[1] if r is not None else None
    out = _dml.evaluate(q, labels.ids[0], r, rl, metric, json.dumps(config), ref_includes_query)
    if "per_class" in out:
        out["per_class"] = {labels.classes[int(c)].item(): v for c, v in out["per_class"].items()}
    return out


def evaluate(
    query: Any,
    query_labels: Any,
    reference: Any = None,
    reference_labels: Any = None,
    *,
    ref_includes_query: bool = False,
    metric: str = "euclidean",
    recall_at: Sequence[int] = (1, 2, 4, 8),
    r_metrics: bool = True,
    mean_average_precision: bool = False,
    mean_reciprocal_rank: bool = False,
    ranking_depth: Any = None,
    cmc_at: Sequence[int] = (),
    oml_precision_at: Sequence[int] = (),
    oml_map_at: Sequence[int] = (),
    per_class: bool = False,
    nmi: bool = True,
    ami: bool = False,
    seed: int = 0,
    kmeans_restarts: int = 1,
    kmeans_max_iter: int = 300,
    kmeans_seeding: str = "k-means||",
) -> dict[str, Any]:
    """Retrieval and clustering scores of embeddings, with dml's names.

    Without ``reference``, every query is searched against all the other queries (leave-one-out,
    the protocol of CUB-200, Cars196 and SOP); with it, against the reference set only (In-Shop),
    or, with ``ref_includes_query``, against a reference set whose first rows are the queries
    (each query leaving its own row out). The search is exact and streams blocks of queries, so
    memory stays O(block × k), never O(n²).

    Args:
        query: ``n × d`` embeddings (NumPy, torch, DLPack, ...).
        query_labels: ``n`` integer class labels.
        reference, reference_labels: a separate gallery, or ``None``.
        ref_includes_query: ``query`` (and its labels) are the first rows of ``reference``.
        metric: ``"euclidean"`` (default), ``"squared_euclidean"``, ``"cosine"`` or ``"dot"``.
        recall_at: the K of each Recall@K.
        r_metrics: R-precision and MAP@R (k-NN to the largest class).
        mean_average_precision, mean_reciprocal_rank: pml's scores of those names, over the
            ranking down to ``ranking_depth``: ``None``/``"whole"`` (every reference, pml's
            ``k=None``), ``"max_bin_count"`` (the largest class) or a number.
        cmc_at, oml_precision_at, oml_map_at: open-metric-learning's ``cmc@k``, ``precision@k``
            and ``map@k`` (OML's definitions, averaged over every query).
        per_class: also the scores per query class and their mean over classes (pml's
            ``return_per_class`` and ``avg_of_avgs``).
        nmi, ami: cluster the queries with k-means (k = number of query classes) and compare.
        seed, kmeans_restarts, kmeans_max_iter: k-means' seeding and Lloyd's iterations.
        kmeans_seeding: ``"k-means||"`` (default, k-means‖: reads the data three times) or
            ``"k-means++"`` (scikit-learn's greedy k-means++: reads them once per centre).

    Returns:
        A dict with ``recall_at_<K>``, ``precision_at_1``, ``r_precision``, ``map_at_r``,
        ``nmi`` (``None`` when not computed), the other requested scores
        (``mean_average_precision``, ``mean_reciprocal_rank``, ``cmc_at_<k>``,
        ``oml_precision_at_<k>``, ``oml_map_at_<k>``, ``ami``), ``n_queries`` and
        ``n_queries_without_positive`` (queries without a same-class reference, left out of the
        retrieval scores as pml leaves out its "lone" queries); with ``per_class``, also
        ``per_class`` (``{label: {score: value, "n_queries": count}}``) and ``avg_of_avgs``.

    Raises:
        ValueError: mismatched lengths or dimensions, NaN or infinite values, no query with a
            same-class reference, an unknown metric, a k of 0.

    Example:
        >>> import numpy as np, dml
        >>> x = np.array([[0, 0], [0.1, 0], [0, 0.1], [5, 5], [5.1, 5], [5, 5.1]], dtype=np.float32)
        >>> m = dml.evaluate(x, [0, 0, 0, 1, 1, 1], mean_reciprocal_rank=True)
        >>> m["recall_at_1"], m["map_at_r"], m["mean_reciprocal_rank"], round(m["nmi"], 6)
        (1.0, 1.0, 1.0, 1.0)
    """
    q = as_matrix(query, "query")
    if reference is None:
        if reference_labels is not None:
            raise ValueError("reference_labels given without reference")
        if ref_includes_query:
            raise ValueError("ref_includes_query=True needs a reference; without one every query is already left out of its own ranking")
        labels = Labels([query_labels], ["query_labels"])
        check_rows(q, labels.ids[0], "query", "query_labels")
        r = None
    else:
        if reference_labels is None:
            raise ValueError("reference given without reference_labels")
        r = as_matrix(reference, "reference")
        labels = Labels([query_labels, reference_labels], ["query_labels", "reference_labels"])
        check_rows(q, labels.ids[0], "query", "query_labels")
        check_rows(r, labels.ids[1], "reference", "reference_labels")
    config = {
        "recall_at": _ks("recall_at", recall_at),
        "r_metrics": bool(r_metrics),
        "mean_average_precision": bool(mean_average_precision),
        "mean_reciprocal_rank": bool(mean_reciprocal_rank),
        "ranking_depth": _depth(ranking_depth),
        "cmc_at": _ks("cmc_at", cmc_at),
        "oml_precision_at": _ks("oml_precision_at", oml_precision_at),
        "oml_map_at": _ks("oml_map_at", oml_map_at),
        "per_class": bool(per_class),
        "nmi": bool(nmi),
        "ami": bool(ami),
        "seed": int(seed),
        "kmeans_restarts": int(kmeans_restarts),
        "kmeans_max_iter": int(kmeans_max_iter),
        "kmeans_seeding": str(kmeans_seeding),
    }
    return run(q, labels, r, _check_metric(metric), config, bool(ref_includes_query))
