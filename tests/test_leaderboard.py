"""Leaderboard snapshot loader, pinned download (local servers only) and `brainscore leaderboard` commands."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import math
import socket
import threading

import pytest

from benchmarks_it_maps.analysis import leaderboard as lb
from benchmarks_it_maps.cli import main
from benchmarks_it_maps.runs.results import ResultsDB

SNAPSHOT = lb.PACKAGED_LEADERBOARD  # the snapshot shipped with the package (sha256 checked below)


@pytest.fixture(scope="module")
def board():
    return lb.load_leaderboard(SNAPSHOT)


# ---------------------------------------------------------------------------------------------------------------------
# value parsing
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value, status", [
    (".540", 0.540, "ok"), ("1.0", 1.0, "ok"), (".054", 0.054, "ok"), (".-15", -0.015, "ok"),
    (".-115", -0.115, "ok"), (".-02", -0.002, "ok"), (0.25, 0.25, "ok"), ("X", math.nan, "X"),
    ("nan", math.nan, "nan"), ("", math.nan, "empty"), ("  ", math.nan, "empty"), (None, math.nan, "empty"),
    (float("nan"), math.nan, "nan"),
])
def test_parse_value(text, value, status):
    got, got_status = lb.parse_value(text)
    assert got_status == status
    assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value)


def test_parse_value_rejects_garbage():
    with pytest.raises(ValueError):
        lb.parse_value("abc")


def test_split_version():
    assert lb.split_version("MajajHong2015.IT-pls_v4") == ("MajajHong2015.IT-pls", 4)
    assert lb.split_version("Marques2020_Ringach2002-max_dc_v1") == ("Marques2020_Ringach2002-max_dc", 1)
    assert lb.split_version("average_vision_v0") == ("average_vision", 0)
    assert lb.split_version("no-version") == ("no-version", None)


def _records():
    return [
        {"id": 1, "model": {"id": 1, "name": "net-a"}, "public": True, "metadata": {},
         "Bench.IT-pls_v2": {"value": ".500", "raw": 0.6, "error": 0.01, "version": 1, "current_version": 2},
         "ImageNet-top1_v1": {"value": "X", "raw": 0.7, "error": None, "version": 1}},
        {"id": 2, "model": {"id": 2, "name": "net-b"}, "public": True,
         "Bench.IT-pls_v2": {"value": "", "raw": None},
         "ImageNet-top1_v1": {"value": ".650", "raw": 0.65}},
        {"id": 3, "model": {"id": 3, "name": "net-a"}, "public": False,
         "Bench.IT-pls_v2": {"color": "#E0E1E2"},
         "ImageNet-top1_v1": {"value": "nan", "raw": float("nan"), "error": float("nan")}},
    ]


def test_records_to_frame_handles_missing_values():
    frame = lb.records_to_frame(_records())
    assert list(frame.columns) == list(lb.COLUMNS)
    assert len(frame) == 6
    bench = frame[frame["benchmark"] == "Bench.IT-pls"].set_index("model_id")
    assert bench.loc[1, "value"] == pytest.approx(0.5) and bench.loc[1, "raw"] == pytest.approx(0.6)
    assert bench.loc[1, "benchmark_version"] == 2 and bench.loc[1, "score_version"] == 1
    assert math.isnan(bench.loc[2, "value"]) and bench.loc[2, "status"] == "empty"
    assert math.isnan(bench.loc[3, "value"]) and bench.loc[3, "status"] == "empty"  # no 'value' key
    top1 = frame[frame["benchmark"] == "ImageNet-top1"].set_index("model_id")
    assert top1.loc[1, "status"] == "X" and math.isnan(top1.loc[1, "value"])
    assert top1.loc[3, "status"] == "nan" and math.isnan(top1.loc[3, "raw"])
    # ImageNet-top1: 'X' falls back to raw; private model 3 is left out; the 'nan' row is unusable anyway
    table = lb.benchmark_table(frame, "ImageNet-top1").set_index("model_id")
    assert table["value"].to_dict() == {1: pytest.approx(0.7), 2: pytest.approx(0.65)}
    # other benchmarks do not fall back to raw
    assert list(lb.benchmark_table(frame, "Bench.IT-pls")["model_id"]) == [1]
    # shared names get the id appended
    labels = lb.unique_labels(frame)
    assert set(labels) == {"net-a (#1)", "net-b", "net-a (#3)"}


def test_records_to_frame_names_the_bad_field():
    records = _records()
    records[1]["Bench.IT-pls_v2"]["value"] = "n/a?"
    with pytest.raises(lb.LeaderboardError, match=r"net-b.*Bench\.IT-pls_v2"):
        lb.records_to_frame(records, source="snap.json")
    with pytest.raises(lb.LeaderboardError, match="no model name"):
        lb.records_to_frame([{"id": 5, "model": {"id": 5}}])


def test_read_snapshot_plain_gzip_and_invalid(tmp_path):
    plain = tmp_path / "board.json"
    plain.write_text(json.dumps(_records()))
    packed = tmp_path / "board.data"  # gzip detected by content, not by name
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert lb.read_snapshot(plain) == lb.read_snapshot(packed)
    assert len(lb.load_leaderboard(packed)) == 6
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(lb.LeaderboardError, match="broken.json"):
        lb.read_snapshot(broken)
    scalar = tmp_path / "scalar.json"
    scalar.write_text("42")
    with pytest.raises(lb.LeaderboardError, match="expected a JSON list"):
        lb.read_snapshot(scalar)
    with pytest.raises(lb.LeaderboardError, match="does not exist"):
        lb.load_leaderboard(tmp_path / "missing.json.gz")


# ---------------------------------------------------------------------------------------------------------------------
# the shared 2024-01-01 snapshot
# ---------------------------------------------------------------------------------------------------------------------
def test_snapshot_counts_versions_and_missing_values(board):
    assert board["model_id"].nunique() == 1420
    assert board["benchmark"].nunique() == 141
    assert len(board) == 104898
    assert board["status"].value_counts().to_dict() == {"ok": 72763, "X": 30896, "nan": 1239}
    assert board["public"].all()
    versions = board.groupby("benchmark")["benchmark_version"].unique()
    assert list(versions["MajajHong2015.IT-pls"]) == [4]
    assert list(versions["Sanghavi2020.IT-pls"]) == [2]
    assert list(versions["ImageNet-top1"]) == [1]
    assert list(versions["average_vision"]) == [0]
    # 'X' rows keep their raw score where the site has one; value is NaN for every non-'ok' row
    assert board.loc[board["status"] != "ok", "value"].isna().all()
    assert board.loc[board["status"] == "ok", "value"].notna().all()
    # negative scores rendered '.-NN' parse to negative values of the right size
    negative = board[(board["status"] == "ok") & (board["value"] < 0)]
    assert len(negative) == 226 and (negative["raw"] < 0).all()
    # score version (what the model was scored with) vs the current version in the suffix
    majaj = board[board["benchmark"] == "MajajHong2015.IT-pls"]
    assert set(majaj["score_version"].dropna()) <= {3, 4}


def test_snapshot_benchmark_tables(board):
    top1 = lb.benchmark_table(board, "ImageNet-top1")
    assert len(top1) == 79 + 362  # numeric values plus 'X' with a raw accuracy
    assert top1["value"].between(0, 1).all()
    majaj = lb.benchmark_table(board, "MajajHong2015.IT-pls_v4")  # suffix accepted
    assert len(majaj) == 1335 and majaj["label"].is_unique
    for name in ("Sanghavi2020.IT-pls", "SanghaviJozwik2020.IT-pls", "SanghaviMurty2020.IT-pls"):
        assert len(lb.benchmark_table(board, name)) > 1000


def test_unknown_benchmark_lists_close_names(board):
    with pytest.raises(lb.LeaderboardError, match="MajajHong2015.IT-pls"):
        lb.check_benchmark(board, "MajajHong2015.IT-pl")
    with pytest.raises(lb.LeaderboardError, match="Sanghavi2020.IT-pls"):
        lb.check_benchmark(board, "sanghavi2020")


def test_rank_against_hand_computed():
    assert lb.rank_against([0.1, 0.2, 0.3, 0.4], 0.35) == (2, 75.0, 4)
    assert lb.rank_against([0.1, 0.2, 0.2, 0.4], 0.2) == (2, 50.0, 4)  # ties count half
    assert lb.rank_against([0.1, float("nan"), 0.3], 0.5) == (1, 100.0, 2)
    with pytest.raises(ValueError):
        lb.rank_against([0.1], float("nan"))


# ---------------------------------------------------------------------------------------------------------------------
# download (local servers only)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    """A gzip snapshot served by http.server on 127.0.0.1; yields (url, sha256, stop)."""
    root = tmp_path / "www"
    root.mkdir()
    payload = gzip.compress(json.dumps(_records()).encode())
    (root / "snap.json.gz").write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args, **kwargs: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            server.shutdown()
            server.server_close()
            stopped.append(True)

    yield f"http://127.0.0.1:{server.server_address[1]}/snap.json.gz", hashlib.sha256(payload).hexdigest(), stop
    stop()


def test_fetch_over_http_is_checked_cached_and_reused(served, tmp_path):
    url, digest, stop = served
    target = tmp_path / "cache" / "snap.json.gz"
    path = lb.fetch_leaderboard(url, digest, path=target)
    assert path == target and hashlib.sha256(target.read_bytes()).hexdigest() == digest
    stop()  # cached: no network needed any more
    assert lb.fetch_leaderboard(url, digest, path=target) == target
    assert len(lb.load_leaderboard(target)) == 6
    assert [p.name for p in target.parent.iterdir()] == ["snap.json.gz"]


def test_fetch_wrong_checksum_keeps_nothing(served, tmp_path):
    url, digest, _ = served
    target = tmp_path / "cache" / "snap.json.gz"
    with pytest.raises(lb.LeaderboardError, match="sha256"):
        lb.fetch_leaderboard(url, "0" * 64, path=target)
    assert not target.parent.exists()  # nothing kept, not even the folder it made


def test_fetch_file_url_and_default_location(tmp_path, monkeypatch):
    source = tmp_path / "snap.json.gz"
    source.write_bytes(gzip.compress(json.dumps(_records()).encode()))
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "home"))
    path = lb.fetch_leaderboard(source.as_uri(), hashlib.sha256(source.read_bytes()).hexdigest())
    assert path == tmp_path / "home" / "leaderboard" / lb.LEADERBOARD_FILENAME and path.is_file()


def test_fetch_offline_says_where_to_put_a_copy(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = tmp_path / "cache" / "snap.json.gz"
    with pytest.raises(lb.LeaderboardError, match=r"could not download.*" + str(target).replace(".", r"\.")):
        lb.fetch_leaderboard(f"http://127.0.0.1:{port}/snap.json.gz", "0" * 64, path=target, timeout=5)
    assert not target.exists()


def test_environment_variable_names_the_snapshot(tmp_path, monkeypatch):
    local = tmp_path / "mine.json"
    local.write_text(json.dumps(_records()))
    monkeypatch.setenv(lb.LEADERBOARD_ENV, str(local))
    assert lb.resolve_leaderboard_path() == local


def test_pinned_constants_are_consistent():
    assert lb.LEADERBOARD_COMMIT in lb.LEADERBOARD_URL
    assert lb.LEADERBOARD_URL.startswith("https://raw.githubusercontent.com/brain-score/brain-score.web/")
    assert hashlib.sha256(SNAPSHOT.read_bytes()).hexdigest() == lb.LEADERBOARD_SHA256


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------
def test_cli_show(capsys):
    assert main(["leaderboard", "show", "--leaderboard", str(SNAPSHOT)]) == 0
    out = capsys.readouterr().out
    assert "MajajHong2015.IT-pls" in out and "1420 models, 141 benchmarks" in out
    assert main(["leaderboard", "show", "--leaderboard", str(SNAPSHOT), "--benchmark", "MajajHong2015.IT-pls",
                 "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "1335 models with a value" in out and "resnet50-barlow" in out and "1332 more" in out
    assert main(["leaderboard", "show", "--leaderboard", str(SNAPSHOT), "--benchmark", "Majaj"]) == 2
    assert "MajajHong2015.IT-pls" in capsys.readouterr().err


def test_cli_compare_ranks_a_local_model(tmp_path, capsys):
    db = ResultsDB(tmp_path / "results.sqlite")
    db.record("my-net", "MajajHong2015.IT-pls", 0.60, benchmark_version=4, weights_hash="w", error=0.003)
    db.record("my-net", "ImageNet-top1", 0.80, benchmark_version=1, weights_hash="w")
    db.record("my-net", "Arcaro2020.M1ML-pls", 0.30, benchmark_version=1, weights_hash="w")
    plot = tmp_path / "point.png"
    args = ["leaderboard", "compare", "--model", "my-net", "--results", str(db.path), "--leaderboard",
            str(SNAPSHOT), "--bootstrap", "50", "--json", "--plot", str(plot)]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    ranks = {entry["benchmark"]: entry for entry in report["ranks"]}
    assert ranks["MajajHong2015.IT-pls"]["rank"] == 1 and ranks["MajajHong2015.IT-pls"]["n"] == 1335
    assert ranks["MajajHong2015.IT-pls"]["percentile"] == 100.0
    assert ranks["Arcaro2020.M1ML-pls"]["rank"] is None
    point = report["tradeoff"]
    assert point["accuracy"] == pytest.approx(0.80) and point["score"] == pytest.approx(0.60)
    assert point["tradeoff"] == pytest.approx(0.60 - point["frontier"])
    assert point["tradeoff"] > 0 and point["n_leaderboard_models"] == 429
    assert plot.stat().st_size > 0
    assert point["interval"] == "prediction" and report["tradeoff_missing"] is None
    # the literal reading: frontier (+ the model's own error) only, narrower
    assert main(args[:-2] + ["--interval", "confidence"]) == 0
    literal = json.loads(capsys.readouterr().out)["tradeoff"]
    assert literal["interval"] == "confidence" and literal["tradeoff"] == pytest.approx(point["tradeoff"])
    assert literal["tradeoff_ci"][1] - literal["tradeoff_ci"][0] < point["tradeoff_ci"][1] - point["tradeoff_ci"][0]
    # text output names the interval; a benchmark that is not on the leaderboard says so and writes no plot
    assert main(args[:-3]) == 0
    assert "prediction interval" in capsys.readouterr().out
    local_only = tmp_path / "local.png"
    assert main(args[:-3] + ["--benchmark", "Arcaro2020.M1ML-pls", "--plot", str(local_only)]) == 0
    out = capsys.readouterr().out
    assert "no trade-off point: Arcaro2020.M1ML-pls is not on the leaderboard" in out and not local_only.exists()
    # a registry model without a recorded ImageNet-top1 is placed at the registry's top-1
    import harmonized_models
    db.record("efficientnet_lite0", "MajajHong2015.IT-pls", 0.52, benchmark_version=4, weights_hash="w")
    assert main(["leaderboard", "compare", "--model", "efficientnet_lite0", "--results", str(db.path),
                 "--leaderboard", str(SNAPSHOT), "--bootstrap", "50", "--json"]) == 0
    registry = json.loads(capsys.readouterr().out)["tradeoff"]
    assert registry["accuracy"] == pytest.approx(harmonized_models.get_entry("efficientnet_lite0").top1)
    assert registry["score"] == pytest.approx(0.52) and registry["n_leaderboard_models"] == 429
    assert main(["leaderboard", "compare", "--model", "my-nt", "--results", str(db.path), "--leaderboard",
                 str(SNAPSHOT)]) == 2
    assert "did you mean my-net" in capsys.readouterr().err
