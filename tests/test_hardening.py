"""Hostile files and faults (issue 13): crafted inputs are refused in one line, before they cost memory or disk,
and never execute code; concurrent writers leave no junk. Everything here is real (h5py, zipfile, sqlite3, http)."""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from benchmarks_it_maps.cli import main
from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import conventions as cv
from harmonized_models.keras import KerasFormatError, read_h5
from test_data_import import write_tiny


def _messages(err: str) -> list[str]:
    """The message lines of a command's stderr: without tqdm bars (an interrupted bar ends without a newline) and
    without INFO log records (progress, not errors)."""
    text = err.replace("\r", "\n").replace("brainscore: error:", "\nbrainscore: error:")
    return [line for line in text.splitlines() if line.strip() and not re.search(r"\d+%\|", line)
            and not re.search(r"\bINFO\b", line)]


def _one_line_exit_2(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI in process: exit code 2, exactly one line on stderr (besides tqdm bars) containing every needle,
    no traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = _messages(captured.err)
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    _one_line_exit_2.out = captured.out  # what the command printed before failing
    return lines[0]


# --------------------------------------------------------------------------------------------- 2. memory bombs
def _bomb_h5(path: Path) -> Path:
    """A few KB Keras-style file whose one layer declares a 60000 x 60000 float32 kernel (13.4 GiB), never stored."""
    with h5py.File(path, "w") as f:
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([b"dense"], dtype="S")
        group = mw.create_group("dense")
        group.create_dataset("dense/kernel:0", shape=(60000, 60000), dtype=np.float32)
        group.create_dataset("dense/bias:0", data=np.zeros(3, np.float32))
        group.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"], dtype="S")
    return path


def test_h5_declaring_a_huge_dataset_is_refused_before_reading(tmp_path, capsys):
    bomb = _bomb_h5(tmp_path / "bomb.h5")
    assert bomb.stat().st_size < 20_000
    tracemalloc.start()
    try:
        with pytest.raises(KerasFormatError, match=r"dense/kernel' declares shape \(60000, 60000\)"):
            read_h5(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20  # refused with a few MB, not 13.4 GiB
    with h5py.File(tmp_path / "ok.h5", "w") as f:  # a real (stored) tensor over the total cap is refused too
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([b"dense"], dtype="S")
        mw.create_group("dense").create_dataset("dense/kernel:0", data=np.ones((512, 1024), np.float32))
    with pytest.raises(KerasFormatError, match="declare 2097152 bytes in all, more than the 1000000"):
        read_h5(tmp_path / "ok.h5", max_bytes=1_000_000)
    assert read_h5(tmp_path / "ok.h5").n_tensors == 1
    out = tmp_path / "out.safetensors"  # converting it: the architecture check comes first (no VGG16 structure)
    _one_line_exit_2(capsys, ["convert-keras", str(bomb), "--arch", "vgg16", "--out", str(out)], "bomb.h5",
                     "not a VGG16")
    assert not out.exists()


def _replace_dataset(source: Path, path: Path, name: str, shape: tuple[int, ...] | None = None,
                     data: np.ndarray | None = None) -> Path:
    """A copy of a real Keras file whose dataset ``name`` is replaced: declared only (``shape``, never stored) or
    stored (``data``); ``data=None, shape=None`` adds nothing and deletes it from the layer."""
    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as f:
        group = f[name.rsplit("/", 2)[0]]
        del f[name]
        if shape is not None:
            f.create_dataset(name, shape=shape, dtype=np.float32)
        elif data is not None:
            f.create_dataset(name, data=data)
        else:
            kept = [n for n in group.attrs["weight_names"]
                    if (n.decode() if isinstance(n, bytes) else str(n)) != name.split("/", 2)[2]]
            group.attrs["weight_names"] = np.array(kept, dtype="S")
    return path


def test_h5_declared_shapes_are_checked_against_the_architecture_before_reading(tmp_path, capsys):
    """A released-format file (real EfficientNetB0 layout) with one dataset under a real weight name replaced by a
    declared 60000 x 60000 one (13.4 GiB, never stored), by a stored wrong-shaped one, by nothing, or with an unknown
    dataset added: each is refused from the declared shapes alone (peak traced memory far below the 22 MB file, so
    no tensor was read) naming the file, the dataset, declared and expected shapes; nothing is written."""
    from keras_fixtures import fixture_dir
    from harmonized_models.keras.convert import check_declared_shapes, convert_keras
    source = fixture_dir(["efficientnet_b0_qubvel"]) / "efficientnet_b0_qubvel.h5"
    assert source.stat().st_size > 20 << 20
    check_declared_shapes(read_h5(source, declared_only=True), "efficientnet_b0")  # the real file passes (and
    # timm's imports and registries are loaded before memory is traced)
    kernel = "model_weights/stem_conv/stem_conv/kernel:0"  # Keras (3, 3, 3, 32) -> torch conv_stem.weight
    cases = {
        "huge": (_replace_dataset(source, tmp_path / "huge.h5", kernel, shape=(60000, 60000)),
                 ["dataset 'stem_conv/kernel' declares shape (60000, 60000)", "expects (3, 3, 3, 32)"]),
        "wrong": (_replace_dataset(source, tmp_path / "wrong.h5", kernel, data=np.ones((3, 3, 3, 33), np.float32)),
                  ["dataset 'stem_conv/kernel' declares shape (3, 3, 3, 33)", "expects (3, 3, 3, 32)"]),
        "missing": (_replace_dataset(source, tmp_path / "missing.h5", kernel),
                    ["layer 'stem_conv' has no weight matching 'kernel' with shape (3, 3, 3, 32)"]),
    }
    unknown = tmp_path / "unknown.h5"
    shutil.copyfile(source, unknown)
    with h5py.File(unknown, "r+") as f:
        group = f["model_weights/stem_bn"]  # listed in weight_names (an unlisted dataset is never looked at)
        group.create_dataset("stem_bn/extra:0", shape=(60000, 60000), dtype=np.float32)
        group.attrs["weight_names"] = np.array([*group.attrs["weight_names"], "stem_bn/extra:0"], dtype="S")
    cases["unknown"] = (unknown, ["1 dataset(s) of the file do not map", "stem_bn/extra (60000, 60000)"])
    for case, (path, needles) in cases.items():
        assert path.stat().st_size < source.stat().st_size + 100_000
        out = tmp_path / f"{case}.safetensors"
        tracemalloc.start()
        try:
            with pytest.raises(KerasFormatError) as refused:
                convert_keras(path, "efficientnet_b0", out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert str(refused.value).startswith(f"{path}: ") and all(n in str(refused.value) for n in needles), \
            (case, str(refused.value))
        assert peak < 8 << 20, (case, peak)  # reading the file's tensors alone would trace > 20 MB
        assert not out.exists()
        if case in ("huge", "unknown"):  # the command: one line, exit 2
            _one_line_exit_2(capsys, ["convert-keras", str(path), "--arch", "efficientnet_b0", "--out", str(out)],
                             str(path), *needles)
        assert not out.exists() and sorted(p.name for p in tmp_path.glob(".*")) == []


def _zip_of(folder: Path, zipped: Path, extra: dict[str, int] | None = None) -> Path:
    """Zip an archive folder under Arcaro2020/ plus ``extra`` members (name -> bytes of zeros, deflated)."""
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_STORED) as z:
        for file in sorted(folder.rglob("*")):
            name = (Path("Arcaro2020") / file.relative_to(folder)).as_posix()
            if name not in (extra or {}):
                z.write(file, name)
        for name, size in (extra or {}).items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w") as member:
                block = bytes(1 << 20)
                for _ in range(size >> 20):
                    member.write(block)
    return zipped


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("hardening-tiny") / "Arcaro2020")


@pytest.mark.parametrize("member", [f"Arcaro2020/{cv.M1.image_path}/bomb.png", f"Arcaro2020/{cv.M2.mat_path}"])
def test_zip_bomb_is_refused_before_extraction(tiny_archive, tmp_path, monkeypatch, capsys, member):
    """A ~0.3 MB zip member that unpacks to 300 MB (an image, or a .mat replacing the real one) is refused from its
    declared sizes: nothing is written to the temp dir or the data home."""
    zipped = _zip_of(tiny_archive, tmp_path / "Arcaro2020.zip", {member: 300 << 20})
    assert zipped.stat().st_size < 3 << 20
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    home = tmp_path / "home"
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(home))
    _one_line_exit_2(capsys, ["data", "import", "arcaro2020", str(zipped)], member, "314572800 bytes",
                     "zip bomb")
    assert list(scratch.iterdir()) == [] and not list(home.rglob("*"))


def test_zip_members_outside_the_layout_are_not_extracted_and_bad_crc_is_one_line(tiny_archive, tmp_path,
                                                                                   monkeypatch, capsys):
    zipped = _zip_of(tiny_archive, tmp_path / "Arcaro2020.zip", {"Arcaro2020/junk.bin": 300 << 20})
    seen = []
    original = data._find_root
    monkeypatch.setattr(data, "_find_root", lambda folder, label: seen.append(sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())) or original(folder, label))
    scratch = tmp_path / "tmp"
    (scratch / "arcaro2020-4194303-killed").mkdir(parents=True)  # left by an import killed with SIGKILL
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    home = tmp_path / "home"
    summary = data.import_arcaro2020(zipped, home=home)
    assert summary["status"] == "imported" and not any("junk" in name for name in seen[0])
    assert list(scratch.iterdir()) == []  # the killed import's folder was removed, ours cleaned up
    # a member whose bytes were damaged after zipping (stored, so its bytes are findable): CRC mismatch, one line
    png = (tiny_archive / cv.M2.image_path / "img_a.png").read_bytes()
    raw = bytearray(_zip_of(tiny_archive, tmp_path / "crc.zip").read_bytes())
    at = raw.find(png) + len(png) // 2
    raw[at] ^= 0xFF
    (tmp_path / "crc.zip").write_bytes(bytes(raw))
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "home2"))
    _one_line_exit_2(capsys, ["data", "import", "arcaro2020", str(tmp_path / "crc.zip")], "img_a.png",
                     "corrupt", "download the archive again")


# --------------------------------------------------------------------------------------------- 4. atomic_dir race
_WRITER = """
import sys
from pathlib import Path
from benchmarks_it_maps.home import atomic_dir
target, writer, swaps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(swaps):
    with atomic_dir(target) as tmp:
        for k in range(3):
            (tmp / f"part{k}.txt").write_text(f"{writer}-{i}")
        (tmp / "complete").write_text(f"{writer}-{i}")
"""
_READER = """
import sys
from pathlib import Path
target, stop = Path(sys.argv[1]), Path(sys.argv[2])
missing = reads = 0
while not stop.exists():
    reads += 1
    if not (target / "complete").is_file():
        missing += 1
print(missing, reads)
"""


def test_concurrent_atomic_dir_writers_leave_no_junk_and_no_gap(tmp_path):
    """4 processes x 60 swaps of one folder while a reader watches it: no writer fails, the folder never lacks its
    content, and nothing but the folder remains (no .NAME.*.old / .partial)."""
    import os
    import subprocess
    import sys
    target, stop = tmp_path / "data" / "Arcaro2020", tmp_path / "stop"
    target.parent.mkdir()
    (target.parent / ".Arcaro2020.abc.old").mkdir()  # a leftover of an older version: cleaned at the next swap
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", _WRITER, str(target), "w", "1"], check=True, env=env)
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(target), str(stop)], stdout=subprocess.PIPE,
                              env=env, text=True)
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(target), f"w{n}", "60"], env=env,
                                stderr=subprocess.PIPE, text=True) for n in range(4)]
    errors = [(w.wait(timeout=600), w.stderr.read()) for w in writers]
    stop.touch()
    missing, reads = map(int, reader.communicate(timeout=60)[0].split())
    assert all(code == 0 for code, _ in errors), errors
    assert missing == 0 and reads > 0
    assert sorted(p.name for p in target.parent.iterdir()) == ["Arcaro2020"]
    assert len({(target / f"part{k}.txt").read_text() for k in range(3)} | {(target / "complete").read_text()}) == 1


# ------------------------------------------------------------------------- 6. one line, exit 2, for every bad input
def _checkpoint_cases(root: Path) -> dict[str, tuple[Path, str]]:
    """Damaged copies of a tiny harmonizer checkpoint: folder -> (folder, text the one-line error must contain)."""
    import pickle

    import torch
    from safetensors.torch import load_file, save_file
    from tiny_checkpoints import make_tiny_model
    good = Path(make_tiny_model(root / "good", seed=3).split(":", 1)[1])
    cases = {}

    def copy(name: str) -> Path:
        folder = root / name
        shutil.copytree(good, folder)
        return folder

    state = load_file(str(good / "model.safetensors"))
    folder = copy("nan")
    first = next(k for k, v in state.items() if v.is_floating_point())
    save_file({**state, first: torch.full_like(state[first], float("nan"))}, str(folder / "model.safetensors"))
    cases["nan"] = (folder, "hold NaN or Inf")
    folder = copy("truncated")
    data_bytes = (good / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data_bytes[: len(data_bytes) // 2])
    cases["truncated"] = (folder, "not a readable safetensors file")
    folder = copy("empty")
    (folder / "model.safetensors").write_bytes(b"")
    cases["empty"] = (folder, "not a readable safetensors file")
    folder = copy("pickle")
    (folder / "model.safetensors").write_bytes(pickle.dumps(state))
    cases["pickle"] = (folder, "not a readable safetensors file")
    for name, change, needle in (("arch", {"architecture": "no_such_net"}, "do not build a timm model"),
                                 ("kwargs", {"model_kwargs": {"no_such_kwarg": 1}}, "do not build a timm model"),
                                 ("classes", {"num_classes": 7}, "does not match test_resnet")):
        folder = copy(name)
        meta = json.loads((folder / "model.json").read_text())
        (folder / "model.json").write_text(json.dumps({**meta, **change}))
        cases[name] = (folder, needle)
    return cases


def _db_cases(root: Path) -> dict[str, tuple[Path, str]]:
    import sqlite3
    from benchmarks_it_maps.runs.results import ResultsDB
    cases = {}
    root.mkdir()
    garbage = root / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    cases["garbage"] = (garbage, "not a results database")
    real = root / "real.sqlite"
    ResultsDB(real).record("m", "b", 0.5, benchmark_version=1, weights_hash="h")
    truncated = root / "truncated.sqlite"
    truncated.write_bytes(real.read_bytes()[:1500])
    cases["truncated"] = (truncated, "not a results database")
    other = root / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE scores (x INTEGER)")
    cases["schema"] = (other, "has another schema")
    folder = root / "folder.sqlite"
    folder.mkdir()
    cases["folder"] = (folder, "is a folder, not a results database")
    return cases


def test_every_cli_error_path_is_one_line_exit_2(tmp_path, capsys, monkeypatch, sim_small):
    """Damaged checkpoints, results databases, data homes and output paths: exit code 2, one line naming the file
    (and what to do), no traceback."""
    for name, (folder, needle) in _checkpoint_cases(tmp_path / "ckpt").items():
        _one_line_exit_2(capsys, ["score", "--model", f"harmonized:{folder}", "--benchmark", "Arcaro2020sim.M1ML-pls", "--no-record",
                                  "--device", "cpu"], str(folder.name), needle)
    for name, (path, needle) in _db_cases(tmp_path / "db").items():
        for argv in (["results", "list", "--results", str(path)],
                     ["results", "show", "--model", "m", "--results", str(path)]):
            _one_line_exit_2(capsys, argv, str(path), needle)
    not_a_folder = tmp_path / "home-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(not_a_folder))
    _one_line_exit_2(capsys, ["data", "summary"], str(not_a_folder), "point BRAINSCORE_ITMAPS_HOME at a folder")
    _one_line_exit_2(capsys, ["results", "list"], str(not_a_folder), "not a folder")
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(sim_small["home"]))
    _one_line_exit_2(capsys, ["data", "simulate", "--out", str(not_a_folder / "twin.zip"), "--images", "2",
                              "--grid", "3"], str(not_a_folder), "is a file, not a folder")
    _one_line_exit_2(capsys, ["results", "export", "--csv", str(not_a_folder / "x.csv"), "--results",
                              str(tmp_path / "db" / "real.sqlite")], str(not_a_folder), "is a file, not a folder")


# ---------------------------------------------------- 7. a finished score survives a database that cannot take it
_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


def test_locked_database_names_its_holder_and_a_finished_score_is_kept(tmp_path, capsys, monkeypatch, sim_small):
    """A results DB another process holds: the wait is announced with the holder's pid, times out (here after
    1 s) in one line; a score computed meanwhile is printed and kept in <data home>/unrecorded/ before exit 2."""
    import subprocess
    import sys
    from benchmarks_it_maps.runs.results import ResultsDB, ResultsDBError
    from tiny_checkpoints import make_tiny_model
    path = tmp_path / "results.sqlite"
    ResultsDB(path).record("m", "b", 0.5, benchmark_version=1, weights_hash="h")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv("BRAINSCORE_ITMAPS_DB_TIMEOUT", "1")
        with pytest.raises(ResultsDBError, match=rf"locked by pid {holder.pid} .* for more than 1 s"):
            ResultsDB(path).rows()
        model = make_tiny_model(tmp_path / "model", seed=4)
        home = tmp_path / "home"
        shutil.copytree(sim_small["home"], home)
        monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(home))
        line = _one_line_exit_2(capsys, ["score", "--model", model, "--benchmark", "Arcaro2020sim.M1ML-pls",
                                         "--results", str(path), "--device", "cpu", "--json"],
                                "scored", "but it was not recorded", f"locked by pid {holder.pid}", "kept in")
    finally:
        holder.communicate("", timeout=30)
    (side,) = (home / "unrecorded").iterdir()
    kept = json.loads(side.read_text())
    assert str(side) in line and kept["model"] == model and kept["benchmark"] == "Arcaro2020sim.M1ML-pls"
    assert kept["attrs"]["ceiling"] is not None and kept["weights_hash"]
    assert json.loads(_one_line_exit_2.out)["score"] == kept["score"]  # printed before the error
    capsys.readouterr()
    assert main(["score", "--model", model, "--benchmark", "Arcaro2020sim.M1ML-pls", "--results", str(path),
                 "--device", "cpu", "--json"]) == 0  # once the lock is gone, the same score is recorded
    recorded = json.loads(capsys.readouterr().out)
    assert recorded["score"] == pytest.approx(kept["score"], abs=0) and len(ResultsDB(path).rows()) == 2


# ------------------------------------------------------------------------------------------------- 5. bad data
def _scaled(factor: float | None, offset: float = 0.0):
    def mutate(monkey, variables, image_dir):
        rf = variables[cv.KEY_RESPONSES]
        variables[cv.KEY_RESPONSES] = rf * 0 if factor is None else rf * factor + offset
    return mutate


def test_values_beyond_float32_all_zero_and_negative_rates(tmp_path, caplog):
    """Finite float64 values that would become inf in float32 and all-zero data are refused (one line, nothing
    written); negative rates import with a clear warning."""
    home = tmp_path / "home"
    home.mkdir()
    for name, mutate, expected in (("huge", _scaled(1e36), "stored as float32"),
                                   ("zero", _scaled(None), "all values 0: no recorded signal")):
        archive = write_tiny(tmp_path / name, mutate=mutate)
        with pytest.raises(data.ArcaroDataError) as info:
            data.import_arcaro2020(archive, home=home)
        message = str(info.value)
        assert "\n" not in message and "george_060118_data.mat" in message and expected in message, message
        assert list(home.iterdir()) == []
    archive = write_tiny(tmp_path / "negative", mutate=_scaled(1.0, offset=-50.0))
    summary = data.import_arcaro2020(archive, home=home)
    assert summary["status"] == "imported"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "negative values" in
                r.getMessage()]
    assert warnings and "baseline-subtracted" in warnings[0]
    assembly = data.load_assembly("Arcaro2020.M2ML", home=home)
    assert np.isfinite(assembly.values).all()


def test_images_changed_in_the_data_home_are_detected_at_load(tmp_path, sim_small, capsys, monkeypatch):
    """Two PNGs swapped in the data home (same sizes as files can be), a missing image and a corrupt .nc: each is
    one line naming the file, before any score is computed."""
    home = tmp_path / "home"
    shutil.copytree(sim_small["home"], home)
    folder = home / "Arcaro2020sim"
    assert len(data.load_stimulus_set("Arcaro2020sim", home=home)) == 8  # intact: loads (and is remembered)
    images = sorted((folder / cv.M1.image_path).iterdir())
    a, b = images[0], images[1]
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    with pytest.raises(data.ArcaroDataError, match=rf"{a.name}: field 'image_sha256'.*a changed file"):
        data.load_stimulus_set("Arcaro2020sim", home=home)
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(home))
    _one_line_exit_2(capsys, ["data", "plot", "Arcaro2020sim.M1ML", "--out", str(tmp_path / "m.png")], a.name,
                     "import the archive again with --force")
    a.write_bytes(a_bytes)
    b.unlink()
    with pytest.raises(data.ArcaroDataError, match=rf"{b.name}: field 'image'.*missing"):
        data.load_stimulus_set("Arcaro2020sim", home=home)
    b.write_bytes(b_bytes)
    nc = next(folder.glob("*M2ML*.nc"))
    nc.write_bytes(nc.read_bytes()[:200])
    with pytest.raises(data.ArcaroDataError, match=rf"{nc.name}: field 'file'.*unreadable"):
        data.load_assembly("Arcaro2020sim.M2ML", home=home)
    assert data.load_assembly("Arcaro2020sim.M1ML", home=home).sizes["neuroid"] > 0  # the intact site still loads


# ------------------------------------------------------------------------------------------------ 8. smaller ones
def test_one_row_per_checkpoint_spelling_no_probe_leak_constant_model_flagged(tmp_path, sim_small, monkeypatch,
                                                                            capsys, caplog):
    """harmonized:ckpt/a, ./ckpt/a and ckpt/../ckpt/a are one model (one row); scoring leaves no
    brainscore-resolution-probe-* folder behind; an all-zero-weights model's 0 +- 0 carries a note; an empty
    harmonized: path is refused; checkpoint files follow the umask."""
    import os
    import torch
    from safetensors.torch import load_file, save_file
    from benchmarks_it_maps.runs.results import ResultsDB
    from tiny_checkpoints import make_tiny_model
    monkeypatch.chdir(tmp_path)
    old_mask = os.umask(0o002)
    try:
        make_tiny_model(tmp_path / "ckpt" / "a", seed=7)
    finally:
        os.umask(old_mask)
    assert (tmp_path / "ckpt" / "a" / "model.safetensors").stat().st_mode & 0o777 == 0o664
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    results = tmp_path / "results.sqlite"
    scores = []
    for spelling in ("harmonized:ckpt/a", "harmonized:./ckpt/a", "harmonized:ckpt/../ckpt/a"):
        capsys.readouterr()
        assert main(["score", "--model", spelling, "--benchmark", "Arcaro2020sim.M1ML-pls", "--results",
                     str(results), "--device", "cpu", "--json"]) == 0
        scores.append(json.loads(capsys.readouterr().out)["score"])
        assert not [p.name for p in scratch.iterdir() if p.name.startswith("brainscore-resolution-probe-")]
    rows = ResultsDB(results).rows()
    assert len(set(scores)) == 1 and [r["model"] for r in rows] == [f"harmonized:{tmp_path / 'ckpt' / 'a'}"]
    _one_line_exit_2(capsys, ["score", "--model", "harmonized:", "--benchmark", "Arcaro2020sim.M1ML-pls",
                              "--no-record"], "give the checkpoint folder after 'harmonized:'")
    zero = tmp_path / "ckpt" / "zero"
    shutil.copytree(tmp_path / "ckpt" / "a", zero)
    state = load_file(str(zero / "model.safetensors"))
    save_file({k: torch.zeros_like(v) for k, v in state.items()}, str(zero / "model.safetensors"))
    caplog.clear()
    assert main(["score", "--model", f"harmonized:{zero}", "--benchmark", "Arcaro2020sim.M1ML-pls", "--no-record",
                 "--device", "cpu", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["score"] == 0 and "do not vary (a constant model?)" in printed["note"]


def test_empty_shard_and_non_utf8_clickme_table_are_one_line(tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "clickme_train_0.tfrecords").write_bytes(b"")
    folder = tmp_path / "folder"
    (folder / "images").mkdir(parents=True)
    (folder / "labels.csv").write_bytes("image,label\ncaf\xe9.png,1\n".encode("latin-1"))
    for clickme, needle in ((shards, "an empty shard"), (folder, "not UTF-8 text")):
        _one_line_exit_2(capsys, ["harmonize", "evaluate", "--model", "test_resnet", "--no-pretrained",
                                  "--clickme", str(clickme), "--device", "cpu", "--no-progress"], needle)


def test_ctrl_c_is_one_line_exit_2_and_leaves_nothing_half_written(tmp_path):
    """SIGINT while a command waits for a locked results database (a wait in Python, so the signal lands at once):
    exit code 2, one line besides the announced wait, no traceback, the database unchanged."""
    import os
    import signal
    import subprocess
    import sys
    from benchmarks_it_maps.runs.results import ResultsDB
    path = tmp_path / "results.sqlite"
    ResultsDB(path).record("m", "b", 0.5, benchmark_version=1, weights_hash="h")
    before = path.read_bytes()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), BRAINSCORE_ITMAPS_HOME=str(tmp_path / "home"),
               PYTHONWARNINGS="ignore", BRAINSCORE_ITMAPS_DB_TIMEOUT="300")  # (third-party import warnings)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        process = subprocess.Popen([sys.executable, "-m", "benchmarks_it_maps", "results", "list", "--results",
                                    str(path)], stderr=subprocess.PIPE, env=env)
        seen = b""
        while b"is locked by" not in seen:  # the command announced its wait
            chunk = process.stderr.read1(4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait(timeout=120) == 2
    finally:
        holder.communicate("", timeout=30)
    text = (seen + rest).decode(errors="replace")
    lines = [line for line in _messages(text) if "is locked by" not in line]
    assert "Traceback" not in text and len(lines) == 1 and "interrupted (Ctrl-C)" in lines[0], text[-2000:]
    assert f"pid {holder.pid}" in text and path.read_bytes() == before


def test_convert_keras_refuses_nan_and_bytes_weights_and_outputs_follow_the_umask(tmp_path, capsys):
    """NaN weights and a bytes-typed bias are one-line refusals with nothing written; a good conversion and a new
    results database get the umask's permissions (0664 under umask 002), not 0600 / 0644."""
    import os
    from keras_fixtures import fixture_dir
    from benchmarks_it_maps.runs.results import ResultsDB
    source = fixture_dir(["efficientnet_b0_qubvel"]) / "efficientnet_b0_qubvel.h5"
    names = []
    with h5py.File(source, "r") as f:
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) and name.endswith(
            "bias:0") and name.startswith("model_weights/") else None)
    bias = names[0]
    for case, needle in (("nan", "hold NaN or Inf"), ("bytes", "values, not numbers")):
        broken = tmp_path / f"{case}.h5"
        shutil.copyfile(source, broken)
        with h5py.File(broken, "r+") as f:
            if case == "nan":
                f[bias][...] = np.nan
            else:
                n = f[bias].shape[0]
                del f[bias]
                f.create_dataset(bias, data=np.array([b"0.5"] * n, dtype="S3"))
        out = tmp_path / f"{case}.safetensors"
        _one_line_exit_2(capsys, ["convert-keras", str(broken), "--arch", "efficientnet_b0", "--out", str(out)],
                         f"{case}.h5", needle)
        assert not out.exists()
    old_mask = os.umask(0o002)
    try:
        out = tmp_path / "good.safetensors"
        assert main(["convert-keras", str(source), "--arch", "efficientnet_b0", "--out", str(out)]) == 0
        ResultsDB(tmp_path / "results.sqlite").record("m", "b", 0.5, benchmark_version=1, weights_hash="h")
    finally:
        os.umask(old_mask)
    assert out.stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "results.sqlite").stat().st_mode & 0o777 == 0o664


# ------------------------------------------------------------------------------------------ 8. NaN / Inf features
def _nan_model(folder: Path) -> str:
    """A real tiny network (timm test_resnet, IT layer layer2) with finite weights whose layer2 output is NaN: one
    BatchNorm of layer2 has a negative running variance (the square root of a negative number). The checkpoint
    loader accepts it: every tensor is finite."""
    import timm
    import torch
    from harmonized_models.harmonizer.checkpoint import save_final
    torch.manual_seed(3)
    network = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    with torch.no_grad():
        network.layer2[0].bn1.running_var.fill_(-1.0)
    save_final(network, folder, architecture="test_resnet", num_classes=10, image_size=64,
               mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), it_layer="layer2")
    return f"harmonized:{folder}"


def test_nan_features_are_a_dedicated_error_one_line_and_never_retried(tmp_path, sim_small, capsys):
    """A network that outputs NaN at its IT layer: scoring raises NonFiniteFeaturesError naming the model, the layer
    and how many values; `brainscore score` prints one line (exit 2); a local sweep records one failed attempt and
    does not retry it (max_retries=2 would allow three)."""
    from benchmarks_it_maps.benchmarks.arcaro2020 import NonFiniteFeaturesError
    from benchmarks_it_maps.runs import scoring, sweep
    from benchmarks_it_maps.runs.results import ResultsDB
    bench = "Arcaro2020sim.M1ML-pls"
    model = _nan_model(tmp_path / "nan-model")
    for protocol in ("pls", "shift_pls"):  # the committed layer's outputs read directly; look_at's NeuroidAssembly
        with pytest.raises(NonFiniteFeaturesError, match=r"model 'harmonized:.*nan-model': its IT response \(layer "
                                                         r"layer2\) holds [1-9]\d* NaN and 0 Inf of \d+ values"):
            scoring.score(model, f"Arcaro2020sim.M1ML-{protocol}", device="cpu", record=False)
    results = tmp_path / "results.sqlite"
    _one_line_exit_2(capsys, ["score", "--model", model, "--benchmark", bench, "--results", str(results),
                              "--device", "cpu"], "nan-model", "layer layer2", "NaN", "the network is broken")
    jobs = sweep.plan([model], [bench], results)
    coordinator = sweep.Coordinator(sweep.LocalExecutor(gpus=0), results_path=results, workdir=tmp_path / "w",
                                    max_retries=2, poll_s=0.2, progress=False)
    summary = coordinator.run(jobs)
    assert summary.counts()["failed"] == 1 and jobs[0].attempts == 1
    (failure,) = coordinator.attempts.failures(model)
    assert failure["status"] == "failed" and failure["error"].startswith("NonFiniteFeaturesError: model ")
    assert ResultsDB(results).rows() == []


# ------------------------------------------------------------------------------------------ 6. Ctrl-C never lost
class _InterruptedFinaliser:
    """Gets a real SIGINT while CPython runs its ``__del__``: CPython then drops the KeyboardInterrupt (prints
    "Exception ignored in ...") and the caller goes on as if nothing happened, which is how a Ctrl-C can vanish
    inside any library's finaliser or garbage-collector callback."""

    def __del__(self) -> None:
        import os
        import signal
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # bytecode in __del__: the handler runs here, not after it
            pass


def test_a_ctrl_c_dropped_inside_a_finaliser_still_exits_2(tmp_path, capsys, monkeypatch):
    """A real SIGINT lands in a ``__del__`` (CPython swallows the KeyboardInterrupt there) while `brainscore results
    list` runs: the command still ends with the interrupted line and exit code 2, not 0, and the process's SIGINT
    handler is the default one again afterwards."""
    import signal
    import sys
    from benchmarks_it_maps.runs.results import ResultsDB
    path = tmp_path / "results.sqlite"
    ResultsDB(path).record("m", "b", 0.5, benchmark_version=1, weights_hash="h")
    rows = ResultsDB.rows

    def rows_after_a_finaliser(self, *args, **kwargs):
        _InterruptedFinaliser()  # dropped at once: its __del__ runs (and gets the signal) here
        return rows(self, *args, **kwargs)

    monkeypatch.setattr(ResultsDB, "rows", rows_after_a_finaliser)
    dropped = []  # what CPython reports instead of raising (sys.unraisablehook)
    monkeypatch.setattr(sys, "unraisablehook", lambda report: dropped.append(report.exc_type))
    _one_line_exit_2(capsys, ["results", "list", "--results", str(path)], "interrupted (Ctrl-C)")
    assert dropped == [KeyboardInterrupt]  # the signal did land in the finaliser, and was swallowed there
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


_LATE_INTERRUPT = """
import atexit, os, signal, sys
from benchmarks_it_maps.cli import main
def ctrl_c_during_shutdown():  # the signal lands while the interpreter shuts down, after the command finished
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
        pass
atexit.register(ctrl_c_during_shutdown)
sys.argv = ["brainscore", "list", "benchmarks"]
sys.exit(main())
"""


def test_a_ctrl_c_after_the_command_finished_keeps_its_exit_code_quietly(tmp_path):
    """What `brainscore data simulate` once showed (exit code 0 after Ctrl-C): the signal came after the command had
    written and printed everything, while the interpreter shut down; CPython then prints a KeyboardInterrupt
    traceback ("Exception ignored in atexit callback") and keeps exit code 0. The program now exits at once with the
    command's own code and prints nothing more."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PYTHONWARNINGS="ignore",
               BRAINSCORE_ITMAPS_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-c", _LATE_INTERRUPT], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0 and "Arcaro2020sim.M1ML-pls" in done.stdout, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr[-2000:]
