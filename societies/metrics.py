"""Metrics over unit records: accuracy, consensus, conformity, answer changes, cost, behaviours.

Every number is a pure function of the records. Records are grouped by (society, strategy) and
each metric aggregates over the group's units (questions × repeats). Units with status
``"failed"`` are left out of every metric but counted in ``failed_units``. A turn with ``error``
set counts as answer None (and not correct); a turn missing from a round (an agent whose branch
ended) counts as an error turn. A turn's ``finish_reason`` is only known from schema-2
records on (schema 1 did not record it), so truncation measures are None for groups with older
records. Turns that made no call (stopped, idle) hold their carried answer in the round's state
but are not replies: see ``societies.compact``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from itertools import pairwise
from statistics import fmean

from societies.analysis.confidence import confidence_weighted_majority
from societies.analysis.social import social_metrics
from societies.compact import (
    CARRIED,
    Cell,
    CompactUnit,
    Grid,
    agent_keys,
    answers,
    is_step,
    majority_answer,
    majority_correct,
    project,
)
from societies.records import UnitRecord
from societies.summary import (
    BEHAVIOURS,
    SPLIT_KEYS,
    SUMMARY_SCHEMA_VERSION,
    GroupMetrics,
    ReplyCounts,
    RoundMetrics,
    Summary,
)

__all__ = ["BEHAVIOURS", "SPLIT_KEYS", "SUMMARY_SCHEMA_VERSION", "GroupMetrics", "ReplyCounts",
           "RoundMetrics", "Summary", "behaviour", "group_metrics", "majority_answer",
           "summarize"]

_TF = {True: "t", False: "f"}  # correctness letters of the conformity split keys


def _imean(values: Iterable[int]) -> float:
    """The mean of whole numbers (bools too): fmean's exact value, computed faster."""
    items = list(values)
    return sum(items) / len(items)


def behaviour(majority_correct_by_round: Sequence[bool]) -> str:
    """The behaviour category of one unit from its majority correctness m_0..m_R.

    "stable_correct": all true; "stable_wrong": all false; "correcting": exactly one change,
    false→true; "degrading": exactly one change, true→false (MachineSoM's "changing correct
    answers"); "wavering": two or more changes.
    """
    m = list(majority_correct_by_round)
    changes = sum(a != b for a, b in pairwise(m))
    if changes == 0:
        return "stable_correct" if m and m[0] else "stable_wrong"
    if changes == 1:
        return "correcting" if m[-1] else "degrading"
    return "wavering"


def _rate(num: float, den: int) -> float | None:
    return num / den if den else None


def _answered_consensus(rows: Sequence[Sequence[Cell]]) -> dict[str, float | int | None]:
    """The consensus fields over answered agents only (see RoundMetrics)."""
    answered = [[a for a in answers(row) if a is not None] for row in rows]
    answered = [a for a in answered if a]  # a unit where nobody answered has no consensus
    return {
        "n_units_answered": len(answered),
        "n_clusters_answered": _imean(len(set(a)) for a in answered) if answered else None,
        "plurality_share_answered": (
            fmean(Counter(a).most_common(1)[0][1] / len(a) for a in answered)
            if answered else None),
    }


def _truncation(cells: Sequence[Cell], known: bool) -> dict[str, float | None]:
    """The truncation fields of RoundMetrics; all None when finish reasons were not recorded."""
    complete = [c for c in cells if not (c.errored or c.truncated)]
    return {
        "truncated_rate": _imean(c.truncated for c in cells) if known else None,
        "truncated_answered_rate": (
            _imean(c.truncated and c.answer is not None for c in cells) if known else None),
        "parse_failure_rate_untruncated": (
            _imean(c.parse_failed for c in complete) if known and complete else None),
    }


def _reply_counts(grids: Sequence[Grid], known: bool) -> ReplyCounts:
    cells = [c for g in grids for row in g for c in row if c.pattern not in CARRIED]
    return ReplyCounts(
        turns=len(cells),
        answered=sum(c.answer is not None for c in cells),
        no_answer=sum(c.parse_failed for c in cells),
        errors=sum(c.errored for c in cells),
        truncated=sum(c.truncated for c in cells) if known else None,
        truncated_answered=(
            sum(c.truncated and c.answer is not None for c in cells) if known else None),
    )


def _round_metrics(
    k: int, grids: Sequence[Grid], agents: Sequence[str], finish_known: bool = True
) -> RoundMetrics:
    """Metrics of round ``k`` over the grids (one per unit) that have it; see RoundMetrics.

    ``finish_known`` says whether the units recorded why each reply ended (schema ≥ 2).
    """
    keys = agent_keys(agents)
    rows = [g[k] for g in grids]
    n_units, n_agents = len(rows), len(keys)
    cells = [c for row in rows for c in row]

    conf_steps = conforming = strict_steps = strict_conforming = changed = steps = 0
    split: Counter[str] = Counter()
    if k >= 1:
        for grid in grids:
            prev, cur = grid[k - 1], grid[k]
            stepped = [(p, c) for p, c in zip(prev, cur, strict=True) if is_step(p, c)]
            steps += len(stepped)
            changed += sum(p.answer != c.answer for p, c in stepped)
            maj = majority_answer(answers(prev))
            if maj is None:
                continue
            for p, c in stepped:
                conf_steps += 1
                follows = c.answer == maj
                if follows:
                    conforming += 1
                    split[_TF[p.correct] + _TF[c.correct]] += 1
                if p.answer != maj:
                    strict_steps += 1
                    strict_conforming += follows

    accuracy = {key: _imean(row[i].correct for row in rows) for i, key in enumerate(keys)}
    per_agent_tokens = {
        key: {
            "prompt": sum(row[i].prompt_tokens for row in rows),
            "completion": sum(row[i].completion_tokens for row in rows),
        }
        for i, key in enumerate(keys)
    }
    return RoundMetrics(
        index=k,
        n_units=n_units,
        accuracy_per_agent=accuracy,
        mean_accuracy=_imean(c.correct for c in cells),
        majority_accuracy=_imean(majority_correct(row) for row in rows),
        n_clusters=_imean(len(set(answers(row))) for row in rows),
        plurality_share=fmean(
            Counter(answers(row)).most_common(1)[0][1] / n_agents for row in rows
        ),
        conformity=_rate(conforming, conf_steps),
        conformity_split={s: split[s] / conf_steps for s in SPLIT_KEYS} if conf_steps else {},
        strict_conformity=_rate(strict_conforming, strict_steps),
        answer_change_rate=_rate(changed, steps) if k >= 1 else None,
        parse_failure_rate=_imean(c.parse_failed for c in cells),
        error_rate=_imean(c.errored for c in cells),
        answered_rate=_imean(c.answer is not None for c in cells),
        **_answered_consensus(rows),
        **_truncation(cells, finish_known),
        prompt_tokens=sum(t["prompt"] for t in per_agent_tokens.values()),
        completion_tokens=sum(t["completion"] for t in per_agent_tokens.values()),
        tokens_per_agent=per_agent_tokens,
        weighted_majority_accuracy=_weighted_majority_accuracy(rows),
    )



def _weighted_majority_accuracy(rows: Sequence[Sequence[Cell]]) -> float | None:
    """Share of units whose confidence-weighted majority is correct (see RoundMetrics)."""
    if not any(c.prob is not None for row in rows for c in row):
        return None
    right = 0
    for row in rows:
        top = confidence_weighted_majority([c.answer for c in row], [c.prob for c in row])
        right += top is not None and any(c.answer == top and c.correct for c in row)
    return right / len(rows)


def group_metrics(units: Sequence[UnitRecord]) -> GroupMetrics:
    """Metrics of one (society, strategy) group; all units must belong to that group.

    Raises:
        ValueError: if the units are empty, mix groups, or scored units differ in agents.
    """
    return _group_metrics([project(u) for u in units])


def _group_metrics(units: Sequence[CompactUnit]) -> GroupMetrics:
    """``group_metrics`` over compact projections (see ``societies.compact``)."""
    if not units:
        raise ValueError("a group needs at least one unit")
    society, strategy = units[0].society, units[0].strategy
    if any((u.society, u.strategy) != (society, strategy) for u in units):
        raise ValueError("units of different (society, strategy) groups given together")
    ok = [u for u in units if u.status == "ok"]
    agents = ok[0].agents if ok else ()
    if any(u.agents != agents for u in ok):
        raise ValueError(f"units of {society}/{strategy} have different agents lists")

    grids = [u.grid for u in ok]
    n_rounds = max((len(g) for g in grids), default=0)
    # Schema-1 records default finish_reason to "stop": that is no evidence of a complete reply.
    known = all(u.schema_version >= 2 for u in ok)
    # A unit contributes to the rounds it has; complete runs have the same count everywhere.
    rounds = [
        _round_metrics(k, [g for g in grids if len(g) > k], agents, known)
        for k in range(n_rounds)
    ]
    finals = [u for u in ok if u.final_method is not None]
    kinds = Counter(behaviour([majority_correct(row) for row in g]) for g in grids)
    return GroupMetrics(
        society=society,
        strategy=strategy,
        n_units=len(ok),
        failed_units=len(units) - len(ok),
        retries=sum(u.retries for u in units),
        rounds=rounds,
        behaviours={b: kinds[b] / len(grids) for b in BEHAVIOURS} if grids else {},
        replies=_reply_counts(grids, known),
        social=social_metrics(ok) if ok else None,
        role_tokens=[{"prompt": sum(u.role_tokens[k][0] for u in ok if len(u.role_tokens) > k),
                      "completion": sum(u.role_tokens[k][1] for u in ok
                                        if len(u.role_tokens) > k)}
                     for k in range(n_rounds)],
        no_call_turns=sum(c.pattern in CARRIED for g in grids for row in g for c in row),
        final_accuracy=_imean(u.final_correct for u in finals) if finals else None,
        final_methods=dict(Counter(u.final_method for u in finals if u.final_method)),
        rounds_used=_imean(u.rounds_used for u in ok) if ok else None,
        stopped_units=sum(u.stopped_after is not None for u in ok),
        final_prompt_tokens=sum(u.final_tokens[0] for u in ok),
        final_completion_tokens=sum(u.final_tokens[1] for u in ok),
        tokens_per_unit=_imean(u.tokens for u in ok) if ok else None,
    )


def summarize(records: Iterable[UnitRecord]) -> Summary:
    """Group records by (society, strategy) and compute every group's metrics.

    The records are read once, as a stream: each is reduced to its compact projection (answers,
    correctness, what each turn saw, tokens; no reply texts) as it arrives, so an iterator over
    a large run never holds the full records at once.

    Args:
        records: unit records of one run, in any order (any iterable, e.g. a generator).

    Returns:
        The summary, groups sorted by (society, strategy).
    """
    groups: defaultdict[tuple[str, str], list[CompactUnit]] = defaultdict(list)
    for record in records:
        groups[(record.society, record.strategy)].append(project(record))
    return Summary(groups=[_group_metrics(groups[key]) for key in sorted(groups)])
