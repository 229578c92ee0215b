"""One self-contained HTML page of everything the results database holds (``brainscore report``).

The page needs no network and no other file: data, styles, the sorting script and the figures (PNG, base64) are all
inline. It shows

* a sortable table of the stored scores (newest row per model, benchmark and configuration): score (ceiled), raw,
  ceiling, floor (the image-blind predictor's ceiled score, where the benchmark reports one), error, layer, date;
* per benchmark, where each local model would rank among the public leaderboard snapshot's models and its
  percentile (:func:`benchmarks_it_maps.analysis.leaderboard.rank_against`), where the benchmark exists there;
* the accuracy / score trade-off per benchmark (local models, plus the leaderboard's where the benchmark is on it):
  the fitted frontier (:mod:`benchmarks_it_maps.analysis.tradeoff`) when the population allows one, else a scatter
  saying why not;
* links to map figures (``brainscore maps`` / ``demo`` PNGs) found in the folders given, relative to the page.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from benchmarks_it_maps.analysis import leaderboard as lb
from benchmarks_it_maps.analysis import tradeoff as to
from benchmarks_it_maps.home import atomic_file
from benchmarks_it_maps.runs.results import ResultsDB, package_version

logger = logging.getLogger(__name__)

#: Table columns: (key, header, kind) with kind 'num' (sorted numerically) or 'text'.
COLUMNS = (("model", "model", "text"), ("benchmark", "benchmark", "text"), ("score", "score", "num"),
           ("raw", "raw", "num"), ("ceiling", "ceiling", "num"), ("floor", "floor", "num"),
           ("error", "error", "num"), ("layer", "layer", "text"), ("date", "date", "text"))
#: Bootstrap draws of the report's trade-off fits (a page, not a publication: the CLI's tradeoff has more).
REPORT_BOOTSTRAP = 200


class ReportError(ValueError):
    """Nothing to report, or an output that cannot be written (the message says which)."""


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------
def _number(value: Any) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def score_rows(results: Any = None) -> list[dict]:
    """The rows of the table: one per stored score (newest first), with ``floor`` from the score's attrs."""
    db = results if isinstance(results, ResultsDB) else ResultsDB(results)
    rows = []
    for row in db.rows():
        attrs = row.get("attrs") or {}
        rows.append(dict(model=str(row["model"]), benchmark=str(row["benchmark"]), score=_number(row.get("score")),
                         raw=_number(row.get("raw")), ceiling=_number(row.get("ceiling")),
                         floor=_number(attrs.get("position_only_ceiled")), error=_number(row.get("error")),
                         layer=row.get("layer") or "", date=str(row.get("created_at") or "")[:19].replace("T", " ")))
    return rows


def latest_per_model(rows: Sequence[dict]) -> dict[str, dict[str, dict]]:
    """``{benchmark: {model: newest row}}`` (rows come newest first)."""
    latest: dict[str, dict[str, dict]] = {}
    for row in sorted(rows, key=lambda r: r["date"], reverse=True):
        latest.setdefault(row["benchmark"], {}).setdefault(row["model"], row)
    return latest


def rankings(rows: Sequence[dict], board: Optional[pd.DataFrame]) -> dict[str, dict]:
    """Per benchmark: ``{'on_leaderboard': bool, 'n': public models, 'models': [{model, score, rank, percentile}]}``."""
    out = {}
    known = set(lb.benchmarks(board)) if board is not None else set()
    for benchmark, models in latest_per_model(rows).items():
        name, _ = lb.split_version(benchmark)
        if name not in known:
            out[benchmark] = dict(on_leaderboard=False, n=0, models=[])
            continue
        values = lb.benchmark_table(board, name)["value"].to_numpy(dtype=float)
        entries = []
        for model, row in sorted(models.items()):
            if row["score"] is None:
                continue
            rank, percentile, n = lb.rank_against(values, row["score"])
            entries.append(dict(model=model, score=row["score"], rank=rank, percentile=percentile, n=n))
        out[benchmark] = dict(on_leaderboard=True, n=int(len(values)), models=entries)
    return out


# ----------------------------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------------------------
def _png_base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _scatter_png(population: pd.DataFrame, benchmark: str, reason: str, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from benchmarks_it_maps.home import save_figure
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    public = population[population["source"] != "results"] if "source" in population else population.iloc[:0]
    local = population[population["source"] == "results"] if "source" in population else population
    if len(public):
        ax.scatter(public["accuracy"], public["score"], s=12, color="0.65", label=f"leaderboard ({len(public)})")
    ax.scatter(local["accuracy"], local["score"], s=60, color="tab:red", edgecolors="black", zorder=5,
               label=f"local ({len(local)})")
    for row in local.itertuples(index=False):
        ax.annotate(str(row.model), (row.accuracy, row.score), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("ImageNet top-1 accuracy (fraction)")
    ax.set_ylabel(f"{benchmark} score (ceiled)")
    ax.set_title(f"{benchmark}: {reason}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, format="png", dpi=90)


def tradeoff_figure(results: Any, benchmark: str, board: Optional[pd.DataFrame], workdir: Path) -> dict:
    """``{'png': base64 or None, 'note': text}`` for one benchmark's accuracy / score trade-off."""
    try:
        population = to.population_from_results(results, benchmark)
    except to.TradeoffInputError as error:
        return dict(png=None, note=str(error))
    note = to.left_out_note(population) or ""
    if population.empty:
        return dict(png=None, note=note or "no model with a top-1 accuracy")
    name, _ = lb.split_version(benchmark)
    if board is not None and name in set(lb.benchmarks(board)):
        try:
            population = to.combine_populations(population, to.population_from_leaderboard(board, name))
        except to.TradeoffInputError as error:
            note = f"{note} leaderboard models not added: {error}".strip()
    path = workdir / f"tradeoff-{len(list(workdir.iterdir()))}.png"
    try:
        result = to.analyze_tradeoff(population, benchmark=benchmark, n_bootstrap=REPORT_BOOTSTRAP,
                                     compare=False)
        to.plot_tradeoff(result, path, highlight=list(population.loc[population["source"] == "results", "model"]),
                         dpi=80)
        note = f"{note} frontier fitted on {result.n_fit} models".strip()
    except to.TradeoffInputError as error:
        _scatter_png(population, benchmark, f"no frontier fitted ({len(population)} models, see below)", path)
        note = f"{note} No frontier: {error}".strip()
    return dict(png=_png_base64(path), note=note)


def map_links(folders: Sequence[os.PathLike], out: Path) -> list[tuple[str, str]]:
    """``(label, href relative to the page)`` of every PNG under ``folders``, sorted."""
    links = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ReportError(f"--maps {folder}: no such folder (give the --out folder of `brainscore maps`)")
        for png in sorted(folder.rglob("*.png")):
            href = os.path.relpath(png.resolve(), out.resolve().parent)
            links.append((str(png.relative_to(folder)), Path(href).as_posix()))
    return links


# ----------------------------------------------------------------------------------------------------------------
# page
# ----------------------------------------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px} h2{font-size:18px;margin-top:28px} table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left} th{background:#e8eef7;cursor:pointer;user-select:none}
td.num{text-align:right;font-variant-numeric:tabular-nums} tr:nth-child(even) td{background:#f7f7f7}
th.sorted-asc::after{content:" \\25B2"} th.sorted-desc::after{content:" \\25BC"}
.note{color:#555;font-size:12px;max-width:1100px} figure{margin:12px 0} img{max-width:100%;border:1px solid #ddd}
"""
_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var asc = !th.classList.contains('sorted-asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      var numeric = th.dataset.kind === 'num';
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
        if (numeric){ x = x === '' ? -Infinity : parseFloat(x); y = y === '' ? -Infinity : parseFloat(y);
                      return asc ? x - y : y - x; }
        return asc ? x.localeCompare(y) : y.localeCompare(x);
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
// '#sort=score' (ascending) or '#sort=-score' (descending) sorts the score table on load (links, tests)
(function(){
  var m = /^#sort=(-?)(\w+)$/.exec(window.location.hash);
  if (!m) return;
  var th = Array.from(document.querySelectorAll('#scores th')).find(function(h){ return h.textContent === m[2]; });
  if (!th) return;
  th.click();
  if (m[1] === '-') th.click();
})();
"""


def _cell(value: Any, kind: str) -> str:
    if kind == "num":
        text = "" if value is None else f"{value:.4f}"
        return f'<td class="num" data-value="{"" if value is None else repr(float(value))}">{text or "&ndash;"}</td>'
    text = html.escape(str(value))
    return f'<td data-value="{text}">{text}</td>'


def _table(rows: Sequence[dict]) -> str:
    head = "".join(f'<th data-kind="{kind}">{html.escape(header)}</th>' for _, header, kind in COLUMNS)
    body = "\n".join('<tr class="score-row">' + "".join(_cell(row.get(key), kind) for key, _, kind in COLUMNS)
                     + "</tr>" for row in rows)
    return f'<table id="scores" class="sortable"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _ranking_section(benchmark: str, ranking: dict, snapshot: str) -> str:
    if not ranking["on_leaderboard"]:
        return f'<p class="note">{html.escape(benchmark)} is not on the public leaderboard snapshot ({snapshot}).</p>'
    rows = "".join(f'<tr class="rank-row">{_cell(e["model"], "text")}{_cell(e["score"], "num")}'
                   f'<td class="num" data-value="{e["rank"]}">{e["rank"]} of {e["n"] + 1}</td>'
                   f'{_cell(e["percentile"], "num")}</tr>' for e in ranking["models"])
    return (f'<p class="note">Rank among the {ranking["n"]} public models of the snapshot ({snapshot}); percentile = '
            'share of public models below (ties half).</p><table class="sortable rank"><thead><tr>'
            '<th data-kind="text">model</th><th data-kind="num">score</th><th data-kind="num">rank</th>'
            f'<th data-kind="num">percentile</th></tr></thead><tbody>{rows}</tbody></table>')


def render_html(rows: Sequence[dict], sections: dict[str, dict], links: Sequence[tuple[str, str]], *,
                source: str, snapshot: str) -> str:
    """The page (one string). ``sections``: per benchmark ``{'ranking': ..., 'figure': ...}``."""
    parts = [f"<h1>Brain-Score IT-maps report</h1><p class=\"note\">{len(rows)} stored scores from "
             f"{html.escape(source)}; brainscore-itmaps {html.escape(package_version())}; written "
             f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Click a column header to sort. "
             "score = ceiled score; floor = the image-blind predictor's ceiled score (what a model that ignores "
             "the image reaches), where the benchmark reports it.</p>", _table(rows)]
    for benchmark, section in sections.items():
        parts.append(f"<h2>{html.escape(benchmark)}</h2>")
        parts.append(_ranking_section(benchmark, section["ranking"], html.escape(snapshot)))
        figure = section["figure"]
        if figure["png"]:
            parts.append(f'<figure><img class="tradeoff" alt="accuracy / score trade-off on {html.escape(benchmark)}"'
                         f' src="data:image/png;base64,{figure["png"]}"><figcaption class="note">'
                         f'{html.escape(figure["note"])}</figcaption></figure>')
        else:
            parts.append(f'<p class="note">No trade-off figure: {html.escape(figure["note"])}</p>')
    if links:
        items = "".join(f'<li><a href="{html.escape(href)}">{html.escape(label)}</a></li>' for label, href in links)
        parts.append(f"<h2>Map figures</h2><ul id=\"maps\">{items}</ul>")
    data = json.dumps(list(rows)).replace("</", "<\\/")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>brainscore-itmaps report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}"
            f"<script type=\"application/json\" id=\"score-data\">{data}</script><script>{_SCRIPT}</script>"
            "</body></html>\n")


def write_report(out: str | os.PathLike, *, results: Any = None, leaderboard: Optional[str | os.PathLike] = None,
                 maps: Sequence[os.PathLike] = ()) -> Path:
    """Write the report page for the results database ``results`` to ``out`` (atomically); returns its path.

    ``leaderboard``: a snapshot path (default: the package's leaderboard loader, which may use the cached copy);
    when none can be read the page says so instead of ranking.
    """
    import tempfile
    out = Path(out)
    db = results if isinstance(results, ResultsDB) else ResultsDB(results)
    rows = score_rows(db)
    if not rows:
        raise ReportError(f"the results database {db.path} holds no scores; score some models first "
                          "(brainscore score --model ID --benchmark ID)")
    links = map_links(maps, out)
    try:
        board = lb.load_leaderboard(leaderboard)
        snapshot = Path(board.attrs.get("source", "")).name or "leaderboard"
    except lb.LeaderboardError as error:
        logger.warning("no leaderboard snapshot for the report: %s", error)
        board, snapshot = None, f"unavailable: {str(error).splitlines()[0][:160]}"
    ranking = rankings(rows, board)
    sections = {}
    with tempfile.TemporaryDirectory(prefix="bs-report-") as workdir:
        for benchmark in sorted(ranking):
            sections[benchmark] = dict(ranking=ranking[benchmark],
                                       figure=tradeoff_figure(db, benchmark, board, Path(workdir)))
    page = render_html(rows, sections, links, source=str(db.path), snapshot=snapshot)
    with atomic_file(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
