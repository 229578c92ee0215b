"""`brainscore data simulate|import|summary` in-process, `ensure_simulated_twin`, and one subprocess smoke test."""
import json
import subprocess
import sys

import pytest

from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import simulate
from benchmarks_it_maps.cli import main


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(path))
    return path


def test_simulate_import_summary(home, tmp_path, capsys):
    out = tmp_path / "twin.zip"
    assert main(["data", "simulate", "--out", str(out), "--seed", "2", "--images", "2", "--grid", "3", "4",
                 "--repetitions", "2"]) == 0
    assert "brainscore data import arcaro2020" in capsys.readouterr().out
    assert main(["data", "import", "arcaro2020", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Arcaro2020sim: imported" in text
    assert "Arcaro2020sim.M1PL" in text and "32 channels, grid 3x3" in text and "grid 4x4" in text
    assert "2 repetitions" in text and "default window 150-300 ms" in text
    assert main(["data", "import", "arcaro2020", str(out)]) == 0
    assert "already imported, unchanged" in capsys.readouterr().out
    assert main(["data", "summary", "Arcaro2020sim", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)["Arcaro2020sim"]
    assert manifest["sites"]["M2ML"]["grid_size"] == 4 and manifest["simulated"] is True
    assert data.load_sidecar(home=home)["seed"] == 2
    assert main(["data", "summary"]) == 0
    assert "M1 (George): 2 images, 31 channels" in capsys.readouterr().out


def test_user_errors_are_one_line(home, tmp_path, capsys):
    assert main(["data", "summary"]) == 2
    assert "nothing imported" in capsys.readouterr().err
    assert main(["data", "import", "arcaro2020", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0] and "expected an existing Arcaro2020 zip" in err[0]
    assert main(["data", "simulate", "--out", str(tmp_path / "x.zip"), "--grid", "3", "4", "5"]) == 2
    assert main(["data", "simulate", "--out", str(tmp_path / "x.zip"), "--images", "1"]) == 2
    assert "images must be in" in capsys.readouterr().err
    assert main(["data", "summary", "Nope2020"]) == 2
    assert "unknown data identifier" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()
    # a folder --out is replaced as a whole: an existing folder that is not a twin is refused, its files kept
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    (tmp_path / "dir.zip").mkdir()
    for out, why in ((precious, "exists and is not a simulated twin"), (tmp_path / "dir.zip", "is a folder")):
        assert main(["data", "simulate", "--out", str(out), "--images", "2", "--grid", "3"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(out) in err[0] and why in err[0], err
    assert (precious / "notes.txt").read_text() == "keep me" and sorted(p.name for p in precious.iterdir()) == [
        "notes.txt"]


def test_ensure_simulated_twin_is_idempotent(tmp_path):
    kwargs = dict(images=2, grids=(3, 3), repetitions=2, home=tmp_path)
    first = simulate.ensure_simulated_twin(seed=1, **kwargs)
    archives = list((tmp_path / "simulated").iterdir())
    assert first["status"] == "imported" and len(archives) == 1
    stamp = archives[0].stat().st_mtime_ns
    second = simulate.ensure_simulated_twin(seed=1, **kwargs)
    assert second["status"] == "unchanged" and archives[0].stat().st_mtime_ns == stamp
    assert data.load_stimulus_set("Arcaro2020sim", home=tmp_path).shape[0] == 4


def test_help_smoke():
    result = subprocess.run([sys.executable, "-m", "benchmarks_it_maps", "data", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "simulate" in result.stdout and "fetch" in result.stdout


def test_plot_site(sim_small, tmp_path, capsys):
    from PIL import Image
    out = tmp_path / "maps.png"
    assert main(["data", "plot", "Arcaro2020sim.M2ML", "--out", str(out), "--window", "150", "300"]) == 0
    with Image.open(out) as image:
        assert image.size[0] > 200 and image.size[1] > 100
    assert main(["data", "plot", "Arcaro2020sim.M2ML", "--out", str(out), "--window", "400", "500"]) == 2
    assert "no complete 10-ms bin" in capsys.readouterr().err


def test_same_seed_gives_a_byte_identical_archive(tmp_path):
    """`brainscore data simulate` and the demo's simulate_archive call write the same bytes for the same seed (no
    dates in MAT headers or zip entries), so the demo never re-imports a twin the CLI imported."""
    import hashlib

    def sha(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()
    kwargs = dict(images=2, grids=(3, 3), repetitions=1)
    assert main(["data", "simulate", "--out", str(tmp_path / "cli.zip"), "--images", "2", "--grid", "3",
                 "--repetitions", "1"]) == 0
    api = simulate.simulate_archive(tmp_path / "api.zip", seed=0, **kwargs)
    assert sha(tmp_path / "cli.zip") == sha(api)
    assert sha(simulate.simulate_archive(tmp_path / "seed1.zip", seed=1, **kwargs)) != sha(api)
    v73 = [simulate.simulate_archive(tmp_path / f"v73-{i}", seed=0, mat_version="7.3", **kwargs) for i in range(2)]
    assert sha(v73[0] / "Red" / "red_062419_data.mat") == sha(v73[1] / "Red" / "red_062419_data.mat")
