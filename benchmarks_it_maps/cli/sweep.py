"""``brainscore sweep``: score every (model, benchmark) pair locally or on Slurm, resumably."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="score many models on many benchmarks (local workers or Slurm), resumable",
        description="One job per (model, benchmark) pair. Pairs already in the results database with the same "
                    "benchmark version, package version, weights hash and scoring configuration (committed layers, "
                    "benchmark options, precision) are skipped, so re-running a sweep resumes it. Failed jobs are recorded with their traceback (table sweep_attempts) and retried.")
    parser.add_argument("--models", required=True,
                        help="ID,ID | @FILE (one id per line) | category:NAME (e.g. category:Harmonized)")
    parser.add_argument("--benchmarks", required=True, help="ID,ID | @FILE | all")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="local: worker processes (one per GPU, else one at a time); slurm: submitit arrays")
    parser.add_argument("--gpus", type=int, default=None,
                        help="local: GPUs to use (default: all visible); slurm: GPUs per job (default 0)")
    parser.add_argument("--slurm-partition", default=None, help="Slurm partition (default: the cluster's default)")
    parser.add_argument("--slurm-time", type=int, default=60, help="Slurm time limit per job in minutes (60)")
    parser.add_argument("--slurm-mem", type=float, default=None, help="Slurm memory per job in GB")
    parser.add_argument("--slurm-cpus", type=int, default=None, help="Slurm CPUs per job")
    parser.add_argument("--slurm-parallelism", type=int, default=256, help="max array tasks running at once")
    parser.add_argument("--timeout", type=float, default=None,
                        help="local: kill a worker after this many minutes (default: no limit)")
    parser.add_argument("--max-retries", type=int, default=2, help="retries per failed job (2)")
    parser.add_argument("--results", default=None, help="results SQLite file (default: DATA_HOME/results.sqlite)")
    parser.add_argument("--workdir", default=None,
                        help="attempt folders and Slurm logs (default: beside the results file, in sweeps/)")
    parser.add_argument("--device", default="auto", help="torch device for the workers (auto)")
    parser.add_argument("--batch-size", type=int, default=None, help="activation batch size (default: automatic)")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between status polls (5)")
    parser.add_argument("--rerun", action="store_true", help="score pairs again even when already in the database")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the jobs that would run (and say which data is not imported yet); loads no "
                             "model or data and runs nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    from benchmarks_it_maps.runs import sweep
    from benchmarks_it_maps.cli import UserError

    if args.max_retries < 0:
        raise UserError("--max-retries must be >= 0")
    try:
        models = sweep.parse_models(args.models)
        benchmarks = sweep.parse_benchmarks(args.benchmarks)
        cuda = (args.gpus or 0) > 0 if args.executor == "slurm" else None  # None: workers see this machine's GPUs
        jobs = sweep.plan(models, benchmarks, args.results, rerun=args.rerun, device=args.device,
                          cuda_available=cuda)
    except sweep.SweepError as error:
        raise UserError(str(error)) from None
    pending = [job for job in jobs if job.status == "pending"]
    if args.dry_run:
        for job in jobs:
            state = "run " if job.status == "pending" else "skip"
            print(f"{state}  {job.model}  {job.benchmark}  (benchmark v{job.benchmark_version}, "
                  f"weights {_short_hash(job.weights_hash)}, {job.config_hash or 'config -'})")
        print(f"{len(pending)} job(s) to run, {len(jobs) - len(pending)} already scored "
              f"({len(models)} model(s) x {len(benchmarks)} benchmark(s), executor {args.executor})")
        for note in _missing_data_notes(benchmarks):
            print(note)
        return 0
    if args.executor == "slurm":
        from benchmarks_it_maps.home import data_home
        folder = sweep.Path(args.workdir) if args.workdir else (
            sweep.Path(args.results).parent if args.results else data_home()) / "sweeps"
        try:
            executor = sweep.SlurmExecutor(folder / "slurm", partition=args.slurm_partition,
                                           time_min=args.slurm_time, mem_gb=args.slurm_mem, gpus=args.gpus or 0,
                                           cpus_per_task=args.slurm_cpus, array_parallelism=args.slurm_parallelism)
        except sweep.SweepError as error:
            raise UserError(str(error)) from None
    else:
        executor = sweep.LocalExecutor(gpus=args.gpus, timeout_min=args.timeout)
    coordinator = sweep.Coordinator(executor, results_path=args.results, workdir=args.workdir,
                                    max_retries=args.max_retries, poll_s=args.poll, device=args.device,
                                    batch_size=args.batch_size, progress=not args.no_progress)
    summary = coordinator.run(jobs)
    print(summary.table())
    return 1 if summary.counts()["failed"] else 0


def _missing_data_notes(benchmarks) -> list[str]:
    """One line per Arcaro2020 data family the benchmarks need that is not imported (a dry run does not load data,
    so say it before the real run fails on every job)."""
    from benchmarks_it_maps.data import assemblies
    families = sorted({assemblies.family_of(b) for b in benchmarks if b.startswith("Arcaro2020")})
    how = {"Arcaro2020": "brainscore data fetch arcaro2020 (or data import arcaro2020 Arcaro2020.zip)",
           "Arcaro2020sim": "brainscore demo, or data simulate --out twin.zip && data import arcaro2020 twin.zip"}
    return [f"note: {family} is not imported in the data home, so these jobs would fail; first run: "
            f"{how.get(family, 'brainscore data import')}" for family in families if not assemblies.summary(family)]


def _short_hash(weights_hash: str) -> str:
    """``sha256:`` + 16 hex digits; other weights keys (a download URL, a brainscore-vision tag) in full."""
    return weights_hash[:23] if weights_hash.startswith("sha256:") else weights_hash
