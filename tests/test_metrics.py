"""Metrics on hand-built records with values worked out by hand."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from societies.metrics import (
    BEHAVIOURS,
    GroupMetrics,
    Summary,
    behaviour,
    group_metrics,
    majority_answer,
    summarize,
)
from societies.records import Round, Turn, UnitRecord

AGENTS = ["a0", "a1", "a2"]

Spec = str | None | Turn  # an answer (correct iff it equals gold) or a ready-made turn


def make_turn(agent: str, spec: Spec, gold: str) -> Turn:
    if isinstance(spec, Turn):
        return spec
    return Turn(agent=agent, pattern="answer", reply=f"answer {spec}", answer=spec,
                correct=spec == gold)


def make_unit(
    rounds: Sequence[Sequence[Spec]],
    *,
    gold: str = "A",
    society: str = "S1",
    strategy: str = "0",
    qid: str = "q0",
    repeat: int = 0,
    agents: Sequence[str] = AGENTS,
    status: str = "ok",
) -> UnitRecord:
    return UnitRecord.model_validate(
        {
            "unit_id": f"{society}/{strategy}/{repeat}/{qid}",
            "task": "test",
            "question_id": qid,
            "society": society,
            "strategy": strategy,
            "repeat": repeat,
            "gold": gold,
            "agents": list(agents),
            "rounds": [
                # zip without strict: a short spec leaves turns missing, as an ended branch does
                Round(
                    index=k,
                    turns=[make_turn(a, s, gold) for a, s in zip(agents, r, strict=False)],
                )
                for k, r in enumerate(rounds)
            ],
            "status": status,
        }
    )


def one_group(units: Sequence[UnitRecord]) -> GroupMetrics:
    summary = summarize(units)
    assert len(summary.groups) == 1
    return summary.groups[0]


# --- majority rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["A", "A", "B"], "A"),  # 2 of 3
        (["A", "A", "A"], "A"),
        (["A", "A", "B", "B", "C"], None),  # tie for the top count
        (["A", "B", "C"], None),  # nothing repeated
        (["A"], None),  # one agent alone is never a majority
        (["A", "A", "B", "B", "B"], "B"),  # strict plurality
        (["A", "A", "B", "C", "D"], "A"),  # plurality, not absolute majority
        ([None, None, "A"], None),  # None never forms the majority
        ([None, None, "A", "A"], "A"),  # ...nor ties with a real answer
        ([None, None, None, "A", "A", "B"], "A"),
        ([], None),
    ],
)
def test_majority_answer(answers: list[str | None], expected: str | None) -> None:
    assert majority_answer(answers) == expected


# --- the hand-worked 3-agent, 2-round example -----------------------------------------------
#
# gold is A everywhere; an agent is correct iff its answer is A.
#   u1: r0 [A, A, B]     maj A (correct)  r1 [A, B, A]  maj A (correct)   -> stable_correct
#   u2: r0 [B, B, None]  maj B (wrong)    r1 [B, C, C]  maj C (wrong)     -> stable_wrong
#   u3: r0 [A, B, C]     no majority      r1 [A, A, C]  maj A (correct)   -> correcting
#   u4: r0 [C, C, A]     maj C (wrong)    r1 [C, A, C]  maj C (wrong)     -> stable_wrong
EXAMPLE = [
    [["A", "A", "B"], ["A", "B", "A"]],
    [["B", "B", None], ["B", "C", "C"]],
    [["A", "B", "C"], ["A", "A", "C"]],
    [["C", "C", "A"], ["C", "A", "C"]],
]


@pytest.fixture
def example() -> GroupMetrics:
    return one_group([make_unit(r, qid=f"q{i}") for i, r in enumerate(EXAMPLE)])


def test_example_round0(example: GroupMetrics) -> None:
    r0 = example.rounds[0]
    assert (r0.index, r0.n_units) == (0, 4)
    # a0: A,B,A,C -> 2/4; a1: A,B,B,C -> 1/4; a2: B,None,C,A -> 1/4; all 12 turns: 4/12.
    assert r0.accuracy_per_agent == {"a0": 0.5, "a1": 0.25, "a2": 0.25}
    assert r0.mean_accuracy == pytest.approx(1 / 3)
    assert r0.majority_accuracy == 0.25  # only u1
    # clusters: u1 {A,B}=2, u2 {B,None}=2, u3 3, u4 2 -> 9/4; top share 2/3,2/3,1/3,2/3 -> 7/12
    assert r0.n_clusters == 2.25
    assert r0.plurality_share == pytest.approx(7 / 12)
    assert r0.parse_failure_rate == pytest.approx(1 / 12)
    assert r0.error_rate == 0
    # nothing to compare with in round 0
    assert r0.conformity is None and r0.strict_conformity is None
    assert r0.answer_change_rate is None and r0.conformity_split == {}


def test_example_conformity(example: GroupMetrics) -> None:
    r1 = example.rounds[1]
    # Agent-steps with a round-0 majority: u1, u2, u4 (u3 has none) -> 9.
    # Conforming (answer at 1 == majority at 0), with correctness 0 -> 1:
    #   u1 maj A: a0 A->A (tt), a2 B->A (ft); a1 A->B does not conform.
    #   u2 maj B: a0 B->B (ff); a1 B->C and a2 None->C do not.
    #   u4 maj C: a0 C->C (ff), a2 A->C (tf); a1 C->A does not.
    # -> 5/9; tt 1/9, tf 1/9, ft 1/9, ff 2/9.
    assert r1.conformity == pytest.approx(5 / 9)
    assert r1.conformity_split == pytest.approx({"tt": 1 / 9, "tf": 1 / 9, "ft": 1 / 9,
                                                 "ff": 2 / 9})
    assert sum(r1.conformity_split.values()) == pytest.approx(r1.conformity)
    # Minority holders at 0: u1 a2 (B), u2 a2 (None), u4 a2 (A); u1 and u4 follow -> 2/3.
    assert r1.strict_conformity == pytest.approx(2 / 3)
    # Changes: u1 a1,a2; u2 a1,a2; u3 a1; u4 a1,a2 -> 7 of 12.
    assert r1.answer_change_rate == pytest.approx(7 / 12)
    # u1 A and u3 A are correct majorities -> 2/4.
    assert r1.majority_accuracy == 0.5


def test_example_behaviours(example: GroupMetrics) -> None:
    assert example.behaviours == {"stable_correct": 0.25, "stable_wrong": 0.5,
                                  "correcting": 0.25, "degrading": 0.0, "wavering": 0.0}


def test_conformity_undefined_without_any_majority() -> None:
    g = one_group([make_unit([["A", "B", "C"], ["A", "A", "A"]])])
    r1 = g.rounds[1]
    assert r1.conformity is None and r1.strict_conformity is None
    assert r1.conformity_split == {}
    assert r1.answer_change_rate == pytest.approx(2 / 3)


def test_strict_conformity_undefined_when_all_agree() -> None:
    g = one_group([make_unit([["A", "A", "A"], ["A", "A", "B"]])])
    assert g.rounds[1].conformity == pytest.approx(2 / 3)
    assert g.rounds[1].strict_conformity is None


# --- clusters, changes, parse failures and errors ------------------------------------------


@pytest.mark.parametrize(
    ("answers", "clusters", "share"),
    [
        ([None, None, "A"], 2, 2 / 3),  # None is one cluster and counts for the share
        ([None, "B", "A"], 3, 1 / 3),
        ([None, None, None], 1, 1.0),
        (["A", "A", "A"], 1, 1.0),
    ],
)
def test_clusters_with_none(answers: list[str | None], clusters: int, share: float) -> None:
    r0 = one_group([make_unit([answers])]).rounds[0]
    assert r0.n_clusters == clusters
    assert r0.plurality_share == pytest.approx(share)


def test_none_to_none_is_no_change() -> None:
    g = one_group([make_unit([[None, "A", "B"], [None, "A", None]])])
    assert g.rounds[1].answer_change_rate == pytest.approx(1 / 3)  # only a2 B -> None


def test_parse_failures_and_errors_are_separate() -> None:
    # An errored turn counts as None and not correct even if it carries an answer.
    errored = Turn(agent="a1", pattern="answer", reply="", answer="A", correct=True,
                   error="timeout")
    # Round 1 has a missing turn for a2 (its branch ended): an error too.
    unit = make_unit([["A", errored, None], ["A", None]])
    g = one_group([unit])
    r0, r1 = g.rounds
    assert r0.parse_failure_rate == pytest.approx(1 / 3)  # a2
    assert r0.error_rate == pytest.approx(1 / 3)  # a1
    assert r0.accuracy_per_agent == {"a0": 1.0, "a1": 0.0, "a2": 0.0}
    assert r0.majority_accuracy == 0  # with a1's A voided, A is held once: no majority
    assert r1.parse_failure_rate == pytest.approx(1 / 3)  # a1
    assert r1.error_rate == pytest.approx(1 / 3)  # a2 missing
    assert r1.answer_change_rate == 0  # a1 None -> None, a2 None -> None


def test_majority_scored_by_correct_flag() -> None:
    # Scoring stays in the task: an answer the task marked correct counts even if != gold.
    t = [Turn(agent=a, pattern="answer", reply="", answer="e4", correct=True) for a in AGENTS]
    g = one_group([make_unit([t], gold="e2e4")])
    assert g.rounds[0].majority_accuracy == 1.0


# --- tokens, retries, failed units --------------------------------------------------------


def test_tokens_and_retries() -> None:
    def t(agent: str, p: int, c: int, retries: int = 0) -> Turn:
        return Turn(agent=agent, pattern="debate", reply="", answer="A", correct=True,
                    prompt_tokens=p, completion_tokens=c, retries=retries)

    u1 = make_unit([[t("a0", 10, 1), t("a1", 20, 2, 1), t("a2", 30, 3)],
                    [t("a0", 100, 10), t("a1", 200, 20), t("a2", 300, 30, 2)]])
    u2 = make_unit([[t("a0", 1, 1), t("a1", 1, 1), t("a2", 1, 1)],
                    [t("a0", 5, 5), t("a1", 5, 5), t("a2", 5, 5)]], qid="q1")
    failed = make_unit([[t("a0", 999, 999, 4)]], qid="q2", status="failed")
    g = one_group([u1, u2, failed])
    r0, r1 = g.rounds
    assert (r0.prompt_tokens, r0.completion_tokens) == (63, 9)
    assert (r1.prompt_tokens, r1.completion_tokens) == (615, 75)
    assert r0.tokens_per_agent == {"a0": {"prompt": 11, "completion": 2},
                                   "a1": {"prompt": 21, "completion": 3},
                                   "a2": {"prompt": 31, "completion": 4}}
    assert r1.tokens_per_agent["a2"] == {"prompt": 305, "completion": 35}
    assert g.retries == 1 + 2 + 4  # failed units' retries count as cost


def test_failed_units_excluded_and_counted() -> None:
    ok = make_unit([["A", "A", "A"]])
    failed = make_unit([["B", "B", "B"]], qid="q1", status="failed")
    g = one_group([ok, failed])
    assert (g.n_units, g.failed_units) == (1, 1)
    assert g.rounds[0].n_units == 1
    assert g.rounds[0].mean_accuracy == 1.0
    assert g.behaviours["stable_correct"] == 1.0


def test_all_failed_group() -> None:
    g = one_group([make_unit([["A"]], status="failed")])
    assert (g.n_units, g.failed_units, g.rounds, g.behaviours) == (0, 1, [], {})


def test_units_with_fewer_rounds_count_where_present() -> None:
    long = make_unit([["A", "A", "A"], ["A", "A", "A"]])
    short = make_unit([["B", "B", "B"]], qid="q1")
    g = one_group([long, short])
    assert [r.n_units for r in g.rounds] == [2, 1]
    assert [r.mean_accuracy for r in g.rounds] == [0.5, 1.0]


# --- behaviours -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "kind"),
    [
        ([True], "stable_correct"),
        ([True, True, True], "stable_correct"),
        ([False, False], "stable_wrong"),
        ([False, False, True], "correcting"),
        ([True, False, False], "degrading"),
        ([True, False, True], "wavering"),
        ([False, True, False, True], "wavering"),
    ],
)
def test_behaviour(m: list[bool], kind: str) -> None:
    assert behaviour(m) == kind


def test_behaviour_shares() -> None:
    rounds = {
        "stable_correct": [["A", "A", "B"], ["A", "A", "A"], ["A", "A", "C"]],
        "stable_wrong": [["B", "B", "A"], ["A", "B", "C"], ["C", "C", "C"]],
        "correcting": [["B", "B", "A"], ["A", "A", "B"], ["A", "A", "A"]],
        "degrading": [["A", "A", "B"], ["A", "B", "C"], ["B", "B", "B"]],
        "wavering": [["A", "A", "B"], ["B", "B", "A"], ["A", "A", "A"]],
    }
    units = [make_unit(r, qid=k) for k, r in rounds.items()]
    units.append(make_unit(rounds["wavering"], qid="w2"))
    g = one_group(units)
    assert list(g.behaviours) == list(BEHAVIOURS)
    assert g.behaviours == pytest.approx({"stable_correct": 1 / 6, "stable_wrong": 1 / 6,
                                          "correcting": 1 / 6, "degrading": 1 / 6,
                                          "wavering": 2 / 6})
    assert [r.majority_accuracy for r in g.rounds] == pytest.approx([4 / 6, 2 / 6, 4 / 6])


def test_a_lone_agent_is_its_own_majority() -> None:
    """A single-agent group (a baseline) is scored by its agent's answer, not as having no
    majority (which made every single-agent unit 'stable wrong')."""
    units = [make_unit([["A"], ["A"]], qid="right", agents=["solo"]),
             make_unit([["B"], ["A"]], qid="fixed", agents=["solo"])]
    g = one_group(units)
    assert [r.majority_accuracy for r in g.rounds] == [0.5, 1.0]
    assert g.behaviours["stable_correct"] == 0.5 and g.behaviours["correcting"] == 0.5


# --- grouping -------------------------------------------------------------------------------


def test_grouping_and_sorting() -> None:
    units = [
        make_unit([["A", "A", "A"]], society="S2", strategy="001"),
        make_unit([["B", "B", "B"]], society="S1", strategy="1"),
        make_unit([["A", "A", "A"]], society="S1", strategy="0"),
        make_unit([["B", "B", "B"]], society="S1", strategy="0", qid="q1"),
        make_unit([["A", "A"]], society="S0", strategy="0", agents=["x", "y"]),
    ]
    summary = summarize(units)
    assert isinstance(summary, Summary)
    keys = [(g.society, g.strategy, g.n_units) for g in summary.groups]
    assert keys == [("S0", "0", 1), ("S1", "0", 2), ("S1", "1", 1), ("S2", "001", 1)]
    assert summary.groups[0].rounds[0].accuracy_per_agent == {"x": 1.0, "y": 1.0}
    assert summary.groups[1].rounds[0].majority_accuracy == 0.5
    # the summary round-trips through JSON (it is saved as summary.json)
    assert Summary.model_validate_json(summary.model_dump_json()) == summary


def test_empty_summary() -> None:
    assert summarize([]).groups == []


def test_duplicate_agent_names_kept_apart() -> None:
    g = one_group([make_unit([["A", "B", "A"]], agents=["hot", "hot", "cool"])])
    assert g.rounds[0].accuracy_per_agent == {"hot#0": 1.0, "hot#1": 0.0, "cool#2": 1.0}


def test_mixed_agents_in_a_group_rejected() -> None:
    with pytest.raises(ValueError, match="different agents"):
        group_metrics([make_unit([["A", "A", "A"]]),
                       make_unit([["A", "A"]], qid="q1", agents=["a0", "a1"])])


# --- consensus over answered agents (issue 8) ----------------------------------------------


def test_unparseable_replies_are_not_consensus() -> None:
    # Three replies nobody could read: MachineSoM's measures call it full agreement (None is one
    # cluster held by everyone); the answered-only measures have nothing to measure.
    r0 = one_group([make_unit([[None, None, None]])]).rounds[0]
    assert (r0.n_clusters, r0.plurality_share) == (1, 1.0)
    assert r0.answered_rate == 0
    assert r0.n_units_answered == 0
    assert r0.n_clusters_answered is None and r0.plurality_share_answered is None


def test_answered_consensus_leaves_out_units_where_nobody_answered() -> None:
    #   u1 [None, None, None]: no answered agent, left out of the answered-only means
    #   u2 [A, A, None]:       1 cluster among the 2 that answered, share 2/2
    #   u3 [A, B, None]:       2 clusters, share 1/2
    errored = Turn(agent="a2", pattern="answer", reply="", answer="A", correct=True,
                   error="context overflow")  # an error voids its answer here too
    g = one_group([make_unit([[None, None, None]], qid="q1"),
                   make_unit([["A", "A", None]], qid="q2"),
                   make_unit([["A", "B", errored]], qid="q3")])
    r0 = g.rounds[0]
    assert r0.n_units_answered == 2
    assert r0.n_clusters_answered == 1.5
    assert r0.plurality_share_answered == pytest.approx((1 + 1 / 2) / 2)
    assert r0.answered_rate == pytest.approx(4 / 9)
    assert r0.answered_rate + r0.parse_failure_rate + r0.error_rate == pytest.approx(1)
    # MachineSoM's measures keep their values: clusters 1, 2, 3; shares 3/3, 2/3, 1/3.
    assert r0.n_clusters == 2
    assert r0.plurality_share == pytest.approx(2 / 3)


def test_answered_consensus_per_round() -> None:
    g = one_group([make_unit([["A", "B", "C"], ["A", "A", None]])])
    r0, r1 = g.rounds
    assert (r0.n_clusters_answered, r0.plurality_share_answered) == (3, pytest.approx(1 / 3))
    assert (r1.n_clusters_answered, r1.plurality_share_answered) == (1, 1.0)
    assert (r0.answered_rate, r1.answered_rate) == (1.0, pytest.approx(2 / 3))


# --- truncated replies (issue 8) ------------------------------------------------------------


def turn(agent: str, answer: str | None, finish: str = "stop", gold: str = "A") -> Turn:
    return Turn.model_validate({"agent": agent, "pattern": "answer", "reply": f"... {answer}",
                                "answer": answer, "correct": answer == gold,
                                "finish_reason": finish})


def test_truncated_replies_counted_apart() -> None:
    #   u1: a0 cut at max_tokens yet read as "7" (suspect), a1 cut with no answer, a2 complete A
    #   u2: a0 complete A, a1 complete but unparseable, a2 an error
    u1 = make_unit([[turn("a0", "7", "length"), turn("a1", None, "length"), turn("a2", "A")]])
    error = Turn(agent="a2", pattern="answer", reply="", answer=None, correct=False,
                 finish_reason="error", error="context overflow")
    u2 = make_unit([[turn("a0", "A"), turn("a1", None), error]], qid="q1")
    g = one_group([u1, u2])
    r0 = g.rounds[0]
    assert r0.truncated_rate == pytest.approx(2 / 6)
    assert r0.truncated_answered_rate == pytest.approx(1 / 6)
    # unchanged definition: no answer and no error, truncated or not (u1 a1, u2 a1)
    assert r0.parse_failure_rate == pytest.approx(2 / 6)
    assert r0.error_rate == pytest.approx(1 / 6)
    # complete replies: u1 a2, u2 a0, u2 a1 -> one of three unparseable
    assert r0.parse_failure_rate_untruncated == pytest.approx(1 / 3)
    assert g.replies.model_dump() == {"turns": 6, "answered": 3, "no_answer": 2, "errors": 1,
                                      "truncated": 2, "truncated_answered": 1}


def test_truncation_unknown_in_schema_1_records() -> None:
    # Schema 1 had no finish_reason: its default "stop" says nothing about truncation.
    unit = make_unit([[turn("a0", "A"), turn("a1", None), turn("a2", "B")]])
    old = unit.model_copy(update={"schema_version": 1})
    r0 = one_group([old]).rounds[0]
    assert r0.truncated_rate is None and r0.truncated_answered_rate is None
    assert r0.parse_failure_rate_untruncated is None
    assert r0.parse_failure_rate == pytest.approx(1 / 3)  # still defined
    assert one_group([old]).replies.truncated is None
    assert one_group([unit]).rounds[0].truncated_rate == 0


def test_no_complete_reply_leaves_untruncated_rate_undefined() -> None:
    g = one_group([make_unit([[turn(a, None, "length") for a in AGENTS]])])
    r0 = g.rounds[0]
    assert (r0.truncated_rate, r0.truncated_answered_rate) == (1.0, 0.0)
    assert r0.parse_failure_rate == 1.0
    assert r0.parse_failure_rate_untruncated is None


# --- streaming ------------------------------------------------------------------------------


def test_summarize_streams_records_without_keeping_reply_texts() -> None:
    import tracemalloc

    def records(n: int, reply_chars: int) -> Iterator[UnitRecord]:
        for i in range(n):
            unit = make_unit([["A", "A", "B"], ["A", "B", "B"]], qid=f"q{i}")
            for rnd in unit.rounds:
                for turn in rnd.turns:
                    turn.reply = f"{i}:" + "x" * reply_chars  # a distinct long reply per turn
            yield unit

    tracemalloc.start()
    try:
        summary = summarize(records(400, 20_000))  # 400 units x 6 turns x 20 kB = 48 MB of text
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (group,) = summary.groups
    assert group.n_units == 400 and group.rounds[1].mean_accuracy == pytest.approx(1 / 3)
    # Only compact projections are kept: the peak stays far below the replies' total size.
    assert peak < 12_000_000


# --- schema 3: carried turns, role calls, final answers, early stops ------------------------


def carried(agent: str, answer: str | None, pattern: str, gold: str = "A") -> Turn:
    """A turn that made no call: the agent's answer carried, zero tokens."""
    return Turn(agent=agent, pattern=pattern, reply="", answer=answer,  # type: ignore[arg-type]
                correct=answer == gold)


def called_turn(agent: str, answer: str | None, pattern: str = "debate", tokens: int = 10,
                gold: str = "A") -> Turn:
    return Turn(agent=agent, pattern=pattern, reply="r", answer=answer,  # type: ignore[arg-type]
                correct=answer == gold, prompt_tokens=tokens, completion_tokens=1)


def stopped_unit(qid: str) -> UnitRecord:
    """Stops after round 1 on consensus: round 2 carries A, A, A without calls."""
    rec = make_unit([["A", "B", "A"],
                     [called_turn("a0", "A"), called_turn("a1", "A"), called_turn("a2", "A")],
                     [carried(a, "A", "stopped") for a in AGENTS]], strategy="00", qid=qid)
    return rec.model_copy(update={"stopped_after": 1})


def test_stopped_turns_are_no_change_no_conformity_step_and_no_reply() -> None:
    full = make_unit([["A", "B", "A"], ["A", "A", "A"], ["A", "A", "B"]], strategy="00",
                     qid="q1")
    g = one_group([stopped_unit("q0"), full])
    r2 = g.rounds[2]
    # Only the full unit's three turns are steps in round 2: one change (a2 A -> B).
    assert r2.answer_change_rate == pytest.approx(1 / 3)
    assert r2.conformity == pytest.approx(2 / 3)  # a0, a1 follow A; a2 does not
    # The state still holds the carried answers: all six agents, 5 right.
    assert r2.mean_accuracy == pytest.approx(5 / 6) and r2.majority_accuracy == 1.0
    assert r2.prompt_tokens == 0 + 0  # make_unit turns carry no tokens; stopped ones neither
    assert g.replies.turns == 2 * 9 - 3  # the three stopped turns are not replies
    assert g.no_call_turns == 3
    assert (g.stopped_units, g.rounds_used) == (1, pytest.approx(1.5))


def test_a_stopped_unit_carrying_no_answer_is_not_a_parse_failure_again() -> None:
    rec = make_unit([["A", None, "A"], [carried(a, x, "stopped") for a, x in
                                        zip(AGENTS, ["A", None, "A"], strict=True)]],
                    strategy="0").model_copy(update={"stopped_after": 0})
    g = one_group([rec])
    assert g.rounds[0].parse_failure_rate == pytest.approx(1 / 3)
    assert g.rounds[1].parse_failure_rate == 0.0
    assert g.rounds[1].answered_rate == pytest.approx(2 / 3)
    assert g.rounds[1].answer_change_rate is None  # no step at all in round 1
    assert (g.rounds_used, g.stopped_units) == (0.0, 1)


def test_an_empty_idle_turn_is_no_answer_change_and_no_parse_failure() -> None:
    """A Mixture-of-Agents layer: a2 is not scheduled in round 0, answers first in round 1."""
    rec = make_unit([[called_turn("a0", "A", "answer"), called_turn("a1", "B", "answer"),
                      carried("a2", None, "idle")],
                     [carried("a0", "A", "idle"), carried("a1", "B", "idle"),
                      called_turn("a2", "A")]], strategy="0")
    g = one_group([rec])
    assert g.rounds[0].parse_failure_rate == 0.0
    assert g.no_call_turns == 3
    assert g.rounds[1].answer_change_rate is None  # a2 had not answered; a0, a1 made no call
    assert g.rounds[1].conformity is None


def test_alone_turns_are_calls_but_not_debate_exposure() -> None:
    rec = make_unit([["A", "B", "B"], [called_turn("a0", "B", "alone"),
                                       called_turn("a1", "B", "alone"),
                                       called_turn("a2", "B", "alone")]], strategy="0")
    g = one_group([rec])
    assert g.rounds[1].answer_change_rate == pytest.approx(1 / 3)
    assert g.no_call_turns == 0
    assert g.social is not None and g.social.exposed.turns == 0
    assert g.social.flip_debate is None


def test_role_calls_and_the_final_decider_are_counted_apart() -> None:
    from societies.records import Final

    rec = make_unit([["A", "A", "B"], ["A", "A", "A"]], strategy="0")
    summary_turn = called_turn("summarizer", None, "aside", tokens=40)
    judge = called_turn("judge", "A", "aside", tokens=70)
    rounds = list(rec.rounds)
    rounds[1] = rounds[1].model_copy(update={"asides": [summary_turn, summary_turn]})
    rec = rec.model_copy(update={"rounds": rounds, "final": Final(
        method="judge", answer="A", correct=True, turn=judge)})
    g = one_group([rec])
    assert g.role_tokens == [{"prompt": 0, "completion": 0}, {"prompt": 80, "completion": 2}]
    assert g.rounds[1].prompt_tokens == 0  # members' tokens only
    assert (g.final_prompt_tokens, g.final_completion_tokens) == (70, 1)
    assert g.tokens_per_unit == 82 + 71
    assert (g.final_accuracy, g.final_methods) == (1.0, {"judge": 1})


def test_final_accuracy_is_over_units_with_a_final_answer() -> None:
    from societies.records import Final

    right = make_unit([["A", "B", "C"]], strategy="-", qid="q0").model_copy(update={
        "final": Final(method="majority", answer=None, correct=False)})
    lone = make_unit([["A", "B", "C"]], strategy="-", qid="q1").model_copy(update={
        "final": Final(method="majority", answer="A", correct=True)})
    older = make_unit([["A", "A", "C"]], strategy="-", qid="q2")  # schema 2: no final
    g = one_group([right, lone, older])
    assert g.final_accuracy == 0.5 and g.final_methods == {"majority": 2}
    assert one_group([older]).final_accuracy is None
    assert one_group([older]).rounds_used == 0.0
