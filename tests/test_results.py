"""The SQLite results database: round trip, upsert on the key, filters, CSV export."""
import csv
import sqlite3

import numpy as np
import pytest
from brainscore_core.metrics import Score

from benchmarks_it_maps.runs.results import COLUMNS, ResultsDB, package_version


def _score(value, raw, ceiling, error, layer="layer4"):
    score = Score(value)
    score.attrs["raw"] = Score(raw)
    score.attrs["ceiling"] = Score(ceiling)
    score.attrs["error"] = error
    score.attrs["layer"] = layer
    score.attrs["per_fold"] = np.array([0.1, np.nan, 0.3])
    return score


def test_round_trip_from_score(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    assert not (tmp_path / "r.sqlite").exists()
    assert db.get("m", "b") is None and db.rows() == []
    row_id = db.record("m", "Arcaro2020sim.M1ML-pls", _score(0.5, 0.4, 0.8, 0.02), benchmark_version=1,
                       weights_hash="abc", seconds=1.5)
    row = db.get("m", "Arcaro2020sim.M1ML-pls")
    assert row["id"] == row_id
    assert row["score"] == pytest.approx(0.5) and row["raw"] == pytest.approx(0.4)
    assert row["ceiling"] == pytest.approx(0.8) and row["error"] == pytest.approx(0.02)
    assert row["layer"] == "layer4" and row["seconds"] == pytest.approx(1.5)
    assert row["benchmark_version"] == 1 and row["weights_hash"] == "abc"
    assert row["package_version"] == package_version()
    assert row["created_at"].endswith("+00:00") and row["host"]
    assert row["attrs"]["per_fold"] == [0.1, None, 0.3]  # NaN stored as null
    assert db.has("m", "Arcaro2020sim.M1ML-pls", benchmark_version=1, weights_hash="abc")
    assert not db.has("m", "Arcaro2020sim.M1ML-pls", benchmark_version=2)
    # the real table has exactly the contract's columns
    with sqlite3.connect(tmp_path / "r.sqlite") as connection:
        columns = [r[1] for r in connection.execute("PRAGMA table_info(scores)")]
    assert tuple(columns) == COLUMNS


def test_upsert_replaces_same_key_and_keeps_others(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    first = db.record("m", "b", 0.3, benchmark_version=1, weights_hash="w", raw=0.2, ceiling=0.5, error=0.01)
    again = db.record("m", "b", 0.35, benchmark_version=1, weights_hash="w", raw=0.25, ceiling=0.5, error=0.01)
    assert again == first
    assert len(db.rows()) == 1 and db.get("m", "b")["score"] == pytest.approx(0.35)
    db.record("m", "b", 0.4, benchmark_version=2, weights_hash="w")
    db.record("m", "b", 0.5, benchmark_version=1, weights_hash="other")
    db.record("m2", "b", 0.6, benchmark_version=1, weights_hash=None)
    assert len(db.rows()) == 4
    assert len(db.rows(model="m")) == 3 and len(db.rows(benchmark="b", model="m2")) == 1
    assert db.get("m", "b", benchmark_version=2)["score"] == pytest.approx(0.4)
    frame = db.to_frame()
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 4


def test_export_csv(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    db.record("m", "b", 0.3, benchmark_version=1, weights_hash="w", layer="l")
    out = db.export_csv(tmp_path / "out" / "scores.csv")
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["model"] == "m" and float(rows[0]["score"]) == pytest.approx(0.3)
    assert rows[0]["layer"] == "l"


def test_bad_input_is_rejected_without_writing(tmp_path):
    db = ResultsDB(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="score must be a number"):
        db.record("m", "b", np.array([0.1, 0.2]), benchmark_version=1, weights_hash="w")
    with pytest.raises(ValueError, match="benchmark_version"):
        db.record("m", "b", 0.1, benchmark_version=None, weights_hash="w")
    assert db.rows() == []
