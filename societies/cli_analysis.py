"""The commands that read run directories: report, show, stats, export.

Each checks a run directory first (``RunStore.check_readable``): a problem that stops it is one
line and exit 2; a torn last line, older records or a run still being written are warnings on
stderr, and the command goes on with the units finished so far.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from societies.storage import RunStore


def readable(run_dir: Path) -> RunStore:
    """The run directory's store, after printing any warnings; UserError if unreadable."""
    store = RunStore(run_dir)
    for warning in store.check_readable():
        print(f"societies: warning: {warning}", file=sys.stderr)
    return store


def report(args: argparse.Namespace) -> int:
    """The per-round tables and parse audit of each run; with --html, the report folder."""
    from societies.audit import format_audit
    from societies.config import parse_config
    from societies.plan import build_plan
    from societies.report import format_table
    from societies.runner import summarize_run

    stores = [readable(d) for d in args.run_dirs]
    for store in stores:
        if len(stores) > 1:
            print(f"== {store.root}\n")
        plan = build_plan(parse_config(store.saved_config(), str(store.config_path)))
        print(format_table(summarize_run(plan, store)))
        if args.sample > 0:  # how the answers were read, so a reader can judge the scoring
            print(format_audit(store.iter_records(), sample=args.sample, seed=args.seed))
    if args.html or args.out:
        from societies.analysis.html_report import write_report

        out = args.out or stores[0].root / "report"
        print(f"report: {write_report([s.root for s in stores], out)}")
    return 0


def show(args: argparse.Namespace) -> int:
    """One unit's transcript in the terminal."""
    from societies.analysis.show import show_unit

    readable(args.run_dir)
    print(show_unit(args.run_dir, args.unit_id))
    return 0


def stats(args: argparse.Namespace) -> int:
    """Paired tests between strategies and societies, win counts and ANOVA of one run."""
    from societies.analysis import stats as st

    readable(args.run_dir)
    with _wide_tables():
        print("paired comparisons (McNemar on majority correctness, Wilcoxon on mean agent "
              "accuracy, Holm-adjusted):")
        print(st.compare(args.run_dir, round=args.round).to_string(index=False))
        print("\nwins against all-debate (per question, majority correctness):")
        print(st.wins(args.run_dir, round=args.round).to_string(index=False))
        print("\none-way ANOVA of per-question mean accuracy:")
        print(st.anova(args.run_dir, round=args.round).to_string(index=False))
    return 0


def export(args: argparse.Namespace) -> int:
    """Turns, units and rounds as CSV or Parquet files."""
    from societies.analysis.frames import load

    readable(args.run_dir)
    for path in load(args.run_dir).export(args.out, args.format):
        print(path)
    return 0


def _wide_tables() -> AbstractContextManager[Any]:
    import pandas as pd

    return pd.option_context("display.width", 200, "display.max_columns", 40)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register report, show, stats and export on the ``societies`` parser."""
    rep = sub.add_parser("report", help="per-round tables and parse audit of run directories; "
                         "--html writes figures, tables and an HTML report")
    rep.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    rep.add_argument("--sample", type=int, default=8,
                     help="replies shown in the parse audit (0: no audit)")
    rep.add_argument("--seed", type=int, default=0, help="which replies the audit samples")
    rep.add_argument("--html", action="store_true",
                     help="write report.html, report.md, rounds.csv and figures")
    rep.add_argument("--out", type=Path, help="folder for --html (default: RUN_DIR/report)")
    rep.set_defaults(func=report)
    sh = sub.add_parser("show", help="print one unit's transcript")
    sh.add_argument("run_dir", type=Path)
    sh.add_argument("unit_id")
    sh.set_defaults(func=show)
    sta = sub.add_parser("stats", help="paired tests, win counts and ANOVA of a run")
    sta.add_argument("run_dir", type=Path)
    sta.add_argument("--round", type=int, help="round to compare (default: the last)")
    sta.set_defaults(func=stats)
    exp = sub.add_parser("export", help="turns, units and rounds tables as CSV or Parquet")
    exp.add_argument("run_dir", type=Path)
    exp.add_argument("out", type=Path)
    exp.add_argument("--format", choices=("csv", "parquet"), default="csv")
    exp.set_defaults(func=export)
