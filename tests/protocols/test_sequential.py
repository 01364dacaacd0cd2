"""MachineSoM's sequential (asynchronous) update, and early stop on consensus (scripted)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from societies.backends.base import Message
from societies.backends.scripted import ScriptedBackend
from societies.config import parse_config
from societies.errors import ConfigError
from societies.plan import build_plan
from tests.helpers import config, make_run, speaker, tagged_reply

AGENTS = ("agent1", "agent2", "agent3")


def tags(message: Message) -> list[str]:
    return re.findall(r"<(\w+@\d+)>", message.content)


def rounds_of(calls: Sequence[tuple[Message, ...]]) -> dict[int, list[tuple[Message, ...]]]:
    """Calls grouped by round (assistant messages already in the conversation)."""
    out: dict[int, list[tuple[Message, ...]]] = {}
    for call in calls:
        out.setdefault(sum(m.role == "assistant" for m in call), []).append(call)
    return out


async def test_sequential_agents_see_this_rounds_replies_of_those_before_them(
        tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    cfg = config(protocol={"name": "machinesom", "update": "sequential"}, rounds=2,
                 strategies=["00"], task={"name": "arithmetic", "n": 1})
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    by_round = rounds_of(backend.calls)
    for k in (1, 2):
        assert [speaker(c) for c in by_round[k]] == list(AGENTS)  # one at a time, in order
        for call in by_round[k]:
            i = AGENTS.index(speaker(call))
            expected = [f"{a}@{k}" for a in AGENTS[:i]] + [f"{a}@{k - 1}" for a in AGENTS[i + 1:]]
            assert tags(call[-1]) == expected
    # Round 0 stays simultaneous: nobody is shown anything.
    assert all(tags(c[-1]) == [] for c in by_round[0])


async def test_simultaneous_agents_never_see_a_same_round_reply(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply, delay=0.001)
    cfg = config(rounds=2, strategies=["00"], task={"name": "arithmetic", "n": 2})
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    for k, calls in rounds_of(backend.calls).items():
        for call in calls:
            assert all(tag.endswith(f"@{k - 1}") for tag in tags(call[-1]))
            assert len(tags(call[-1])) == (2 if k else 0)


async def test_a_seeded_order_is_a_fresh_permutation_per_round_shared_by_questions(
        tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    cfg = config(protocol={"name": "machinesom", "update": "sequential", "order_seed": 5},
                 rounds=4, strategies=["0000"], task={"name": "arithmetic", "n": 2},
                 run={"concurrency": 4, "questions": 1, "cache": False})
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    schedule = run.plan.protocol.schedule
    society = run.plan.societies[0]
    orders = [tuple(g[0] for g in schedule(society, k)) for k in range(1, 5)]
    assert all(sorted(o) == [0, 1, 2] for o in orders)
    assert len(set(orders)) > 1  # not society order every round
    by_round = rounds_of(backend.calls)
    for k in range(1, 5):
        order = [AGENTS[i] for i in orders[k - 1]]
        assert [speaker(c) for c in by_round[k]] == order * 2  # both questions, same order
        for call in by_round[k]:
            me = speaker(call)
            before = set(order[:order.index(me)])
            assert sorted(tags(call[-1])) == sorted(
                f"{a}@{k if a in before else k - 1}" for a in AGENTS if a != me)


@pytest.mark.parametrize(("protocol", "message"), [
    ({"name": "machinesom", "update": "async"}, r"^protocol\.update: must be one of"),
    ({"name": "machinesom", "order_seed": 1}, r"^protocol\.order_seed: an integer, only with"),
    ({"name": "machinesom", "update": "sequential", "order_seed": "x"},
     r"^protocol\.order_seed: "),
    ({"name": "machinesom", "order": 1}, r"^protocol\.order: unknown key"),
])
def test_bad_update_options_are_refused(protocol: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_plan(parse_config(config(protocol=protocol)))


# Early stop on consensus (implemented in the engine; any protocol).

def split_then_agree(messages: Sequence[Message]) -> str:
    """Round 0: each agent its own answer; from round 1 on everyone says 7."""
    if not any(m.role == "assistant" for m in messages):
        return f"The answer is {speaker(messages)[-1]}."
    return "The answer is 7."


def stop_config(**overrides: Any) -> dict[str, Any]:
    return config(**{"rounds": 3, "strategies": ["000"], "early_stop": {"consensus": True},
                     "task": {"name": "arithmetic", "n": 1}, **overrides})


async def test_consensus_in_round_zero_stops_the_unit_and_carries_the_rest(
        tmp_path: Path) -> None:
    backend = ScriptedBackend(["The answer is 1."])
    run = make_run(tmp_path, stop_config(), backend)
    await run.execute(progress=False)
    assert len(backend.calls) == 3  # round 0 only; without early stop 3 * 4
    (record,) = run.store.records()
    assert record.stopped_after == 0 and len(record.rounds) == 4
    for r in record.rounds[1:]:
        assert [t.pattern for t in r.turns] == ["stopped"] * 3
        assert all(t.answer == "1" and t.reply == "" and t.prompt_tokens == 0
                   and t.completion_tokens == 0 for t in r.turns)
    assert record.final is not None and record.final.answer == "1"


async def test_consensus_after_a_debate_round_stops_there(tmp_path: Path) -> None:
    backend = ScriptedBackend(split_then_agree)
    run = make_run(tmp_path, stop_config(), backend)
    await run.execute(progress=False)
    assert len(backend.calls) == 6  # rounds 0 and 1
    (record,) = run.store.records()
    assert record.stopped_after == 1
    assert [t.answer for t in record.rounds[0].turns] == ["1", "2", "3"]
    assert [t.pattern for t in record.rounds[1].turns] == ["debate"] * 3
    assert [t.pattern for t in record.rounds[3].turns] == ["stopped"] * 3
    assert record.final is not None and record.final.answer == "7"
    # The same run without early stop makes every call, and reaches the same answer.
    plain = ScriptedBackend(split_then_agree)
    run2 = make_run(tmp_path / "plain", stop_config(early_stop={"consensus": False}), plain)
    await run2.execute(progress=False)
    (full,) = run2.store.records()
    assert len(plain.calls) == 12 and full.stopped_after is None
    assert full.final is not None and full.final.answer == "7"


async def test_consensus_only_in_the_last_round_is_not_an_early_stop(tmp_path: Path) -> None:
    def late(messages: Sequence[Message]) -> str:
        k = sum(m.role == "assistant" for m in messages)
        return "The answer is 7." if k == 3 else f"The answer is {speaker(messages)[-1]}."

    backend = ScriptedBackend(late)
    run = make_run(tmp_path, stop_config(), backend)
    await run.execute(progress=False)
    (record,) = run.store.records()
    assert len(backend.calls) == 12 and record.stopped_after is None


async def test_early_stop_works_with_a_sequential_update_and_du(tmp_path: Path) -> None:
    backend = ScriptedBackend(split_then_agree)
    cfg = stop_config(protocol={"name": "machinesom", "update": "sequential"})
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    (record,) = run.store.records()
    assert record.stopped_after == 1 and len(backend.calls) == 6
    du = ScriptedBackend(["The answer is 4."])
    run2 = make_run(tmp_path / "du", stop_config(protocol="du"), du)
    await run2.execute(progress=False)
    (record2,) = run2.store.records()
    assert record2.stopped_after == 0 and len(du.calls) == 3
