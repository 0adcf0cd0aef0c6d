"""``dml.AccuracyCalculator``: pytorch-metric-learning's calculator, computed by dml-eval.

Same constructor, same ``get_accuracy`` call, same result keys and semantics, so that replacing
the import is the whole migration; what pml offers and dml does not (a custom ``knn_func``,
``kmeans_func`` or ``label_comparison_fn``, subclasses adding ``calculate_*`` methods) raises an
error naming it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import _dml
from ._convert import Labels, as_matrix
from ._evaluate import run

#: pml's metrics, in the order its result dict lists them.
METRICS = (
    "AMI",
    "NMI",
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)
_KNN = ("mean_average_precision", "mean_average_precision_at_r", "mean_reciprocal_rank", "precision_at_1", "r_precision")
_R_METRICS = ("mean_average_precision_at_r", "r_precision")
_CLUSTERING = ("AMI", "NMI")
#: dml-eval's key for a pml metric, where the names differ.
_DML_KEY = {"mean_average_precision_at_r": "map_at_r"}


def _check_names(include: Any, exclude: Any) -> None:
    for names in (include, exclude):
        if not isinstance(names, (tuple, list)):
            raise TypeError(f"Arguments must be of type tuple, not {type(names)}.")
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise ValueError(f"Primary metrics must be one or more of: {list(METRICS)}; unknown: {unknown}.")


def _select(available: list[str], include: Any, exclude: Any) -> list[str]:
    """pml's ``get_function_dict``: the metrics of ``available`` named by ``include`` (all when
    empty) and not by ``exclude``, in ``available``'s order."""
    wanted = include if len(include) > 0 else available
    return [m for m in available if m in wanted and m not in exclude]


class AccuracyCalculator:
    """pytorch-metric-learning's ``AccuracyCalculator``, exact and streaming.

    ``from dml import AccuracyCalculator`` in place of
    ``from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator``: the
    constructor and ``get_accuracy`` take pml's arguments and return pml's keys (``AMI``,
    ``NMI``, ``mean_average_precision``, ``mean_average_precision_at_r``,
    ``mean_reciprocal_rank``, ``precision_at_1``, ``r_precision``) with pml's semantics: queries
    whose class has no other member in the reference set ("lone" queries) are left out of the
    k-NN metrics; with ``ref_includes_query`` each query is left out of its own neighbours.

    The k-NN search is dml's exact blocked search and the scores are accumulated per block of
    queries, so memory does not grow with the number of queries times k (pml's does: its k × Q
    neighbour and label tensors are what run out of memory at 100,000 items and more).

    Args:
        include, exclude: metric names to compute, or to leave out (tuples or lists).
        avg_of_avgs: average per class first, then over classes.
        return_per_class: return a list per k-NN metric, one value per query class (sorted by
            label). Exclusive with ``avg_of_avgs``.
        k: ``None`` (every reference, pml's default), ``"max_bin_count"`` (the largest class) or
            an int. It only changes ``mean_average_precision`` and ``mean_reciprocal_rank``,
            which look at the first k neighbours; ``r_precision`` and
            ``mean_average_precision_at_r`` need k at least the largest class and are refused
            below it (pml warns and returns truncated values there).
        label_comparison_fn, knn_func, kmeans_func: not supported; anything but ``None`` raises
            ``ValueError`` (for another search, keep pml's calculator and give it
            ``knn_func=dml.KNN()``).
        device: accepted and ignored: dml computes on the CPU (torch tensors on a GPU are copied
            to the CPU once).
        seed: dml only: the seed of the k-means++ seeding behind NMI and AMI (pml runs faiss'
            k-means, so NMI and AMI can differ from pml's where the clusters are not clear-cut).

    Example:
        >>> import numpy as np, dml
        >>> x = np.array([[0, 0], [0.1, 0], [0, 0.1], [5, 5], [5.1, 5], [5, 5.1]], dtype=np.float32)
        >>> calc = dml.AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"))
        >>> calc.get_accuracy(x, np.array([0, 0, 0, 1, 1, 1]))
        {'mean_average_precision_at_r': 1.0, 'precision_at_1': 1.0}
    """

    def __init__(
        self,
        include: Any = (),
        exclude: Any = (),
        avg_of_avgs: bool = False,
        return_per_class: bool = False,
        k: Any = None,
        label_comparison_fn: Any = None,
        device: Any = None,
        knn_func: Any = None,
        kmeans_func: Any = None,
        *,
        seed: int = 0,
    ):
        _check_names(include, exclude)
        self._metrics = _select(list(METRICS), include, exclude)
        if avg_of_avgs and return_per_class:
            raise ValueError("avg_of_avgs and return_per_class are mutually exclusive")
        if not ((isinstance(k, int) and not isinstance(k, bool) and k > 0) or k in (None, "max_bin_count")):
            raise ValueError("k must be an integer greater than 0, or None, or 'max_bin_count'")
        for name, value, advice in (
            ("knn_func", knn_func, "dml.AccuracyCalculator runs dml's own exact k-NN; to use another search keep pytorch-metric-learning's AccuracyCalculator (dml.KNN() plugs dml's exact search into it)"),
            ("kmeans_func", kmeans_func, "NMI and AMI come from dml's k-means; exclude them and compute your clustering scores separately"),
            ("label_comparison_fn", label_comparison_fn, "dml compares labels for equality; map your labels to class ids first"),
        ):
            if value is not None:
                raise ValueError(f"{name} is not supported by dml.AccuracyCalculator: {advice}")
        if type(self).__dict__ is not AccuracyCalculator.__dict__:
            custom = [n for n in dir(self) if n.startswith("calculate_")]
            if custom:
                raise TypeError(
                    f"{type(self).__name__} adds {custom}: dml.AccuracyCalculator computes its metrics in one native pass "
                    "and cannot call calculate_* methods; subclass pml's AccuracyCalculator for custom metrics"
                )
        self.avg_of_avgs = bool(avg_of_avgs)
        self.return_per_class = bool(return_per_class)
        self.k = k
        self.device = device
        self.seed = int(seed)

    def get_curr_metrics(self) -> list[str]:
        """The metrics ``get_accuracy`` computes when called without ``include``/``exclude``."""
        return list(self._metrics)

    def get_accuracy(
        self,
        query: Any,
        query_labels: Any,
        reference: Any = None,
        reference_labels: Any = None,
        ref_includes_query: bool = False,
        include: Any = (),
        exclude: Any = (),
    ) -> dict[str, Any]:
        """The scores of ``query`` retrieved from ``reference`` (pml's ``get_accuracy``).

        Args:
            query: ``Nq × D`` embeddings (NumPy, torch on any device, DLPack, ...).
            query_labels: ``Nq`` integer labels.
            reference, reference_labels: the set searched; ``None`` searches ``query`` itself
                (and sets ``ref_includes_query``, as pml does).
            ref_includes_query: ``query`` is the first rows of ``reference``: each query is left
                out of its own neighbours.
            include, exclude: narrow the constructor's metrics for this call.

        Returns:
            ``{metric: value}`` in pml's key order; with ``return_per_class`` each k-NN metric is a
            list over the query classes (sorted by label). A k-NN metric is NaN (with a warning)
            when no query has a same-class reference, as in pml.
        """
        _check_names(include, exclude)
        metrics = _select(self._metrics, include, exclude)
        q = as_matrix(query, "query")
        if reference is None:
            r, ref_includes_query = None, True
            labels = Labels([query_labels], ["query_labels"])
            qy = ry = labels.ids[0]
        else:
            if reference_labels is None:
                raise ValueError("reference given without reference_labels")
            r = as_matrix(reference, "reference")
            labels = Labels([query_labels, reference_labels], ["query_labels", "reference_labels"])
            qy, ry = labels.ids
        if len(q) != len(qy) or (r is not None and len(r) != len(ry)):
            raise ValueError("embeddings and labels must have the same length")
        if r is not None and ref_includes_query:
            nq = len(q)
            if len(r) < nq or not (np.array_equal(q, r[:nq]) and np.array_equal(qy, ry[:nq])):
                raise ValueError(
                    "When ref_includes_query is True, the first len(query) elements of reference must be equal to query. "
                    "Likewise, the first len(query_labels) elements of reference_labels must be equal to query_labels."
                )
            if len(r) == nq:
                r = None  # the query set is the reference set: plain leave-one-out

        knn_metrics = [m for m in metrics if m in _KNN]
        cluster_metrics = [m for m in metrics if m in _CLUSTERING]
        ref_y = qy if r is None else ry
        self._check_k(knn_metrics, qy, ref_y, ref_includes_query)
        results: dict[str, Any] = {}
        if knn_metrics and self._has_positive(qy, ref_y, ref_includes_query):
            config: dict[str, Any] = {
                "recall_at": [],
                "r_metrics": any(m in _R_METRICS for m in knn_metrics),
                "mean_average_precision": "mean_average_precision" in knn_metrics,
                "mean_reciprocal_rank": "mean_reciprocal_rank" in knn_metrics,
                "ranking_depth": "whole" if self.k is None else self.k,
                "per_class": self.avg_of_avgs or self.return_per_class,
                "nmi": "NMI" in cluster_metrics,
                "ami": "AMI" in cluster_metrics,
                "seed": self.seed,
            }
            scores = run(q, labels, r, "euclidean", config, bool(ref_includes_query and r is not None))
            for m in knn_metrics:
                key = _DML_KEY.get(m, m)
                if self.avg_of_avgs:
                    results[m] = scores["avg_of_avgs"][key]
                elif self.return_per_class:
                    results[m] = [entry[key] for entry in scores["per_class"].values()]
                else:
                    results[m] = scores[key]
            results.update(NMI=scores.get("nmi"), AMI=scores.get("ami"))
        else:
            if knn_metrics:
                warnings.warn("None of the query labels are in the reference set.", stacklevel=2)
                nan = float("nan")
                n_classes = len(np.unique(qy))
                results = {m: [nan] * n_classes if self.return_per_class else nan for m in knn_metrics}
            if cluster_metrics:
                nmi, ami = _dml.cluster_scores(q, qy, "NMI" in cluster_metrics, "AMI" in cluster_metrics, self.seed, 1, 300, "k-means||")
                results.update(NMI=nmi, AMI=ami)
        return {m: results[m] for m in metrics}

    def _check_k(self, knn_metrics: list[str], qy: np.ndarray, ry: np.ndarray, ref_includes_query: bool) -> None:
        """Refuses an int ``k`` below the largest class for the metrics that need the whole class."""
        needs_r = [m for m in knn_metrics if m in _R_METRICS]
        if not needs_r or not isinstance(self.k, int):
            return
        counts = np.bincount(ry, minlength=int(max(qy.max(initial=0), ry.max(initial=0))) + 1)
        max_r = int(counts[np.unique(qy)].max()) - int(bool(ref_includes_query))
        if self.k < max_r:
            raise ValueError(
                f"k={self.k} is less than the largest class ({max_r} same-class references), so {needs_r} would be "
                "truncated (pml warns and returns truncated values); use k='max_bin_count' or k=None, or exclude them"
            )

    @staticmethod
    def _has_positive(qy: np.ndarray, ry: np.ndarray, ref_includes_query: bool) -> bool:
        counts = np.bincount(ry, minlength=int(max(qy.max(initial=0), ry.max(initial=0))) + 1)
        return bool((counts[qy] - int(bool(ref_includes_query)) > 0).any())

    def __repr__(self) -> str:
        return (
            f"AccuracyCalculator(include={tuple(self._metrics)}, avg_of_avgs={self.avg_of_avgs}, "
            f"return_per_class={self.return_per_class}, k={self.k!r})"
        )
