"""The Brain-Score submission zip: exactly the plugin folders, at the zip root by type, reproducible."""
from __future__ import annotations

import zipfile
from pathlib import Path

from benchmarks_it_maps.submission import plugins as submission
from benchmarks_it_maps.cli import main

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def test_zip_contains_exactly_the_plugin_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("BRAINSCORE_ITMAPS_REQUIREMENT", raising=False)
    out = tmp_path / "submission.zip"
    assert main(["submission", "--out", str(out)]) == 0
    assert "plugin folders" in capsys.readouterr().out
    with zipfile.ZipFile(out) as archive:
        names = sorted(archive.namelist())
        contents = {name: archive.read(name).decode() for name in names}
    on_disk = {str(p.relative_to(PLUGINS)): p.read_text() for p in PLUGINS.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert contents == on_disk
    assert {name.split("/")[0] for name in names} <= set(submission.PLUGIN_TYPES)
    assert {"data", "benchmarks", "models"} <= {name.split("/")[0] for name in names}
    first = out.read_bytes()
    assert main(["submission", "--out", str(out)]) == 0
    assert out.read_bytes() == first  # reproducible bytes


def test_zip_with_chosen_models_and_requirement(tmp_path):
    out = tmp_path / "two.zip"
    assert main(["submission", "--out", str(out), "--models", "harmonized_vgg16,harmonized_vit_b16",
                 "--requirement", "brainscore-itmaps @ git+https://example.org/itmaps.git@v0.1.0"]) == 0
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        requirement = archive.read("models/harmonized_vgg16/requirements.txt").decode()
    assert sorted({n.split("/")[1] for n in names if n.startswith("models/")}) == ["harmonized_vgg16",
                                                                                   "harmonized_vit_b16"]
    assert requirement == "brainscore-itmaps @ git+https://example.org/itmaps.git@v0.1.0\n"
    assert "models/harmonized_vgg16/region_layer_map/harmonized_vgg16.json" in names


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    assert main(["submission", "--out", str(tmp_path / "x.tar")]) == 2
    assert "must end in .zip" in capsys.readouterr().err
    assert main(["submission", "--out", str(tmp_path / "y.zip"), "--models", "harmonized_vgg61"]) == 2
    assert "harmonized_vgg16" in capsys.readouterr().err  # close-name suggestion from the registry
    assert not (tmp_path / "x.tar").exists() and not (tmp_path / "y.zip").exists()


def test_folders_and_check(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BRAINSCORE_ITMAPS_REQUIREMENT", raising=False)
    target = tmp_path / "plugins"
    assert main(["submission", "--folders", str(target)]) == 0
    assert main(["submission", "--check", str(target)]) == 0
    assert "in sync" in capsys.readouterr().out
    (target / "benchmarks" / "arcaro2020" / "__init__.py").write_text("# edited by hand\n")
    (target / "models" / "stray.txt").write_text("x")
    assert main(["submission", "--check", str(target)]) == 1
    out = capsys.readouterr().out
    assert "differs: benchmarks/arcaro2020/__init__.py" in out and "not generated (stale?): models/stray.txt" in out
