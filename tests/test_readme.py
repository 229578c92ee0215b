"""README.md's commands, executed: a failing example breaks CI.

Every ``brainscore ...`` line (and every statement) of README's fenced ``bash`` and ``python`` blocks must be listed
below: run as written, run with the extra arguments that make it quick (the tiny simulated twin, CPU), or skipped
with the reason. A README example that is not listed fails :func:`test_every_readme_example_is_accounted_for`, so
a new example cannot go unexecuted by accident. Everything runs offline, in a private data home, in a scratch
working folder, in README's order (later examples use what earlier ones stored, as for a reader).
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from benchmarks_it_maps.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TINY_TWIN = ["--images", "3", "--grid", "5", "5"]

#: README command (as written, comments and continuation lines joined) -> extra arguments for a quick run.
QUICK = {
    "brainscore demo": [*TINY_TWIN, "--device", "cpu"],
    "brainscore features --model efficientnet_lite0 --stimuli Arcaro2020sim --out lite0.h5": ["--device", "cpu"],
    "brainscore features --model efficientnet_lite0 --stimuli Arcaro2020sim.M2ML --protocol shift --out shift.nc":
        ["--device", "cpu"],
    "brainscore score --model_identifier efficientnet_lite0 --benchmark_identifier Arcaro2020sim.M1ML-pls":
        ["--device", "cpu"],
    "brainscore report --out report.html [--results DB] [--leaderboard SNAPSHOT] "
    "[--maps ~/.brainscore_itmaps/demo/maps]": ["--maps", "~/.brainscore_itmaps/demo/maps"],
    "brainscore data simulate --out twin.zip --seed 0": ["--images", "3", "--grid", "5"],
    "brainscore data orientation Arcaro2020sim": ["--bootstrap", "100", "--device", "cpu"],
    "brainscore score --model efficientnet_lite0 --benchmark Arcaro2020sim.M2ML-pls [--json] [--device cuda]":
        ["--json", "--device", "cpu"],
    "brainscore maps --model efficientnet_lite0 --benchmark Arcaro2020sim.M1ML-pls --out maps/": ["--device", "cpu"],
    "brainscore layers --model efficientnet_lite0 --benchmark Arcaro2020sim.M1ML-pls":
        ["--device", "cpu", "--layers", "_blocks.4", "_blocks.10"],
    "brainscore tradeoff --leaderboard --benchmark Sanghavi2020.IT-pls,SanghaviJozwik2020.IT-pls --min-accuracy 0.36 "
    "--exclude-anonymous [--frontier mean|upper] [--bootstrap families|models] [--families my_families.csv] "
    "--plot tradeoff.png [--json]": ["--resamples", "50"],
    "brainscore tradeoff --leaderboard --benchmark Sanghavi2020.IT-pls --sensitivity --plot sensitivity.png":
        ["--resamples", "20"],
}
#: README command -> why the test does not run it.
SKIPPED = {
    'pip install -e ".[test,keras]" && pip install --no-deps keras-cv-attention-models==1.4.3':
        "the install itself: .ci/run runs exactly this line before the tests",
    "python -m pytest tests -q": "the test suite itself (this test is part of it)",
    "brainscore data fetch arcaro2020 --sha256 HEX": "downloads the public archive (network)",
    "brainscore features --model efficientnet_lite0 --stimuli my_images/ --grid 9 --layers _blocks.6 _blocks.10 "
    "--out f.npz": "a folder of your own images; folders are tested in test_features",
    "brainscore integration enable [--user]": "writes a start-up hook into the Python environment shared by the "
                                              "tests; tested with a scratch user site in test_upstream_flags",
    "brainscore data fetch arcaro2020": "downloads the public archive (network); fetch is tested on a local server "
                                        "in test_data_fetch",
    "brainscore data import arcaro2020 ~/Downloads/Arcaro2020.zip": "needs the real archive; importing an archive "
                                                                    "is run two lines below with the twin",
    "brainscore tradeoff --results ~/.brainscore_itmaps/results.sqlite --benchmark Arcaro2020.IT-residual_pls":
        "needs scores of many models on the real data (the trade-off fit needs a population); tested on local "
        "results in test_tradeoff",
    "brainscore harmonize train --model resnet18 --pretrained --imagenet /data/imagenet/train --clickme "
    "/data/clickme --epochs 10 --out runs/rn18": "trains on ImageNet and ClickMe (neither is here); training is "
                                                 "tested on tiny folders in test_harmonizer_train",
    "torchrun --nproc_per_node 8 -m benchmarks_it_maps harmonize train ...": "8 GPUs (DDP)",
    "brainscore harmonize evaluate --model harmonized:runs/rn18/final --clickme /data/clickme/val":
        "needs the checkpoint trained above and ClickMe; tested in test_harmonizer_evaluate",
    "brainscore score --model harmonized:runs/rn18/final --benchmark Arcaro2020.IT-pls":
        "needs the checkpoint trained above and the real data; harmonized:PATH scoring is tested in test_sweep",
    "brainscore sweep --models @models.txt --benchmarks all --executor slurm --gpus 1 --slurm-partition gpu "
    "--max-retries 2": "a Slurm cluster with GPUs; Slurm sweeps are tested on a one-node cluster in test_sweep",
    "brainscore submission --data-from Arcaro2020.zip --out submission --upload s3://BUCKET/PREFIX":
        "the real archive and an S3 bucket; packaging and upload are tested against a local S3 server in "
        "test_data_packaging",
    'model = harmonized_models.load_model("resnet50.a1_in1k")': "timm weights from the Hugging Face hub (network)",
    'model = harmonized_models.load_model("harmonized_resnet50")': "downloads the released Keras weights (network); "
                                                                   "conversion is tested in test_keras_harmonized",
}
#: README commands whose printed output is checked besides the exit code.
PRINTS = {
    "brainscore list benchmarks": "Arcaro2020sim.IT-pls",
    "brainscore leaderboard show --benchmark MajajHong2015.IT-pls": "MajajHong2015.IT-pls (v",
    "brainscore leaderboard compare --model efficientnet_lite0": "efficientnet_lite0 among the public Brain-Score",
    "brainscore data orientation Arcaro2020sim": "best in",
    "brainscore data channels Arcaro2020sim --out channels.png": "best boundary in the data",
}


def readme_examples() -> list[tuple[str, str]]:
    """(language, command) for each command line of README's bash blocks and statement of its python blocks."""
    examples = []
    for language, body in re.findall(r"```(bash|python)\n(.*?)```", README.read_text(), flags=re.S):
        joined = re.sub(r"\\\n\s*", "", body)  # continuation lines
        for line in joined.splitlines():
            line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if line and not line.startswith("#"):
                examples.append((language, re.sub(r"\s+", " ", line)))
    return examples


def test_every_readme_example_is_accounted_for():
    unlisted = [command for language, command in readme_examples()
                if language == "bash" and not command.startswith("brainscore ") and command not in SKIPPED]
    assert unlisted == [], "README commands that are neither brainscore commands nor in SKIPPED"
    stale = [command for command in [*QUICK, *SKIPPED, *PRINTS]
             if command not in {c for _, c in readme_examples()}]
    assert stale == [], "entries of QUICK/SKIPPED/PRINTS that README no longer has"


def _argv(command: str) -> list[str]:
    """The command's arguments plus its QUICK ones: README's optional parts ``[--json]`` left out (QUICK adds those
    the test uses), ``~/.brainscore_itmaps`` is the data home."""
    home = os.environ["BRAINSCORE_ITMAPS_HOME"]
    argv = shlex.split(re.sub(r"\s*\[[^\]]*\]", "", command))[1:] + QUICK.get(command, [])
    return [part.replace("~/.brainscore_itmaps", home) for part in argv]


@pytest.mark.timeout(1500)
def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    """Each README example in order, offline, in a private data home and a scratch working folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(home))
    monkeypatch.delenv("BRAINSCORE_ITMAPS_LEADERBOARD", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ran, python_lines = [], []
    for language, command in readme_examples():
        if command in SKIPPED:
            continue
        if language == "python":
            python_lines.append(command)
            continue
        argv = _argv(command)
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, f"README example failed ({code}): {command}\n{out.err[-2000:]}"
        if command in PRINTS:
            assert PRINTS[command] in out.out, f"{command}: expected {PRINTS[command]!r} in\n{out.out[-2000:]}"
        ran.append(command)
    exec(compile("\n".join(python_lines), "README.md (python blocks)", "exec"), {})  # noqa: S102 - our README
    # outputs where README and --help say: the demo's under the data home, nothing in the working folder
    assert sorted((home / "demo" / "maps").glob("*/*/*.png")), "demo figures not under DATA_HOME/demo/maps"
    assert not (work / "brainscore_demo").exists()
    assert (work / "maps.png").is_file() and (work / "channels.png").is_file() and (work / "scores.csv").is_file()
    assert sorted(work.glob("tradeoff*.png")), "no trade-off figure written"  # one per benchmark when several
    assert sorted((home / "figures").glob("layers-*.png")), "layers plot not under DATA_HOME/figures"
    assert "brainscore demo" in ran and len(ran) >= 15
