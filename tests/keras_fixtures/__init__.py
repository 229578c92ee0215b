"""Random-weight Keras fixtures for the converter tests, built once per test session in a subprocess.

Usage in a test module::

    from keras_fixtures import fixture_dir

    @pytest.fixture(scope="session")
    def keras_dir():
        return fixture_dir(["vgg16", "vit_b16"])   # -> Path with vgg16.h5, vgg16.npz, vit_b16.h5, ...

All test modules share one temporary folder per pytest process; each arch is built at most once (the first
request builds what is missing).  TensorFlow runs only in the child process (make_fixtures.py), never in pytest.
The folder is deleted when the process exits.  Fixtures are never committed.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

SCRIPT = Path(__file__).with_name("make_fixtures.py")
_DIR: Path | None = None


def _session_dir() -> Path:
    global _DIR
    if _DIR is None:
        _DIR = Path(tempfile.mkdtemp(prefix="keras-fixtures-"))
        atexit.register(shutil.rmtree, _DIR, True)
    return _DIR


def fixture_dir(archs: Iterable[str], timeout: float = 900) -> Path:
    """Folder holding ``ARCH.h5`` and ``ARCH.npz`` for every requested arch (built on first request)."""
    out = _session_dir()
    missing = [a for a in archs if not ((out / f"{a}.h5").exists() and (out / f"{a}.npz").exists())]
    if missing:
        cmd = [sys.executable, str(SCRIPT), "--out", str(out)]
        for arch in missing:
            cmd += ["--arch", arch]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
        if proc.returncode != 0:
            raise RuntimeError(f"make_fixtures.py failed (rc {proc.returncode}) for {missing}:\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return out


def manifest(out: Path) -> dict:
    """The fixtures' manifest.json (per-arch seed, size, reload mode, logit scale)."""
    return json.loads((out / "manifest.json").read_text())
