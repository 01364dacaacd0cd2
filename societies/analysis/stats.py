"""Statistics over a run: bootstrap intervals (``intervals``), paired tests, ANOVA, win counts.

Every function takes a run directory or the unit records themselves (``Source``) and returns a
tidy pandas DataFrame. Failed units are left out, as in ``societies.metrics``. The unit of
resampling and pairing is the *question*: repeats of one question are not independent draws,
so they are pooled per question first. Definitions and assumptions: README, "Statistics".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

from societies.analysis.frames import Source, pandas, scored_records, strategy_symbols
from societies.analysis.intervals import INTERVAL_COLUMNS, intervals
from societies.compact import majority_correct, project

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EXACT_BELOW", "INTERVAL_COLUMNS", "Source", "anova", "compare", "compare_runs",
           "holm", "intervals", "mcnemar", "scores", "wins"]

EXACT_BELOW = 25  # McNemar uses the exact binomial test below this many discordant pairs


def scores(source: Source) -> pd.DataFrame:
    """Per scored unit and round: ``majority_correct`` (0/1) and ``mean_accuracy``.

    Columns ``society, strategy, repeat, question_id, round, final, majority_correct,
    mean_accuracy``; ``final`` marks each unit's last round. The input of the paired tests.
    """
    pd = pandas()
    rows = []
    for u in scored_records(source):
        grid = project(u).grid
        for k, row in enumerate(grid):
            rows.append((u.society, u.strategy, u.repeat, u.question_id, k, k == len(grid) - 1,
                         float(majority_correct(row)), sum(c.correct for c in row) / len(row)))
    return pd.DataFrame(rows, columns=["society", "strategy", "repeat", "question_id", "round",
                                       "final", "majority_correct", "mean_accuracy"])



def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN, not counted).

    The i-th smallest of m p-values becomes ``max_{j<=i} min(1, (m - j + 1) * p_(j))``.
    """
    import math

    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, running = len(order), 0.0
    out = [math.nan] * len(pvalues)
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def mcnemar(only_a: int, only_b: int) -> tuple[str, float]:
    """Two-sided McNemar test from the discordant counts; returns (method, p).

    Exact binomial (b ~ Bin(b + c, 1/2)) below ``EXACT_BELOW`` discordant pairs, otherwise the
    chi-square statistic with continuity correction ``(|b - c| - 1)^2 / (b + c)`` on 1 df.
    """
    from scipy import stats

    n = only_a + only_b
    if n == 0:
        return "exact", 1.0
    if n < EXACT_BELOW:
        return "exact", float(min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), n, 0.5)))
    chi = (abs(only_a - only_b) - 1) ** 2 / n
    return "chi2", float(stats.chi2.sf(chi, 1))


def _wilcoxon(diff: Any) -> float:
    from scipy import stats

    nonzero = diff[diff != 0]
    if len(nonzero) == 0:
        return 1.0 if len(diff) else float("nan")  # identical on every question
    return float(stats.wilcoxon(nonzero).pvalue)


def _at(frame: pd.DataFrame, round: int | None) -> pd.DataFrame:
    return frame[frame["final"].astype(bool)] if round is None else frame[frame["round"] == round]


def _pair(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, Any]:
    """McNemar over units paired by (question, repeat); Wilcoxon over per-question accuracy."""
    units = a.merge(b, on=["question_id", "repeat"], suffixes=("_a", "_b"))
    ma, mb = units["majority_correct_a"], units["majority_correct_b"]
    only_a, only_b = int(((ma == 1) & (mb == 0)).sum()), int(((ma == 0) & (mb == 1)).sum())
    method, p = mcnemar(only_a, only_b)
    qa = a.groupby("question_id")["mean_accuracy"].mean()
    qb = b.groupby("question_id")["mean_accuracy"].mean()
    common = qa.index.intersection(qb.index)
    diff = (qa[common] - qb[common]).to_numpy()
    nan = float("nan")
    return {
        "round_a": int(a["round"].max()) if len(a) else None,
        "round_b": int(b["round"].max()) if len(b) else None,
        "n_pairs": len(units), "majority_a": float(ma.mean()) if len(units) else nan,
        "majority_b": float(mb.mean()) if len(units) else nan, "only_a": only_a,
        "only_b": only_b, "mcnemar_method": method, "mcnemar_p": p,
        "n_questions": len(common),
        "accuracy_a": float(qa[common].mean()) if len(common) else nan,
        "accuracy_b": float(qb[common].mean()) if len(common) else nan,
        "accuracy_diff": float(diff.mean()) if len(common) else nan,
        "wilcoxon_p": _wilcoxon(diff),
    }


_PAIR_COLUMNS = ["round_a", "round_b", "n_pairs", "majority_a", "majority_b", "only_a", "only_b",
                 "mcnemar_method", "mcnemar_p", "n_questions", "accuracy_a", "accuracy_b",
                 "accuracy_diff", "wilcoxon_p", "mcnemar_p_holm", "wilcoxon_p_holm"]


def _holm_columns(rows: list[dict[str, Any]], keys: list[str]) -> pd.DataFrame:
    pd = pandas()
    frame = pd.DataFrame(rows, columns=keys + _PAIR_COLUMNS)
    for test in ("mcnemar", "wilcoxon"):
        frame[f"{test}_p_holm"] = holm(list(frame[f"{test}_p"]))
    return frame


def compare(source: Source, *, round: int | None = None) -> pd.DataFrame:
    """Paired tests between groups of one run over the questions they share.

    Every pair of strategies within a society (``kind="strategy"``) and every pair of societies
    under a strategy (``kind="society"``), at ``round`` (default: each group's last round).

    Returns:
        Columns ``kind, society_a, strategy_a, society_b, strategy_b, round_a, round_b,
        n_pairs, majority_a, majority_b, only_a, only_b, mcnemar_method, mcnemar_p,
        n_questions, accuracy_a, accuracy_b, accuracy_diff, wilcoxon_p, mcnemar_p_holm,
        wilcoxon_p_holm``. ``only_a``: pairs where only a's majority is correct. Holm runs over
        all rows, separately for each test.
    """
    frame = _at(scores(source), round)
    groups = {key: g for key, g in frame.groupby(["society", "strategy"])}
    rows = []
    for (sa, ta), (sb, tb) in combinations(sorted(groups), 2):
        if sa == sb or ta == tb:
            rows.append({"kind": "strategy" if sa == sb else "society", "society_a": sa,
                         "strategy_a": ta, "society_b": sb, "strategy_b": tb,
                         **_pair(groups[(sa, ta)], groups[(sb, tb)])})
    return _holm_columns(rows, ["kind", "society_a", "strategy_a", "society_b", "strategy_b"])


def compare_runs(a: Source, b: Source, *, round: int | None = None) -> pd.DataFrame:
    """Paired tests between two runs, per (society, strategy) present in both.

    Pairs units by (question, repeat) and questions by id; only the common ones count.
    Columns ``society, strategy`` then those of :func:`compare` from ``round_a`` on (a is the
    first run).
    """
    fa, fb = _at(scores(a), round), _at(scores(b), round)
    ga = {key: g for key, g in fa.groupby(["society", "strategy"])}
    gb = {key: g for key, g in fb.groupby(["society", "strategy"])}
    rows = [{"society": s, "strategy": t, **_pair(ga[(s, t)], gb[(s, t)])}
            for s, t in sorted(ga.keys() & gb.keys())]
    return _holm_columns(rows, ["society", "strategy"])


def _per_question(frame: pd.DataFrame, measure: str) -> pd.DataFrame:
    if measure not in ("majority_correct", "mean_accuracy"):
        raise ValueError(f"measure: {measure!r} is not majority_correct or mean_accuracy")
    return frame.groupby(["society", "strategy", "question_id"], as_index=False)[measure].mean()


def anova(source: Source, *, round: int | None = None,
          measure: str = "mean_accuracy") -> pd.DataFrame:
    """MachineSoM's one-way ANOVA over per-question accuracies (repeats averaged).

    Across the strategies of each society (``kind="strategies"``) and across the societies
    under each strategy (``kind="societies"``), wherever there are at least two groups.

    Returns:
        Columns ``kind, society, strategy, groups, n_groups, f, p`` (``society`` or
        ``strategy`` is "*" for the side varied; ``groups`` "|"-joined). F and p are NaN when
        every value is the same.
    """
    from scipy import stats

    pd = pandas()
    q = _per_question(_at(scores(source), round), measure)
    rows = []
    for kind, fixed, varied in (("strategies", "society", "strategy"),
                                ("societies", "strategy", "society")):
        for value, part in q.groupby(fixed):
            samples = {name: g[measure].to_numpy() for name, g in part.groupby(varied)}
            if len(samples) < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # constant input: F is NaN, said in the doc
                res = stats.f_oneway(*samples.values())
            rows.append({"kind": kind, fixed: value, varied: "*",
                         "groups": "|".join(map(str, samples)), "n_groups": len(samples),
                         "f": float(res.statistic), "p": float(res.pvalue)})
    return pd.DataFrame(rows, columns=["kind", "society", "strategy", "groups", "n_groups",
                                       "f", "p"])


def wins(source: Source, *, round: int | None = None,
         measure: str = "majority_correct") -> pd.DataFrame:
    """Per strategy, the questions on which it beats, ties or loses to all-debate ("0" * rounds).

    Compares the per-question ``measure`` (repeats averaged) with the all-debate strategy of the
    same length in the same society, over their common questions; strategies without such a
    baseline in the run are left out.

    Returns:
        Columns ``society, strategy, baseline, n_questions, wins, ties, losses``.
    """
    pd = pandas()
    q = _per_question(_at(scores(source), round), measure)
    table = {key: g.set_index("question_id")[measure]
             for key, g in q.groupby(["society", "strategy"])}
    rows = []
    for society, strategy in sorted(table):
        base = "0" * len(strategy_symbols(strategy))
        if strategy == base or (society, base) not in table:
            continue
        mine, theirs = table[(society, strategy)], table[(society, base)]
        common = mine.index.intersection(theirs.index)
        d = mine[common] - theirs[common]
        rows.append({"society": society, "strategy": strategy, "baseline": base,
                     "n_questions": len(common), "wins": int((d > 0).sum()),
                     "ties": int((d == 0).sum()), "losses": int((d < 0).sum())})
    return pd.DataFrame(rows, columns=["society", "strategy", "baseline", "n_questions",
                                       "wins", "ties", "losses"])
