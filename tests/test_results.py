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


def test_config_hash_is_part_of_the_key_and_old_databases_are_migrated(tmp_path):
    """Two layer commitments of one model are two rows; a database written before the config hash existed keeps
    its rows (config hash '', so a sweep does not trust them) and accepts new keys."""
    path = tmp_path / "old.sqlite"
    old_schema = ("CREATE TABLE scores (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, benchmark TEXT "
                  "NOT NULL, benchmark_version INTEGER NOT NULL, package_version TEXT NOT NULL, weights_hash TEXT NOT "
                  "NULL, score REAL, raw REAL, ceiling REAL, error REAL, layer TEXT, seconds REAL, host TEXT NOT "
                  "NULL, created_at TEXT NOT NULL, attrs_json TEXT NOT NULL DEFAULT '{}', UNIQUE (model, benchmark, "
                  "benchmark_version, package_version, weights_hash));"
                  "CREATE INDEX scores_model_benchmark ON scores (model, benchmark);")
    with sqlite3.connect(path) as connection:
        connection.executescript(old_schema)
        connection.execute("INSERT INTO scores (model, benchmark, benchmark_version, package_version, weights_hash, "
                           "score, layer, host, created_at) VALUES ('m', 'b', 1, 'p', 'w', 0.41, '_blocks.10', 'h', "
                           "'2026-01-01T00:00:00+00:00')")
    connection.close()
    db = ResultsDB(path)
    (old,) = db.rows()
    assert old["score"] == pytest.approx(0.41) and old["config_hash"] == ""
    assert not db.has("m", "b", benchmark_version=1, package_version="p", weights_hash="w", config_hash="cfg:a")
    db.record("m", "b", 0.50, benchmark_version=1, package_version="p", weights_hash="w", config_hash="cfg:a",
              layer="_blocks.11")
    db.record("m", "b", 0.41, benchmark_version=1, package_version="p", weights_hash="w", config_hash="cfg:b",
              layer="_blocks.10")
    assert len(db.rows()) == 3
    assert db.get("m", "b", config_hash="cfg:a")["layer"] == "_blocks.11"
    with sqlite3.connect(path) as connection:
        assert tuple(r[1] for r in connection.execute("PRAGMA table_info(scores)")) == COLUMNS
        indexes = [r[1] for r in connection.execute("PRAGMA index_list(scores)")]
    connection.close()
    assert "scores_model_benchmark" in indexes


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
