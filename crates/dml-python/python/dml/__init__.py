"""dml for Python: exact, streaming metric-learning evaluation, k-NN, miners and PK sampling.

The algorithms are dml's Rust crates (dml-kernels, dml-sampling, dml-eval); this package converts
arrays and errors. Where pytorch-metric-learning users come from, pml's names and results are the
API, so that replacing an import is the migration:

    from dml import AccuracyCalculator                  # was pytorch_metric_learning.utils.accuracy_calculator
    from dml import BatchHardMiner, MultiSimilarityMiner  # was pytorch_metric_learning.miners

- ``AccuracyCalculator``: pml's calculator and result keys, exact k-NN, bounded memory.
- ``KNN``: dml's exact search as pml's ``knn_func`` (for pml's own calculator).
- ``BatchHardMiner``, ``TripletMarginMiner``, ``MultiSimilarityMiner``, ``DistanceWeightedMiner``,
  ``PairMarginMiner``: pml's miners, returning pml's index tuples.
- ``knn``, ``evaluate``: dml's own search and every dml score (Recall@K included).
- ``PKSampler``: P classes × K items per batch, a torch ``batch_sampler`` covering every item
  each epoch.

Inputs are NumPy arrays, torch tensors or anything with ``__array__`` / DLPack; float32
C-contiguous embeddings are read in place, the GIL is released while dml works, and dml's errors
arrive as ``ValueError`` (``TypeError`` for inputs of the wrong kind) with dml's message.
torch is never imported unless a torch tensor is passed in.
"""

from ._accuracy import AccuracyCalculator
from ._dml import __version__
from ._evaluate import evaluate
from ._knn import KNN, METRICS, knn
from ._miners import (
    BatchHardMiner,
    DistanceWeightedMiner,
    MultiSimilarityMiner,
    PairMarginMiner,
    TripletMarginMiner,
)
from ._sampler import PKSampler

__all__ = [
    "AccuracyCalculator",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "KNN",
    "METRICS",
    "MultiSimilarityMiner",
    "PKSampler",
    "PairMarginMiner",
    "TripletMarginMiner",
    "__version__",
    "evaluate",
    "knn",
]
