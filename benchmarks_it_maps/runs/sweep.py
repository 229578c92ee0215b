"""Sweeps: score many (model, benchmark) pairs on a local machine or a Slurm cluster, resumably.

Why: the paper scores 100+ models on several benchmarks; that needs many GPUs, a way to survive crashes, and one
consistent results database.

Design
- One *job* per (model, benchmark) pair. A job's identity in the results database is (model, benchmark, benchmark
  version, package version, weights hash, config hash); a pair already scored under that key is skipped (resume).
  The config hash covers everything else that changes a score (``runs.scoring.scoring_config``): the region ->
  layer map the model is committed to (so ``brainscore commit-layers`` makes its pairs run again), the benchmark's
  options and the arithmetic (float32 on CPU, bf16 autocast on CUDA).
- Each *attempt* of a job runs in a worker (a local subprocess, or a Slurm array task submitted through submitit).
  The worker never touches the SQLite database: it scores with ``record=False`` and writes its result (the Score, or
  the traceback) atomically to ``<attempt dir>/result.json`` (JSON, never pickle: the coordinator reads files in
  shared work folders and must not execute anything they hold; it reads them only inside its own work folder). The coordinator (this process) is the only writer: it
  records scores in :class:`~benchmarks_it_maps.runs.results.ResultsDB` and every attempt in the table ``sweep_attempts``
  of the same SQLite file (status, executor id, error, traceback).
- A worker that dies without a result (killed, out of memory, Slurm TIMEOUT/CANCELLED/NODE_FAIL, a vanished job,
  or a run past its deadline) is reported failed and retried up to ``max_retries`` times; nothing is waited on
  forever.
- A killed coordinator loses at most the running attempts, and usually not even those: on restart, attempts still
  marked running are re-attached (a live local worker process or a Slurm job still in the queue) or, when their
  result file exists, adopted without scoring again.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import traceback as _traceback
from pathlib import Path
from typing import Any, Iterable, Sequence

import submitit
from brainscore_core.plugin_management.import_plugin import ImportPlugin
from submitit.slurm.slurm import SlurmJob
from tqdm.auto import tqdm

import harmonized_models
from benchmarks_it_maps.benchmarks.arcaro2020 import NonFiniteFeaturesError
from benchmarks_it_maps.home import atomic_file, data_home
from benchmarks_it_maps.runs.results import ResultsDB, _jsonable, _scalar
from benchmarks_it_maps.runs.results import package_version as _package_version
from benchmarks_it_maps.runs.scoring import (ScoringError, _version, config_hash, expected_precision,
                                             is_registry_model, resolve_benchmark, scoring_config, weights_hash)
from harmonized_models import CATEGORIES, list_models

logger = logging.getLogger(__name__)

#: Slurm states after which a job will not produce anything any more.
SLURM_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                  "DEADLINE", "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}
ATTEMPTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweep_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL, benchmark TEXT NOT NULL, benchmark_version TEXT, package_version TEXT,
    weights_hash TEXT, attempt INTEGER NOT NULL, executor TEXT NOT NULL, external_id TEXT, attempt_dir TEXT NOT NULL,
    status TEXT NOT NULL,  -- running | done | failed | lost
    error TEXT, traceback TEXT, host TEXT, submitted_at TEXT NOT NULL, finished_at TEXT
);
CREATE INDEX IF NOT EXISTS sweep_attempts_pair ON sweep_attempts (model, benchmark);
"""
#: What a worker writes into its attempt folder (JSON), and the largest such file the coordinator reads.
RESULT_FILE = "result.json"
SPEC_FILE = "spec.json"
MAX_RESULT_BYTES = 16 << 20


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a coordinator; the message says what happened to the running attempts (the CLI prints it as
    its one line)."""


class SweepError(ValueError):
    """A sweep specification the user can fix (bad model/benchmark list, unreadable @FILE, ...)."""


# ----------------------------------------------------------------------------------------------- specifications
def _read_list_file(path: str) -> list[str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise SweepError(f"list file {file} does not exist (write one identifier per line, '#' starts a comment)")
    items: list[str] = []
    for line in file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        items.extend(part.strip() for part in line.split(",") if part.strip())
    if not items:
        raise SweepError(f"list file {file} contains no identifiers (write one identifier per line)")
    return items


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def parse_models(spec: str) -> list[str]:
    """Model identifiers from ``ID,ID`` | ``@FILE`` | ``category:NAME`` (parts may be mixed, comma-separated)."""
    spec = (spec or "").strip()
    if not spec:
        raise SweepError("--models is empty: give ID,ID or @FILE or category:NAME")
    models: list[str] = []
    for part in (part.strip() for part in spec.split(",")):
        if part.startswith("@"):
            models.extend(_read_list_file(part[1:]))
        elif part.startswith("category:"):
            models.extend(_category(part[len("category:"):].strip()))
        elif part:
            models.append(part)
    try:  # one spelling per checkpoint folder, so a sweep under another spelling resumes instead of re-scoring
        return _unique(harmonized_models.canonical_identifier(model) for model in models)
    except ValueError as error:
        raise SweepError(f"--models: {error}") from None


def _category(name: str) -> list[str]:
    try:
        entries = list_models(category=name)
    except ValueError:
        entries = []
    if not entries:
        raise SweepError(f"--models category:{name} matches no model; categories: {', '.join(CATEGORIES)}")
    return [entry.identifier for entry in entries]


def check_model(model: str) -> None:
    """One clear error, before anything runs, for a model neither this package nor brainscore-vision knows.

    Ours (and ``harmonized:PATH`` checkpoints) are looked up in the registry; other identifiers must be registered
    by an installed brainscore-vision model plugin (found by brainscore's own text scan, nothing is imported).
    """
    try:
        harmonized_models.get_entry(model)
        return
    except KeyError as error:
        ours = error.args[0] if error.args else str(error)
    except ValueError as error:  # a harmonized:PATH that is not a checkpoint folder
        raise SweepError(f"--models {model}: {error}") from None
    try:
        ImportPlugin("brainscore_vision", "models", model)
    except AssertionError:
        raise SweepError(f"--models: {ours} (and no installed brainscore-vision model plugin registers "
                         f"'{model}')") from None


def parse_benchmarks(spec: str) -> list[str]:
    """Benchmark identifiers from ``ID,ID`` | ``@FILE`` | ``all`` (every benchmark of this package)."""
    spec = (spec or "").strip()
    if not spec:
        raise SweepError("--benchmarks is empty: give ID,ID or @FILE or all")
    if spec.startswith("@"):
        return _unique(_read_list_file(spec[1:]))
    if spec == "all":
        from benchmarks_it_maps import list_benchmarks
        return list(list_benchmarks())
    return _unique(part.strip() for part in spec.split(",") if part.strip())


# ---------------------------------------------------------------------------------------------------- the store
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_results_path() -> Path:
    return data_home() / "results.sqlite"


class AttemptStore:
    """The ``sweep_attempts`` table in the results SQLite file (written by the coordinator only)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(ATTEMPTS_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.row_factory = sqlite3.Row
        return db

    def add(self, **fields: Any) -> int:
        fields.setdefault("submitted_at", _now())
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self._connect() as db:
            cursor = db.execute(f"INSERT INTO sweep_attempts ({names}) VALUES ({marks})", tuple(fields.values()))
            return int(cursor.lastrowid)

    def update(self, attempt_id: int, **fields: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in fields)
        with self._connect() as db:
            db.execute(f"UPDATE sweep_attempts SET {sets} WHERE id = ?", (*fields.values(), attempt_id))

    def rows(self, model: str | None = None, benchmark: str | None = None, status: str | None = None) -> list[dict]:
        clauses, values = [], []
        for name, value in (("model", model), ("benchmark", benchmark), ("status", status)):
            if value is not None:
                clauses.append(f"{name} = ?")
                values.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._connect() as db:
            return [dict(row) for row in db.execute(f"SELECT * FROM sweep_attempts {where} ORDER BY id", values)]

    def failures(self, model: str | None = None, benchmark: str | None = None) -> list[dict]:
        """Failed attempts with their error and traceback, oldest first."""
        return self.rows(model, benchmark, status="failed")


# ------------------------------------------------------------------------------------------------------- jobs
@dataclasses.dataclass
class Job:
    """One (model, benchmark) pair and its results-database key."""
    model: str
    benchmark: str
    benchmark_version: Any
    package_version: str
    weights_hash: str
    config_hash: str = ""  #: :func:`runs.scoring.config_hash` of the scoring configuration
    status: str = "pending"  # pending | running | done | failed | skipped
    attempts: int = 0
    score: float | None = None
    seconds: float | None = None
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.model, self.benchmark

    @property
    def slug(self) -> str:
        return f"{_slug(self.model)}__{_slug(self.benchmark)}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "x"


def package_version() -> str:
    return _package_version()


def model_weights_hash(model: str) -> str:
    """The results-database weights key (the same as ``brainscore score`` uses)."""
    return str(weights_hash(model))


def benchmark_version(benchmark: str) -> Any:
    """The benchmark's version (ours first, then brainscore-vision's), as ``brainscore score`` records it."""
    try:
        return _version(resolve_benchmark(benchmark))
    except ScoringError as error:
        raise SweepError(f"--benchmarks: {error}") from None


def planned_config_hash(model: str, benchmark: Any, *, device: str = "auto",
                        cuda_available: bool | None = None) -> str:
    """The config hash a worker will score ``model`` on ``benchmark`` (an identifier or object) under, computed
    without building the model: its committed layer map, the benchmark's options, the precision on ``device``
    (``cuda_available``: whether the workers see a GPU)."""
    precision = expected_precision(device, cuda_available) if is_registry_model(model) else None
    try:
        return config_hash(scoring_config(model, benchmark, precision=precision))
    except ValueError as error:  # an unreadable stored region -> layer map
        raise SweepError(f"--models {model}: {error}") from None


def plan(models: Sequence[str], benchmarks: Sequence[str], results_path: str | os.PathLike | None = None,
         *, rerun: bool = False, device: str = "auto", cuda_available: bool | None = None) -> list[Job]:
    """All (model, benchmark) jobs; those already in the results database under the same key are 'skipped'.

    ``device`` / ``cuda_available`` (whether the workers see a GPU; default: this machine) give the precision
    the workers will score with, part of the key."""
    results = ResultsDB(Path(results_path) if results_path else default_results_path())
    version = package_version()
    try:
        models = _unique(harmonized_models.canonical_identifier(model) for model in models)
    except ValueError as error:
        raise SweepError(f"--models: {error}") from None
    for model in models:
        check_model(model)
    hashes = {model: model_weights_hash(model) for model in models}
    loaded = {benchmark: _load_benchmark(benchmark) for benchmark in benchmarks}
    versions = {benchmark: _version(loaded[benchmark]) for benchmark in benchmarks}
    jobs = []
    for model in models:
        for benchmark in benchmarks:
            config = planned_config_hash(model, loaded[benchmark], device=device, cuda_available=cuda_available)
            job = Job(model, benchmark, versions[benchmark], version, hashes[model], config)
            stored = None if rerun else results.get(model, benchmark, benchmark_version=versions[benchmark],
                                                     package_version=version, weights_hash=hashes[model],
                                                     config_hash=config)
            if stored is not None:
                job.status, job.score, job.seconds = "skipped", stored["score"], stored["seconds"]
                job.error = None
            jobs.append(job)
    return jobs


def _load_benchmark(benchmark: str) -> Any:
    try:
        return resolve_benchmark(benchmark)
    except ScoringError as error:
        raise SweepError(f"--benchmarks: {error}") from None


# ------------------------------------------------------------------------------------------------- the worker
def run_attempt(spec: dict) -> dict:
    """Score one pair in this process and write ``result.json`` atomically (never touches the results database).

    Runs inside a local worker subprocess or a Slurm task. Exceptions are caught and written as a failure with
    their traceback, so the coordinator can record them.
    """
    attempt_dir = Path(spec["attempt_dir"])
    attempt_dir.mkdir(parents=True, exist_ok=True)
    started = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": _now(),
               "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    (attempt_dir / "started.txt").write_text("\n".join(f"{k}={v}" for k, v in started.items()) + "\n")
    t0 = time.time()
    try:
        from benchmarks_it_maps.runs.scoring import score
        value = score(spec["model"], spec["benchmark"], device=spec.get("device", "auto"),
                      batch_size=spec.get("batch_size"), record=False)
        # the hash of the weights just scored (a first download turns a weights URL into its sha256)
        result = {"ok": True, "score": value, "seconds": time.time() - t0, "host": started["host"],
                  "weights_hash": model_weights_hash(spec["model"]),
                  "config_hash": value.attrs.get("config_hash")}  # the configuration it actually scored
    except BaseException as error:  # noqa: BLE001 - every failure must reach the coordinator
        result = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": _traceback.format_exc(),
                  "seconds": time.time() - t0, "host": started["host"], "retry": _retryable(error)}
    _write_result(attempt_dir, result)
    return {key: value for key, value in result.items() if key != "score"}


#: Errors that the same inputs raise again on every attempt (bad model or data, NaN features, unknown names): such
#: an attempt is not retried. Anything else (killed, out of memory, I/O, CUDA) may pass on another try.
DETERMINISTIC_ERRORS = (NonFiniteFeaturesError, ValueError, LookupError, FloatingPointError, TypeError,
                        AssertionError)


def _retryable(error: BaseException) -> bool:
    return not isinstance(error, DETERMINISTIC_ERRORS) or isinstance(error, MemoryError)


def _write_result(attempt_dir: Path, result: dict) -> None:
    """Write the attempt's result as JSON: the score becomes its value and its attributes (as the results database
    stores them), so reading it back never runs code."""
    payload = {key: value for key, value in result.items() if key != "score"}
    if "score" in result:
        score = result["score"]
        payload["score"] = {"value": _scalar(score), "attrs": _jsonable(dict(getattr(score, "attrs", {}) or {}))}
        if payload["score"]["value"] is None:
            payload = {"ok": False, "error": f"the score is not a single number ({type(score).__name__})",
                       "traceback": "", "seconds": result.get("seconds"), "host": result.get("host")}
    with atomic_file(attempt_dir / RESULT_FILE) as tmp:
        Path(tmp).write_text(json.dumps(payload))


def read_result(attempt_dir: str | os.PathLike) -> dict | None:
    """The worker's result (a dict with ``ok``), None when there is none yet; unreadable files become failures."""
    file = Path(attempt_dir) / RESULT_FILE
    if not file.is_file():
        return None
    try:
        if file.stat().st_size > MAX_RESULT_BYTES:
            raise ValueError(f"larger than {MAX_RESULT_BYTES} bytes")
        result = json.loads(file.read_text())
        if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
            raise ValueError("not an object with a boolean 'ok'")
        if result["ok"] and not (isinstance(result.get("score"), dict)
                                 and isinstance(result["score"].get("value"), (int, float))):
            raise ValueError("field 'score' has no number 'value'")
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return {"ok": False, "error": f"{file}: unreadable worker result ({error})", "traceback": ""}
    return result


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies inside ``folder`` once both are resolved (symbolic links and ``..`` followed)."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError):
        return False


def _log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not Path(path).is_file():
        return ""
    text = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


# ------------------------------------------------------------------------------------------------- executors
@dataclasses.dataclass
class Handle:
    """An attempt in flight."""
    attempt_id: int
    job: Job
    attempt_dir: Path
    external_id: str
    started: float = dataclasses.field(default_factory=time.time)
    process: Any = None  # local: subprocess.Popen when we started it
    slurm_job: Any = None  # slurm: submitit job


@dataclasses.dataclass
class Outcome:
    state: str  # running | finished | dead
    detail: str = ""
    log: str = ""


class LocalExecutor:
    """Each attempt runs in its own worker subprocess; ``slots`` at a time (one per GPU, else one)."""
    name = "local"

    def __init__(self, gpus: int | None = None, timeout_min: float | None = None):
        available = _count_gpus()
        self.gpus = available if gpus is None else min(int(gpus), available) if available else 0
        self.slots = max(1, self.gpus)
        self.timeout_s = None if timeout_min is None else float(timeout_min) * 60
        visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        ids = visible if len(visible) >= self.gpus else [str(i) for i in range(available)]
        self._free_gpus: list[str] = ids[:self.gpus]  # one worker per GPU, pinned by CUDA_VISIBLE_DEVICES

    @property
    def capacity(self) -> int:
        return self.slots

    def submit(self, items: list[tuple[dict, Handle]]) -> None:
        for spec, handle in items:
            gpu = self._free_gpus.pop(0) if self._free_gpus else None
            device = spec.get("device", "auto")
            spec = dict(spec, device="cuda" if gpu is not None and device == "auto" else device)
            spec_file = handle.attempt_dir / SPEC_FILE
            spec_file.write_text(json.dumps(spec))
            env = dict(os.environ)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            log = open(handle.attempt_dir / "worker.log", "ab")
            handle.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks_it_maps.runs.sweep", "--worker", str(spec_file)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            log.close()
            handle.process.gpu = gpu
            handle.external_id = str(handle.process.pid)

    def poll(self, handles: list[Handle]) -> dict[int, Outcome]:
        outcomes = {}
        for handle in handles:
            log = handle.attempt_dir / "worker.log"
            if handle.process is not None:
                code = handle.process.poll()
                alive = code is None
            else:  # re-attached after a coordinator restart: not our child, watch the pid
                code, alive = None, _pid_runs(int(handle.external_id), handle.attempt_dir)
            if alive and self.timeout_s is not None and time.time() - handle.started > self.timeout_s:
                self._kill(handle)
                outcomes[handle.attempt_id] = Outcome("dead", f"timed out after {self.timeout_s / 60:g} min "
                                                               "(killed)", _log_tail(log))
                continue
            if alive:
                outcomes[handle.attempt_id] = Outcome("running")
                continue
            self._release(handle)
            if (handle.attempt_dir / RESULT_FILE).is_file():
                outcomes[handle.attempt_id] = Outcome("finished")
            else:
                outcomes[handle.attempt_id] = Outcome("dead", _describe_exit(code), _log_tail(log))
        return outcomes

    def _release(self, handle: Handle) -> None:
        gpu = getattr(handle.process, "gpu", None)
        if gpu is not None and gpu not in self._free_gpus:
            self._free_gpus.append(gpu)

    def _kill(self, handle: Handle) -> None:
        pid = int(handle.external_id)
        try:
            os.killpg(pid, signal.SIGKILL)  # the worker leads its own session (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
        if handle.process is not None:
            handle.process.wait(timeout=30)
        self._release(handle)

    def cancel(self, handles: list[Handle]) -> None:
        for handle in handles:
            self._kill(handle)

    def reattach(self, row: dict, handle: Handle) -> bool:
        """Keep watching a worker a previous coordinator started, when it still runs."""
        pid = row.get("external_id")
        return bool(pid and pid.isdigit() and _pid_runs(int(pid), handle.attempt_dir))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "worker process disappeared without writing a result"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process was killed by {name} without writing a result"
    return f"worker process exited with code {code} without writing a result"


def _pid_runs(pid: int, attempt_dir: Path) -> bool:
    """Whether ``pid`` is a live (non-zombie) worker of this attempt (checked via /proc, so pid reuse is safe)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and str(attempt_dir) in cmdline


def _count_gpus() -> int:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    try:
        import torch
        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no torch/CUDA means no GPU
        return 0


class SlurmExecutor:
    """Attempts run as Slurm array tasks submitted through submitit; states are polled (sacct), never awaited."""
    name = "slurm"

    def __init__(self, folder: str | os.PathLike, *, partition: str | None = None, time_min: int = 60,
                 mem_gb: float | None = None, gpus: int = 0, cpus_per_task: int | None = None,
                 array_parallelism: int = 256, lost_after_s: float = 300.0, grace_s: float = 120.0):
        missing = [tool for tool in ("sbatch", "squeue", "scancel") if shutil.which(tool) is None]
        if missing:
            raise SweepError(f"the Slurm executor needs {', '.join(missing)} on PATH: run the sweep on a Slurm "
                             "login node (or --executor local)")
        self.folder = Path(folder)
        self.executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster="slurm")
        params: dict[str, Any] = {"timeout_min": int(time_min), "slurm_array_parallelism": int(array_parallelism),
                                  "name": "brainscore-sweep", "gpus_per_node": int(gpus), "tasks_per_node": 1,
                                  "nodes": 1}
        if partition:
            params["slurm_partition"] = partition
        if mem_gb:
            params["mem_gb"] = mem_gb
        if cpus_per_task:
            params["cpus_per_task"] = int(cpus_per_task)
        self.executor.update_parameters(**params)
        self.time_s = time_min * 60.0
        self.lost_after_s = lost_after_s
        self.grace_s = grace_s
        self._unknown_since: dict[int, float] = {}
        self.capacity = None  # submit everything; Slurm schedules

    def submit(self, items: list[tuple[dict, Handle]]) -> None:
        specs = [dict(spec, device=spec.get("device", "auto")) for spec, _ in items]
        jobs = self.executor.map_array(run_attempt, specs)
        for job, (_, handle) in zip(jobs, items):
            handle.slurm_job = job
            handle.external_id = str(job.job_id)
            handle.started = time.time()

    def poll(self, handles: list[Handle]) -> dict[int, Outcome]:
        if handles:
            SlurmJob.watcher.update()  # one sacct call for all jobs of this poll
        outcomes = {}
        for handle in handles:
            job = handle.slurm_job
            log = Path(job.paths.stderr) if job is not None else None
            state = (SlurmJob.watcher.get_state(handle.external_id, mode="cache") or "UNKNOWN").upper()
            state = state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
            if (handle.attempt_dir / RESULT_FILE).is_file():
                outcomes[handle.attempt_id] = Outcome("finished")
            elif state in SLURM_TERMINAL:
                detail = (f"Slurm job {handle.external_id} ended in state {state} without writing a result "
                          "(worker killed, out of memory, time limit or node failure)")
                outcomes[handle.attempt_id] = Outcome("dead", detail, _log_tail(log))
            elif state == "UNKNOWN":
                since = self._unknown_since.setdefault(handle.attempt_id, time.time())
                if time.time() - since > self.lost_after_s:
                    outcomes[handle.attempt_id] = Outcome(
                        "dead", f"Slurm job {handle.external_id} vanished (state unknown for "
                                f"{self.lost_after_s:.0f} s)", _log_tail(log))
                else:
                    outcomes[handle.attempt_id] = Outcome("running")
            elif state == "RUNNING" and time.time() - handle.started > self.time_s + self.grace_s:
                self.cancel([handle])
                outcomes[handle.attempt_id] = Outcome("dead", f"Slurm job {handle.external_id} ran past its time "
                                                              f"limit ({self.time_s / 60:g} min); cancelled",
                                                      _log_tail(log))
            else:
                self._unknown_since.pop(handle.attempt_id, None)
                outcomes[handle.attempt_id] = Outcome("running", state)
        return outcomes

    def cancel(self, handles: list[Handle]) -> None:
        for handle in handles:
            try:
                subprocess.run(["scancel", handle.external_id], check=False, capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as error:
                logger.warning("scancel %s failed: %s", handle.external_id, error)

    def reattach(self, row: dict, handle: Handle) -> bool:
        """Watch a Slurm job a previous coordinator submitted, when Slurm still knows it and it has not ended."""
        job_id = row.get("external_id")
        if not job_id:
            return False
        job = SlurmJob(folder=self.folder / "%j", job_id=job_id)
        SlurmJob.watcher.update()
        state = (SlurmJob.watcher.get_state(job_id, mode="cache") or "UNKNOWN").upper().split()[0]
        if state in SLURM_TERMINAL and not (handle.attempt_dir / RESULT_FILE).is_file():
            return False
        if state == "UNKNOWN" and not (handle.attempt_dir / RESULT_FILE).is_file():
            return False
        handle.slurm_job = job
        return True


# ----------------------------------------------------------------------------------------------- coordinator
@dataclasses.dataclass
class SweepSummary:
    jobs: list[Job]

    def counts(self) -> dict[str, int]:
        counts = {"done": 0, "failed": 0, "skipped": 0, "running": 0, "pending": 0}
        for job in self.jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts

    def table(self) -> str:
        """A plain-text summary table (one row per job)."""
        header = ("model", "benchmark", "status", "score", "attempts", "seconds", "note")
        rows = [header]
        for job in self.jobs:
            rows.append((job.model, job.benchmark, job.status,
                         "" if job.score is None else f"{job.score:.4f}", str(job.attempts),
                         "" if job.seconds is None else f"{job.seconds:.1f}",
                         (job.error or "").splitlines()[0][:70] if job.error else
                         "already scored (stored score)" if job.status == "skipped" else ""))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        counts = self.counts()
        lines.append(", ".join(f"{count} {name}" for name, count in counts.items() if count))
        return "\n".join(lines)


class Coordinator:
    """Runs jobs through an executor; the only writer of the results database."""

    def __init__(self, executor: LocalExecutor | SlurmExecutor, *, results_path: str | os.PathLike | None = None,
                 workdir: str | os.PathLike | None = None, max_retries: int = 2, poll_s: float = 5.0,
                 device: str = "auto", batch_size: int | None = None, progress: bool = True):
        self.results_path = Path(results_path) if results_path else default_results_path()
        self.results = ResultsDB(self.results_path)
        self.attempts = AttemptStore(self.results_path)
        if workdir is None:
            workdir = self.results_path.parent / "sweeps"
        self.workdir = Path(workdir)
        self.executor = executor
        self.max_retries = int(max_retries)
        self.poll_s = float(poll_s)
        self.device = device
        self.batch_size = batch_size
        self.progress = progress

    # -- public
    def run(self, jobs: list[Job]) -> SweepSummary:
        """Run every pending job to done or failed (after ``max_retries`` retries); returns the summary."""
        todo = [job for job in jobs if job.status == "pending"]
        queue: list[Job] = []
        inflight: dict[int, Handle] = {}
        for job in todo:
            handle = self._reattach(job)
            if handle is not None:
                inflight[handle.attempt_id] = handle
            else:
                queue.append(job)
        bar = tqdm(total=len(todo), desc="sweep", unit="job", disable=not self.progress, dynamic_ncols=True)
        try:
            while queue or inflight:
                self._launch(queue, inflight)
                self._update_bar(bar, jobs)
                outcomes = self.executor.poll(list(inflight.values()))
                for attempt_id, outcome in outcomes.items():
                    if outcome.state == "running":
                        continue
                    handle = inflight.pop(attempt_id)
                    if not self._finish(handle, outcome):
                        queue.append(handle.job)
                    self._update_bar(bar, jobs)
                if inflight or queue:
                    time.sleep(self.poll_s if inflight else 0)
        except KeyboardInterrupt:
            local = isinstance(self.executor, LocalExecutor)
            if local:
                self.executor.cancel(list(inflight.values()))
                for handle in inflight.values():
                    self.attempts.update(handle.attempt_id, status="lost", finished_at=_now(),
                                         error="coordinator interrupted")
            raise SweepInterrupted(
                f"sweep interrupted (Ctrl-C): {len(inflight)} running attempt(s) "
                + ("killed" if local else "left running in Slurm") + "; every finished score is recorded, rerun the "
                "same sweep to " + ("resume it" if local else "collect them and resume it")) from None
        finally:
            self._update_bar(bar, jobs)
            bar.close()
        return SweepSummary(jobs)

    # -- internals
    def _attempt_dir(self, job: Job, attempt: int) -> Path:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        return self.workdir / job.slug / f"attempt-{attempt}-{stamp}-{os.getpid()}"

    def _launch(self, queue: list[Job], inflight: dict[int, Handle]) -> None:
        capacity = self.executor.capacity
        free = len(queue) if capacity is None else max(0, capacity - len(inflight))
        batch, rest = queue[:free], queue[free:]
        if not batch:
            return
        queue[:] = rest
        items = []
        for job in batch:
            job.attempts += 1
            number = 1 + max((row["attempt"] for row in self.attempts.rows(job.model, job.benchmark)), default=0)
            attempt_dir = self._attempt_dir(job, number)
            attempt_dir.mkdir(parents=True, exist_ok=True)
            spec = {"model": job.model, "benchmark": job.benchmark, "attempt_dir": str(attempt_dir),
                    "device": self.device, "batch_size": self.batch_size}
            attempt_id = self.attempts.add(
                model=job.model, benchmark=job.benchmark, benchmark_version=str(job.benchmark_version),
                package_version=job.package_version, weights_hash=job.weights_hash, attempt=number,
                executor=self.executor.name, attempt_dir=str(attempt_dir), status="submitting")
            items.append((spec, Handle(attempt_id, job, attempt_dir, external_id="")))
        try:
            self.executor.submit(items)
        except Exception as error:  # noqa: BLE001 - e.g. sbatch refused the job: fail these attempts clearly
            for _, handle in items:
                handle.external_id = ""
                self._finish(handle, Outcome("dead", f"submission failed: {error}", _traceback.format_exc()))
                if handle.job.status != "failed":
                    queue.append(handle.job)
            return
        for _, handle in items:
            handle.job.status = "running"
            self.attempts.update(handle.attempt_id, status="running", external_id=handle.external_id)
            inflight[handle.attempt_id] = handle
            logger.info("submitted %s x %s (attempt %d, %s %s)", handle.job.model, handle.job.benchmark,
                        handle.job.attempts, self.executor.name, handle.external_id)

    def _reattach(self, job: Job) -> Handle | None:
        """Pick up an attempt a killed coordinator left running (or its finished result)."""
        previous = [row for row in self.attempts.rows(job.model, job.benchmark)
                    if row["status"] in ("running", "submitting") and row["executor"] == self.executor.name
                    and (str(row["benchmark_version"]), row["package_version"], row["weights_hash"])
                    == (str(job.benchmark_version), job.package_version, job.weights_hash)]
        handle = None
        for row in previous:
            candidate = Handle(row["id"], job, Path(row["attempt_dir"]), external_id=row["external_id"] or "")
            if not _inside(candidate.attempt_dir, self.workdir):
                logger.warning("attempt %d of %s x %s names the folder %s outside the work folder %s; not read",
                               row["id"], job.model, job.benchmark, candidate.attempt_dir, self.workdir)
                self.attempts.update(row["id"], status="lost", finished_at=_now(),
                                     error=f"attempt_dir {candidate.attempt_dir} is outside the work folder "
                                           f"{self.workdir}; not read")
                continue
            if handle is None and (self.executor.reattach(row, candidate)
                                   or (candidate.attempt_dir / RESULT_FILE).is_file()):
                handle = candidate
                logger.info("re-attached %s x %s (%s %s)", job.model, job.benchmark, self.executor.name,
                            candidate.external_id)
            else:
                self.attempts.update(row["id"], status="lost", finished_at=_now(),
                                     error="coordinator stopped while this attempt ran; it did not finish")
        if handle is not None:
            job.status = "running"
            job.attempts = 1  # counts against this run's retry budget
        return handle

    def _finish(self, handle: Handle, outcome: Outcome) -> bool:
        """Record a finished attempt; returns True when the job is final (done, or failed after all retries)."""
        job = handle.job
        result = read_result(handle.attempt_dir) if outcome.state == "finished" else None
        if result is not None and result.get("ok"):
            value, attrs = result["score"]["value"], dict(result["score"].get("attrs") or {})
            if result.get("weights_hash") and result["weights_hash"] != job.weights_hash:
                logger.info("%s: weights hash %s at planning, %s when scored (recorded)", job.model,
                            job.weights_hash, result["weights_hash"])
                job.weights_hash = result["weights_hash"]
            if result.get("config_hash") and result["config_hash"] != job.config_hash:
                logger.info("%s x %s: config %s at planning, %s when scored (recorded)", job.model, job.benchmark,
                            job.config_hash, result["config_hash"])
                job.config_hash = str(result["config_hash"])
            self.results.record(job.model, job.benchmark, value, benchmark_version=job.benchmark_version,
                weights_hash=job.weights_hash, package_version=job.package_version, config_hash=job.config_hash,
                layer=None if attrs.get("layer") is None else str(attrs["layer"]), seconds=result.get("seconds"),
                raw=attrs.get("raw"), ceiling=attrs.get("ceiling"), error=attrs.get("error"), attrs=attrs)
            self.attempts.update(handle.attempt_id, status="done", finished_at=_now(), host=result.get("host"),
                                 weights_hash=job.weights_hash)
            job.status, job.score, job.seconds, job.error = "done", float(value), result.get("seconds"), None
            logger.info("done %s x %s: %.4f", job.model, job.benchmark, job.score)
            return True
        if result is not None:
            error, trace = result.get("error", "failed"), result.get("traceback", "")
        else:
            error, trace = outcome.detail, outcome.log
        self.attempts.update(handle.attempt_id, status="failed", finished_at=_now(), error=error, traceback=trace,
                             host=(result or {}).get("host"))
        job.error = error
        final = result is not None and result.get("retry") is False  # the same error would come back
        if final or job.attempts > self.max_retries:
            job.status = "failed"
            if final:
                logger.error("not retried: %s x %s raised an error that the same inputs raise again", job.model,
                             job.benchmark)
            logger.error("failed %s x %s after %d attempt(s): %s\n%s\n(worker files: %s; all attempts: table "
                         "sweep_attempts in %s)", job.model, job.benchmark, job.attempts, error,
                         "\n".join((trace or "").strip().splitlines()[-15:]), handle.attempt_dir, self.results_path)
            return True
        job.status = "pending"
        logger.warning("attempt %d of %s x %s failed (%s); retrying", job.attempts, job.model, job.benchmark,
                       error)
        return False

    @staticmethod
    def _update_bar(bar: Any, jobs: list[Job]) -> None:
        counts = SweepSummary(jobs).counts()
        bar.n = counts["done"] + counts["failed"]  # final jobs (skipped ones are not in the bar's total)
        bar.set_postfix(done=counts["done"], running=counts["running"], failed=counts["failed"],
                        skipped=counts["skipped"], refresh=False)
        bar.refresh()


def sweep(models: Sequence[str], benchmarks: Sequence[str], executor: LocalExecutor | SlurmExecutor, *,
          results_path: str | os.PathLike | None = None, rerun: bool = False, **kwargs: Any) -> SweepSummary:
    """Plan and run a sweep; pairs already scored under the same key are skipped."""
    jobs = plan(models, benchmarks, results_path, rerun=rerun)
    return Coordinator(executor, results_path=results_path, **kwargs).run(jobs)


def _worker_main(argv: Sequence[str]) -> int:
    """``python -m benchmarks_it_maps.runs.sweep --worker SPEC.json``: the local executor's worker process."""
    if len(argv) != 2 or argv[0] != "--worker":
        print("usage: python -m benchmarks_it_maps.runs.sweep --worker SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    spec = json.loads(Path(argv[1]).read_text())
    logger.info("worker %d: %s x %s", os.getpid(), spec["model"], spec["benchmark"])
    result = run_attempt(spec)
    logger.info("worker %d finished: %s", os.getpid(), "ok" if result.get("ok") else result.get("error"))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
