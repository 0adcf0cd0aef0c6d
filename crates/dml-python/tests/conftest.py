"""Shared fixtures of the pytest suite of the `dml` package (run by `cargo xtask test`)."""

import json
import pathlib

import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def pml_golden():
    """pml 2.9.0's outputs (json) and their inputs (npz), from scripts/fixtures/dml_python_pml.py."""
    meta = json.loads((FIXTURES / "pml_golden.json").read_text())
    with np.load(FIXTURES / "pml_golden.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta, arrays
