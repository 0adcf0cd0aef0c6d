"""The installed package type-checks under mypy --strict: its annotations and the hand-written
stubs of the native module (dml/_dml.pyi) agree with how the Python layer calls it."""

import subprocess
import sys


def test_mypy_strict(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), "-p", "dml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
