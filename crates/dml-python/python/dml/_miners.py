"""Miners with pytorch-metric-learning's names, arguments and outputs, mined by dml-sampling.

``miner(embeddings, labels)`` returns pml's index tuple, ``(a, p, n)`` for the triplet miners and
``(a1, p, a2, n)`` for the pair miners, so it feeds any pml loss as ``indices_tuple``: torch
tensors on the embeddings' device when the embeddings are a torch tensor, int64 NumPy arrays
otherwise. ``ref_emb`` / ``ref_labels`` mine the batch against a reference set (anchors index the
batch, the other ends the reference), as in pml.

The distance matrix is computed by dml-kernels from the embeddings, normalised first when the
distance says so, as pml's ``LpDistance()`` (the default of every miner here but the
multi-similarity one, whose default is ``CosineSimilarity()``) normalises them.
"""

from __future__ import annotations

import json
from typing import Any

from . import _dml
from ._convert import as_matrix, check_rows, label_values, like_input, seed_from
from ._knn import METRICS

_LP = ("euclidean", True)
_COSINE = ("dot", True)


def _metric_of(distance: Any, default: tuple[str, bool]) -> tuple[str, bool]:
    """``(dml metric, normalise the embeddings first)`` for a pml distance object or a dml name."""
    if distance is None:
        return default
    if isinstance(distance, str):
        if distance not in METRICS:
            raise ValueError(f"unknown metric {distance!r} (expected one of {', '.join(METRICS)})")
        return distance, False
    kind = type(distance).__name__
    normalize = bool(getattr(distance, "normalize_embeddings", True))
    power = getattr(distance, "power", 1)
    if kind == "LpDistance" and getattr(distance, "p", 2) == 2 and power in (1, 2):
        return ("euclidean" if power == 1 else "squared_euclidean"), normalize
    if kind == "CosineSimilarity" and power == 1:
        return "dot", True
    if kind == "DotProductSimilarity" and power == 1:
        return "dot", normalize
    raise ValueError(
        f"distance {distance!r} is not supported: use pml's LpDistance(p=2, power=1 or 2), "
        f"CosineSimilarity() or DotProductSimilarity(), or one of dml's metrics ({', '.join(METRICS)}), "
        "which take the embeddings as they are"
    )


class _Miner:
    """What every miner shares: the native miner, the call, the output conversion."""

    def __init__(self, config: dict[str, Any], distance: Any, default: tuple[str, bool], seed: int | None):
        self.metric, self.normalize_embeddings = _metric_of(distance, default)
        self._config = config
        self._native = _dml.Miner(json.dumps(config), self.metric, self.normalize_embeddings, seed_from(seed))

    def __call__(self, embeddings: Any, labels: Any, ref_emb: Any = None, ref_labels: Any = None) -> tuple[Any, ...]:
        """The index tuple of one batch (see the class docs)."""
        x = as_matrix(embeddings, "embeddings")
        if (ref_emb is None) != (ref_labels is None):
            raise ValueError("ref_emb and ref_labels go together: give both or neither")
        y = label_values(labels, "labels")
        check_rows(x, y, "embeddings", "labels")
        if ref_emb is None:
            out = self._native.mine(x, y, None, None)
        else:
            r = as_matrix(ref_emb, "ref_emb")
            ry = label_values(ref_labels, "ref_labels")
            check_rows(r, ry, "ref_emb", "ref_labels")
            out = self._native.mine(x, y, r, ry)
        return like_input(out, embeddings)

    forward = __call__

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._config.items() if k != "kind")
        return f"{type(self).__name__}({params}{', ' if params else ''}metric={self.metric!r}, normalize_embeddings={self.normalize_embeddings})"


class BatchHardMiner(_Miner):
    """For each anchor, its hardest positive and its hardest negative (Hermans et al. 2017).

    pml's ``BatchHardMiner``: returns ``(a, p, n)`` with one triplet per anchor that has a
    positive and a negative, in anchor order; ties go to the lower index (as ``torch.max`` /
    ``torch.min`` pick on the CPU).

    Example:
        >>> import numpy as np, dml
        >>> x = np.array([[0, 1], [0, 1.2], [1, 0], [1.1, 0]], dtype=np.float32)
        >>> a, p, n = dml.BatchHardMiner()(x, [0, 0, 1, 1])
        >>> a.tolist(), p.tolist(), n.tolist()  # normalised, both negatives tie: the lower wins
        ([0, 1, 2, 3], [1, 0, 3, 2], [2, 2, 0, 0])
    """

    def __init__(self, *, distance: Any = None):
        super().__init__({"kind": "batch_hard"}, distance, _LP, None)


_TRIPLET_TYPES = {"all": "all", "hard": "hard", "semihard": "semi_hard", "easy": "easy"}


class TripletMarginMiner(_Miner):
    """Every triplet whose margin ``m = d(a, n) − d(a, p)`` lies in a band (pml's miner).

    ``type_of_triplets``: ``"all"`` (``m ≤ margin``, pml's default), ``"hard"``
    (``m ≤ min(margin, 0)``), ``"semihard"`` (``0 < m ≤ margin``) or ``"easy"`` (``m > margin``).
    For similarities ``m = s(a, p) − s(a, n)``. Returns ``(a, p, n)`` in pml's order (by anchor,
    positive, negative).

    Example:
        >>> import numpy as np, dml
        >>> x = np.array([[0, 1], [0, 1.2], [1, 0], [1.1, 0]], dtype=np.float32)
        >>> a, p, n = dml.TripletMarginMiner(margin=0.2, type_of_triplets="all")(x, [0, 0, 1, 1])
        >>> len(a)  # both classes are far apart: no triplet violates the margin
        0
    """

    def __init__(self, margin: float = 0.2, type_of_triplets: str = "all", *, distance: Any = None):
        if type_of_triplets not in _TRIPLET_TYPES:
            raise ValueError(
                f"type_of_triplets must be one of {', '.join(map(repr, _TRIPLET_TYPES))}, got {type_of_triplets!r}"
            )
        self.margin = margin
        self.type_of_triplets = type_of_triplets
        config = {"kind": "triplet_margin", "margin": float(margin), "triplets": _TRIPLET_TYPES[type_of_triplets]}
        super().__init__(config, distance, _LP, None)


class MultiSimilarityMiner(_Miner):
    """Pairs kept by the multi-similarity rule (Wang et al. 2019), pml's ``MultiSimilarityMiner``.

    With similarities ``S`` (the default distance is pml's ``CosineSimilarity()``): a negative
    pair ``(a, n)`` is kept if ``S_an + ε > min_p S_ap`` and a positive pair ``(a, p)`` if
    ``S_ap − ε < max_n S_an``. Returns ``(a1, p, a2, n)``: the same pairs as pml; pml orders each
    anchor's pairs by similarity, dml by index (no pml loss depends on the order).
    """

    def __init__(self, epsilon: float = 0.1, *, distance: Any = None):
        self.epsilon = epsilon
        super().__init__({"kind": "multi_similarity", "epsilon": float(epsilon)}, distance, _COSINE, None)


class DistanceWeightedMiner(_Miner):
    """Negatives drawn against the density of distances on the unit sphere (Wu et al. 2017).

    pml's ``DistanceWeightedMiner(cutoff, nonzero_loss_cutoff)``; like pml it needs Euclidean
    distances between L2-normalised embeddings (pml's default ``LpDistance()``). Returns
    ``(a, p, n)``: one drawn negative for every positive pair, each positive pair once (pml
    draws as many random positives, with replacement, as the anchor's class has members) and
    the weights normalised per anchor (pml normalises by one global maximum, under which whole
    anchors can underflow in high dimension). ``seed`` seeds dml's own random stream (``None``:
    drawn from Python's ``random``), so the draws differ from pml's, which use torch's.
    """

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        *,
        distance: Any = None,
        seed: int | None = None,
    ):
        if _metric_of(distance, _LP) != _LP:
            raise ValueError(
                "DistanceWeightedMiner needs Euclidean distances between normalised embeddings: "
                "leave distance at its default (pml's LpDistance(p=2, power=1, normalize_embeddings=True))"
            )
        self.cutoff = cutoff
        self.nonzero_loss_cutoff = nonzero_loss_cutoff
        config = {
            "kind": "distance_weighted",
            "cutoff": float(cutoff),
            "nonzero_loss_cutoff": float(nonzero_loss_cutoff),
        }
        super().__init__(config, distance, _LP, seed)


class PairMarginMiner(_Miner):
    """The pairs that violate a contrastive margin, pml's ``PairMarginMiner``.

    Positive pairs farther apart than ``pos_margin`` and negative pairs closer than
    ``neg_margin`` (for similarities: less similar than ``pos_margin``, more similar than
    ``neg_margin``). Returns ``(a1, p, a2, n)`` in pml's order (row-major).
    """

    def __init__(self, pos_margin: float = 0.2, neg_margin: float = 0.8, *, distance: Any = None):
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin
        config = {"kind": "pair_margin", "pos_margin": float(pos_margin), "neg_margin": float(neg_margin)}
        super().__init__(config, distance, _LP, None)
