"""Exact k-nearest-neighbour search: ``dml.knn`` and pml's ``knn_func`` contract ``dml.KNN``."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _dml
from ._convert import as_matrix, is_torch

#: dml's metrics: two distances (smaller is closer) and two similarities (larger is closer).
METRICS = ("euclidean", "squared_euclidean", "cosine", "dot")


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (expected one of {', '.join(METRICS)})")
    return metric


def knn(
    query: Any,
    reference: Any = None,
    k: int = 10,
    *,
    metric: str = "euclidean",
    ref_includes_query: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest references of every query.

    Args:
        query: ``n × d`` embeddings (NumPy, torch, DLPack or anything ``np.asarray`` takes;
            a C-contiguous float32 array is read in place, anything else is copied once).
        reference: ``m × d`` embeddings to search, or ``None`` to search ``query`` itself, each
            row leaving itself out (leave-one-out).
        k: neighbours per query, at most the number of candidates.
        metric: ``"euclidean"`` (default), ``"squared_euclidean"``, ``"cosine"`` or ``"dot"``.
        ref_includes_query: ``query`` is the first rows of ``reference``; query ``i`` leaves
            reference row ``i`` out of its own list (pml's ``ref_includes_query``).

    Returns:
        ``(scores, indices)``, both ``n × k``, closest first (ascending distance, descending
        similarity); ties go to the lower reference index. ``scores`` is float32, ``indices``
        int64 rows of ``reference`` (or of ``query`` when ``reference`` is ``None``).

    Raises:
        ValueError: ``k`` outside ``1..candidates``, mismatched dimensions, NaN or infinite
            values (naming the matrix, row and column), an unknown metric.

    Example:
        >>> import numpy as np, dml
        >>> ref = np.array([[0.0], [10.0], [2.0], [3.0]], dtype=np.float32)
        >>> scores, idx = dml.knn(np.array([[2.4]], dtype=np.float32), ref, 2)
        >>> idx.tolist(), scores.astype(float).round(2).tolist()
        ([[2, 3]], [[0.4, 0.6]])
    """
    q = as_matrix(query, "query")
    r = None if reference is None else as_matrix(reference, "reference")
    if r is None and ref_includes_query:
        raise ValueError("ref_includes_query=True needs a reference; with reference=None every query is already left out of its own list")
    return _dml.knn(q, r, int(k), _check_metric(metric), bool(ref_includes_query))


class KNN:
    """dml's exact k-NN as a pytorch-metric-learning ``knn_func``.

    Called as pml's ``AccuracyCalculator`` calls its ``knn_func``:
    ``knn_func(query, k, reference, ref_includes_query)``, returning ``(distances, indices)``
    (torch tensors on the query's device when the query is a torch tensor, NumPy arrays
    otherwise). With ``ref_includes_query=True`` query ``i`` is left out of its own list by
    index, as pml's ``FaissKNN`` leaves it out, and ``k`` neighbours are returned.

    The default metric, ``"squared_euclidean"``, gives the values of pml's default ``FaissKNN``
    (faiss' ``IndexFlatL2`` returns squared distances); the neighbours are the same for
    ``"euclidean"``.

    Example:
        >>> from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator  # doctest: +SKIP
        >>> calculator = AccuracyCalculator(knn_func=dml.KNN())  # doctest: +SKIP
    """

    def __init__(self, metric: str = "squared_euclidean"):
        self.metric = _check_metric(metric)

    def __call__(
        self,
        query: Any,
        k: int,
        reference: Any = None,
        ref_includes_query: bool = False,
    ) -> tuple[Any, Any]:
        q = as_matrix(query, "query")
        r = q if reference is None else as_matrix(reference, "reference")
        scores, indices = _dml.knn(q, r, int(k), self.metric, bool(ref_includes_query))
        if is_torch(query):
            import torch  # type: ignore[import-not-found, unused-ignore]

            return (
                torch.from_numpy(scores).to(query.device),
                torch.from_numpy(indices).to(query.device),
            )
        return scores, indices

    def __repr__(self) -> str:
        return f"KNN(metric={self.metric!r})"
