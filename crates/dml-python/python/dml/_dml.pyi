# Hand-written stubs of the native module dml._dml (crates/dml-python/src). Its callers, the
# Python modules of this package, pass C-contiguous float32 matrices and uint32 class ids only.
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

F32 = npt.NDArray[np.float32]
U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]

def knn(
    query: F32, reference: F32 | None, k: int, metric: str, ref_includes_query: bool
) -> tuple[F32, I64]: ...
def evaluate(
    query: F32,
    query_labels: U32,
    reference: F32 | None,
    reference_labels: U32 | None,
    metric: str,
    config: str,
    ref_includes_query: bool,
) -> dict[str, Any]: ...
def cluster_scores(
    x: F32,
    x_labels: U32,
    nmi: bool,
    ami: bool,
    seed: int,
    kmeans_restarts: int,
    kmeans_max_iter: int,
    kmeans_seeding: str,
) -> tuple[float | None, float | None]: ...
def buffer_address(x: F32) -> int: ...

class Miner:
    def __init__(self, config: str, metric: str, normalize: bool, seed: int) -> None: ...
    def mine(
        self, embeddings: F32, labels_: I64, ref_emb: F32 | None, ref_labels: I64 | None
    ) -> list[I64]: ...

class PkSampler:
    def __init__(self, labels_: U32, p: int, k: int, seed: int) -> None: ...
    @property
    def batches_per_epoch(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def n_classes(self) -> int: ...
    @property
    def n_excluded_items(self) -> int: ...
    @property
    def excluded_classes(self) -> list[int]: ...
    def epoch(self, epoch: int) -> I64: ...
