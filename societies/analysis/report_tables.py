"""The tables of the report: per-round tables (Markdown and HTML), ``rounds.csv``, and the
comparison of several runs (accuracy side by side, paired tests against the first run)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from societies.metrics import Summary

if TYPE_CHECKING:
    from societies.analysis.html_report import RunData


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


# (header, field or function, format) of the per-round tables, in order.
_COLUMNS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("round", "index", str),
    ("units", "n_units", str),
    ("accuracy", "mean_accuracy", _pct),
    ("majority acc.", "majority_accuracy", _pct),
    ("clusters", "n_clusters", _num),
    ("plurality", "plurality_share", _pct),
    ("answered", "answered_rate", _pct),
    ("conformity", "conformity", _pct),
    ("strict conf.", "strict_conformity", _pct),
    ("changes", "answer_change_rate", _pct),
    ("parse fail", "parse_failure_rate", _pct),
    ("truncated", "truncated_rate", _pct),
    ("tokens", "tokens", str),
]
_CSV_FIELDS = ["n_units", "mean_accuracy", "majority_accuracy", "n_clusters", "plurality_share",
               "answered_rate", "n_clusters_answered", "plurality_share_answered", "conformity",
               "strict_conformity", "answer_change_rate", "parse_failure_rate", "error_rate",
               "truncated_rate", "prompt_tokens", "completion_tokens"]


def _round_value(rnd: Any, field: str) -> Any:
    return rnd.prompt_tokens + rnd.completion_tokens if field == "tokens" else getattr(rnd, field)


def group_tables(summary: Summary) -> list[dict[str, Any]]:
    """Each group's per-round table as headers and formatted cells (for Markdown and HTML)."""
    return [{
        "title": f"society {g.society} · strategy {g.strategy or '-'} · {g.n_units} units"
                 f" ({g.failed_units} failed)",
        "headers": [h for h, _, _ in _COLUMNS],
        "rows": [[fmt(_round_value(r, f)) for _, f, fmt in _COLUMNS] for r in g.rounds],
        "behaviours": {b: _pct(v) for b, v in g.behaviours.items()},
    } for g in summary.groups]


def markdown(runs: Sequence[RunData]) -> str:
    """The per-round tables of every run as Markdown."""
    lines = ["# Report", ""]
    for run in runs:
        lines += [f"## Run `{run.name}`", "", f"{run.n_units} units.", ""]
        lines += [f"> warning: {w}" for w in run.warnings] + ([""] if run.warnings else [])
        for t in group_tables(run.summary):
            lines += [f"### {t['title']}", "", "| " + " | ".join(t["headers"]) + " |",
                      "|" + "---:|" * len(t["headers"])]
            lines += ["| " + " | ".join(row) + " |" for row in t["rows"]]
            if t["behaviours"]:
                lines += ["", "behaviours: " + " · ".join(
                    f"{b.replace('_', ' ')} {v}" for b, v in t["behaviours"].items())]
            lines.append("")
    comparison = compare(runs)
    if comparison:
        names = [r.name for r in runs]
        lines += ["## Comparison (mean accuracy; difference to the first run)", "",
                  "| society | strategy | round | " + " | ".join(names)
                  + " | " + " | ".join(f"{n} − {names[0]}" for n in names[1:]) + " |",
                  "|---|---|---:|" + "---:|" * (2 * len(names) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in comparison]
        lines.append("")
    tests = paired_tests(runs)
    if tests:
        lines += [f"## Paired tests against `{runs[0].name}` (last round)", "",
                  "| " + " | ".join(PAIRED_HEADERS) + " |",
                  "|---|---|---|" + "---:|" * (len(PAIRED_HEADERS) - 3)]
        lines += ["| " + " | ".join(row) + " |" for row in tests]
        lines.append("")
    return "\n".join(lines)


def rounds_csv(runs: Sequence[RunData]) -> str:
    """One CSV row per (run, society, strategy, round) with the raw metric values."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", "society", "strategy", "round", *_CSV_FIELDS])
    for run in runs:
        for g in run.summary.groups:
            for r in g.rounds:
                values = ["" if getattr(r, f) is None else getattr(r, f) for f in _CSV_FIELDS]
                writer.writerow([run.name, g.society, g.strategy, r.index, *values])
    return buf.getvalue()


def compare(runs: Sequence[RunData]) -> list[list[str]]:
    """Rows (society, strategy, round, accuracy per run…, difference to run 0…); [] for one run."""
    if len(runs) < 2:
        return []
    acc: list[dict[tuple[str, str, int], float]] = [
        {(g.society, g.strategy, r.index): r.mean_accuracy
         for g in run.summary.groups for r in g.rounds} for run in runs]
    keys = sorted({k for a in acc for k in a})
    rows = []
    for key in keys:
        values = [a.get(key) for a in acc]
        base = values[0]
        diffs = ["–" if v is None or base is None else f"{100 * (v - base):+.1f} pt"
                 for v in values[1:]]
        rows.append([key[0], key[1] or "-", str(key[2]), *(_pct(v) for v in values), *diffs])
    return rows


PAIRED_HEADERS = ["run", "society", "strategy", "round", "pairs", "majority (first)",
                  "majority (this)", "only first right", "only this right", "McNemar p (Holm)",
                  "accuracy diff", "Wilcoxon p (Holm)"]


def paired_tests(runs: Sequence[RunData]) -> list[list[str]]:
    """Each later run against the first, per shared (society, strategy) at the last round:
    McNemar on majority correctness over (question, repeat) pairs and Wilcoxon on per-question
    accuracy (``societies.analysis.stats.compare_runs``); [] for one run."""
    if len(runs) < 2:
        return []
    from societies.analysis.stats import compare_runs

    def p(x: Any) -> str:
        return "–" if x is None or x != x else f"{x:.3g}"

    rows = []
    for run in runs[1:]:
        for r in compare_runs(runs[0].path, run.path).itertuples():
            rows.append([run.name, str(r.society), str(r.strategy) or "-", str(r.round_a),
                         str(r.n_pairs), _pct(r.majority_a), _pct(r.majority_b),
                         str(r.only_a), str(r.only_b), p(r.mcnemar_p_holm),
                         f"{100 * (r.accuracy_b - r.accuracy_a):+.1f} pt",
                         p(r.wilcoxon_p_holm)])
    return rows
