"""The token ledger on hand-built records: each shared turn once, cache hits apart, prices."""

from __future__ import annotations

import pytest

from societies.config import PriceConfig
from societies.ledger import Ledger, build_ledger
from societies.records import Round, Turn, UnitRecord

AGENTS = ["ada", "bo"]


def turn(agent: str, prompt: int, completion: int, *, cached: bool = False,
         error: str | None = None, model: str = "") -> Turn:
    return Turn(agent=agent, pattern="answer", reply="x", answer=None, correct=False,
                prompt_tokens=prompt, completion_tokens=completion, cached=cached, error=error,
                model=model)


def record(strategy: str, rounds: list[list[Turn]], *, society: str = "S2",
           question: str = "q1", repeat: int = 0) -> UnitRecord:
    return UnitRecord(unit_id=f"{society}/{strategy}/{repeat}/{question}", task="arithmetic",
                      question_id=question, society=society, strategy=strategy, repeat=repeat,
                      gold="1", agents=AGENTS,
                      rounds=[Round(index=i, turns=t) for i, t in enumerate(rounds)])


def two_strategies(question: str = "q1", repeat: int = 0, society: str = "S2",
                   ) -> list[UnitRecord]:
    """Strategies 00 and 01: rounds 0 and 1 are shared, round 2 is each one's own."""
    r0 = [turn("ada", 100, 10), turn("bo", 100, 20)]
    r1 = [turn("ada", 200, 10), turn("bo", 200, 20)]
    return [record("00", [r0, r1, [turn("ada", 300, 1), turn("bo", 300, 2)]],
                   question=question, repeat=repeat, society=society),
            record("01", [r0, r1, [turn("ada", 400, 3), turn("bo", 400, 4)]],
                   question=question, repeat=repeat, society=society)]


def test_shared_prefix_turns_are_counted_once() -> None:
    ledger = build_ledger(two_strategies())
    # Round 0 and round 1 once (2 turns each), round 2 twice (one per strategy).
    assert ledger.total.calls == 2 + 2 + 4
    assert ledger.total.prompt_tokens == 2 * 100 + 2 * 200 + 2 * 300 + 2 * 400
    assert ledger.total.completion_tokens == 30 + 30 + 3 + 7
    assert {i: line.calls for i, line in ledger.per_round.items()} == {0: 2, 1: 2, 2: 4}
    assert ledger.per_agent["S2/ada"].prompt_tokens == 100 + 200 + 300 + 400
    assert ledger.per_agent["S2/bo"].completion_tokens == 20 + 20 + 2 + 4
    assert ledger.total.cost is None  # no prices given


def test_other_questions_repeats_and_societies_are_not_shared() -> None:
    records = [*two_strategies(), *two_strategies(question="q2"), *two_strategies(repeat=1),
               *two_strategies(society="S3")]
    assert build_ledger(records).total.calls == 4 * 8
    assert set(build_ledger(records).per_agent) == {"S2/ada", "S2/bo", "S3/ada", "S3/bo"}


def test_bracketed_rounds_are_shared_only_with_the_same_per_agent_patterns() -> None:
    r0 = [turn("ada", 1, 1), turn("bo", 1, 1)]
    r1 = [turn("ada", 2, 2), turn("bo", 2, 2)]
    records = [record("[10]0", [r0, r1, r1]), record("[10]1", [r0, r1, r1]),
               record("[01]0", [r0, r1, r1])]
    ledger = build_ledger(records)
    # Round 0 once; round 1 under "[10]" and under "[01]"; round 2 under each full label.
    assert {i: line.calls for i, line in ledger.per_round.items()} == {0: 2, 1: 4, 2: 6}


def test_cache_hits_are_counted_apart_and_cost_no_tokens() -> None:
    rec = record("-", [[turn("ada", 100, 10, cached=True), turn("bo", 50, 5)]])
    ledger = build_ledger([rec])
    assert (ledger.total.calls, ledger.total.cached_calls) == (1, 1)
    assert (ledger.total.prompt_tokens, ledger.total.completion_tokens) == (50, 5)
    assert ledger.per_agent["S2/ada"].calls == 0
    assert ledger.per_agent["S2/ada"].cached_calls == 1


def test_a_shared_turn_paid_in_one_record_counts_as_paid_whatever_the_order() -> None:
    # A unit re-run after failing reads the shared round 0 from the cache; the sibling strategy
    # that ran first paid for it. The ledger must say it was paid, whichever record comes first.
    paid = record("0", [[turn("ada", 100, 10), turn("bo", 100, 10)],
                        [turn("ada", 7, 7), turn("bo", 7, 7)]])
    rerun = record("1", [[turn("ada", 100, 10, cached=True), turn("bo", 100, 10, cached=True)],
                         [turn("ada", 9, 9), turn("bo", 9, 9)]])
    for records in ([paid, rerun], [rerun, paid]):
        total = build_ledger(records).total
        assert (total.calls, total.cached_calls) == (6, 0)
        assert total.prompt_tokens == 200 + 14 + 18


def test_turns_with_an_error_are_not_counted() -> None:
    rec = record("0", [[turn("ada", 10, 1), turn("bo", 10, 1)],
                       [turn("ada", 0, 0, error="context overflow"), turn("bo", 20, 2)]])
    ledger = build_ledger([rec])
    assert ledger.total.calls == 3
    assert ledger.per_agent["S2/ada"].calls == 1


def test_prices_are_per_million_tokens_per_model() -> None:
    models = {"S2/ada": "big", "S2/bo": "small"}
    prices = {"big": PriceConfig(prompt=3.0, completion=15.0),
              "small": PriceConfig(prompt=0.5, completion=1.0)}
    ledger = build_ledger(two_strategies(), models, prices)
    ada, bo = ledger.per_agent["S2/ada"], ledger.per_agent["S2/bo"]
    assert ada.cost == pytest.approx((1000 * 3.0 + 24 * 15.0) / 1e6)
    assert bo.cost == pytest.approx((1000 * 0.5 + 46 * 1.0) / 1e6)
    assert ledger.total.cost == pytest.approx((ada.cost or 0.0) + (bo.cost or 0.0))
    assert sum(line.cost or 0.0 for line in ledger.per_round.values()) == pytest.approx(
        ledger.total.cost)


def test_unpriced_models_have_no_cost_and_add_nothing_to_the_total() -> None:
    models = {"S2/ada": "api", "S2/bo": "local"}
    prices = {"api": PriceConfig(prompt=1e6, completion=0.0)}  # one unit per prompt token
    ledger = build_ledger(two_strategies(), models, prices)
    assert ledger.per_agent["S2/bo"].cost is None
    assert ledger.per_agent["S2/ada"].cost == pytest.approx(1000)
    assert ledger.total.cost == pytest.approx(1000)
    assert build_ledger(two_strategies(), models, {}).total.cost is None


def test_a_priced_model_answered_from_the_cache_costs_zero_not_unknown() -> None:
    rec = record("-", [[turn("ada", 100, 10, cached=True), turn("bo", 100, 10, cached=True)]])
    ledger = build_ledger([rec], {"S2/ada": "api", "S2/bo": "api"},
                          {"api": PriceConfig(prompt=1.0, completion=1.0)})
    assert ledger.total.cost == 0.0
    assert ledger.per_agent["S2/ada"].cost == 0.0


def test_a_turns_own_model_prices_it_when_the_agent_map_lacks_it() -> None:
    rec = record("-", [[turn("ada", 2_000_000, 0, model="api"), turn("bo", 10, 0)]])
    ledger = build_ledger([rec], None, {"api": PriceConfig(prompt=2.0)})
    assert ledger.per_agent["S2/ada"].cost == pytest.approx(4.0)
    assert ledger.per_agent["S2/bo"].cost is None


def test_ledger_survives_the_summary_json_round_trip() -> None:
    ledger = build_ledger(two_strategies(), {"S2/ada": "m"}, {"m": PriceConfig(prompt=1.0)})
    assert Ledger.model_validate_json(ledger.model_dump_json()) == ledger


def aside(agent: str, prompt: int, completion: int, *, cached: bool = False) -> Turn:
    return Turn(agent=agent, pattern="aside", reply="s", answer=None, correct=False,
                prompt_tokens=prompt, completion_tokens=completion, cached=cached)


def with_asides(rec: UnitRecord, per_round: dict[int, list[Turn]]) -> UnitRecord:
    rounds = [r.model_copy(update={"asides": per_round.get(r.index, [])}) for r in rec.rounds]
    return rec.model_copy(update={"rounds": rounds})


def test_role_calls_count_per_role_per_round_and_once_per_shared_prefix() -> None:
    from societies.records import Final

    first, second = two_strategies()
    shared = {1: [aside("summ", 50, 5), aside("summ", 60, 6)]}  # two calls in round 1
    first = with_asides(first, {**shared, 2: [aside("summ", 70, 7)]})
    second = with_asides(second, {**shared, 2: [aside("summ", 80, 8)]})
    first = first.model_copy(update={"final": Final(method="judge", answer=None, correct=False,
                                                    turn=aside("judge", 900, 9))})
    second = second.model_copy(update={"final": Final(method="judge", answer=None,
                                                      correct=False,
                                                      turn=aside("judge", 800, 8))})
    ledger = build_ledger([first, second])
    # Round 1's two asides are shared by 00 and 01 (counted once); round 2's are each own.
    assert ledger.per_agent["S2/summ"].calls == 2 + 2
    assert ledger.per_agent["S2/summ"].prompt_tokens == 50 + 60 + 70 + 80
    assert ledger.per_agent["S2/judge"].calls == 2  # one final call per strategy
    assert (ledger.roles.calls, ledger.final.calls) == (6, 2)
    assert ledger.roles.prompt_tokens == 260 + 1700
    assert ledger.per_round[1].calls == 2 + 2 and ledger.per_round[2].calls == 4 + 2
    assert ledger.total.calls == 8 + 6
    assert ledger.total.prompt_tokens == 2 * 100 + 2 * 200 + 2 * 300 + 2 * 400 + 260 + 1700


def test_turns_that_made_no_call_are_not_counted() -> None:
    stopped = turn("ada", 0, 0).model_copy(update={"pattern": "stopped"})
    idle = turn("bo", 0, 0).model_copy(update={"pattern": "idle"})
    rec = record("0", [[turn("ada", 10, 1), turn("bo", 10, 1)], [stopped, idle]])
    ledger = build_ledger([rec])
    assert ledger.total.calls == 2 and 1 not in ledger.per_round
