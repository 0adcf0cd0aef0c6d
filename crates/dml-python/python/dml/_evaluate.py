"""``dml.evaluate``: every dml retrieval and clustering score in one exact, streaming pass."""

from __future__ import annotations

from typing import Any, Sequence

from . import _dml
from ._convert import Labels, as_matrix, check_rows
from ._knn import _check_metric


def evaluate(
    query: Any,
    query_labels: Any,
    reference: Any = None,
    reference_labels: Any = None,
    *,
    metric: str = "euclidean",
    recall_at: Sequence[int] = (1, 2, 4, 8),
    r_metrics: bool = True,
    nmi: bool = True,
    ami: bool = False,
    seed: int = 0,
    kmeans_restarts: int = 1,
    kmeans_max_iter: int = 300,
) -> dict[str, Any]:
    """Retrieval and clustering scores of embeddings, with dml's names.

    Without ``reference``, every query is searched against all the other queries (leave-one-out,
    the protocol of CUB-200, Cars196 and SOP); with it, against the reference set only (In-Shop).
    The k-NN search is exact and streams blocks of queries, so memory stays O(block × k) rather
    than O(n²); k is the largest Recall@K or, with ``r_metrics``, the largest class.

    Args:
        query: ``n × d`` embeddings (NumPy, torch, DLPack, ...).
        query_labels: ``n`` integer class labels.
        reference, reference_labels: a separate gallery, or ``None``.
        metric: ``"euclidean"`` (default), ``"squared_euclidean"``, ``"cosine"`` or ``"dot"``.
        recall_at: the K of each Recall@K.
        r_metrics: compute R-precision and MAP@R (k-NN to the largest class).
        nmi, ami: cluster the queries with k-means (k = number of query classes) and compare.
        seed, kmeans_restarts, kmeans_max_iter: k-means++ seeding and Lloyd's iterations.

    Returns:
        A dict with ``recall_at_<K>`` per K, ``precision_at_1``, ``r_precision``, ``map_at_r``,
        ``nmi``, ``ami`` (``None`` when not computed), ``n_queries`` and
        ``n_queries_without_positive`` (queries without a same-class reference, left out of
        every retrieval score as pml leaves out its "lone" queries).

    Raises:
        ValueError: mismatched lengths or dimensions, NaN or infinite values, no query with a
            same-class reference, an unknown metric, a K of 0.

    Example:
        >>> import numpy as np, dml
        >>> x = np.array([[0, 0], [0.1, 0], [0, 0.1], [5, 5], [5.1, 5], [5, 5.1]], dtype=np.float32)
        >>> m = dml.evaluate(x, [0, 0, 0, 1, 1, 1])
        >>> m["recall_at_1"], m["map_at_r"], round(m["nmi"], 6)
        (1.0, 1.0, 1.0)
    """
    q = as_matrix(query, "query")
    if reference is None:
        if reference_labels is not None:
            raise ValueError("reference_labels given without reference")
        labels = Labels([query_labels], ["query_labels"])
        check_rows(q, labels.ids[0], "query", "query_labels")
        r, rl = None, None
    else:
        if reference_labels is None:
            raise ValueError("reference given without reference_labels")
        r = as_matrix(reference, "reference")
        labels = Labels([query_labels, reference_labels], ["query_labels", "reference_labels"])
        check_rows(q, labels.ids[0], "query", "query_labels")
        check_rows(r, labels.ids[1], "reference", "reference_labels")
        rl = labels.ids[1]
    recall_at = [int(k) for k in recall_at]
    if any(k < 1 for k in recall_at):
        raise ValueError(f"recall_at contains {min(recall_at)}; every k must be at least 1")
    return _dml.evaluate(
        q,
        labels.ids[0],
        r,
        rl,
        _check_metric(metric),
        recall_at,
        bool(r_metrics),
        bool(nmi),
        bool(ami),
        int(seed),
        int(kmeans_restarts),
        int(kmeans_max_iter),
    )
