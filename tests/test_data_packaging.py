"""The submission's data path: the twin packaged with brainscore-core's own packaging functions (deterministic sha1),
uploaded to a real local S3 server (SeaweedFS), loaded back by the generated data plugin through brainscore-core's
``load_stimulus_set_from_s3`` / ``load_assembly_from_s3`` (endpoint from ``AWS_ENDPOINT_URL``), whose own
``test.py`` passes in a copy of brainscore-vision. No S3 mocks.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from environment import restored_environ
from s3_server import make_bucket, seaweedfs

import brainscore_vision
from benchmarks_it_maps import list_benchmarks
from benchmarks_it_maps.cli import main
from benchmarks_it_maps.data.assemblies import load_assembly, load_stimulus_set
from benchmarks_it_maps.runs import features
from benchmarks_it_maps.submission import packaging

INSTALLED = Path(brainscore_vision.__file__).resolve().parent
BUCKET = "itmaps-test"
PLUGIN_FOLDERS = ("data", "benchmarks", "models", "metrics")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """AWS_* settings of a running local S3 server with a versioned bucket (restored afterwards)."""
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "BRAINIO_HOME")
    with seaweedfs() as endpoint, restored_environ(*names):
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="itmaps-test",
                          AWS_SECRET_ACCESS_KEY="itmaps-test", AWS_DEFAULT_REGION="us-east-1",
                          BRAINIO_HOME=str(tmp_path_factory.mktemp("brainio")))
        make_bucket(BUCKET)
        yield {name: os.environ[name] for name in names}


@pytest.fixture(scope="module")
def submitted(sim_small, s3, tmp_path_factory):
    """``brainscore submission --data-from TWIN --out DIR --upload s3://itmaps-test/arcaro2020``."""
    out = tmp_path_factory.mktemp("submission")
    assert main(["submission", "--data-from", str(sim_small["archive"]), "--out", str(out),
                 "--upload", f"s3://{BUCKET}/arcaro2020", "--models", "efficientnet_lite0"]) == 0
    return out


def light_copy(root: Path) -> Path:
    """brainscore_vision without its hundreds of plugin folders (only their registries' packages)."""
    copy = root / "brainscore_vision"
    shutil.copytree(INSTALLED, copy, ignore=lambda folder, names: [
        name for name in names if name == "__pycache__" or
        (Path(folder).parent == INSTALLED and Path(folder).name in PLUGIN_FOLDERS
         and (Path(folder) / name).is_dir())])
    return copy


def test_packaging_is_deterministic_and_faithful(sim_small, tmp_path):
    first = packaging.package_archive(sim_small["archive"], tmp_path / "a")
    second = packaging.package_archive(sim_small["archive"], tmp_path / "b")
    assert first == second  # same archive, same sha1s (and same expected values, ceilings, reference scores)
    assert len(first["reference"]["scores"]) == 12 and (tmp_path / "a" / packaging.REFERENCE_FEATURES).is_file()
    assert first["dataset"] == "Arcaro2020sim" and first["simulated"] is True
    assert sorted(first["assemblies"]) == sorted(sim_small["identifiers"])
    for identifier, entry in first["assemblies"].items():
        assert len(entry["sha1"]) == 40 and (tmp_path / "a" / entry["file"]).is_file()
        original = load_assembly(identifier)
        assert entry["expected"]["sizes"] == {dim: int(n) for dim, n in original.sizes.items()}
        assert entry["expected"]["max"] == pytest.approx(float(np.nanmax(original.values)))
    assert first["stimulus_set"]["images"] == len(load_stimulus_set("Arcaro2020sim"))


def test_upload_records_version_ids_and_plugin_pins_them(submitted):
    manifest = json.loads((submitted / "packages" / packaging.MANIFEST).read_text())
    assert manifest["bucket"] == f"{BUCKET}/arcaro2020"
    versions = [manifest["stimulus_set"]["csv_version_id"], manifest["stimulus_set"]["zip_version_id"],
                *(entry["version_id"] for entry in manifest["assemblies"].values())]
    assert all(v and v != "null" for v in versions) and len(set(versions)) == len(versions)  # versioned bucket
    init = (submitted / "plugins" / "data" / "arcaro2020sim" / "__init__.py").read_text()
    assert "load_stimulus_set_from_s3" in init and "load_assembly_from_s3" in init
    for value in [manifest["stimulus_set"]["csv_sha1"], manifest["stimulus_set"]["zip_sha1"], *versions,
                  *(entry["sha1"] for entry in manifest["assemblies"].values())]:
        assert repr(value) in init
    assert (submitted / "plugins" / "data" / "arcaro2020sim" / "data_packaging.py").is_file()
    assert (submitted / "plugins" / "models" / "efficientnet_lite0" / "model.py").is_file()


def _run_plugin_tests(copy: Path, test_file: Path, env: dict, extra: list | None = None) \
        -> subprocess.CompletedProcess:
    env = dict(os.environ, **env, PYTHONPATH=os.pathsep.join([str(copy.parent), os.environ.get("PYTHONPATH", "")]),
               PYTHONDONTWRITEBYTECODE="1", BS_INSTALL_DEPENDENCIES="no")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "not slow",
                           "--rootdir", str(copy.parent), *(extra or []), str(test_file)],
                          cwd=copy.parent, env=env, capture_output=True, text=True, timeout=600)


def test_data_plugin_loads_from_s3_and_passes_its_tests(submitted, s3, tmp_path):
    copy = light_copy(tmp_path / "site")
    shutil.copytree(submitted / "plugins" / "data" / "arcaro2020sim", copy / "data" / "arcaro2020sim")
    done = _run_plugin_tests(copy, copy / "data" / "arcaro2020sim" / "test.py",
                             dict(s3, BRAINIO_HOME=str(tmp_path / "brainio-fresh")))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "5 passed" in done.stdout  # stimulus set, three assemblies, channel split
    assert any((tmp_path / "brainio-fresh").rglob("assy_Arcaro2020sim_M1ML.nc"))  # downloaded from S3, not local

    # a wrong pinned sha1 is refused by brainscore-core's loader (the pin is checked, not decorative)
    init = copy / "data" / "arcaro2020sim" / "__init__.py"
    manifest = json.loads((submitted / "packages" / packaging.MANIFEST).read_text())
    sha1 = manifest["assemblies"]["Arcaro2020sim.M1ML"]["sha1"]
    init.write_text(init.read_text().replace(sha1, "0" * 40))
    broken = _run_plugin_tests(copy, copy / "data" / "arcaro2020sim" / "test.py",
                               dict(s3, BRAINIO_HOME=str(tmp_path / "brainio-broken")))
    assert broken.returncode != 0 and "SHA1 mismatch" in broken.stdout + broken.stderr


def test_benchmark_plugin_scores_s3_data_and_checks_what_packaging_wrote(submitted, s3, tmp_path):
    """The benchmark plugin written by ``--data-from`` gets its recordings through brainscore-vision's
    ``load_dataset`` from the data plugin (local S3, pinned sha1s; this package's data home is empty) and its
    test.py pins each ceiling and the reference model's score and raw value on the precomputed features in the folder
    (upstream's ``test_helper``); it passes, and fails when a pinned value is 1 % off or the features are those of
    other images."""
    manifest = json.loads((submitted / "packages" / packaging.MANIFEST).read_text())
    ceilings, reference = manifest["ceilings"], manifest["reference"]
    assert sorted(ceilings) == sorted(i for i in list_benchmarks() if i.startswith("Arcaro2020sim."))
    assert all(0 < value <= 1 for value in ceilings.values())
    scores = reference["scores"]
    assert sorted(scores) == sorted(i for i in ceilings if "shift" not in i) and len(scores) == 12
    assert reference["model"] == "efficientnet_lite0" and reference["layers"] == "_blocks.10"
    assert reference["reduction"] == "none" and 0 < reference["bytes"] < packaging.MAX_REFERENCE_BYTES
    assert all(0 <= v["score"] <= 1 for v in scores.values()) and any(v["score"] > 0.05 for v in scores.values())
    copy = light_copy(tmp_path / "site")
    for kind in ("data", "benchmarks"):
        shutil.copytree(submitted / "plugins" / kind / "arcaro2020sim", copy / kind / "arcaro2020sim")
    folder = copy / "benchmarks" / "arcaro2020sim"
    assert "benchmark_on_brainscore_data" in (folder / "__init__.py").read_text()
    features_file = folder / reference["file"]
    with np.load(features_file, allow_pickle=False) as stored:  # plain arrays, no pickles
        assert stored["M1/features"].dtype == np.float32
    test_file = folder / "test.py"
    empty_home = tmp_path / "no-itmaps-data"
    empty_home.mkdir()

    def run(name: str) -> subprocess.CompletedProcess:
        env = dict(s3, BRAINIO_HOME=str(tmp_path / f"brainio-{name}"), BRAINSCORE_ITMAPS_HOME=str(empty_home))
        return _run_plugin_tests(copy, test_file, env, extra=["-k", "expected_ceiling or reference_model"])

    done = run("fresh")
    assert done.returncode == 0 and f"{len(ceilings) + len(scores)} passed" in done.stdout, done.stdout[-4000:]
    assert any((tmp_path / "brainio-fresh").rglob("assy_Arcaro2020sim_M2ML.nc"))  # the data came from S3
    assert not any(empty_home.iterdir())

    original = test_file.read_text()
    identifier = "Arcaro2020sim.M2ML-pls"
    pinned_ceiling = f"{json.dumps(identifier)}: {json.dumps(ceilings[identifier])}"
    pinned_score = f'"score": {json.dumps(scores[identifier]["score"])}'
    assert pinned_ceiling in original and original.count(pinned_score) == 1
    test_file.write_text(original.replace(pinned_ceiling, pinned_ceiling.replace(
        json.dumps(ceilings[identifier]), json.dumps(ceilings[identifier] * 1.01))).replace(
        pinned_score, f'"score": {json.dumps(scores[identifier]["score"] * 1.01)}'))
    broken = run("off")
    assert broken.returncode != 0 and "2 failed" in broken.stdout, broken.stdout[-3000:]
    assert f"test_expected_ceiling[{identifier}]" in broken.stdout
    assert f"test_reference_model_on_precomputed_features[{identifier}]" in broken.stdout

    test_file.write_text(original)  # the features of other images: each image gets the next one's features
    blocks, attrs = features.read_features(features_file)
    rolled = {name: block.assign_coords(stimulus_id=np.roll(block["stimulus_id"].values, 1))
              for name, block in blocks.items()}
    features.write_features(rolled, attrs, features_file)
    swapped = run("swapped")
    assert swapped.returncode != 0, swapped.stdout[-3000:]
    failed = [line for line in swapped.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == len(scores) and all("test_reference_model_on_precomputed_features" in line
                                              for line in failed), swapped.stdout[-3000:]  # ceilings unaffected


def test_bad_submission_arguments_are_one_line(tmp_path, capsys):
    assert main(["submission", "--data-from", str(tmp_path / "missing.zip"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.zip: no such file" in capsys.readouterr().err
    assert main(["submission", "--out", str(tmp_path / "x.zip"), "--upload", "s3://b/p"]) == 2
    assert "--upload needs --data-from" in capsys.readouterr().err
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"PK")
    assert main(["submission", "--data-from", str(archive), "--out", str(tmp_path / "o"),
                 "--upload", "http://not-s3"]) == 2
    assert "expected s3://BUCKET/PREFIX" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_reference_features_shrink_to_the_size_limit():
    """Above the limit every block keeps the same evenly spaced channels (first and last included) and says so."""
    import xarray as xr
    blocks = {name: xr.DataArray(np.ones((n, g, g, 40), np.float32), dims=("stimulus_id", "grid_row", "grid_col",
                                                                            "feature"),
                                 coords={"channel": ("feature", np.arange(40))})
              for name, n, g in (("M1", 3, 5), ("M2", 2, 3))}
    total = sum(block.size * 4 for block in blocks.values())
    same, attrs = packaging.reduce_channels(blocks, {}, max_bytes=total)
    assert same is blocks and attrs["reduction"] == "none"
    small, attrs = packaging.reduce_channels(blocks, {}, max_bytes=total // 4)
    kept = [list(block["channel"].values) for block in small.values()]
    assert kept[0] == kept[1] and kept[0][0] == 0 and kept[0][-1] == 39 and len(kept[0]) == 10
    assert sum(block.size * 4 for block in small.values()) <= total // 4
    assert attrs["reduction"].startswith("10 of 40 features")
