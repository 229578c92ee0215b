"""``brainscore report``: one self-contained HTML page of the results database."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report``."""
    parser = subparsers.add_parser(
        "report", help="write one self-contained HTML page of the stored scores",
        description="Write an HTML page (no network needed to open it: data, script and figures inline) with a "
                    "sortable table of the stored scores (score, raw, ceiling, floor, error, layer, date), each "
                    "local model's rank and percentile among the public leaderboard snapshot's models where the "
                    "benchmark is on it, the accuracy / score trade-off per benchmark and links to map figures.")
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="output HTML file")
    parser.add_argument("--results", type=Path, default=None, help="results database (default: data home)")
    parser.add_argument("--leaderboard", type=Path, default=None,
                        help="leaderboard snapshot (.json/.json.gz; default: the package's leaderboard loader)")
    parser.add_argument("--maps", type=Path, nargs="*", default=[], metavar="DIR",
                        help="folders of map figures to link (the --out of brainscore maps; the demo's are in "
                             "DATA_HOME/demo/maps)")
    parser.set_defaults(func=_report)


def _report(args) -> int:
    from benchmarks_it_maps.analysis.report import ReportError, write_report
    from benchmarks_it_maps.cli import UserError
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {args.out}: the report is an HTML file; name it *.html")
    try:
        path = write_report(args.out, results=args.results, leaderboard=args.leaderboard, maps=args.maps)
    except ReportError as error:
        raise UserError(str(error)) from None
    print(f"wrote {path} (open it in a browser; it needs no network)")
    return 0
