"""``dml.PKSampler``: P classes × K items per batch, every item in every epoch."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from . import _dml
from ._convert import Labels


class PKSampler:
    """Batches of ``p`` classes × ``k`` items, usable as a torch ``DataLoader``'s ``batch_sampler``.

    Each epoch shuffles every class's items into chunks of ``k`` and spreads the chunks over the
    epoch's batches, so every item of every class with at least two items (one, when ``k = 1``)
    appears in every epoch; short chunks are topped up with other items of the class, and free
    slots with extra chunks of random classes. Classes with a single item are left out (they can
    form no positive pair); ``excluded_classes`` names them. The batches depend on the labels,
    ``p``, ``k``, ``seed`` and the epoch number only.

    Iterating the sampler yields one epoch's batches (lists of ``p·k`` dataset indices, ``k``
    consecutive indices per class) and then advances to the next epoch, so a ``DataLoader``
    sees a new epoch each time it is iterated; ``set_epoch`` chooses the next one (e.g. when
    resuming).

    Example:
        >>> import dml
        >>> labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
        >>> sampler = dml.PKSampler(labels, p=2, k=2, seed=0)
        >>> len(sampler), sampler.batch_size
        (3, 4)
        >>> seen = {i for batch in sampler for i in batch}
        >>> sorted(seen) == list(range(10))
        True

        With torch: ``DataLoader(dataset, batch_sampler=dml.PKSampler(labels, p=8, k=4))``.
    """

    def __init__(self, labels: Any, p: int, k: int, seed: int = 0):
        lab = Labels([labels], ["labels"])
        self._classes = lab.classes
        self._native = _dml.PkSampler(lab.ids[0], int(p), int(k), int(seed))
        self.p = int(p)
        self.k = int(k)
        self.seed = int(seed)
        #: The epoch the next iteration yields.
        self.epoch = 0

    def __len__(self) -> int:
        return self._native.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._native.epoch(self.epoch)
        self.epoch += 1
        return iter(batches.tolist())

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration yields."""
        self.epoch = int(epoch)

    def batches(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s batches as an int64 array, one row of ``p·k`` indices per batch."""
        return self._native.epoch(int(epoch))

    @property
    def batch_size(self) -> int:
        """``p·k``."""
        return self._native.batch_size

    @property
    def n_classes(self) -> int:
        """Classes that serve batches."""
        return self._native.n_classes

    @property
    def excluded_classes(self) -> list[Any]:
        """The labels of the classes left out (a single item while ``k ≥ 2``), ascending."""
        return [self._classes[i].item() for i in self._native.excluded_classes]

    @property
    def n_excluded_items(self) -> int:
        """Items left out with those classes."""
        return self._native.n_excluded_items

    def __repr__(self) -> str:
        return f"PKSampler(p={self.p}, k={self.k}, seed={self.seed}, batches_per_epoch={len(self)})"
