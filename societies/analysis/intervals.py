"""Bootstrap intervals of every per-round rate, resampling questions (see ``stats``).

Part of :mod:`societies.analysis.stats`, which re-exports :func:`intervals`.
"""

from __future__ import annotations

import warnings
from array import array
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from societies.analysis.frames import Source, pandas, scored_records
from societies.compact import (
    Grid,
    agent_keys,
    is_step,
    majority_answer,
    majority_correct,
    project,
)
from societies.records import UnitRecord

if TYPE_CHECKING:
    import pandas as pd

INTERVAL_COLUMNS = ("society", "strategy", "round", "metric", "mean", "lo", "hi",
                    "n_questions", "n_units")


def _parts(grid: Grid, k: int, keys: Sequence[str]
           ) -> dict[str, tuple[float, float]]:
    """Round k of one unit as (numerator, denominator) per metric.

    Summed over units, num/den gives exactly the RoundMetrics value of the group, so resampling
    questions and summing again gives the bootstrap distribution of that same statistic.
    """
    row = grid[k]
    n = len(row)
    answers = [c.answer for c in row]
    answered = [a for a in answers if a is not None]
    complete = [c for c in row if not (c.errored or c.truncated)]
    out: dict[str, tuple[float, float]] = {
        "mean_accuracy": (sum(c.correct for c in row), n),
        "majority_accuracy": (majority_correct(row), 1),
        "n_clusters": (len(set(answers)), 1),
        "plurality_share": (Counter(answers).most_common(1)[0][1] / n, 1),
        "n_clusters_answered": (len(set(answered)), 1 if answered else 0),
        "plurality_share_answered": (
            Counter(answered).most_common(1)[0][1] / len(answered) if answered else 0,
            1 if answered else 0),
        "answered_rate": (len(answered), n),
        "parse_failure_rate": (sum(c.parse_failed for c in row), n),
        "error_rate": (sum(c.errored for c in row), n),
    }
    for key, c in zip(keys, row, strict=True):
        out[f"accuracy_per_agent.{key}"] = (c.correct, 1)
    # Dropped later for groups holding schema-1 records, which did not record finish reasons.
    out["truncated_rate"] = (sum(c.truncated for c in row), n)
    out["truncated_answered_rate"] = (sum(c.truncated and c.answer is not None for c in row), n)
    out["parse_failure_rate_untruncated"] = (sum(c.parse_failed for c in complete), len(complete))
    if k >= 1:
        # Only moves that made a call count (compact.is_step), as in the summary's metrics.
        before = grid[k - 1]
        pairs = [(p, c) for p, c in zip(before, row, strict=True) if is_step(p, c)]
        out["answer_change_rate"] = (sum(p.answer != c.answer for p, c in pairs), len(pairs))
        maj = majority_answer([p.answer for p in before])
        steps = len(pairs) if maj is not None else 0
        follows = [(p, c) for p, c in pairs if maj is not None and c.answer == maj]
        minority = [c for p, c in pairs if maj is not None and p.answer != maj]
        out["conformity"] = (len(follows), steps)
        for split in ("tt", "tf", "ft", "ff"):
            hits = sum(("t" if p.correct else "f") + ("t" if c.correct else "f") == split
                       for p, c in follows)
            out[f"conformity_split.{split}"] = (hits, steps)
        out["strict_conformity"] = (sum(c.answer == maj for c in minority), len(minority))
    return out


_TRUNCATION = ("truncated_rate", "truncated_answered_rate", "parse_failure_rate_untruncated")


class _Sums:
    """One group's per-question sums of every (round, metric) numerator and denominator.

    Repeats of a question add into the same slot, so a resample draws a question with all of
    them. Stored in flat float arrays (not per-unit objects) to keep 10,000 units small.
    """

    def __init__(self) -> None:
        self.questions: dict[str, int] = {}
        self.sums: dict[tuple[int, str], tuple[array[float], array[float]]] = {}
        self.n_units: Counter[int] = Counter()
        self.known = True  # every unit recorded finish reasons (schema >= 2)

    def add(self, unit: UnitRecord, metrics: Sequence[str] | None) -> None:
        q = self.questions.setdefault(unit.question_id, len(self.questions))
        self.known = self.known and unit.schema_version >= 2
        grid, keys = project(unit).grid, agent_keys(unit.agents)
        for k in range(len(grid)):
            self.n_units[k] += 1
            for name, (num, den) in _parts(grid, k, keys).items():
                if metrics is not None and name not in metrics:
                    continue
                nums, dens = self.sums.setdefault((k, name), (array("d"), array("d")))
                if len(nums) <= q:  # grow by doubling: new questions arrive one by one
                    pad = [0.0] * max(q + 1 - len(nums), len(nums))
                    nums.extend(pad)
                    dens.extend(pad)
                nums[q] += num
                dens[q] += den


def intervals(source: Source, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
              metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Each metric with a percentile bootstrap interval over questions.

    Per society x strategy x round and metric: ``mean`` is the RoundMetrics value (pooled over
    all units); ``lo``/``hi`` the ``level`` interval of that statistic when question ids are
    drawn with replacement (a drawn question brings all its repeats). Seeded per group, so a
    group's interval does not depend on the other groups of the run.

    Args:
        source: a run directory or unit records.
        n_boot: bootstrap resamples.
        seed: the generator seed.
        level: the interval's coverage.
        metrics: keep only these metric names (e.g. ``["majority_accuracy"]``); default all.

    Returns:
        Columns ``society, strategy, round, metric, mean, lo, hi, n_questions, n_units``; a
        metric undefined in a round (conformity in round 0) has no row.
    """
    import numpy as np

    pd = pandas()
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError("n_boot must be >= 1 and level in (0, 1)")
    groups: dict[tuple[str, str], _Sums] = {}
    for rec in scored_records(source):  # one pass: each unit is reduced to sums as it arrives
        groups.setdefault((rec.society, rec.strategy), _Sums()).add(rec, metrics)
    tail = (1 - level) / 2 * 100
    rows: list[tuple[Any, ...]] = []
    draws: dict[int, Any] = {}
    for (society, strategy), group in sorted(groups.items()):
        if not group.sums:
            continue
        names = sorted(key for key in group.sums if group.known or key[1] not in _TRUNCATION)
        n_q = len(group.questions)
        nums = np.zeros((n_q, len(names)))
        dens = np.zeros((n_q, len(names)))
        for j, key in enumerate(names):
            num, den = group.sums[key]
            size = min(len(num), n_q)
            nums[:size, j], dens[:size, j] = num[:size], den[:size]
        # One multinomial draw = one resample of questions with replacement (counts per id).
        # Seeded per group, so groups with as many questions share the draws: cache them.
        if n_q not in draws:
            rng = np.random.default_rng(seed)
            draws[n_q] = rng.multinomial(n_q, np.full(n_q, 1 / n_q), size=n_boot).astype(float)
        bnum, bden = draws[n_q] @ nums, draws[n_q] @ dens
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = np.where(bden > 0, bnum / np.where(bden > 0, bden, 1), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an all-NaN column (never defined) stays NaN
            lo, hi = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
        total_num, total_den = nums.sum(axis=0), dens.sum(axis=0)
        for j, (k, name) in enumerate(names):
            if total_den[j] > 0:  # a metric undefined in this round gets no row
                rows.append((society, strategy, k, name, total_num[j] / total_den[j],
                             float(lo[j]), float(hi[j]), int((dens[:, j] > 0).sum()),
                             group.n_units[k]))
    return pd.DataFrame(rows, columns=list(INTERVAL_COLUMNS)).sort_values(
        ["society", "strategy", "metric", "round"], ignore_index=True)
