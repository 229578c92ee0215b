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


def test_zip_with_chosen_models_and_requirement(tmp_path, monkeypatch):
    """--requirement (README: needed wherever the package does not live at setup.py's placeholder URL) is exactly the
    line of every generated requirements.txt; BRAINSCORE_ITMAPS_REQUIREMENT does the same, --requirement wins."""
    out = tmp_path / "two.zip"
    assert main(["submission", "--out", str(out), "--models", "harmonized_vgg16,harmonized_vit_b16",
                 "--requirement", "brainscore-itmaps @ git+https://example.org/itmaps.git@v0.1.0"]) == 0
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        requirements = {n: archive.read(n).decode() for n in names if n.endswith("/requirements.txt")}
    assert sorted({n.split("/")[1] for n in names if n.startswith("models/")}) == ["harmonized_vgg16",
                                                                                   "harmonized_vit_b16"]
    assert sorted(n.rsplit("/", 1)[0] for n in requirements) == [
        "benchmarks/arcaro2020", "data/arcaro2020", "models/harmonized_vgg16", "models/harmonized_vit_b16"]
    assert set(requirements.values()) == {"brainscore-itmaps @ git+https://example.org/itmaps.git@v0.1.0\n"}
    assert "models/harmonized_vgg16/region_layer_map/harmonized_vgg16.json" in names
    monkeypatch.setenv("BRAINSCORE_ITMAPS_REQUIREMENT", "brainscore-itmaps @ git+https://example.org/env.git@v1")
    assert main(["submission", "--folders", str(tmp_path / "env"), "--models", "harmonized_vgg16"]) == 0
    assert {p.read_text() for p in (tmp_path / "env").rglob("requirements.txt")} == {
        "brainscore-itmaps @ git+https://example.org/env.git@v1\n"}
    assert main(["submission", "--folders", str(tmp_path / "arg"), "--models", "harmonized_vgg16",
                 "--requirement", "brainscore-itmaps @ file:///wheel.whl"]) == 0
    assert {p.read_text() for p in (tmp_path / "arg").rglob("requirements.txt")} == {
        "brainscore-itmaps @ file:///wheel.whl\n"}


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
