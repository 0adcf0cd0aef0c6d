"""Inputs are read in place, and the GIL is released while dml works."""

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np

import dml
from dml import _dml
from dml._convert import as_matrix


def address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class ArrayLike:
    def __init__(self, a):
        self._a = a

    def __array__(self, dtype=None, copy=None):
        return self._a


class DLPackOnly:
    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_float32_c_contiguous_inputs_reach_dml_uncopied():
    x = np.random.default_rng(0).standard_normal((100, 16)).astype(np.float32)
    for wrapped in (x, ArrayLike(x), DLPackOnly(x)):
        m = as_matrix(wrapped, "query")
        assert _dml.buffer_address(m) == address(x), type(wrapped).__name__
    assert as_matrix(x, "query") is x
    # Anything else is copied once into a fresh float32 array: the check can tell the two apart.
    for other in (x.astype(np.float64), np.asfortranarray(x), x[::2]):
        m = as_matrix(other, "query")
        assert _dml.buffer_address(m) != address(other) and m.dtype == np.float32 and m.flags.c_contiguous


def test_a_large_input_adds_no_copy_to_peak_memory():
    # In a fresh process: the peak resident set while dml searches a 200 MB query set must not
    # grow by anything near the query's size; a float64 input (copied to float32 once) must.
    code = textwrap.dedent(
        """
        import resource, sys, numpy as np, dml
        n, d = 50_000, 1_024
        rng = np.random.default_rng(0)
        x = np.empty((n, d), dtype=sys.argv[1])
        for i in range(0, n, 5_000):
            x[i:i + 5_000] = rng.standard_normal((5_000, d))
        ref = rng.standard_normal((16, d)).astype(np.float32)
        dml.knn(ref, ref, 1)  # thread pools and allocator warmed up on a small call
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scores, idx = dml.knn(x, ref, 1)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)
        """
    )

    def growth_mib(dtype):
        out = subprocess.run([sys.executable, "-c", code, dtype], check=True, capture_output=True, text=True)
        return float(out.stdout.strip())

    in_place = growth_mib("float32")
    copied = growth_mib("float64")
    assert in_place < 40, f"peak grew by {in_place:.0f} MiB for a 195 MiB float32 input"
    assert copied > 150, f"the float64 input's float32 copy ({copied:.0f} MiB) was not seen"


def test_other_threads_run_while_dml_works():
    # A call that takes a good fraction of a second (the size doubles until it does, so that a
    # release build on a fast machine is measured as well as a debug build here).
    rng = np.random.default_rng(1)
    for n in (6_000, 12_000, 24_000, 48_000):
        y = rng.integers(0, 3, size=n)
        x = (rng.standard_normal((3, 64))[y] + rng.standard_normal((n, 64))).astype(np.float32)
        t = time.perf_counter()
        dml.evaluate(x, y, nmi=False)
        if time.perf_counter() - t > 0.3:
            break

    done = threading.Event()
    span = {}

    def work():
        span["start"] = time.perf_counter()
        dml.evaluate(x, y, nmi=False)
        span["end"] = time.perf_counter()
        done.set()

    ticks = []
    worker = threading.Thread(target=work)
    worker.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        sum(range(200))  # pure Python work: needs the GIL
    worker.join()
    inside = [t for t in ticks if span["start"] <= t <= span["end"]]
    duration = span["end"] - span["start"]
    assert duration > 0.2, f"the call took {duration:.3f} s, too short to tell"
    stamps = [span["start"], *inside, span["end"]]
    longest = max(b - a for a, b in zip(stamps, stamps[1:]))
    # With the GIL held the main thread would stall for the whole call.
    assert longest < 0.25 * duration, f"the main thread stalled {longest:.3f} s of a {duration:.3f} s call"
    assert len(inside) > 100
