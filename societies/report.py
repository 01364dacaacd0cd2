"""Plain-text reports: the per-round table of a summary, the budget table and the ledger
(the parse audit of a run's records is in :mod:`societies.audit`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction

from societies.baselines import BASELINE_PREFIX
from societies.metrics import BEHAVIOURS, GroupMetrics, RoundMetrics, Summary
from societies.summary import Conformity

DASH = "–"  # shown where a metric is undefined (round 0, no majority, not recorded)


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal, or the dash when undefined."""
    return DASH if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return DASH if x is None else f"{x:.2f}"


# (header, cell) per column, in table order. "|ans" columns count only the agents that answered.
_COLUMNS: list[tuple[str, Callable[[RoundMetrics], str]]] = [
    ("round", lambda r: str(r.index)),
    ("acc", lambda r: pct(r.mean_accuracy)),
    ("maj", lambda r: pct(r.majority_accuracy)),
    ("clust", lambda r: _num(r.n_clusters)),
    ("plur", lambda r: pct(r.plurality_share)),
    ("ans", lambda r: pct(r.answered_rate)),
    ("clust|ans", lambda r: _num(r.n_clusters_answered)),
    ("plur|ans", lambda r: pct(r.plurality_share_answered)),
    ("conform", lambda r: pct(r.conformity)),
    ("strict", lambda r: pct(r.strict_conformity)),
    ("changes", lambda r: pct(r.answer_change_rate)),
    ("parse", lambda r: pct(r.parse_failure_rate)),
    ("trunc", lambda r: pct(r.truncated_rate)),
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
    parts = [f"{b.replace('_', ' ')} {pct(group.behaviours.get(b))}" for b in BEHAVIOURS]
    return "behaviours: " + " · ".join(parts)


def _truncation_line(group: GroupMetrics) -> list[str]:
    """A warning when replies were cut at max_tokens (nothing when none were)."""
    r = group.replies
    if not r.truncated:
        return []
    return [f"truncated: {r.truncated} of {r.turns} replies cut at max_tokens, "
            f"{r.truncated_answered} of them still read as an answer (suspect)"]


_WIDTH = 110  # the social block wraps its lines to this many characters


def _wrapped(head: str, parts: Sequence[str]) -> list[str]:
    """``head`` then the parts joined by " · ", wrapped at _WIDTH with an indent."""
    lines, line = [], head
    for i, part in enumerate(parts):
        piece = part if i == 0 else " · " + part
        if i and len(line) + len(piece) > _WIDTH:
            lines.append(line + " ·")
            line, piece = "  " + part, ""
        line += piece
    return [*lines, line]


def _of(share: float | None, base: int) -> str:
    return f"{pct(share)} of {base}"


def _conformity(c: Conformity) -> str:
    return f"{_of(c.rate, c.steps)} (strict {_of(c.strict_rate, c.strict_steps)})"


def _social_lines(group: GroupMetrics) -> list[str]:
    """The compact social block: exposed conformity vs control, stubbornness, consensus."""
    s = group.social
    if s is None:
        return []
    lines = []
    e, c = s.exposed, s.control
    if e.turns or c.turns:
        lines += _wrapped("social: ", [
            f"exposed conformity {_conformity(e)}",
            f"{e.turns - e.steps} of {e.turns} exposed turns saw no majority",
            f"reflection control {_conformity(c)}"])
    if any(x.steps for x in s.stubbornness.values()):
        lines += _wrapped("stubbornness (kept its answer against the seen majority): ", [
            f"{t} {_of(x.rate, x.steps)}" for t, x in s.stubbornness.items()])
    u, q = s.unanimity, s.quorum
    quorum = Fraction(s.quorum_q).limit_denominator(100)
    parts = [f"unanimous {u.reached}/{u.units} units (mean first round {_num(u.mean_round)})",
             f"≥{quorum} agree {q.reached}/{q.units} (mean first round {_num(q.mean_round)})"]
    if s.flip_debate is not None or s.flip_reflection is not None:
        parts.append(f"flips debate {pct(s.flip_debate)}, reflection {pct(s.flip_reflection)}")
    return lines + _wrapped("consensus: ", parts)


def _table(group: GroupMetrics) -> list[str]:
    header = [h for h, _ in _COLUMNS]
    rows = [[cell(r) for _, cell in _COLUMNS] for r in group.rounds]
    # Groups with role calls (a summariser, a moderator) get the tokens those calls took in
    # each round, apart from the members' (so "tokens" keeps meaning the members').
    roles = [t["prompt"] + t["completion"] for t in group.role_tokens]
    if any(roles):
        header.append("role tokens")
        for row, spent in zip(rows, roles, strict=False):
            row.append(str(spent))
    return aligned([header, *rows])


def _final_line(group: GroupMetrics) -> list[str]:
    """The unit's final answers beside the last round's majority, the rounds used and what
    the final deciders spent (nothing for older records without final answers)."""
    if group.final_accuracy is None or not group.rounds:
        return []
    methods = ", ".join(f"{m}" if len(group.final_methods) == 1 else f"{m} {n}"
                        for m, n in sorted(group.final_methods.items()))
    parts = [f"final answer ({methods}) {pct(group.final_accuracy)} correct, "
             f"last-round majority {pct(group.rounds[-1].majority_accuracy)}"]
    rounds = len(group.rounds) - 1
    if rounds:
        parts.append(f"rounds used {_num(group.rounds_used)} of {rounds} "
                     f"({group.stopped_units} of {group.n_units} units stopped early)")
    final_tokens = group.final_prompt_tokens + group.final_completion_tokens
    if final_tokens:
        parts.append(f"final calls {final_tokens} tokens")
    if group.tokens_per_unit is not None:
        parts.append(f"{group.tokens_per_unit:.0f} tokens per unit")
    return _wrapped("", parts)


def aligned(rows: Sequence[Sequence[str]], left: int = 0) -> list[str]:
    """Rows as lines, columns right-aligned (the first ``left`` columns left-aligned)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w)
                      for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]


def format_group(group: GroupMetrics) -> str:
    """One group's block: header, behaviour line, truncation warning (if any), per-round table.

    Args:
        group: the group's metrics.

    Returns:
        The block as lines joined by newlines, without a trailing newline.
    """
    lines = [_header(group), _behaviour_line(group), *_truncation_line(group)]
    lines += _table(group) if group.rounds else ["(no scored units)"]
    return "\n".join(lines + _final_line(group) + _social_lines(group))


def format_table(summary: Summary) -> str:
    """The per-round table of every (society, strategy) group, groups separated by blank lines.

    Columns: round, acc (mean agent accuracy), maj (majority-vote accuracy), clust (mean
    number of answer clusters, None one of them), plur (plurality share: agents holding the
    most common answer, None included), ans (share of turns with an answer), clust|ans and
    plur|ans (the same two over the agents that answered), conform (conformity), strict (strict
    conformity), changes (answer change rate), parse (parse failures, truncated included), trunc
    (replies cut at max_tokens) and tokens (prompt + completion). Percentages have one decimal;
    "–" marks an undefined value. A group with truncated replies gets a warning line saying how
    many of them were still read as an answer. Under the table, a short social block (see
    ``societies.summary.SocialMetrics``): conformity to the majority each debate turn saw
    against the reflection control, stubbornness per trait, and when consensus came.

    Args:
        summary: the summary from ``societies.metrics.summarize``.

    Returns:
        The report text, ending with a newline (empty if there are no groups).
    """
    blocks = [format_group(g) for g in summary.groups]
    if any(g.society.startswith(BASELINE_PREFIX) for g in summary.groups):
        blocks.append(format_budget(summary))
    if summary.ledger is not None:
        blocks.append(format_ledger(summary))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def society_budget(summary: Summary) -> float | None:
    """Mean tokens per scored unit over the groups that are not baselines: the budget the
    baselines are matched against (None without such units)."""
    groups = [g for g in summary.groups if not g.society.startswith(BASELINE_PREFIX)
              and g.tokens_per_unit is not None and g.n_units]
    units = sum(g.n_units for g in groups)
    if not units:
        return None
    return sum((g.tokens_per_unit or 0.0) * g.n_units for g in groups) / units


def format_budget(summary: Summary) -> str:
    """Societies and baselines side by side: final accuracy, tokens per unit, and each group's
    tokens as a multiple of the societies' mean unit (the budget the baselines match).

    Tokens are prompt + completion of every call a unit made (members, role calls, the final
    decider), cached calls included: what the unit would cost uncached.
    """
    budget = society_budget(summary)
    rows = [["society", "strategy", "units", "final", "maj (last)", "rounds", "tokens/unit",
             "× societies"]]
    # Societies first, then the baselines, each in the summary's order.
    for g in sorted(summary.groups, key=lambda g: g.society.startswith(BASELINE_PREFIX)):
        # A lone agent is its own majority (compact.majority_correct), as in its final answer.
        last = g.rounds[-1].majority_accuracy if g.rounds else None
        ratio = (g.tokens_per_unit / budget if budget and g.tokens_per_unit is not None
                 else None)
        rows.append([g.society, g.strategy, str(g.n_units), pct(g.final_accuracy),
                     pct(last), str(len(g.rounds) - 1) if g.rounds else DASH,
                     DASH if g.tokens_per_unit is None else f"{g.tokens_per_unit:.0f}",
                     DASH if ratio is None else f"{ratio:.2f}"])
    head = _wrapped("societies and baselines: ", [
        "tokens per unit count every call (role calls and cached ones included)",
        "× societies: against the societies' mean unit"
        + (f" ({budget:.0f} tokens)" if budget else "")])
    return "\n".join([*head, *("  " + line for line in aligned(rows, left=2))])


def format_ledger(summary: Summary) -> str:
    """One line of what the run paid: calls, cache hits, tokens and cost (each turn once),
    and what of it role calls (summaries, verdicts, judges) took."""
    if summary.ledger is None:
        return ""
    total, roles = summary.ledger.total, summary.ledger.roles
    cost = f" · cost {total.cost:.4f}" if total.cost is not None else ""
    line = (f"spent: {total.calls} calls ({total.cached_calls} from cache) · "
            f"{total.prompt_tokens} prompt + {total.completion_tokens} completion tokens{cost}")
    if roles.calls or roles.cached_calls:
        line += (f" · of which role calls: {roles.calls} ({roles.cached_calls} from cache), "
                 f"{roles.prompt_tokens + roles.completion_tokens} tokens")
    return line
