"""Upstream's spelling: ``brainscore score --model_identifier ID --benchmark_identifier ID``, and
``python -m brainscore_vision score`` finding a model of ours that has no plugin folder once ``brainscore integration
enable`` wrote its start-up hook (into a private user site; brainscore-vision is a symlinked copy, because its
``score`` writes a pickle beside its package). On ``sim_small``."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import brainscore_vision
from benchmarks_it_maps.cli import main
from benchmarks_it_maps.submission import autoenable

MODEL = "efficientnet_lite0"  # offline weights, no plugin folder in brainscore-vision's tree
BENCHMARK = "Arcaro2020sim.M2ML-map_alignment"
INSTALLED = Path(brainscore_vision.__file__).resolve().parent


def test_score_accepts_brainscore_vision_flag_names(sim_small, capsys):
    assert main(["score", "--model_identifier", MODEL, "--benchmark_identifier", BENCHMARK, "--json", "--no-record",
                 "--device", "cpu"]) == 0
    aliased = json.loads(capsys.readouterr().out)
    assert main(["score", "--model", MODEL, "--benchmark", BENCHMARK, "--json", "--no-record", "--device",
                 "cpu"]) == 0
    assert json.loads(capsys.readouterr().out) == aliased
    assert aliased["model"] == MODEL and aliased["benchmark"] == BENCHMARK


@pytest.fixture
def linked_brainscore(tmp_path):
    """site/brainscore_vision: a real folder of symlinks to the installed package's entries (nothing copied, the
    installed tree is never written: ``score``'s pickle lands in ``site``)."""
    site = tmp_path / "site"
    package = site / "brainscore_vision"
    package.mkdir(parents=True)
    for entry in INSTALLED.iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    return site


def _run(args, env, cwd, timeout=600):
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _score_value(stdout: str) -> float:
    return float(stdout.split("array(", 1)[1].split(")", 1)[0])


def test_python_m_brainscore_vision_score_finds_our_models_after_enable(sim_small, linked_brainscore, tmp_path):
    from benchmarks_it_maps.runs import scoring
    env = dict(os.environ, PYTHONUSERBASE=str(tmp_path / "userbase"), PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([str(linked_brainscore), os.environ.get("PYTHONPATH", "")]),
               BS_INSTALL_DEPENDENCIES="no")
    env.pop(autoenable.ENV, None)
    command = ["-m", "brainscore_vision", "score", f"--model_identifier={MODEL}",
               f"--benchmark_identifier={BENCHMARK}"]
    before = _run(command, env, linked_brainscore)
    assert before.returncode != 0 and f"No registrations found for {MODEL}" in before.stderr, before.stderr[-2000:]

    enabled = _run(["-m", "benchmarks_it_maps", "integration", "enable", "--user"], env, tmp_path)
    assert enabled.returncode == 0, enabled.stderr[-2000:]
    user_site = Path(_run(["-c", "import site; print(site.getusersitepackages())"], env, tmp_path).stdout.strip())
    assert (user_site / autoenable.PTH_NAME).is_file() and (user_site / f"{autoenable.MODULE_NAME}.py").is_file()
    assert str(tmp_path / "userbase") in str(user_site)  # the private user site, not the shared environment
    # a process that never imports brainscore_vision imports nothing of ours either
    light = _run(["-c", "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ("
                        "'benchmarks_it_maps', 'harmonized_models', 'brainscore_vision', 'brainscore_core', "
                        "'torch', 'brainscore_itmaps_autoenable')))"], env, tmp_path)
    assert light.stdout.strip() == "['brainscore_itmaps_autoenable']", light.stderr

    after = _run(command, env, linked_brainscore)
    assert after.returncode == 0, after.stdout[-2000:] + after.stderr[-3000:]
    assert MODEL in after.stdout and BENCHMARK in after.stdout
    ours = scoring.score(MODEL, BENCHMARK, record=False, device="cpu")
    assert _score_value(after.stdout) == pytest.approx(float(ours), abs=1e-6)

    off = _run(command, dict(env, **{autoenable.ENV: "0"}), linked_brainscore)
    assert off.returncode != 0 and "No registrations found" in off.stderr
    assert _run(["-m", "benchmarks_it_maps", "integration", "disable", "--user"], env, tmp_path).returncode == 0
    assert not (user_site / autoenable.PTH_NAME).exists() and not (user_site / f"{autoenable.MODULE_NAME}.py").exists()


def test_enable_into_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["integration", "enable", "--site-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "Traceback" not in err
