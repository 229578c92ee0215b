"""The public Brain-Score vision leaderboard as a tidy table, and how to obtain the snapshot.

The leaderboard snapshot is the JSON the Brain-Score website publishes (``brain-score.web``,
``static/benchmarks/snapshots/vision/<date>.json[.gz]``): a list with one object per model, whose keys
``<benchmark>_vN`` hold ``{"value": ceiled score as display text, "raw", "error", "version", "current_version", ...}``.
:func:`load_leaderboard` turns it into one row per (model, benchmark) with numeric values; :func:`fetch_leaderboard`
downloads the pinned snapshot once (sha256 checked) into the data home.

Display values follow the website's conventions, all handled here:

- ``".540"`` is 0.540, ``"1.0"`` is 1.0, ``".-15"`` is -0.015 (the site prints ``int(1000 * v)`` after the dot, so a
  negative score keeps its sign inside the digits);
- ``"X"`` means "no ceiled score shown" (the raw score may still be there), ``"nan"`` a failed score, ``""`` / null /
  a missing ``value`` key: nothing. All of these give ``value = NaN`` and are recorded in the ``status`` column.
"""
from __future__ import annotations

import difflib
import functools
import gzip
import json
import logging
import math
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from benchmarks_it_maps.home import atomic_file, data_home, sha256_file

_logger = logging.getLogger(__name__)

#: brain-score.web commit that holds the 2024-01-01 vision snapshot (``static/benchmarks/snapshots/vision/``; its
#: ``manifest.json`` lists the gzip file with 3,528,658 bytes).
LEADERBOARD_COMMIT = "e173800a6b8814d68fc30f1b755d3a81cbe9c6a6"
LEADERBOARD_FILENAME = "brainscore-vision-leaderboard-2024-01-01.json.gz"
#: Raw GitHub address of the pinned snapshot.
LEADERBOARD_URL = (f"https://raw.githubusercontent.com/brain-score/brain-score.web/{LEADERBOARD_COMMIT}/"
                   "static/benchmarks/snapshots/vision/2024-01-01.json.gz")
#: sha256 of that file (3,528,658 bytes).
LEADERBOARD_SHA256 = "757dd145a4bba2ec231ff2b68d5e95584fcd320784e519b85ede4dcb527e16c5"
#: The same snapshot shipped inside the package (package data), used by default: no network needed.
PACKAGED_LEADERBOARD = Path(__file__).resolve().parents[1] / "tables" / LEADERBOARD_FILENAME
#: Environment variable naming a local snapshot to use instead of the packaged one.
LEADERBOARD_ENV = "BRAINSCORE_ITMAPS_LEADERBOARD"
#: Name of the ImageNet top-1 benchmark on the leaderboard (its ceiling is 1, so raw == ceiled value).
ACCURACY_BENCHMARK = "ImageNet-top1"

#: Columns of the tidy table, in order.
COLUMNS = ("model_id", "model", "public", "benchmark", "benchmark_version", "value", "raw", "error", "status",
           "score_version", "timestamp")
_MODEL_KEYS = {"id", "rank", "model", "public", "metadata"}
_VERSIONED = re.compile(r"^(?P<name>.+)_v(?P<version>\d+)$")


class LeaderboardError(ValueError):
    """The leaderboard snapshot is missing, unreadable or malformed, or a benchmark is not on it."""


# --------------------------------------------------------------------------------------------------------------------
# Obtaining the snapshot
# --------------------------------------------------------------------------------------------------------------------
def default_leaderboard_path() -> Path:
    """Where the downloaded snapshot is cached: ``data_home()/leaderboard/<file name>``."""
    return data_home() / "leaderboard" / LEADERBOARD_FILENAME


def fetch_leaderboard(url: str = LEADERBOARD_URL, sha256: str | None = LEADERBOARD_SHA256,
                      path: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """Download the snapshot once into the data home (atomically, sha256 checked) and return its path.

    An existing cached file with the right checksum is reused without any network access. ``url`` may be ``http(s)://``
    or ``file://``. When the download fails the error says where to put a local copy instead.
    """
    target = Path(path) if path is not None else default_leaderboard_path()
    if target.exists() and (sha256 is None or sha256_file(target) == sha256):
        return target
    if target.exists():
        _logger.warning("cached leaderboard %s has the wrong sha256; downloading it again", target)
    _logger.info("downloading the Brain-Score leaderboard snapshot from %s", url)
    try:
        with atomic_file(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            got = sha256_file(tmp)
            if sha256 is not None and got != sha256:
                raise LeaderboardError(
                    f"downloaded leaderboard from {url} has sha256 {got}, expected {sha256}; the file was not kept. "
                    f"Put a verified copy at {target} or pass --leaderboard PATH.")
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise LeaderboardError(
            f"could not download the Brain-Score leaderboard snapshot from {url} ({error}). Without network access, "
            f"copy the file there by hand to {target} (or set ${LEADERBOARD_ENV}, or pass --leaderboard PATH)."
        ) from error
    return target


def packaged_leaderboard_path() -> Path | None:
    """The snapshot shipped with the package when it is installed and intact (sha256 checked once), else None."""
    return PACKAGED_LEADERBOARD if _packaged_intact(PACKAGED_LEADERBOARD) else None


@functools.lru_cache(maxsize=None)
def _packaged_intact(path: Path) -> bool:
    if not path.is_file():
        return False
    if sha256_file(path) != LEADERBOARD_SHA256:
        _logger.warning("the packaged leaderboard %s has the wrong sha256; ignoring it", path)
        return False
    return True


def resolve_leaderboard_path(path: str | os.PathLike | None = None) -> Path:
    """The snapshot to read: ``path``, else ``$BRAINSCORE_ITMAPS_LEADERBOARD``, else the one shipped with the package
    (offline), else the cached or downloaded one (:func:`fetch_leaderboard`)."""
    if path is None:
        path = os.environ.get(LEADERBOARD_ENV) or None
    if path is None:
        return packaged_leaderboard_path() or fetch_leaderboard()
    path = Path(path).expanduser()
    if not path.is_file():
        raise LeaderboardError(f"leaderboard file {path} does not exist; pass the path of a Brain-Score leaderboard "
                               f"snapshot (.json or .json.gz), e.g. a copy of {LEADERBOARD_URL}")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------------
def read_snapshot(path: str | os.PathLike) -> list[dict]:
    """The snapshot's list of model records; gzip is detected from the file's magic bytes, not its name."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LeaderboardError(f"{path} is not a readable leaderboard JSON file ({error}); expected the list of model "
                               f"records of a Brain-Score snapshot, e.g. {LEADERBOARD_URL}") from error
    if isinstance(data, dict):  # tolerate a wrapper object around the list
        lists = [value for value in data.values() if isinstance(value, list)]
        if len(lists) == 1:
            data = lists[0]
    if not isinstance(data, list) or not all(isinstance(record, dict) for record in data):
        raise LeaderboardError(f"{path}: expected a JSON list of model records (objects with 'model' and "
                               f"'<benchmark>_vN' keys), got {type(data).__name__}")
    return data


def parse_value(text: Any) -> tuple[float, str]:
    """A displayed (ceiled) value -> (number, status); status is 'ok', 'X', 'nan' or 'empty'.

    Raises ValueError for text that is none of the website's formats.
    """
    if text is None:
        return math.nan, "empty"
    if isinstance(text, bool):
        raise ValueError(f"unexpected boolean value {text!r}")
    if isinstance(text, (int, float)):
        number = float(text)
        return (number, "ok") if math.isfinite(number) else (math.nan, "nan")
    if not isinstance(text, str):
        raise ValueError(f"unexpected value of type {type(text).__name__}")
    text = text.strip()
    if text == "":
        return math.nan, "empty"
    if text.upper() == "X":
        return math.nan, "X"
    if text.lower() in {"nan", "none", "null"}:
        return math.nan, "nan"
    if re.fullmatch(r"\.-\d+", text):  # the site's rendering of negative scores: '.-15' == -0.015
        return -int(text[2:]) / 1000.0, "ok"
    number = float(text)  # raises ValueError on anything else
    return (number, "ok") if math.isfinite(number) else (math.nan, "nan")


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def split_version(key: str) -> tuple[str, int | None]:
    """``'MajajHong2015.IT-pls_v4'`` -> ``('MajajHong2015.IT-pls', 4)``; keys without a suffix get version None."""
    match = _VERSIONED.match(key)
    if match is None:
        return key, None
    return match.group("name"), int(match.group("version"))


def records_to_frame(records: Iterable[dict], source: str = "<records>") -> pd.DataFrame:
    """Tidy table (one row per model and benchmark entry) from snapshot records; see :data:`COLUMNS`."""
    rows = []
    for index, record in enumerate(records):
        model = record.get("model")
        if isinstance(model, dict):
            name, model_id = model.get("name"), model.get("id", record.get("id"))
        else:
            name, model_id = model, record.get("id")
        if not name:
            raise LeaderboardError(f"{source}: record #{index} has no model name (field 'model.name')")
        public = record.get("public")
        for key, entry in record.items():
            if key in _MODEL_KEYS or not isinstance(entry, dict):
                continue
            benchmark, version = split_version(key)
            try:
                value, status = parse_value(entry.get("value"))
            except ValueError as error:
                raise LeaderboardError(f"{source}: model {name!r}, field {key!r}.value = {entry.get('value')!r} is "
                                       f"not a score ({error}); expected e.g. '.540', 'X', 'nan' or ''") from error
            rows.append({
                "model_id": model_id, "model": str(name).strip(),
                "public": bool(public) if public is not None else None,
                "benchmark": benchmark, "benchmark_version": version, "value": value,
                "raw": _number(entry.get("raw")), "error": _number(entry.get("error")), "status": status,
                "score_version": entry.get("version"), "timestamp": entry.get("timestamp"),
            })
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["benchmark_version"] = frame["benchmark_version"].astype("Int64")
    frame["score_version"] = pd.to_numeric(frame["score_version"], errors="coerce").astype("Int64")
    frame["model_id"] = pd.to_numeric(frame["model_id"], errors="coerce").astype("Int64")
    for column in ("value", "raw", "error"):
        frame[column] = frame[column].astype(float)
    return frame


def load_leaderboard(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The leaderboard as a tidy table (see :data:`COLUMNS`); ``path=None`` uses :func:`resolve_leaderboard_path`.

    Parsed tables are memoised per (file, modification time, size) within the process; callers get a copy.
    """
    path = resolve_leaderboard_path(path).resolve()
    stat = path.stat()
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size).copy()


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    frame = records_to_frame(read_snapshot(path), source=path)
    frame.attrs["source"] = path
    _logger.info("leaderboard %s: %d models, %d benchmarks, %d entries", path, frame["model_id"].nunique(),
                 frame["benchmark"].nunique(), len(frame))
    return frame


# --------------------------------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------------------------------
def benchmarks(frame: pd.DataFrame) -> list[str]:
    """Benchmark identifiers (without version suffix) present on the leaderboard, sorted."""
    return sorted(frame["benchmark"].unique())


def check_benchmark(frame: pd.DataFrame, benchmark: str) -> str:
    """Return ``benchmark`` if it is on the leaderboard; else raise naming the closest identifiers.

    A trailing version suffix (``_v4``) is accepted and stripped.
    """
    known = benchmarks(frame)
    if benchmark in known:
        return benchmark
    name, _ = split_version(benchmark)
    if name in known:
        return name
    close = difflib.get_close_matches(benchmark, known, n=5, cutoff=0.5)
    close += [k for k in known if benchmark.lower() in k.lower() and k not in close][:5 - len(close)]
    hint = f"; did you mean {', '.join(close)}?" if close else f"; {len(known)} benchmarks are listed"
    source = frame.attrs.get("source")
    where = f"the leaderboard {source}" if source else "the leaderboard"
    raise LeaderboardError(f"benchmark {benchmark!r} is not on {where}{hint}")


def unique_labels(frame: pd.DataFrame) -> pd.Series:
    """A unique label per model: its name, or ``'name (#id)'`` where several submissions share a name."""
    names = frame[["model_id", "model"]].drop_duplicates()
    duplicated = names["model"].duplicated(keep=False)
    labels = names["model"].where(~duplicated, names["model"] + " (#" + names["model_id"].astype(str) + ")")
    mapping = dict(zip(names["model_id"], labels))
    return frame["model_id"].map(mapping)


def benchmark_table(frame: pd.DataFrame, benchmark: str, *, public_only: bool = True,
                    accuracy_fallback_raw: bool | None = None) -> pd.DataFrame:
    """One row per model with a usable score on ``benchmark``: label, model_id, value, raw, error, version.

    ``value`` is the ceiled score. For benchmarks whose ceiling is 1 (ImageNet top-1) the website often shows 'X'
    while ``raw`` holds the accuracy; ``accuracy_fallback_raw`` (default: True for ImageNet-top1 only) then uses raw.
    Models without a usable value are dropped (a log line says how many).
    """
    benchmark = check_benchmark(frame, benchmark)
    if accuracy_fallback_raw is None:
        accuracy_fallback_raw = benchmark == ACCURACY_BENCHMARK
    rows = frame[frame["benchmark"] == benchmark].copy()
    if public_only:
        rows = rows[rows["public"].fillna(True).astype(bool)]
    rows["label"] = unique_labels(frame).loc[rows.index]
    if accuracy_fallback_raw:
        rows["value"] = rows["value"].where(rows["value"].notna(), rows["raw"])
    usable = rows["value"].notna()
    if (~usable).any():
        _logger.info("%s: %d of %d leaderboard entries have no usable value (%s)", benchmark, int((~usable).sum()),
                     len(rows), dict(rows.loc[~usable, "status"].value_counts()))
    rows = rows[usable]
    return rows[["label", "model_id", "model", "value", "raw", "error", "benchmark_version", "status"]].reset_index(
        drop=True)


def rank_against(values: Iterable[float], value: float) -> tuple[int, float, int]:
    """(rank, percentile, n) of ``value`` among ``values``: rank 1 = best (higher is better); the percentile is the
    share of values below it, ties counted half (midrank), in percent."""

    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not math.isfinite(value):
        raise ValueError(f"cannot rank a non-finite value {value!r}")
    n = len(values)
    if n == 0:
        raise ValueError("no leaderboard values to rank against")
    above = int((values > value).sum())
    below = int((values < value).sum())
    ties = n - above - below
    return above + 1, 100.0 * (below + 0.5 * ties) / n, n
