"""Import of hand-made archives whose maps are known by construction: orientation, channel split, time windows,
Windows basenames, MATLAB v7.3, atomicity and every kind of bad input."""
import json
import os
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from benchmarks_it_maps.data import conventions as cv
from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import matfile
from benchmarks_it_maps.data.matfile import write_mat

T = 40  # ms recorded in the tiny archives
N_IMAGES = 3


def corner_image(bright: bool, size: int = 32) -> np.ndarray:
    """Dark image; if ``bright``, its top-left quarter is white."""
    image = np.full((size, size, 3), 20, dtype=np.uint8)
    if bright:
        image[: size // 4, : size // 4] = 255
    return image


def brightness_at(image: np.ndarray, grid_size: int) -> np.ndarray:
    """Image brightness [G, G] at the grid points (row k, col l) = image point (k/(G-1), l/(G-1))."""
    size = image.shape[0]
    idx = np.round(np.arange(grid_size) / (grid_size - 1) * (size - 1)).astype(int)
    return image[..., 0][np.ix_(idx, idx)] / 255.0


def default_responses(monkey: cv.Monkey, images: list[np.ndarray]) -> np.ndarray:
    """imageRF in MATLAB layout under the documented conventions: the response at imageRF[a, b, t, k, n] is
    100 * brightness of image n at image point (G-1-a, G-1-b) (conventions item 4) + channel k (item 2) + t/1000."""
    g, k = monkey.grid_size, monkey.n_channels
    rf = np.zeros((g, g, T, k, len(images)), dtype=np.float64)
    for n, image in enumerate(images):
        image_map = brightness_at(image, g)                    # rows/cols in image coordinates
        rf[:, :, :, :, n] = 100 * image_map[::-1, ::-1, None, None]  # flipped on both spatial axes
    rf += np.arange(k)[None, None, None, :, None]
    rf += np.arange(T)[None, None, :, None, None] / 1000
    return rf


def write_tiny(root: Path, *, version: str = "5", responses=None, mutate=None) -> Path:
    """A real-layout archive folder (17x17 / 9x9 grids, 63 / 32 channels, 3 images, 40 ms) under ``root``.

    Image 0 of each monkey has a bright top-left corner. UniqueNames are Windows paths in an order that differs from
    the sorted file names. ``mutate(monkey, variables, image_dir)`` may damage things before writing.
    """
    for monkey in cv.MONKEYS.values():
        image_dir = root / monkey.image_path
        image_dir.mkdir(parents=True, exist_ok=True)
        names = [f"img_{c}.png" for c in "cab"]  # image axis order c, a, b: not the sorted order
        images = [corner_image(n == 0) for n in range(N_IMAGES)]
        for name, image in zip(names, images):
            Image.fromarray(image).save(image_dir / name)
        rf = (responses or default_responses)(monkey, images)
        variables = {cv.KEY_RESPONSES: rf,
                     cv.KEY_NAMES: [f"C:\\Users\\lab\\Stimuli {monkey.key}\\{monkey.image_folder}\\{name}"
                                    for name in names]}
        if mutate is not None:
            mutate(monkey, variables, image_dir)
        write_mat(root / monkey.mat_path, variables, version)
    return root


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny archive imported into its own home; returns (archive folder, home)."""
    base = tmp_path_factory.mktemp("tiny")
    archive = write_tiny(base / "Arcaro2020")
    data.import_arcaro2020(archive, home=base / "home")
    return archive, base / "home"


def test_windows_basenames():
    assert data.windows_basename("C:\\Users\\x\\natural_test\\img01.jpg") == "img01.jpg"
    assert data.windows_basename("D:/stim/red_naturalface/face 2.png") == "face 2.png"
    assert data.windows_basename("  img.png ") == "img.png"
    assert data.windows_basename("\\\\server\\share\\dir\\a.bmp") == "a.bmp"


def test_bright_corner_lands_at_top_left(tiny):
    _, home = tiny
    for identifier in ("Arcaro2020.M1PL", "Arcaro2020.M2ML"):
        assembly = data.load_assembly(identifier, home=home)
        first = assembly.attrs["stimulus_set"].sort_values("image_index").iloc[0]
        assert first["image_file_name"] == "img_c.png"  # image 0 of UniqueNames, the bright one
        sel = assembly.sel(neuroid=assembly["channel"].values == 0).isel(time_bin=0)
        sel = sel[(sel["stimulus_id"] == first["stimulus_id"]).values]
        peak = int(np.argmax(sel.values.ravel()))
        assert sel["image_u"].values[peak] == 0 and sel["image_v"].values[peak] == 0
        assert sel["position_x_deg"].values[peak] == -8 and sel["position_y_deg"].values[peak] == 8
        maps = data.response_maps(assembly, window=(0, 10))
        bright = maps.sel(stimulus_id=first["stimulus_id"], channel=0).values
        g = assembly.attrs["grid_size"]
        expected = 100 * brightness_at(corner_image(True), g) + 0.0045
        np.testing.assert_allclose(bright, expected, atol=1e-4)
        assert bright[0, 0] == bright.max() and bright[-1, -1] == bright.min()


def test_channel_split(tiny):
    _, home = tiny
    expected = {"M1PL": (range(0, 32), "PL", "M1"), "M1ML": (range(32, 63), "ML", "M1"),
                "M2ML": (range(0, 32), "ML", "M2")}
    for site, (channels, subregion, monkey) in expected.items():
        assembly = data.load_assembly(f"Arcaro2020.{site}", home=home)
        assert list(assembly["channel"].values) == list(channels)
        assert set(assembly["subregion"].values) == {subregion} and set(assembly["monkey"].values) == {monkey}
        assert set(assembly["site"].values) == {site}
        # the response of a dark image is its channel index (+ time): the neuroid really holds that channel
        maps = data.response_maps(assembly, window=(0, 10))
        dark = maps.isel(stimulus_id=1).values  # [row, col, channel]
        np.testing.assert_allclose(dark, np.broadcast_to(np.asarray(channels) + 20 / 255 * 100 + 0.0045,
                                                         dark.shape), atol=1e-3)


def test_time_window_averaging(tiny):
    _, home = tiny
    assembly = data.load_assembly("Arcaro2020.M2ML", home=home)
    np.testing.assert_array_equal(assembly["time_bin_start"].values, [0, 10, 20, 30])
    np.testing.assert_array_equal(assembly["time_bin_end"].values, [10, 20, 30, 40])
    base = data.response_maps(assembly, window=(0, 10)).values - 0.0045  # time-free part
    for window, mean_t in [((10, 30), 19.5), ((15, 35), 24.5), ((0, 40), 19.5), ((30, 40), 34.5)]:
        maps = data.response_maps(assembly, window=window)
        assert maps.attrs["window"] == window
        np.testing.assert_allclose(maps.values, base + mean_t / 1000, atol=1e-4)
    with pytest.raises(ValueError, match="no complete 10-ms bin"):
        data.response_maps(assembly, window=(100, 250))  # default window lies outside the 40 recorded ms
    with pytest.raises(ValueError, match="no complete 10-ms bin"):
        data.response_maps(assembly, window=(12, 18))


def test_basename_matching_follows_uniquenames_order(tiny):
    archive, home = tiny
    stimulus_set = data.load_stimulus_set("Arcaro2020", home=home)
    m1 = stimulus_set[stimulus_set["monkey"] == "M1"].sort_values("image_index")
    assert list(m1["image_file_name"]) == ["img_c.png", "img_a.png", "img_b.png"]
    assert list(m1["unique_name"])[0] == "C:\\Users\\lab\\Stimuli M1\\natural_test\\img_c.png"
    for _, row in m1.iterrows():
        stored = np.asarray(Image.open(stimulus_set.get_stimulus(row["stimulus_id"])))
        original = np.asarray(Image.open(archive / "George" / "natural_test" / row["image_file_name"]))
        np.testing.assert_array_equal(stored, original)


def test_basename_matching_is_case_insensitive_like_windows(tmp_path):
    def upper_case_names(monkey, variables, image_dir):
        variables[cv.KEY_NAMES] = [n.replace("img_", "IMG_").replace(".png", ".PNG") for n in variables[cv.KEY_NAMES]]

    archive = write_tiny(tmp_path / "archive", mutate=upper_case_names)
    data.import_arcaro2020(archive, home=tmp_path / "home")
    stimulus_set = data.load_stimulus_set("Arcaro2020", home=tmp_path / "home")
    m2 = stimulus_set[stimulus_set["monkey"] == "M2"].sort_values("image_index")
    assert list(m2["image_file_name"]) == ["img_c.png", "img_a.png", "img_b.png"]
    assert list(m2["unique_name"])[0].endswith("\\IMG_c.PNG")


def test_mat73_layout_loads_like_v5(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    names = ["C:\\a\\b\\first.png", "second.png", ""]
    path = tmp_path / "x.mat"
    write_mat(path, {"A": array, "names": names}, "7.3")
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:  # the HDF5 view has reversed axes and references to uint16 strings
        assert f["A"].shape == (4, 3, 2) and f["names"].dtype == h5py.ref_dtype and f["names"].shape == (3, 1)
        assert f[f["names"][0, 0]].dtype == np.uint16
    loaded = matfile.read_mat(path, ["A", "names"])
    np.testing.assert_array_equal(loaded["A"], array)
    assert loaded["names"] == names

    v5 = write_tiny(tmp_path / "v5")
    v73 = write_tiny(tmp_path / "v73", version="7.3")
    assert matfile.is_mat73(v73 / cv.M1.mat_path) and not matfile.is_mat73(v5 / cv.M1.mat_path)
    data.import_arcaro2020(v5, home=tmp_path / "h5")
    data.import_arcaro2020(v73, home=tmp_path / "h73")
    for site in cv.SITES:
        a = data.load_assembly(f"Arcaro2020.{site}", home=tmp_path / "h5")
        b = data.load_assembly(f"Arcaro2020.{site}", home=tmp_path / "h73")
        np.testing.assert_array_equal(a.values, b.values)
        assert list(a["stimulus_id"].values) == list(b["stimulus_id"].values)


def test_zip_and_folder_import_identically(tiny, tmp_path):
    archive, home = tiny
    zipped = tmp_path / "Arcaro2020.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for file in archive.rglob("*"):
            z.write(file, Path("Arcaro2020") / file.relative_to(archive))
    summary = data.import_arcaro2020(zipped, home=tmp_path / "home")
    assert summary["status"] == "imported" and summary["archive_sha256"]
    a = data.load_assembly("Arcaro2020.M1ML", home=home)
    b = data.load_assembly("Arcaro2020.M1ML", home=tmp_path / "home")
    np.testing.assert_array_equal(a.values, b.values)
    assert a.attrs["source_sha256"] == b.attrs["source_sha256"]
    # same content again: nothing to do; the summary describes every site
    again = data.import_arcaro2020(archive, home=tmp_path / "home")
    assert again["status"] == "unchanged"
    text = data.format_summary(again)
    assert "Arcaro2020.M1ML" in text and "31 channels" in text and "grid 17x17" in text and "0-40 ms" in text


def test_failed_import_leaves_no_files(tiny, tmp_path, monkeypatch):
    archive, _ = tiny
    home = tmp_path / "home"
    home.mkdir()
    calls = []
    original = data._write_netcdf

    def failing(assembly, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return original(assembly, path)

    monkeypatch.setattr(data, "_write_netcdf", failing)
    with pytest.raises(OSError, match="disk full"):
        data.import_arcaro2020(archive, home=home)
    assert len(calls) == 2 and tree(home) == []
    # with an import in place, a failing re-import leaves it exactly as it was
    monkeypatch.setattr(data, "_write_netcdf", original)
    data.import_arcaro2020(archive, home=home)
    before = {p: (home / p).read_bytes() for p in tree(home) if (home / p).is_file()}
    calls.clear()
    monkeypatch.setattr(data, "_write_netcdf", failing)
    with pytest.raises(OSError):
        data.import_arcaro2020(archive, home=home, force=True)
    assert {p: (home / p).read_bytes() for p in tree(home) if (home / p).is_file()} == before
    assert data.load_assembly("Arcaro2020.M2ML", home=home).sizes["neuroid"] == 32


def _drop(key):
    def mutate(monkey, variables, image_dir):
        if monkey.key == "M2":
            variables.pop(key)
    return mutate


def _rename(key, new):
    def mutate(monkey, variables, image_dir):
        if monkey.key == "M1":
            variables[new] = variables.pop(key)
    return mutate


def _change(fn, which="M1"):
    def mutate(monkey, variables, image_dir):
        if monkey.key == which:
            fn(variables, image_dir)
    return mutate


def _nan(v, _):
    v[cv.KEY_RESPONSES][3, 4, 5, 6, 1] = np.nan


def _remove_image(v, image_dir):
    (image_dir / "img_b.png").unlink()


def _extra_name(v, _):
    v[cv.KEY_NAMES] = v[cv.KEY_NAMES] + ["C:\\x\\img_d.png"]


BAD = {
    "missing key": (_drop(cv.KEY_NAMES), "red_062419_data.mat", "UniqueNames", "a variable named 'UniqueNames'"),
    "misnamed key": (_rename(cv.KEY_RESPONSES, "imageRf"), "george_060118_data.mat", "imageRF",
                     "did you mean 'imageRf'"),
    "wrong ndim": (_change(lambda v, _: v.__setitem__(cv.KEY_RESPONSES, v[cv.KEY_RESPONSES][..., 0])),
                   "george_060118_data.mat", "imageRF", "5 dimensions"),
    "channel count": (_change(lambda v, _: v.__setitem__(cv.KEY_RESPONSES, v[cv.KEY_RESPONSES][:, :, :, :62])),
                      "george_060118_data.mat", "imageRF", "63 channels on axis 3"),
    "grid size": (_change(lambda v, _: v.__setitem__(cv.KEY_RESPONSES, v[cv.KEY_RESPONSES][:8, :8]), "M2"),
                  "red_062419_data.mat", "imageRF", "a 9x9 position grid"),
    "absent image": (_change(_remove_image), "george_060118_data.mat", "UniqueNames", "the image 'img_b.png'"),
    "name count": (_change(_extra_name), "george_060118_data.mat", "UniqueNames", "3 names"),
    "non-finite": (_change(_nan), "george_060118_data.mat", "imageRF", "finite values"),
    "numeric names": (_change(lambda v, _: v.__setitem__(cv.KEY_NAMES, np.arange(3.0))), "george_060118_data.mat",
                      "UniqueNames", "cell array"),
    "bad trials": (_change(lambda v, _: v.__setitem__(cv.KEY_TRIALS, np.zeros((17, 17, T, 63, 2, 2), np.uint8))),
                   "george_060118_data.mat", "imageRF_trials", "repetition axis"),
}


#: Bad inputs also checked in MATLAB v7.3 files (HDF5: its own key listing, cell and array readers).
BAD_V73 = ("misnamed key", "non-finite", "numeric names", "wrong ndim")


@pytest.mark.parametrize("case,version", [(case, "5") for case in sorted(BAD)] + [(case, "7.3") for case in BAD_V73])
def test_bad_input_gives_one_clear_error_and_touches_nothing(case, version, tmp_path):
    mutate, file, field, expected = BAD[case]
    archive = write_tiny(tmp_path / "archive", mutate=mutate, version=version)
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(data.ArcaroDataError) as info:
        data.import_arcaro2020(archive, home=home)
    message = str(info.value)
    assert "\n" not in message and file in message and f"'{field}'" in message and expected in message, message
    assert tree(home) == []


def test_bad_files_and_layout(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    archive = write_tiny(tmp_path / "archive")
    cases = []
    # missing .mat file
    broken = tmp_path / "no_mat"
    shutil.copytree(archive, broken)
    (broken / cv.M2.mat_path).unlink()
    cases.append((broken, "red_062419_data.mat", "'file'", "missing"))
    # missing image folder
    broken = tmp_path / "no_images"
    shutil.copytree(archive, broken)
    shutil.rmtree(broken / cv.M1.image_path)
    cases.append((broken, "George/natural_test", "'folder'", "missing"))
    # not a MATLAB file
    broken = tmp_path / "garbage"
    shutil.copytree(archive, broken)
    (broken / cv.M1.mat_path).write_bytes(b"not a mat file" * 20)
    cases.append((broken, "george_060118_data.mat", "'file'", "MATLAB v5 or v7.3"))
    # unreadable image
    broken = tmp_path / "bad_image"
    shutil.copytree(archive, broken)
    (broken / cv.M2.image_path / "img_a.png").write_bytes(b"\x89PNG broken")
    cases.append((broken, "red_naturalface/img_a.png", "'image'", "a readable image file"))
    # neither George nor Red
    empty = tmp_path / "empty"
    (empty / "something").mkdir(parents=True)
    cases.append((empty, "empty", "'layout'", "George/ and Red/"))
    # not a zip
    not_zip = tmp_path / "Arcaro2020.zip"
    not_zip.write_bytes(b"hello")
    cases.append((not_zip, "Arcaro2020.zip", "'file'", "a zip archive"))
    cases.append((tmp_path / "absent.zip", "absent.zip", "'path'", "not found"))
    # broken sidecar
    broken = tmp_path / "bad_sidecar"
    shutil.copytree(archive, broken)
    (broken / cv.SIDECAR_NAME).write_text(json.dumps({"monkeys": {"M1": {}}}))
    cases.append((broken, "generator.json", "'monkeys'", "entries ['M1', 'M2']"))
    broken = tmp_path / "bad_sidecar_grid"
    shutil.copytree(archive, broken)
    (broken / cv.SIDECAR_NAME).write_text(json.dumps({"monkeys": {"M1": {"grid_size": 17}, "M2": 9}}))
    cases.append((broken, "generator.json", "'monkeys.M2.grid_size'", "an integer grid size >= 2"))
    for path, file, field, expected in cases:
        with pytest.raises(data.ArcaroDataError) as info:
            data.import_arcaro2020(path, home=home)
        message = str(info.value)
        assert "\n" not in message and file in message and field in message and expected in message, message
    assert tree(home) == []


def test_unknown_identifiers(tiny):
    _, home = tiny
    with pytest.raises(KeyError, match="unknown data identifier"):
        data.load_assembly("Majaj2015.IT", home=home)
    with pytest.raises(KeyError, match="did you mean 'Arcaro2020.M2ML'"):
        data.load_assembly("Arcaro2020.M2LM", home=home)
    with pytest.raises(FileNotFoundError, match="brainscore data simulate"):
        data.load_assembly("Arcaro2020sim.M1ML", home=home)
    assert os.environ["BRAINSCORE_ITMAPS_HOME"] != str(home)


def test_trials_become_repetitions_and_units_are_checked(tmp_path, caplog):
    def add_trials(monkey, variables, image_dir):
        rf = variables[cv.KEY_RESPONSES]
        trials = np.zeros(rf.shape + (2,), dtype=np.uint8)
        trials[..., 0, :, :, 1] = 1  # one spike at t = 0 ms in repetition 1 only
        variables[cv.KEY_TRIALS] = trials

    archive = write_tiny(tmp_path / "archive", mutate=add_trials)
    with caplog.at_level("WARNING"):
        data.import_arcaro2020(archive, home=tmp_path / "home")
    assert "imageRF_trials" in caplog.text and "spikes/s" in caplog.text  # trial mean differs from imageRF
    assembly = data.load_assembly("Arcaro2020.M2ML", home=tmp_path / "home")
    assert assembly.sizes["presentation"] == N_IMAGES * 9 * 9 * 2
    maps = data.response_maps(assembly, window=(0, 10), average_repetitions=False)
    assert maps.dims[-1] == "repetition"
    np.testing.assert_allclose(maps.values[..., 0], 0)
    np.testing.assert_allclose(maps.values[..., 1], 100)  # 1 spike in a 10-ms bin = 100 spikes/s
    np.testing.assert_allclose(data.response_maps(assembly, window=(0, 10)).values, 50)
    np.testing.assert_allclose(data.response_maps(assembly, window=(0, 20)).values, 25)


def _symmetry_by_hand(m: np.ndarray, name: str) -> np.ndarray:
    """The 8 symmetries of a [row, col] map, spelled out one by one (independently of conventions.apply_symmetry)."""
    t = m.T
    return {"identity": m, "flip_ud": m[::-1, :], "flip_lr": m[:, ::-1], "rot180": m[::-1, ::-1],
            "transpose": t, "transpose_flip_ud": t[::-1, :], "transpose_flip_lr": t[:, ::-1],
            "transpose_rot180": t[::-1, ::-1]}[name]


def _pattern(g: int) -> np.ndarray:
    """A map in image coordinates with a distinct value at every grid point: every symmetry but identity moves it."""
    return np.arange(g * g, dtype=np.float64).reshape(g, g)


def _pattern_responses(monkey: cv.Monkey, images: list) -> np.ndarray:
    """imageRF written by hand from the documented convention imageRF[a, b] = map[G-1-a, G-1-b]."""
    g = monkey.grid_size
    rf = np.zeros((g, g, T, monkey.n_channels, len(images)))
    rf[...] = _pattern(g)[::-1, ::-1, None, None, None]
    return rf


def test_pattern_tells_all_8_symmetries_apart(tmp_path):
    """A pattern that no symmetry leaves unchanged: the import must return it exactly (a transposed or flipped reading
    of imageRF fails here, unlike the bright-quarter test), and ``orientation=`` must apply exactly that symmetry."""
    for g in (cv.M1.grid_size, cv.M2.grid_size):
        variants = [_symmetry_by_hand(_pattern(g), name) for name in cv.SYMMETRIES]
        assert all(not np.array_equal(a, b) for i, a in enumerate(variants) for b in variants[:i])
        for name, by_hand in zip(cv.SYMMETRIES, variants):
            np.testing.assert_array_equal(cv.apply_symmetry(_pattern(g), name), by_hand)
            np.testing.assert_array_equal(cv.apply_symmetry(by_hand, cv.inverse_symmetry(name)), _pattern(g))
    archive = write_tiny(tmp_path / "Arcaro2020", responses=_pattern_responses)
    for orientation in ("identity", "transpose_flip_ud"):
        home = tmp_path / orientation
        summary = data.import_arcaro2020(archive, home=home, orientation=orientation)
        assert summary["orientation"] == orientation
        for identifier in ("Arcaro2020.M1ML", "Arcaro2020.M2ML"):
            assembly = data.load_assembly(identifier, home=home)
            assert assembly.attrs["orientation"] == orientation
            maps = data.response_maps(assembly, window=(0, 10)).values  # [image, row, col, channel]
            expected = _symmetry_by_hand(_pattern(assembly.attrs["grid_size"]), orientation)
            np.testing.assert_allclose(maps[1, :, :, 0], expected, atol=1e-4)
    with pytest.raises(ValueError, match="unknown orientation 'rot90'.*transpose_flip_lr"):
        data.import_arcaro2020(archive, home=tmp_path / "bad", orientation="rot90")
    assert not (tmp_path / "bad").exists()


def test_import_logs_the_conventions_it_applied(tiny, tmp_path, caplog):
    archive, _ = tiny
    with caplog.at_level("INFO", logger="benchmarks_it_maps.data.assemblies"):
        data.import_arcaro2020(archive, home=tmp_path / "home")
    blocks = [r.getMessage() for r in caplog.records if "conventions v" in r.getMessage()]
    assert len(blocks) == 1, [r.getMessage() for r in caplog.records]
    text = blocks[0]
    for needle in ("axis order: imageRF = [grid_a, grid_b, time_ms, channel, image]", "imageRF[G-1-row, G-1-col]",
                   "Arcaro2020.M1PL = M1 channels 0-31", "Arcaro2020.M1ML = M1 channels 32-62", "ML 32 / PL 31",
                   "M1 100-250 ms", "M2 150-300 ms", "time origin", "George 17x17 @ 1 deg", "Red 9x9 @ 2 deg",
                   "edge to edge", "brainscore data orientation", "brainscore data channels", "docs/DATA.md"):
        assert needle in text, (needle, text)
