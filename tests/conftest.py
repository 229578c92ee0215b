"""Test-wide settings: no network, no pip calls from brainscore-vision, no result caching, a private data home."""
import os
import tempfile

# Must be set before brainscore_vision is imported anywhere.
os.environ["BS_INSTALL_DEPENDENCIES"] = "no"
os.environ["RESULTCACHING_DISABLE"] = "1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["BRAINSCORE_SKIP_MEMORY_CHECK"] = "1"
_TMP = tempfile.mkdtemp(prefix="bsitmaps-tests-")
os.environ.setdefault("BRAINIO_HOME", os.path.join(_TMP, "brainio"))
os.environ.setdefault("BRAINSCORE_HOME", os.path.join(_TMP, "brainscore"))
os.environ.setdefault("RESULTCACHING_HOME", os.path.join(_TMP, "result_caching"))
os.environ["BRAINSCORE_ITMAPS_HOME"] = os.path.join(_TMP, "home")
os.environ.setdefault("OMP_NUM_THREADS", "2")

# A runner that starts the suite in the background without job control (a CI script's `cmd &`, nohup) hands it SIGINT
# *ignored*, and every child inherits that: no command could be interrupted, unlike in a terminal, and the Ctrl-C
# tests would test nothing. Give the suite a terminal's disposition (children then start with SIGINT at default).
import signal as _signal

if _signal.getsignal(_signal.SIGINT) is _signal.SIG_IGN:
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)


# ---------------------------------------------------------------------------------------------------------------------
# Simulated Arcaro2020 twin (helper A). Other tests must not import archives into the default test data home (pass
# ``home=`` to ``import_arcaro2020``) so that ``sim_small``'s import stays in place for the whole session.
# ---------------------------------------------------------------------------------------------------------------------
import json as _json
from pathlib import Path as _Path

import pytest as _pytest

SIM_SMALL = dict(seed=0, images=4, grids=(5, 5), repetitions=4)
SIM_FULL = dict(seed=0, images=14, grids=(17, 9), repetitions=4)
SIM_SITES = ("M1PL", "M1ML", "M2ML")


def _simulate_and_import(folder: _Path, home: _Path | None, **kwargs) -> dict:
    from benchmarks_it_maps.data import assemblies as data
    from benchmarks_it_maps.data import simulate
    archive = simulate.simulate_archive(folder / "Arcaro2020sim.zip", **kwargs)
    summary = data.import_arcaro2020(archive, home=home)
    home = _Path(home) if home else _Path(os.environ["BRAINSCORE_ITMAPS_HOME"])
    sidecar = _json.loads((home / "Arcaro2020sim" / "generator.json").read_text())
    return {"archive": archive, "sidecar": sidecar, "summary": summary, "home": home,
            "stimulus_set": "Arcaro2020sim", "identifiers": [f"Arcaro2020sim.{s}" for s in SIM_SITES]}


@_pytest.fixture(scope="session")
def sim_small(tmp_path_factory) -> dict:
    """A small simulated twin (4 images per monkey, 5x5 grids, 4 repetitions, seed 0) imported into the test data
    home as 'Arcaro2020sim'. Keys: archive (zip path), sidecar (dict), summary, home, stimulus_set, identifiers."""
    return _simulate_and_import(tmp_path_factory.mktemp("sim_small"), None, **SIM_SMALL)


@_pytest.fixture(scope="session")
def sim_full(tmp_path_factory) -> dict:
    """The full-size twin (14 images per monkey, 17x17 and 9x9 grids, 4 repetitions, seed 0), simulated once per
    session and imported into its OWN data home (``sim_full['home']``) so it never replaces ``sim_small``. Load from
    it with ``load_assembly(..., home=sim_full['home'])`` or use the ``use_sim_full`` fixture."""
    folder = tmp_path_factory.mktemp("sim_full")
    return _simulate_and_import(folder, folder / "home", **SIM_FULL)


@_pytest.fixture
def use_sim_full(sim_full, monkeypatch) -> dict:
    """Point the data home (BRAINSCORE_ITMAPS_HOME) at ``sim_full``'s home for one test; yields ``sim_full``."""
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(sim_full["home"]))
    return sim_full
