"""What a new user trips over (issue 16): noise on stderr, --version, help strings, names, offline failures that
come at once, outputs where they are documented, "unknown" told from "known but not loadable here"."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import harmonized_models
from benchmarks_it_maps.analysis import leaderboard as lb
from benchmarks_it_maps.cli import build_parser, main, package_version
from benchmarks_it_maps.cli.keras import resolve_arch
from benchmarks_it_maps.runs import scoring, sweep
from benchmarks_it_maps.runs.results import ResultsDB

REPO = Path(__file__).resolve().parents[1]


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"brainscore (brainscore-itmaps) {package_version()}"


@pytest.mark.parametrize("command, expected", [(["list", "models", "--category", "cnn"], "resnet18.a1_in1k"),
                                               (["list", "benchmarks"], "Arcaro2020.IT-pls")])
def test_list_commands_print_no_future_warning(command, expected):
    """brainscore-core's 'Score should explicitly define __slots__' FutureWarning is not shown by the command
    (``list benchmarks`` imports brainscore-core, ``list models`` must stay without it)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="default")
    done = subprocess.run([sys.executable, "-m", "benchmarks_it_maps", *command],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "FutureWarning" not in done.stderr and "__slots__" not in done.stderr, done.stderr
    assert expected in done.stdout.split()


def _options_without_help(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options_without_help(sub, f"{prefix} {name}")
        elif not action.help and not isinstance(action, argparse._HelpAction):
            yield f"{prefix} {'/'.join(action.option_strings) or action.dest}"


def test_every_option_has_help_and_states_its_default_once(capsys):
    assert list(_options_without_help(build_parser(), "brainscore")) == []
    with pytest.raises(SystemExit):
        main(["harmonize", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.01)" in text and "(default: 0)" in text  # --lr, --warmup-steps (0 is a default too)
    assert text.count("default:") == text.count("default: ") and "(default: None)" not in text
    assert "default: one pass over the ClickMe samples (default" not in text  # said once, not twice


def test_categories_in_any_case_and_with_dashes(capsys):
    extra = harmonized_models.list_models("Extra data")
    assert extra and harmonized_models.list_models("extra-data") == extra
    assert harmonized_models.list_models("HARMONIZED") == harmonized_models.list_models("Harmonized")
    assert sweep.parse_models("category:self_supervised")
    assert main(["list", "models", "--category", "extra-data"]) == 0
    assert "Extra data" in capsys.readouterr().out
    assert main(["list", "models", "--category", "harmonised"]) == 2
    assert "extra-data" in capsys.readouterr().err  # the error lists the accepted spellings


def test_harmonized_names_resolve_and_files_say_what_they_hold(capsys):
    for name in ("levit128", "levit_128", "harmonized_levit_128", "levit_small_harmonized.h5", "LeViT128"):
        assert resolve_arch(name) == "levit128", name
    assert resolve_arch("resnet50v2_harmonized.h5") == "resnet50"
    assert resolve_arch("no-such-arch") == "no-such-arch"  # the converter names the known ones
    assert main(["list", "models", "--category", "harmonized"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("harmonized_resnet50 "))
    assert "resnet50v2_harmonized.h5" in row and "ResNet50 v1" in row


def test_unknown_benchmark_told_from_one_not_loadable_here():
    with pytest.raises(scoring.ScoringError) as unknown:
        scoring.resolve_benchmark("NoSuch2015.IT-pls")
    assert "unknown benchmark identifier 'NoSuch2015.IT-pls'" in str(unknown.value)
    assert "nor is it a benchmark of the installed brainscore-vision" in str(unknown.value)
    with pytest.raises(scoring.ScoringError) as private:  # MajajHong2015's data needs S3 credentials
        scoring.resolve_benchmark("MajajHong2015.IT-pls")
    message = str(private.value)
    assert message.startswith("MajajHong2015.IT-pls is a brainscore-vision benchmark, but it cannot be loaded here")
    assert "unknown" not in message and "did you mean" not in message


def test_offline_timm_weights_fail_at_once_with_one_clear_error(tmp_path, monkeypatch):
    """With the hub unreachable (a closed local port here), one connection attempt decides: only the cache is
    tried (no retries), and the error says so."""
    from harmonized_models import baselines
    monkeypatch.setattr(baselines.hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(baselines.hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    baselines.hub_reachable.cache_clear()
    offline_before = baselines.hub_constants.HF_HUB_OFFLINE
    try:
        with pytest.raises(baselines.WeightsUnavailableError, match="only the cache was tried"):
            harmonized_models.load_model("resnet18.a1_in1k", device="cpu")
        assert baselines.hub_constants.HF_HUB_OFFLINE == offline_before  # offline mode only for that call
    finally:
        baselines.hub_reachable.cache_clear()


def test_packaged_leaderboard_is_the_default_and_failed_downloads_leave_no_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(lb.LEADERBOARD_ENV, raising=False)
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "home"))
    assert lb.resolve_leaderboard_path() == lb.PACKAGED_LEADERBOARD
    assert not (tmp_path / "home" / "leaderboard").exists()  # no network, no cache folder needed
    target = tmp_path / "home" / "leaderboard" / lb.LEADERBOARD_FILENAME
    with pytest.raises(lb.LeaderboardError, match="could not download"):
        lb.fetch_leaderboard("http://127.0.0.1:9/snapshot.json.gz", path=target, timeout=5)
    assert not target.parent.exists()  # nothing half-made: no empty leaderboard/ folder


def test_sweep_dry_run_says_data_is_missing_and_skipped_rows_show_their_score(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "home"))  # nothing imported there
    results = tmp_path / "results.sqlite"
    args = ["sweep", "--models", "efficientnet_lite0", "--benchmarks", "Arcaro2020.M1ML-pls", "--results",
            str(results), "--dry-run", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "note: Arcaro2020 is not imported" in out and "brainscore data fetch arcaro2020" in out
    (job,) = sweep.plan(["efficientnet_lite0"], ["Arcaro2020.M1ML-pls"], results, device="cpu")
    ResultsDB(results).record(job.model, job.benchmark, 0.4321, benchmark_version=job.benchmark_version,
                              package_version=job.package_version, weights_hash=job.weights_hash,
                              config_hash=job.config_hash, seconds=12.0)
    jobs = sweep.plan(["efficientnet_lite0"], ["Arcaro2020.M1ML-pls"], results, device="cpu")
    assert jobs[0].status == "skipped" and jobs[0].score == pytest.approx(0.4321)
    row = sweep.SweepSummary(jobs).table().splitlines()[2]
    assert "skipped" in row and "0.4321" in row and "already scored" in row
