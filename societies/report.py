"""Plain-text report of a summary: one per-round table per (society, strategy) group."""

from __future__ import annotations

from collections.abc import Callable

from societies.metrics import BEHAVIOURS, GroupMetrics, RoundMetrics, Summary

DASH = "–"  # shown where a metric is undefined (round 0, no majority)


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}%"


# (header, cell) per column, in table order.
_COLUMNS: list[tuple[str, Callable[[RoundMetrics], str]]] = [
    ("round", lambda r: str(r.index)),
    ("acc", lambda r: _pct(r.mean_accuracy)),
    ("maj", lambda r: _pct(r.majority_accuracy)),
    ("clusters", lambda r: f"{r.n_clusters:.2f}"),
    ("plurality", lambda r: _pct(r.plurality_share)),
    ("conformity", lambda r: _pct(r.conformity)),
    ("strict conf.", lambda r: _pct(r.strict_conformity)),
    ("changes", lambda r: _pct(r.answer_change_rate)),
    ("parse fail", lambda r: _pct(r.parse_failure_rate)),
    ("tokens", lambda r: str(r.prompt_tokens + r.completion_tokens)),
]


def _header(group: GroupMetrics) -> str:
    # The unit count includes the failed units, so "20 units (3 failed)" reads as 17 scored.
    total = group.n_units + group.failed_units
    line = (
        f"society {group.society} · strategy {group.strategy} · "
        f"{total} unit{'s' if total != 1 else ''} ({group.failed_units} failed)"
    )
    return line + (f" · {group.retries} retries" if group.retries else "")


def _behaviour_line(group: GroupMetrics) -> str:
    if not group.behaviours:
        return "behaviours: –"
    parts = [f"{b.replace('_', ' ')} {_pct(group.behaviours.get(b))}" for b in BEHAVIOURS]
    return "behaviours: " + " · ".join(parts)


def _table(rounds: list[RoundMetrics]) -> list[str]:
    rows = [[h for h, _ in _COLUMNS]] + [[cell(r) for _, cell in _COLUMNS] for r in rounds]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]


def format_group(group: GroupMetrics) -> str:
    """One group's block: header, behaviour line and the per-round table.

    Args:
        group: the group's metrics.

    Returns:
        The block as lines joined by newlines, without a trailing newline.
    """
    lines = [_header(group), _behaviour_line(group)]
    lines += _table(group.rounds) if group.rounds else ["(no scored units)"]
    return "\n".join(lines)


def format_table(summary: Summary) -> str:
    """The per-round table of every (society, strategy) group, groups separated by blank lines.

    Columns: round, acc (mean agent accuracy), maj (majority-vote accuracy), clusters (mean
    number of answer clusters), plurality (share of agents holding the most common answer),
    conformity, strict conf., changes (answer change rate), parse fail and tokens (prompt +
    completion). Percentages have one decimal; "–" marks an undefined value.

    Args:
        summary: the summary from ``societies.metrics.summarize``.

    Returns:
        The report text, ending with a newline (empty if there are no groups).
    """
    blocks = [format_group(g) for g in summary.groups]
    if summary.ledger is not None:
        blocks.append(format_ledger(summary))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def format_ledger(summary: Summary) -> str:
    """One line of what the run paid: calls, cache hits, tokens and cost (each turn once)."""
    if summary.ledger is None:
        return ""
    total = summary.ledger.total
    cost = f" · cost {total.cost:.4f}" if total.cost is not None else ""
    return (f"spent: {total.calls} calls ({total.cached_calls} from cache) · "
            f"{total.prompt_tokens} prompt + {total.completion_tokens} completion tokens{cost}")
