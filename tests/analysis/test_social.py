"""Social-influence measures on hand-built records with values worked out by hand."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from societies.analysis.social import (
    answer_entropy,
    first_consensus_round,
    influence_matrix,
    polarization,
    social_metrics,
    trait_influence_matrix,
)
from societies.backends.base import Message
from societies.backends.scripted import ScriptedBackend
from societies.metrics import summarize
from societies.records import Round, Turn, UnitRecord
from societies.summary import SocialMetrics, Summary
from tests.helpers import config, make_run, speaker

AGENTS = ["a0", "a1", "a2"]
TRAITS = ["easy", "easy", "over"]
ERR = "error"  # an answer spec for a turn whose call failed

# A cell: (answer, pattern, saw). Round 0 cells are plain answers.
Cell = tuple[str | None, str, Sequence[str]]


def unit(rounds: Sequence[Sequence[str | Cell | None]], qid: str, gold: str = "A") -> UnitRecord:
    built = []
    for k, row in enumerate(rounds):
        turns = []
        for agent, spec in zip(AGENTS, row, strict=True):
            answer, pattern, saw = spec if isinstance(spec, tuple) else (spec, "answer", [])
            error = "boom" if answer == ERR else None
            answer = None if error else answer
            turns.append(Turn(agent=agent, pattern=pattern, reply=f"... {answer}", answer=answer,
                              correct=answer == gold, saw=list(saw), error=error))
        built.append(Round(index=k, turns=turns))
    return UnitRecord(unit_id=f"S/01/0/{qid}", task="t", question_id=qid, society="S",
                      strategy="01", repeat=0, gold=gold, agents=AGENTS, traits=TRAITS,
                      rounds=built)


ALL = {"a0": ["a1", "a2"], "a1": ["a0", "a2"], "a2": ["a0", "a1"]}  # who sees whom (full graph)


def debate(*answers: str | None, saw: dict[str, list[str]] = ALL) -> list[Cell]:
    return [(a, "debate", saw[name]) for name, a in zip(AGENTS, answers, strict=True)]


def reflect(*answers: str | None) -> list[Cell]:
    return [(a, "reflection", []) for a in answers]


# gold A; traits a0 easy, a1 easy, a2 over. The records' patterns are read, not the label.
#   u1: r0 [A,B,B]  debate  r1 [B,A,B]  reflection r2 [B,A,B]
#   u2: r0 [A,A,C]  debate (a2 saw only a0) r1 [A,A,A]  debate r2 [A,None,error]
#   u3: r0 [A,A,B]  debate  r1 [A,A,B]  reflection r2 [A,A,A]
UNITS = [
    unit([["A", "B", "B"], debate("B", "A", "B"), reflect("B", "A", "B")], "u1"),
    unit([["A", "A", "C"], debate("A", "A", "A", saw={**ALL, "a2": ["a0"]}),
          debate("A", None, ERR)], "u2"),
    unit([["A", "A", "B"], debate("A", "A", "B"), reflect("A", "A", "A")], "u3"),
]


@pytest.fixture
def social() -> SocialMetrics:
    return social_metrics(UNITS)


def test_exposed_conformity_per_round(social: SocialMetrics) -> None:
    r1 = social.rounds[1].exposed
    assert r1 is not None
    # 9 debate turns; a seen majority exists only for u1 a0 (saw B,B) and u3 a2 (saw A,A); a
    # turn seeing [A,B] or one agent alone has none. u1 a0 A->B follows (t->f); u3 a2 keeps B.
    assert (r1.turns, r1.steps, r1.conforming) == (9, 2, 1)
    assert r1.rate == 0.5 and r1.split == {"tt": 0, "tf": 0.5, "ft": 0, "ff": 0}
    assert (r1.strict_steps, r1.strict_conforming, r1.strict_rate) == (2, 1, 0.5)
    assert r1.strict_split == {"tt": 0, "tf": 0.5, "ft": 0, "ff": 0}
    # Round 2: only u2 debates; its error turn is left out. a0 and a1 saw [A,A]; a0 stays A (tt),
    # a1 gives no answer. Both held A already: no strict step.
    r2 = social.rounds[2].exposed
    assert r2 is not None
    assert (r2.turns, r2.steps, r2.conforming, r2.rate) == (2, 2, 1, 0.5)
    assert r2.split["tt"] == 0.5
    assert (r2.strict_steps, r2.strict_rate, r2.strict_split) == (0, None, {})
    # Pooled over rounds: 2 of 4 steps; strict 1 of 2.
    pooled = social.exposed
    assert (pooled.turns, pooled.steps, pooled.conforming, pooled.rate) == (11, 4, 2, 0.5)
    assert pooled.split == {"tt": 0.25, "tf": 0.25, "ft": 0, "ff": 0}
    assert (pooled.strict_steps, pooled.strict_rate) == (2, 0.5)
    assert social.rounds[0].exposed is None and social.rounds[0].control is None


def test_reflection_control(social: SocialMetrics) -> None:
    # Round 2 reflection turns (u1, u3), against the majority of the OTHER agents' round-1
    # answers: u1 a1 (others B,B; keeps A: no), u3 a2 (others A,A; B->A: follows, f->t). The rest
    # see a tie.
    control = social.rounds[2].control
    assert control is not None
    assert (control.turns, control.steps, control.conforming, control.rate) == (6, 2, 1, 0.5)
    assert control.split == {"tt": 0, "tf": 0, "ft": 0.5, "ff": 0}
    assert (control.strict_steps, control.strict_rate) == (2, 0.5)
    r1 = social.rounds[1].control
    assert r1 is not None and (r1.turns, r1.rate, r1.split) == (0, None, {})
    assert social.control.rate == 0.5


def test_influence_matrices(social: SocialMetrics) -> None:
    # Adoptions: u1 r1 a0 took B from a1 and from a2, a1 took A from a0; u2 r1 a2 took A from a0.
    # Pairs never exposed (an agent and itself among them) are left out.
    expected = {"a0": {"a1": 1, "a2": 1},
                "a1": {"a0": 1, "a2": 0},
                "a2": {"a0": 1, "a1": 0}}
    assert social.influence == expected
    assert influence_matrix(UNITS) == expected
    # Exposures (seen while holding another answer): u1 a1->a0, a2->a0, a0->a1, a0->a2;
    # u2 r1 a2->a0, a2->a1, a0->a2 (r2: everyone held A); u3 a2->a0, a2->a1, a0->a2, a1->a2.
    assert social.influence_exposures == {"a0": {"a1": 1, "a2": 3},
                                          "a1": {"a0": 1, "a2": 1},
                                          "a2": {"a0": 3, "a1": 2}}
    assert social.trait_influence == {"easy": {"easy": 2, "over": 1},
                                      "over": {"easy": 1, "over": 0}}
    assert trait_influence_matrix(UNITS) == social.trait_influence
    assert social.trait_influence_exposures == {"easy": {"easy": 2, "over": 4},
                                                "over": {"easy": 5, "over": 0}}
    assert social.trait_influence_rate == {"easy": {"easy": 1.0, "over": 0.25},
                                           "over": {"easy": 0.2, "over": None}}
    assert (social.agents, social.traits) == (AGENTS, TRAITS)


def test_persuasion_and_stubbornness(social: SocialMetrics) -> None:
    assert {t: (s.count, s.steps) for t, s in social.persuasion.items()} == {
        "easy": (3, 6), "over": (1, 5)}
    # Seen majority differing from the agent's answer: u1 r1 a0 (easy, moved), u3 r1 a2 (over,
    # kept B).
    assert {t: (s.count, s.steps, s.rate) for t, s in social.stubbornness.items()} == {
        "easy": (0, 1, 0.0), "over": (1, 1, 1.0)}


def test_opinion_dynamics(social: SocialMetrics) -> None:
    h = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))  # one answer against two
    assert social.rounds[0].entropy_bits == pytest.approx(h)
    assert social.rounds[1].entropy_bits == pytest.approx(2 * h / 3)  # u2 is unanimous
    # u2 [A, None, error]: None (parse failure and error alike) is one more value.
    assert social.rounds[2].entropy_bits == pytest.approx(2 * h / 3)
    assert all(r.polarization == 1.0 for r in social.rounds)  # 3 agents, never 3 clusters
    # Unanimity: u1 never, u2 at round 1, u3 at round 2. Two of three agree in round 0 always.
    u = social.unanimity
    assert (u.units, u.reached, u.mean_round, u.by_round) == (3, 2, 1.5, {"1": 1, "2": 1})
    q = social.quorum
    assert (q.reached, q.mean_round, q.by_round, social.quorum_q) == (3, 0, {"0": 3}, 2 / 3)


def test_flip_rates_by_pattern(social: SocialMetrics) -> None:
    # Debate: u1 r1 2 of 3, u2 r1 1 of 3, u2 r2 1 of 2 (A->None; the error is left out),
    # u3 r1 0 of 3. Reflection: u1 r2 0 of 3, u3 r2 1 of 3.
    assert social.flip_debate == pytest.approx(4 / 11)
    assert social.flip_reflection == pytest.approx(1 / 6)
    assert social.rounds[1].flip_debate == pytest.approx(1 / 3)
    assert social.rounds[1].flip_reflection is None
    assert social.rounds[2].flip_debate == 0.5
    assert social.rounds[2].flip_reflection == pytest.approx(1 / 6)
    assert social.rounds[0].flip_debate is None


@pytest.mark.parametrize(("answers", "bits"), [
    (["A", "A", "A"], 0.0), (["A", "B"], 1.0), (["A", "B", "C", "D"], 2.0),
    ([None, None, "A", "A"], 1.0), ([], 0.0)])
def test_answer_entropy(answers: list[str | None], bits: float) -> None:
    assert answer_entropy(answers) == pytest.approx(bits)


def test_polarization() -> None:
    assert polarization(["A", "A", "B", "C", None]) == pytest.approx(3 / 5)
    assert polarization(["A", "B", "C", "D"]) == 0.5
    assert polarization(["A", "A"]) == 1.0


@pytest.mark.parametrize(("rounds", "q", "first"), [
    ([["A", "B", "C"], ["A", "A", "C"], ["A", "A", "A"]], 1.0, 2),
    ([["A", "B", "C"], ["A", "A", "C"], ["A", "A", "A"]], 2 / 3, 1),
    ([[None, None, None]], 1.0, None),  # nobody answering is no consensus
    ([["A", "A", None]], 1.0, None),
    ([["A", "A", "B", "B", "C", "C"], ["A", "A", "A", "A", "B", "C"]], 2 / 3, 1),
])
def test_first_consensus_round(rounds: list[list[str | None]], q: float,
                               first: int | None) -> None:
    assert first_consensus_round(rounds, q) == first


def test_summary_holds_social_and_round_trips() -> None:
    failed = unit([["B", "B", "B"]], "u9").model_copy(update={"status": "failed"})
    summary = summarize(iter([*UNITS, failed]))  # a one-pass iterator
    (group,) = summary.groups
    assert group.social is not None and group.social.influence == social_metrics(UNITS).influence
    assert summary.schema_version == 3
    assert Summary.model_validate_json(summary.model_dump_json()) == summary


def test_old_summary_without_social_still_loads() -> None:
    summary = summarize(UNITS)
    data = summary.model_dump()
    del data["groups"][0]["social"]
    assert Summary.model_validate(data).groups[0].social is None


async def test_scripted_run_records_what_the_measures_need(tmp_path: Path) -> None:
    # Chain graph agent1 -> agent2 -> agent3, one debate round. agent2 switches to agent1's 5.
    answers = {("agent1", 0): 5, ("agent2", 0): 7, ("agent3", 0): 7,
               ("agent1", 1): 5, ("agent2", 1): 5, ("agent3", 1): 7}

    def reply(messages: Sequence[Message]) -> str:
        k = sum(m.role == "assistant" for m in messages)
        return f"The answer is {answers[(speaker(messages), k)]}."

    cfg = config(rounds=1, strategies=["0"], graph="chain")
    run = make_run(tmp_path, cfg, ScriptedBackend(reply))
    summary = await run.execute(progress=False)
    (group,) = summary.groups
    social = group.social
    assert social is not None and group.n_units == 2
    assert social.influence["agent1"]["agent2"] == 2  # once per question
    assert sum(sum(row.values()) for row in social.influence.values()) == 2
    assert "agent3" not in social.influence_exposures.get("agent2", {})  # both held 7
    # agent1 saw nobody; agent2 and agent3 each saw one agent: never a seen majority.
    assert (social.exposed.turns, social.exposed.steps) == (4, 0)
    assert social.trait_influence["overconfident"]["overconfident"] == 2
