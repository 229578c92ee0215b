"""Data home location and atomic writes: a failed write leaves nothing behind and keeps the old content."""
import os

import pytest

from benchmarks_it_maps.home import _umask, atomic_dir, atomic_file, data_home, sha256_file


def test_data_home_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "h"))
    assert data_home() == tmp_path / "h" and (tmp_path / "h").is_dir()


def test_atomic_file_success_and_failure(tmp_path):
    target = tmp_path / "a" / "x.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["x.txt"]


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "one").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "two").write_text("2")
            raise KeyboardInterrupt
    assert sorted(os.listdir(target)) == ["one"]
    assert target.stat().st_mode & 0o777 == 0o777 & ~_umask()
    with atomic_dir(target) as tmp:
        (tmp / "three").write_text("3")
    assert sorted(os.listdir(target)) == ["three"]
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_sha256_hand_value(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_partials_of_dead_writers_are_cleaned_up(tmp_path):
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    target = tmp_path / "f"
    (tmp_path / f".f.{dead_pid}.abc.partial").mkdir()          # left by a killed writer
    (tmp_path / f".f.{os.getpid()}.live.partial").write_text("")  # a live writer (this process): kept
    with atomic_file(target) as tmp:
        tmp.write_text("x")
    assert sorted(os.listdir(tmp_path)) == sorted(["f", f".f.{os.getpid()}.live.partial"])
