"""Array conversion at the boundary: what comes in becomes what the native module reads.

Embeddings become C-contiguous float32 NumPy arrays, without a copy when they already are one
(a NumPy array, a CPU float32 torch tensor, anything exposing such a buffer through
``__array__`` or DLPack); anything else is copied once, here. Labels become dense ``uint32``
class ids shared by every label array of one call, with the sorted original labels kept for
answers that name classes (the miners, which only compare labels, take them as int64 and leave
the class ids to the native side). Outputs are int64 NumPy arrays, or torch tensors on the input's
device when the input was a torch tensor (torch is imported only then).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (checked without importing torch)."""
    return type(x).__module__.split(".", 1)[0] == "torch" and hasattr(x, "device")


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if is_torch(x):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype.is_floating_point and str(t.dtype) not in ("torch.float32", "torch.float64"):
            t = t.float()  # float16 / bfloat16 have no exact NumPy twin everywhere
        return np.asarray(t.numpy())
    if hasattr(x, "__array__"):
        return np.asarray(x)
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError) as err:
            raise TypeError(
                f"{name} exposes DLPack but NumPy cannot read it ({err}); move it to the CPU first"
            ) from err
    try:
        return np.asarray(x)
    except Exception as err:  # noqa: BLE001 - anything NumPy refuses is a type problem here
        raise TypeError(f"{name} must be an array (NumPy, torch, DLPack or a nested list), got {type(x).__name__}") from err


def as_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as an ``n × d`` C-contiguous float32 array (the same object when it already is one)."""
    a = _to_numpy(x, name)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n × d), got shape {tuple(a.shape)}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _label_array(y: Any, name: str) -> np.ndarray:
    a = _to_numpy(y, name)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of class labels, got shape {tuple(a.shape)} "
            "(multi-column labels with a label_comparison_fn are not supported)"
        )
    if a.dtype.kind not in "iub":
        raise TypeError(
            f"{name} must hold integer class labels, got dtype {a.dtype}; "
            "cast them, e.g. labels.astype(np.int64)"
        )
    return a


def label_values(y: Any, name: str) -> np.ndarray:
    """``y`` as C-contiguous int64 labels, the same object when it already is one (a CPU int64
    torch tensor's buffer included): for the miners, which only compare labels with each other,
    so the native side maps them to class ids without sorting them first."""
    return np.ascontiguousarray(_label_array(y, name), dtype=np.int64)


class Labels:
    """Dense class ids (``uint32``) for one or more label arrays, over one shared set of classes.

    ``classes[i]`` is the original label of id ``i`` (sorted ascending, as ``torch.unique`` and
    ``np.unique`` sort them); ``ids[j]`` are the ids of the ``j``-th input array.
    """

    def __init__(self, arrays: Sequence[Any], names: Sequence[str]):
        parts = [_label_array(y, n) for y, n in zip(arrays, names)]
        joined = np.concatenate(parts) if len(parts) > 1 else parts[0]
        classes, inverse = np.unique(joined, return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.uint32)
        self.classes = classes
        self.ids: list[np.ndarray] = []
        start = 0
        for p in parts:
            self.ids.append(np.ascontiguousarray(inverse[start : start + len(p)]))
            start += len(p)


def check_rows(x: np.ndarray, y: np.ndarray, what: str, labels_name: str) -> None:
    """Errors unless there is one label per row."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what} has {x.shape[0]} rows but {labels_name} has {y.shape[0]} labels")


def like_input(arrays: Sequence[np.ndarray], x: Any) -> tuple[Any, ...]:
    """The arrays as torch tensors on ``x``'s device if ``x`` is a torch tensor, else as they are."""
    if is_torch(x):
        import torch  # type: ignore[import-not-found, unused-ignore]

        if x.device.type == "cpu":
            return tuple(torch.from_numpy(a) for a in arrays)
        return tuple(torch.from_numpy(a).to(x.device) for a in arrays)
    return tuple(arrays)


def seed_from(seed: int | None) -> int:
    """A 64-bit seed: the one given, or one drawn from Python's ``random`` (so ``random.seed``
    makes a run repeatable, as ``torch.manual_seed`` does for pml's random miners)."""
    if seed is None:
        import random

        return random.getrandbits(64)
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be between 0 and 2**64 - 1, got {seed}")
    return seed
