"""Statistics on hand-built records; expected numbers by hand or by an independent formula."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from societies.analysis.frames import frames
from societies.analysis.stats import anova, compare, compare_runs, holm, intervals, mcnemar, wins
from societies.records import Round, Turn, UnitRecord

pd = pytest.importorskip("pandas")

AGENTS = ("a0", "a1", "a2")


def unit(rounds: Sequence[Sequence[str | Turn | None]], *, qid: str = "q0", strategy: str = "0",
         society: str = "S", repeat: int = 0, gold: str = "A", status: str = "ok",
         agents: Sequence[str] = AGENTS) -> UnitRecord:
    """A unit; an answer string is correct iff it equals gold; a short round leaves turns out."""
    def turn(agent: str, spec: str | Turn | None, k: int) -> Turn:
        if isinstance(spec, Turn):
            return spec
        return Turn(agent=agent, pattern="answer" if k == 0 else "debate", reply=f"{spec}",
                    answer=spec, correct=spec == gold)
    return UnitRecord(
        unit_id=f"{society}/{strategy}/{repeat}/{qid}", task="t", question_id=qid,
        society=society, strategy=strategy, repeat=repeat, gold=gold, agents=list(agents),
        rounds=[Round(index=k, turns=[turn(a, s, k) for a, s in zip(agents, r, strict=False)])
                for k, r in enumerate(rounds)],
        status=status)


def final(correct: Sequence[bool], strategy: str, society: str = "S",
          qids: Sequence[str] | None = None) -> list[UnitRecord]:
    """One unit per question whose final-round majority is correct as given (round 0 wrong)."""
    qids = qids or [f"q{i}" for i in range(len(correct))]
    return [unit([["B", "B", "B"], ["A", "A", "B"] if ok else ["B", "B", "A"]], qid=q,
                 strategy=strategy, society=society) for q, ok in zip(qids, correct, strict=True)]


# --- Holm and McNemar ---------------------------------------------------------------------------


def test_holm_by_hand() -> None:
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04, raised to the running max 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.02, math.nan])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1])  # NaN is not in the family


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_properties(ps: list[float]) -> None:
    adj = holm(ps)
    assert all(p <= a <= 1 for p, a in zip(ps, adj, strict=True))
    pairs = sorted(zip(ps, adj, strict=True))
    assert all(a1 <= a2 for (_, a1), (_, a2) in pairwise(pairs))


def test_mcnemar_exact_and_chi2() -> None:
    # 1 vs 6 discordant: two-sided exact p = 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * 8 / 128
    assert mcnemar(1, 6) == ("exact", pytest.approx(0.125))
    assert mcnemar(0, 0) == ("exact", 1.0)
    assert mcnemar(3, 3)[1] == 1.0
    # 10 vs 30: (|10 - 30| - 1)^2 / 40 = 9.025; chi2(1) tail = erfc(sqrt(x / 2))
    method, p = mcnemar(10, 30)
    assert method == "chi2" and p == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))


def test_compare_counts_discordant_pairs_and_corrects_the_family() -> None:
    # The 2x2 of majority correctness, X vs Y over 10 questions:
    #            Y right  Y wrong
    #   X right     2        6
    #   X wrong     1        1
    x = [True] * 8 + [False] * 2
    y = [True, True] + [False] * 6 + [True, False]
    z = [False] * 10
    rows = compare(final(x, "00") + final(y, "01") + final(z, "11"))
    xy = rows[(rows.strategy_a == "00") & (rows.strategy_b == "01")].iloc[0]
    assert (xy.kind, xy.n_pairs, xy.only_a, xy.only_b) == ("strategy", 10, 6, 1)
    assert xy.majority_a == 0.8 and xy.majority_b == 0.3
    assert xy.mcnemar_method == "exact" and xy.mcnemar_p == pytest.approx(0.125)
    assert len(rows) == 3  # 00-01, 00-11, 01-11
    assert list(rows.mcnemar_p_holm) == pytest.approx(holm(list(rows.mcnemar_p)))
    xz = rows[(rows.strategy_a == "00") & (rows.strategy_b == "11")].iloc[0]
    # 8 vs 0 discordant: 2 / 2^8; three tests, smallest p times 3
    assert xz.mcnemar_p == pytest.approx(2 / 256)
    assert xz.mcnemar_p_holm == pytest.approx(3 * 2 / 256)


def test_wilcoxon_on_per_question_accuracy() -> None:
    # Six agents; X beats Y on question i by i + 1 agents: distinct differences, all positive,
    # so the exact signed-rank p is 2 / 2^6 (only the all-plus sign pattern is as extreme).
    six = [f"a{i}" for i in range(6)]
    x = [unit([["A"] * (i + 1) + ["B"] * (5 - i)], qid=f"q{i}", strategy="", agents=six)
         for i in range(6)]
    y = [unit([["B"] * 6], qid=f"q{i}", society="T", strategy="", agents=six) for i in range(6)]
    row = compare(x + y).iloc[0]
    assert row.kind == "society" and row.n_questions == 6
    assert row.accuracy_diff == pytest.approx(sum(range(1, 7)) / 6 / 6)
    assert row.wilcoxon_p == pytest.approx(2 / 64)
    same = compare(x + [u.model_copy(update={"society": "T"}) for u in x]).iloc[0]
    assert same.wilcoxon_p == 1.0 and same.mcnemar_p == 1.0


def test_compare_at_a_given_round_and_repeats_pair_by_repeat() -> None:
    a = [unit([["A", "A", "A"], ["B", "B", "B"]], qid="q0", repeat=r, strategy="0")
         for r in (0, 1)]
    b = [unit([["A", "A", "A"], ["A", "A", "A"]], qid="q0", repeat=r, strategy="1")
         for r in (0, 1)]
    last = compare(a + b).iloc[0]
    assert (last.n_pairs, last.only_a, last.only_b, last.n_questions) == (2, 0, 2, 1)
    first = compare(a + b, round=0).iloc[0]
    assert (first.only_a, first.only_b, first.round_a) == (0, 0, 0)


def test_nothing_to_compare_gives_empty_tables_with_their_columns() -> None:
    for table in (compare([]), compare_runs([], []), anova([]), wins([]), intervals([])):
        assert table.empty and len(table.columns) > 3
    assert "wilcoxon_p_holm" in compare(final([True], "00")).columns


def test_compare_runs_uses_common_questions_only() -> None:
    run_a = final([True, True, True], "00", qids=["q0", "q1", "q2"])
    run_b = final([False, True, False], "00", qids=["q1", "q2", "q3"])
    row = compare_runs(run_a, run_b).iloc[0]
    assert (row.society, row.strategy, row.n_pairs, row.only_a, row.only_b) == (
        "S", "00", 2, 1, 0)
    assert row.mcnemar_p_holm == row.mcnemar_p == 1.0  # 1 discordant pair: p = 2 * 1/2


# --- ANOVA and wins -----------------------------------------------------------------------------


def test_anova_matches_the_textbook_formula() -> None:
    # Per-question mean accuracy (thirds) of three strategies over four questions.
    spec = {"00": [3, 2, 3, 2], "01": [1, 2, 1, 1], "11": [0, 1, 0, 0]}
    recs = [unit([["B"] * 3, ["A"] * n + ["B"] * (3 - n)], qid=f"q{i}", strategy=s)
            for s, counts in spec.items() for i, n in enumerate(counts)]
    groups = [[n / 3 for n in counts] for counts in spec.values()]
    values = [v for g in groups for v in g]
    grand = sum(values) / len(values)
    between = sum(len(g) * (sum(g) / len(g) - grand) ** 2 for g in groups) / (3 - 1)
    within = sum((v - sum(g) / len(g)) ** 2 for g in groups for v in g) / (len(values) - 3)
    row = anova(recs).iloc[0]
    assert (row.kind, row.society, row.strategy, row.n_groups) == ("strategies", "S", "*", 3)
    assert row.f == pytest.approx(between / within)
    assert 0 < row.p < 0.01
    flat = anova([unit([["A"] * 3, ["A"] * 3], qid=f"q{i}", strategy=s)
                  for s in ("00", "01") for i in range(3)]).iloc[0]
    assert math.isnan(flat.f)  # every value equal: no F


def test_wins_against_all_debate() -> None:
    recs = (final([True, False, True, False], "00") + final([True, True, False, False], "01")
            + final([False] * 4, "1") + final([True] * 4, "11"))
    rows = wins(recs).set_index("strategy")
    assert list(rows.index) == ["01", "11"]  # "00" is the baseline; "1" has no "0" in the run
    assert tuple(rows.loc["01", ["wins", "ties", "losses"]]) == (1, 2, 1)
    assert tuple(rows.loc["11", ["wins", "ties", "losses"]]) == (2, 2, 0)
    assert (rows.baseline == "00").all()


# --- bootstrap intervals ------------------------------------------------------------------------


def pick(frame: pd.DataFrame, metric: str, round: int = 0) -> pd.Series:
    return frame[(frame.metric == metric) & (frame["round"] == round)].iloc[0]


def test_all_correct_gives_a_degenerate_interval() -> None:
    recs = [unit([["A"] * 3], qid=f"q{i}") for i in range(5)]
    row = pick(intervals(recs), "majority_accuracy")
    assert (row["mean"], row.lo, row.hi, row.n_questions, row.n_units) == (1, 1, 1, 5, 5)


def test_interval_contains_the_mean_and_shrinks_with_n() -> None:
    def width(n: int) -> float:
        recs = [unit([["A" if i % 3 else "B"] * 3], qid=f"q{i}") for i in range(n)]
        row = pick(intervals(recs, n_boot=1000), "mean_accuracy")
        assert row.lo < row["mean"] < row.hi
        assert row["mean"] == pytest.approx(sum(1 for i in range(n) if i % 3) / n)
        return float(row.hi - row.lo)
    assert width(300) < width(30) / 2  # ~ 1/sqrt(n): 10x the questions, ~1/3.2 the width


def test_repeats_are_resampled_with_their_question() -> None:
    # One question, two repeats (one right, one wrong): every resample of questions is this one
    # question, so the interval is [0.5, 0.5]; resampling units would have spread it.
    recs = [unit([["A"] * 3], repeat=0), unit([["B"] * 3], repeat=1)]
    row = pick(intervals(recs), "majority_accuracy")
    assert (row["mean"], row.lo, row.hi, row.n_questions, row.n_units) == (0.5, 0.5, 0.5, 1, 2)


def test_intervals_are_seeded_and_filterable() -> None:
    recs = [unit([["A" if i % 2 else "B"] * 3], qid=f"q{i}") for i in range(20)]
    # few resamples, so the percentiles interpolate between draws and show the seed
    one = intervals(recs, seed=1, n_boot=20, metrics=["majority_accuracy"])
    assert one.equals(intervals(recs, seed=1, n_boot=20, metrics=["majority_accuracy"]))
    assert set(one.metric) == {"majority_accuracy"}
    assert not one.equals(intervals(recs, seed=2, n_boot=20, metrics=["majority_accuracy"]))


def test_interval_means_are_the_summary_values() -> None:
    # A mix of everything the metrics distinguish: errors, missing turns, truncation, parse
    # failures, conformity, repeats, two groups, a failed unit.
    cut = Turn(agent="a2", pattern="debate", reply="4", answer="C", correct=False,
               finish_reason="length")
    err = Turn(agent="a1", pattern="debate", reply="", answer=None, correct=False, error="x")
    recs = [
        unit([["A", "A", "B"], ["A", "A", "A"], ["A", err, cut]], qid="q0", strategy="00"),
        unit([["B", "B", None], ["B", "A", "B"], ["A", "A"]], qid="q1", strategy="00"),
        unit([["C", "B", "A"], ["A", "A", "C"], ["B", "B", "B"]], qid="q1", strategy="00",
             repeat=1),
        unit([["A", "A", "B"], [None, "A", "B"], ["B", "A", "B"]], qid="q2", strategy="00"),
        unit([["A", "A", "B"], ["A", "A", "A"]], qid="q0", strategy="0", society="T"),
        unit([["A", "A", "B"]], qid="q9", strategy="0", society="T", status="failed"),
    ]
    got = intervals(recs, n_boot=50)
    summary = frames(recs).rounds.set_index(["society", "strategy", "round"])
    checked = 0
    for row in got.itertuples():
        expected = summary.loc[(row.society, row.strategy, row.round), row.metric]
        assert row.mean == pytest.approx(expected), (row.society, row.round, row.metric)
        assert row.lo <= row.hi
        checked += 1
    # every rate the summary defines in a round is in the intervals, and nothing else
    rates = [c for c in summary.columns if c not in (
        "n_units", "failed_units", "n_units_answered", "prompt_tokens", "completion_tokens")
        and not c.startswith(("tokens_per_agent", "social."))]
    defined = summary[rates].notna().sum().sum()
    assert checked == defined
    assert pick(got[got.society == "T"], "majority_accuracy").n_units == 1  # failed left out


def test_schema_1_groups_have_no_truncation_intervals() -> None:
    old = unit([["A", "A", "B"]]).model_copy(update={"schema_version": 1})
    got = set(intervals([old, unit([["A"] * 3], society="T")]).query("society == 'S'").metric)
    assert "truncated_rate" not in got and "mean_accuracy" in got
    assert "truncated_rate" in set(intervals([unit([["A"] * 3])]).metric)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=30))
def test_interval_brackets_the_mean(right: list[int]) -> None:
    recs = [unit([["A"] * n + ["B"] * (3 - n)], qid=f"q{i}") for i, n in enumerate(right)]
    row = pick(intervals(recs, n_boot=400), "mean_accuracy")
    assert 0 <= row.lo <= row["mean"] <= row.hi <= 1


def test_intervals_count_only_moves_that_made_a_call_like_the_summary() -> None:
    """Round 1 idles one agent (no call: its answer is carried): its move is no step, in the
    intervals' point estimates as in the summary's metrics."""
    from societies.metrics import summarize
    from societies.records import Turn

    def turn(agent: str, answer: str, pattern: str) -> Turn:
        return Turn(agent=agent, pattern=pattern, reply="" if pattern == "idle" else answer,
                    answer=answer, correct=answer == "A")

    recs = [unit([["A", "B", "B"], ["A", "B", "B"]], qid=f"q{i}") for i in range(4)]
    for rec in recs:  # a0 idles in round 1; a1 changes to A; a2 stays
        rec.rounds[1].turns = [turn("a0", "A", "idle"), turn("a1", "A", "debate"),
                               turn("a2", "B", "debate")]
    summary = summarize(recs).groups[0].rounds[1]
    row = pick(intervals(recs, n_boot=200), "answer_change_rate", round=1)
    assert summary.answer_change_rate == pytest.approx(0.5)  # 1 change in 2 moves, not 3
    assert row["mean"] == pytest.approx(summary.answer_change_rate)
    assert pick(intervals(recs, n_boot=200), "conformity", round=1)["mean"] == pytest.approx(
        summary.conformity)
