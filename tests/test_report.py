"""``brainscore report``: one self-contained HTML page, checked in a real headless browser (Debian's chromium):
the screenshot is not blank, the DOM holds one table row per stored score and one figure per benchmark, the sort
script works; ranks against a leaderboard snapshot are hand-computable. Real scores of ``efficientnet_lite0`` on
``sim_small``, a real SQLite results database, a snapshot file in the website's format."""
import gzip
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from benchmarks_it_maps.analysis import report
from benchmarks_it_maps.cli import main
from benchmarks_it_maps.runs import scoring
from benchmarks_it_maps.runs.results import ResultsDB

MODEL = "efficientnet_lite0"
RANKED = "Arcaro2020sim.M2ML-pls"        # put on the test snapshot
UNRANKED = "Arcaro2020sim.M2ML-map_alignment"
PUBLIC = [0.02, 0.05, 0.9, 0.95, 0.97, 0.99]  # public scores on RANKED in the snapshot
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def scored(sim_small, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    db = ResultsDB(folder / "results.sqlite")
    import harmonized_models
    model = harmonized_models.load_model(MODEL, device="cpu")
    scores = {benchmark: float(scoring.score(model, benchmark, results=db)) for benchmark in (RANKED, UNRANKED)}
    _, maps = scoring.maps(model, RANKED, folder / "maps", device="cpu")
    records = [{"id": i + 1, "model": {"name": f"public_net_{i}", "id": i + 1}, "public": True,
                f"{RANKED}_v2": {"value": f"{v:.3f}".lstrip("0"), "raw": v, "error": 0.01},
                "ImageNet-top1_v1": {"value": "X", "raw": 0.6 + 0.03 * i}} for i, v in enumerate(PUBLIC)]
    snapshot = folder / "snapshot.json.gz"
    with gzip.open(snapshot, "wt") as f:
        json.dump(records, f)
    return dict(folder=folder, db=db, scores=scores, maps=folder / "maps", n_maps=len(maps), snapshot=snapshot)


@pytest.fixture(scope="module")
def page(scored):
    out = scored["folder"] / "site" / "report.html"
    assert main(["report", "--out", str(out), "--results", str(scored["db"].path), "--leaderboard",
                 str(scored["snapshot"]), "--maps", str(scored["maps"])]) == 0
    return out


def test_rank_and_percentile_are_hand_computed(scored):
    rows = report.score_rows(scored["db"])
    board = report.lb.load_leaderboard(scored["snapshot"])
    ranking = report.rankings(rows, board)
    assert ranking[UNRANKED]["on_leaderboard"] is False
    entry, = ranking[RANKED]["models"]
    assert 0.05 < scored["scores"][RANKED] < 0.9  # so: 4 public models above, 2 below
    assert entry["rank"] == 5 and ranking[RANKED]["n"] == len(PUBLIC) == 6
    assert entry["percentile"] == pytest.approx(100 * 2 / 6)


def test_page_is_self_contained(page, scored):
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the page must not load anything remote"
    assert "<link" not in text and '<script src' not in text
    assert text.count('<tr class="score-row">') == len(scored["db"].rows()) == 2
    assert text.count('class="tradeoff"') == 2 and 'src="data:image/png;base64,' in text
    links = re.findall(r'<a href="([^"]+)"', text)
    assert len(links) == scored["n_maps"] > 0
    assert all((page.parent / link).resolve().is_file() for link in links)  # relative links that resolve
    assert "not on the public leaderboard snapshot" in text and "Rank among the 6 public models" in text


def _chromium(args, tmp_path, timeout=120):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it")
    profile = tmp_path / "chromium-profile"
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_browser_renders_table_and_figures(page, scored, tmp_path):
    shot = tmp_path / "report.png"
    done = _chromium(["--window-size=1200,1500", f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert pixels.shape[:2] == (1500, 1200)
    not_white = (pixels < 245).any(axis=2).mean()
    assert not_white > 0.03, f"screenshot nearly blank ({not_white:.3%} non-white pixels)"
    red = ((pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)).sum()
    assert red > 20, "the trade-off scatter (red local models) did not render"
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path).stdout
    assert dom.count('class="score-row"') == 2 and dom.count('class="rank-row"') == 1
    assert dom.count('class="tradeoff"') == 2


@pytest.mark.parametrize("order", ["score", "-score"])
def test_browser_sorts_the_table(page, scored, tmp_path, order):
    dom = _chromium(["--dump-dom", page.as_uri() + f"#sort={order}"], tmp_path).stdout
    table = dom.split('id="scores"', 1)[1].split("</table>", 1)[0]
    values = [float(v) for v in re.findall(r'<tr class="score-row"><td data-value="[^"]*">[^<]*</td>'
                                           r'<td data-value="[^"]*">[^<]*</td><td class="num" data-value="([^"]+)"',
                                           table)]
    assert len(values) == 2
    assert values == sorted(values, reverse=order.startswith("-"))
    assert 'class="sorted-' in table


def test_empty_database_and_bad_output_are_one_line(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path / "r.html"), "--results", str(tmp_path / "empty.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no scores" in err
    assert main(["report", "--out", str(tmp_path / "r.pdf")]) == 2
    assert "*.html" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
