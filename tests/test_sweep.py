"""Sweeps: job lists, resume, failures with tracebacks and retries, on local workers and on a real one-node Slurm.

The Slurm cluster is started once per session with ``slurm-localhost.sh start --sacct-shim`` (Debian's slurm-wlm and
munge, installed with apt when missing) and stopped at the end. Models are tiny random-weight timm networks saved as
harmonizer checkpoints (``harmonized:PATH``); the benchmark runs on the simulated twin (``sim_small``).
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from environment import restored_environ
from tiny_checkpoints import make_tiny_model

import harmonized_models
from benchmarks_it_maps.runs import sweep
from benchmarks_it_maps.cli import main
from benchmarks_it_maps.runs.results import ResultsDB

REPO = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = Path(os.environ.get("SLURM_LOCALHOST_SCRIPT", REPO.parent / "shared" / "tools" / "slurm-localhost.sh"))
BENCHMARK = "Arcaro2020sim.M1ML-pls"


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, sim_small):
    root = tmp_path_factory.mktemp("tiny-models")
    return [make_tiny_model(root / f"tiny{seed}", seed) for seed in (1, 2)]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm cluster on localhost (started here, stopped after the module, also when starting failed)."""
    assert SLURM_SCRIPT.is_file(), (f"{SLURM_SCRIPT} not found: the Slurm tests need shared/tools/slurm-localhost.sh "
                                    "beside the repository (or SLURM_LOCALHOST_SCRIPT=path)")
    folder = tmp_path_factory.mktemp("slurm")
    names = ("SLURM_CONF", "SLURM_LOCALHOST_DIR", "PATH")
    try:
        with restored_environ(*names):
            command = f'eval "$(bash {SLURM_SCRIPT} start {folder} --sacct-shim)" && env -0'
            done = subprocess.run(["bash", "-c", command], capture_output=True, timeout=900)
            assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
            env = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
            os.environ.update({name: env[name] for name in names})
            yield folder
    finally:
        stop = subprocess.run(["bash", str(SLURM_SCRIPT), "stop", str(folder), "--purge"], capture_output=True,
                              timeout=120)
        assert stop.returncode == 0, stop.stderr.decode(errors="replace")[-3000:]


def read_table(results: Path, table: str) -> list[dict]:
    """All rows of ``table``, read-only (while a coordinator runs, it is the only writer); [] before it exists."""
    if not results.exists():
        return []
    db = sqlite3.connect(f"file:{results}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute(f"SELECT * FROM {table} ORDER BY id")]
    except sqlite3.OperationalError:  # table not created yet
        return []
    finally:
        db.close()


def attempts(results: Path) -> list[dict]:
    """All rows of ``sweep_attempts``."""
    return read_table(results, "sweep_attempts")


def scored(results: Path) -> list[dict]:
    """Rows of the ``scores`` table."""
    return read_table(results, "scores")


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def sweep_process(models: list[str], results: Path, workdir: Path, executor: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "benchmarks_it_maps", "sweep", "--models", ",".join(models), "--benchmarks",
               BENCHMARK, "--executor", executor, "--results", str(results), "--workdir", str(workdir), "--poll",
               "0.5", "--no-progress", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


# --------------------------------------------------------------------------------------------- specifications
def test_parse_models_and_benchmarks(tmp_path):
    listing = tmp_path / "models.txt"
    listing.write_text("# harmonized\nharmonized_vgg16\nharmonized_resnet50, harmonized_vgg16\n\n")
    assert sweep.parse_models(f"@{listing}") == ["harmonized_vgg16", "harmonized_resnet50"]
    assert sweep.parse_models("a, b,a") == ["a", "b"]
    harmonized = sweep.parse_models("category:Harmonized")
    assert "harmonized_vgg16" in harmonized and len(harmonized) >= 7
    assert sweep.parse_benchmarks("all")[0].startswith("Arcaro2020")
    with pytest.raises(sweep.SweepError, match="does not exist"):
        sweep.parse_models(f"@{tmp_path / 'missing.txt'}")
    with pytest.raises(sweep.SweepError, match="matches no model"):
        sweep.parse_models("category:NoSuchCategory")


def test_mixed_model_specs_and_unknown_models(tmp_path, capsys):
    listing = tmp_path / "more.txt"
    listing.write_text("harmonized_resnet50\n")
    models = sweep.parse_models(f"harmonized_vgg16,@{listing},category:Harmonized")
    assert models == list(dict.fromkeys(["harmonized_vgg16", "harmonized_resnet50",
                                         *sweep.parse_models("category:Harmonized")]))
    sweep.check_model("alexnet")  # registered by an installed brainscore-vision model plugin
    with pytest.raises(sweep.SweepError, match="did you mean harmonized_vgg16"):
        sweep.check_model("harmonized_vgg61")
    (tmp_path / "empty").mkdir()
    with pytest.raises(sweep.SweepError, match="not a harmonizer checkpoint"):
        sweep.check_model(f"harmonized:{tmp_path / 'empty'}")
    assert main(["sweep", "--models", "harmonized_vgg16,harmonized_vgg61", "--benchmarks", BENCHMARK, "--results",
                 str(tmp_path / "r.sqlite"), "--dry-run"]) == 2  # one clear error before anything runs
    assert "unknown model 'harmonized_vgg61'" in capsys.readouterr().err


def test_resume_key_is_benchmark_version_package_version_and_weights_hash(tmp_path, sim_small):
    """A pair is skipped only under the same key; any other benchmark/package version or weights runs again."""
    results = tmp_path / "results.sqlite"
    folder = tmp_path / "model"
    (job,) = sweep.plan([make_tiny_model(folder, seed=5)], [BENCHMARK], results)
    key = dict(benchmark_version=job.benchmark_version, package_version=job.package_version,
               weights_hash=job.weights_hash)
    assert job.weights_hash.startswith("sha256:") and job.benchmark_version == sweep.benchmark_version(BENCHMARK)
    key["config_hash"] = job.config_hash
    db = ResultsDB(results)
    for part, other in (("benchmark_version", job.benchmark_version + 1), ("config_hash", "cfg:0"),
                        ("package_version", job.package_version + "+other"), ("weights_hash", "sha256:0")):
        db.record(job.model, job.benchmark, 0.5, **dict(key, **{part: other}))
        assert [j.status for j in sweep.plan([job.model], [BENCHMARK], results)] == ["pending"], part
    db.record(job.model, job.benchmark, 0.5, **key)
    assert [j.status for j in sweep.plan([job.model], [BENCHMARK], results)] == ["skipped"]
    make_tiny_model(folder, seed=6)  # new weights in the same checkpoint folder: a new key
    assert [j.status for j in sweep.plan([job.model], [BENCHMARK], results)] == ["pending"]


def test_resume_key_includes_the_layer_map_and_scoring_options(tmp_path, sim_small):
    """A score stored by ``brainscore score`` is found by the sweep's plan under the same key; committing another
    layer (``commit-layers``), another benchmark option or another precision makes the pair run again."""
    from benchmarks_it_maps.benchmarks.arcaro2020 import load
    from benchmarks_it_maps.runs import scoring
    from harmonized_models.commitment import region_layer_map_path, store_region_layer_map
    results = tmp_path / "results.sqlite"
    model = make_tiny_model(tmp_path / "model", seed=7)  # committed to layer2 by its checkpoint
    scored = scoring.score(model, BENCHMARK, device="cpu", results=results)
    assert scored.attrs["scoring_config"]["region_layer_map"]["IT"] == "layer2"
    assert scored.attrs["scoring_config"]["precision"] == "float32"
    (job,) = sweep.plan([model], [BENCHMARK], results, device="cpu")
    assert job.status == "skipped" and job.config_hash == scored.attrs["config_hash"]
    try:
        store_region_layer_map(harmonized_models.get_entry(model).identifier,
                               {"V1": "layer1", "V2": "layer1", "V4": "layer1", "IT": "layer1"})
        (job,) = sweep.plan([model], [BENCHMARK], results, device="cpu")
        assert job.status == "pending" and job.config_hash != scored.attrs["config_hash"]
        rescored = scoring.score(model, BENCHMARK, device="cpu", results=results)
        assert rescored.attrs["layer"] == "layer1" and rescored.attrs["config_hash"] == job.config_hash
        assert [j.status for j in sweep.plan([model], [BENCHMARK], results, device="cpu")] == ["skipped"]
        assert len(ResultsDB(results).rows()) == 2  # both layers kept, each under its own key
    finally:
        region_layer_map_path(harmonized_models.get_entry(model).identifier).unlink(missing_ok=True)
    assert [j.status for j in sweep.plan([model], [BENCHMARK], results, device="cpu")] == ["skipped"]
    assert [j.status for j in sweep.plan([model], [BENCHMARK], results, device="cuda")] == ["pending"]
    assert [j.status for j in sweep.plan([model], [BENCHMARK], results, cuda_available=True)] == ["pending"]
    default = sweep.planned_config_hash(model, load(BENCHMARK), device="cpu")
    for option in (dict(ceiling_method="cross_channel"), dict(n_components=5), dict(window=(120, 220))):
        assert sweep.planned_config_hash(model, load(BENCHMARK, **option), device="cpu") != default, option


def test_dry_run_lists_jobs_and_skips_scored_pairs(tmp_path, tiny_models, capsys):
    results = tmp_path / "results.sqlite"
    jobs = sweep.plan(tiny_models, [BENCHMARK], results)
    assert [job.status for job in jobs] == ["pending", "pending"]
    first = jobs[0]
    ResultsDB(results).record(first.model, first.benchmark, 0.5, benchmark_version=first.benchmark_version,
                              weights_hash=first.weights_hash, package_version=first.package_version,
                              config_hash=first.config_hash)
    assert main(["sweep", "--models", ",".join(tiny_models), "--benchmarks", BENCHMARK, "--results", str(results),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"skip  {tiny_models[0]}" in out and f"run   {tiny_models[1]}" in out
    assert "1 job(s) to run, 1 already scored" in out
    assert [job.status for job in sweep.plan(tiny_models, [BENCHMARK], results)] == ["skipped", "pending"]
    assert [job.status for job in sweep.plan(tiny_models, [BENCHMARK], results, rerun=True)] == ["pending"] * 2
    assert main(["sweep", "--models", "x", "--benchmarks", "NoSuch.Benchmark", "--results", str(results),
                 "--dry-run"]) == 2


def test_slurm_executor_without_slurm_is_one_clear_error(tmp_path, tiny_models, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["sweep", "--models", tiny_models[0], "--benchmarks", BENCHMARK, "--executor", "slurm",
                 "--results", str(tmp_path / "r.sqlite")]) == 2
    assert "needs sbatch, squeue, scancel on PATH" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- local executor
@pytest.mark.timeout(300)
def test_local_failure_recorded_with_traceback_and_not_retried(tmp_path, sim_small, caplog):
    """A job that raises an error its inputs always raise (not a checkpoint) is reported failed with the worker's
    traceback at once, not retried (dead or timed-out workers are: see the timeout test)."""
    results = tmp_path / "results.sqlite"
    bad = f"harmonized:{tmp_path / 'not-a-checkpoint'}"
    (tmp_path / "not-a-checkpoint").mkdir()
    jobs = [sweep.Job(bad, BENCHMARK, 1, "0", "nohash")]
    coordinator = sweep.Coordinator(sweep.LocalExecutor(gpus=0), results_path=results, workdir=tmp_path / "w",
                                    max_retries=1, poll_s=0.2, progress=False)
    summary = coordinator.run(jobs)
    assert summary.counts()["failed"] == 1 and jobs[0].attempts == 1
    failures = coordinator.attempts.failures(bad)
    assert len(failures) == 1 and all(row["status"] == "failed" for row in failures)
    assert "Traceback" in failures[0]["traceback"] and "not-a-checkpoint" in failures[0]["traceback"]
    assert ResultsDB(results).rows() == []
    assert "failed" in summary.table() and bad in summary.table()
    final = [r for r in caplog.records if r.levelname == "ERROR" and r.name == "benchmarks_it_maps.runs.sweep"]
    assert len(final) == 2 and "not retried" in final[0].getMessage()
    assert "not-a-checkpoint" in final[1].getMessage()  # the traceback's tail is logged


@pytest.mark.timeout(300)
def test_local_worker_past_its_timeout_is_killed_reported_and_retried(tmp_path, tiny_models):
    """A worker that runs too long is killed (its whole process group), reported failed, and retried."""
    results = tmp_path / "results.sqlite"
    jobs = sweep.plan(tiny_models[:1], [BENCHMARK], results)
    executor = sweep.LocalExecutor(gpus=0, timeout_min=0.5 / 60)  # half a second: far less than one scoring
    summary = sweep.Coordinator(executor, results_path=results, workdir=tmp_path / "w", max_retries=1,
                                poll_s=0.1, progress=False).run(jobs)
    assert summary.counts()["failed"] == 1 and jobs[0].attempts == 2
    rows = attempts(results)
    assert [row["status"] for row in rows] == ["failed", "failed"]
    assert all("timed out after" in row["error"] and "killed" in row["error"] for row in rows)
    for row in rows:  # the killed workers are gone, not left running
        assert not sweep._pid_runs(int(row["external_id"]), Path(row["attempt_dir"]))
    assert ResultsDB(results).rows() == []


@pytest.mark.timeout(300)
def test_local_records_the_hash_of_the_weights_it_scored(tmp_path, sim_small):
    """Weights replaced between planning and scoring (e.g. a first download): the score is stored under the hash of
    the weights the worker scored, so the next plan (which sees those weights) skips the pair."""
    results, folder = tmp_path / "results.sqlite", tmp_path / "model"
    model = make_tiny_model(folder, seed=5)
    jobs = sweep.plan([model], [BENCHMARK], results)
    make_tiny_model(folder, seed=6)
    scored_hash = sweep.model_weights_hash(model)
    assert scored_hash != jobs[0].weights_hash
    summary = sweep.Coordinator(sweep.LocalExecutor(gpus=0), results_path=results, workdir=tmp_path / "w",
                                poll_s=0.2, progress=False).run(jobs)
    assert summary.counts()["done"] == 1, summary.table()
    assert [row["weights_hash"] for row in ResultsDB(results).rows()] == [scored_hash]
    assert [row["weights_hash"] for row in attempts(results)] == [scored_hash]
    assert [job.status for job in sweep.plan([model], [BENCHMARK], results)] == ["skipped"]


@pytest.mark.timeout(400)
def test_local_kill_coordinator_then_resume_scores_each_pair_once(tmp_path, tiny_models):
    """SIGKILL the coordinator after the first score landed; the rerun resumes and every pair is scored once."""
    results, workdir = tmp_path / "results.sqlite", tmp_path / "work"
    process = sweep_process(tiny_models, results, workdir, "local")
    try:
        wait_for(lambda: scored(results) or process.poll() is not None, 240, "the first score")
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        first = scored(results)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert len(first) == 1
    jobs = sweep.plan(tiny_models, [BENCHMARK], results)
    assert [job.status for job in jobs].count("skipped") == 1
    summary = sweep.Coordinator(sweep.LocalExecutor(gpus=0), results_path=results, workdir=workdir, poll_s=0.2,
                                progress=False).run(jobs)
    assert summary.counts() == {"done": 1, "failed": 0, "skipped": 1, "running": 0, "pending": 0}
    rows = ResultsDB(results).rows()
    assert sorted(row["model"] for row in rows) == sorted(tiny_models)
    key = ("id", "created_at", "score", "weights_hash")
    assert [tuple(row[k] for k in key) for row in rows if row["model"] == first[0]["model"]] == \
        [tuple(first[0][k] for k in key)]  # recorded once, never scored again
    done = [row for row in attempts(results) if row["status"] == "done"]
    assert sorted(row["model"] for row in done) == sorted(tiny_models)  # each pair's score came from one attempt
    assert [job.status for job in sweep.plan(tiny_models, [BENCHMARK], results)] == ["skipped", "skipped"]


@pytest.mark.timeout(400)
def test_local_ctrl_c_is_one_line_exit_2_and_a_rerun_scores_each_pair_once(tmp_path, tiny_models):
    """A real SIGINT to a running `brainscore sweep` once a worker has started scoring (its started.txt is in the work
    folder): exit code 2, exactly one error line on stderr, no traceback, the worker killed, the results database
    intact (PRAGMA integrity_check); rerunning the same sweep finishes each (model, benchmark) exactly once."""
    results, workdir = tmp_path / "results.sqlite", tmp_path / "work"
    command = [sys.executable, "-m", "benchmarks_it_maps", "sweep", "--models", ",".join(tiny_models), "--benchmarks",
               BENCHMARK, "--executor", "local", "--results", str(results), "--workdir", str(workdir), "--poll",
               "0.2", "--no-progress"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")  # (third-party import warnings are not the command's lines)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        started = wait_for(lambda: list(workdir.rglob("started.txt")) or process.poll() is not None, 240,
                           "a worker to start scoring")
        assert process.poll() is None, process.communicate()[1].decode()[-3000:]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    text = err.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.strip() and " INFO " not in line]
    assert process.returncode == 2, text[-3000:]
    assert "Traceback" not in text and len(lines) == 1, text[-3000:]
    assert lines[0].startswith("brainscore: error: sweep interrupted (Ctrl-C): ") and "rerun the same sweep" in \
        lines[0], lines[0]
    db = sqlite3.connect(results)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()
    for row in attempts(results):  # no worker left running
        assert row["status"] in ("done", "lost", "failed"), row
        assert not sweep._pid_runs(int(row["external_id"]), Path(row["attempt_dir"]))
    assert started and len(scored(results)) < len(tiny_models)
    rerun = subprocess.run(command, capture_output=True, env=env, timeout=400)
    assert rerun.returncode == 0, rerun.stderr.decode(errors="replace")[-3000:]
    rows = scored(results)
    assert sorted((row["model"], row["benchmark"]) for row in rows) == sorted((m, BENCHMARK) for m in tiny_models)
    done = [row for row in attempts(results) if row["status"] == "done"]
    assert sorted(row["model"] for row in done) == sorted(tiny_models)  # one finished attempt per pair


class _Payload:
    """Unpickling this creates a marker file (what a crafted result file in a shared work folder would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.timeout(300)
def test_coordinator_reads_only_json_results_inside_its_work_folder(tmp_path, tiny_models):
    """A ``sweep_attempts`` row naming a folder outside the work folder (holding a code-running result.pkl and a
    forged result.json) is marked lost and never read; the pair is scored afresh and the JSON result carries raw
    and ceiling into the database; a pickle written as result.json is a failure, not code."""
    import pickle
    results, workdir, foreign = tmp_path / "results.sqlite", tmp_path / "work", tmp_path / "shared" / "evil"
    foreign.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    (foreign / "result.pkl").write_bytes(pickle.dumps({"ok": True, "score": _Payload(marker)}))
    (foreign / "result.json").write_text(json.dumps({"ok": True, "score": {"value": 0.999, "attrs": {}}}))
    jobs = sweep.plan(tiny_models[:1], [BENCHMARK], results)
    job = jobs[0]
    store = sweep.AttemptStore(results)
    row = store.add(model=job.model, benchmark=job.benchmark, benchmark_version=str(job.benchmark_version),
                    package_version=job.package_version, weights_hash=job.weights_hash, attempt=1,
                    executor="local", attempt_dir=str(foreign), status="running", external_id="1")
    summary = sweep.Coordinator(sweep.LocalExecutor(gpus=0), results_path=results, workdir=workdir, poll_s=0.2,
                                progress=False).run(jobs)
    assert summary.counts()["done"] == 1, summary.table()
    assert not marker.exists()
    first = attempts(results)[0]
    assert first["id"] == row and first["status"] == "lost" and "outside the work folder" in first["error"]
    (recorded,) = ResultsDB(results).rows()
    assert recorded["score"] != 0.999 and recorded["raw"] is not None and recorded["ceiling"] is not None
    assert 0 < recorded["ceiling"] <= 1 and recorded["layer"]
    done = Path(attempts(results)[-1]["attempt_dir"])
    assert (done / "result.json").is_file() and not list(done.glob("*.pkl"))
    (done / "result.json").write_bytes(pickle.dumps({"ok": True, "score": _Payload(marker)}))
    result = sweep.read_result(done)
    assert result["ok"] is False and "unreadable worker result" in result["error"] and not marker.exists()


# ---------------------------------------------------------------------------------------------- Slurm executor
@pytest.mark.timeout(300)
def test_slurm_two_models_land_in_database(tmp_path, tiny_models, slurm):
    results = tmp_path / "results.sqlite"
    executor = sweep.SlurmExecutor(tmp_path / "slurm", time_min=10, cpus_per_task=1, mem_gb=4)
    summary = sweep.sweep(tiny_models, [BENCHMARK], executor, results_path=results, workdir=tmp_path / "w",
                          poll_s=0.5, progress=False)
    assert summary.counts()["done"] == 2, summary.table()
    rows = ResultsDB(results).rows()
    assert sorted(row["model"] for row in rows) == sorted(tiny_models)
    assert all(row["benchmark"] == BENCHMARK and -1 <= row["score"] <= 2 for row in rows)
    slurm_rows = attempts(results)
    assert all(row["executor"] == "slurm" and "_" in row["external_id"] for row in slurm_rows)  # array tasks
    assert len({row["external_id"].split("_")[0] for row in slurm_rows}) == 1  # one array job
    assert list((tmp_path / "slurm").rglob("*_log.out")), "submitit writes one log per job"


@pytest.mark.timeout(300)
def test_slurm_kill_coordinator_then_resume(tmp_path, tiny_models, slurm):
    """Kill the coordinator right after it submitted; the rerun re-attaches to the Slurm jobs (no second scoring)."""
    results, workdir = tmp_path / "results.sqlite", tmp_path / "work"
    process = sweep_process(tiny_models, results, workdir, "slurm", "--slurm-cpus", "1", "--slurm-time", "10")
    try:
        wait_for(lambda: len([r for r in attempts(results) if r["status"] == "running"]) == 2
                 or process.poll() is not None, 120, "two submitted Slurm jobs")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert main(["sweep", "--models", ",".join(tiny_models), "--benchmarks", BENCHMARK, "--executor", "slurm",
                 "--results", str(results), "--workdir", str(workdir), "--poll", "0.5", "--no-progress"]) == 0
    rows = ResultsDB(results).rows()
    assert sorted(row["model"] for row in rows) == sorted(tiny_models)
    rows_attempts = attempts(results)
    assert len(rows_attempts) == 2 and {row["status"] for row in rows_attempts} == {"done"}  # re-attached, not rerun
    assert [job.status for job in sweep.plan(tiny_models, [BENCHMARK], results)] == ["skipped", "skipped"]


@pytest.mark.timeout(300)
def test_slurm_killed_worker_is_reported_failed_and_retried(tmp_path, tiny_models, slurm):
    """SIGKILL the worker of the first attempt: Slurm marks the job FAILED, the coordinator records it and retries."""
    results = tmp_path / "results.sqlite"
    executor = sweep.SlurmExecutor(tmp_path / "slurm", time_min=10, cpus_per_task=1)
    jobs = sweep.plan(tiny_models[:1], [BENCHMARK], results)
    coordinator = sweep.Coordinator(executor, results_path=results, workdir=tmp_path / "w", max_retries=1,
                                    poll_s=0.5, progress=False)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("summary", coordinator.run(jobs)), daemon=True)
    thread.start()
    started = wait_for(lambda: list((tmp_path / "w").rglob("attempt-1-*/started.txt")), 180, "the first worker")
    pid = int(dict(line.split("=", 1) for line in started[0].read_text().split())["pid"])
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the coordinator waited on a dead job"
    summary = outcome["summary"]
    assert summary.counts()["done"] == 1 and jobs[0].attempts == 2
    failed, done = attempts(results)
    assert failed["status"] == "failed" and done["status"] == "done"
    assert "ended in state FAILED" in failed["error"] or "CANCELLED" in failed["error"]
    assert len(ResultsDB(results).rows()) == 1


@pytest.mark.timeout(120)
def test_slurm_gpu_request_reaches_slurm(tmp_path, tiny_models, slurm):
    """--gpus 1 becomes a real Slurm GPU request: this GPU-less cluster refuses it, and that is a clear failure."""
    results = tmp_path / "results.sqlite"
    executor = sweep.SlurmExecutor(tmp_path / "slurm", partition="debug", time_min=5, gpus=1, cpus_per_task=1)
    jobs = sweep.plan(tiny_models[:1], [BENCHMARK], results)
    summary = sweep.Coordinator(executor, results_path=results, workdir=tmp_path / "w", max_retries=0, poll_s=0.2,
                                progress=False).run(jobs)
    assert summary.counts()["failed"] == 1
    (row,) = attempts(results)
    assert row["status"] == "failed" and row["error"].startswith("submission failed")
    assert "gres" in row["error"]  # sbatch: "Invalid generic resource (gres) specification": no GPUs here
