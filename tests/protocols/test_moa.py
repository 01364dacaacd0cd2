"""Mixture-of-Agents on scripted backends: layers as rounds, idle agents, stateless proposers,
the aggregator's final answer, and plan-time refusals."""

from __future__ import annotations

import pickle
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
from societies.strategies import parse_strategy
from tests.helpers import config, make_run, speaker, tagged_reply


def moa_config(protocol: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    base = config(protocol={"name": "moa", **protocol},
                  task={"name": "arithmetic", "n": 1, "seed": 0})
    base.update(overrides)
    return base


def reply(messages: Sequence[Message]) -> str:
    if speaker(messages) == "aggregator":
        return "Combining them: the answer is 9."
    return tagged_reply(messages)


def tags(text: str) -> list[str]:
    return re.findall(r"<(\w+@\d+)>", text)


async def test_each_layer_reads_the_previous_one_and_others_make_no_call(tmp_path: Path) -> None:
    backend = ScriptedBackend(reply)
    cfg = moa_config({"layers": [["agent2", "agent1"], ["agent3"]]}, rounds=1, strategies=["0"])
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    calls = {speaker(c): c for c in backend.calls}
    assert sorted(calls) == ["agent1", "agent2", "agent3", "aggregator"]
    assert len(backend.calls) == 4  # nobody outside its layer is called
    assert tags(calls["agent3"][-1].content) == ["agent1@0", "agent2@0"]
    assert tags(calls["aggregator"][-1].content) == ["agent3@0"]  # the last layer only
    (record,) = run.store.records()
    r0, r1 = record.rounds
    assert [t.pattern for t in r0.turns] == ["answer", "answer", "idle"]
    assert r0.turns[2].answer is None and r0.turns[2].completion_tokens == 0
    assert [t.pattern for t in r1.turns] == ["idle", "idle", "debate"]
    assert [t.answer for t in r1.turns[:2]] == [t.answer for t in r0.turns[:2]]  # carried
    assert r1.turns[2].saw == ["agent1", "agent2"]
    assert record.final is not None and record.final.method == "aggregator"
    assert record.final.answer == "9" and record.final.turn is not None
    assert record.final.turn.saw == ["agent3"]


async def test_by_default_every_agent_is_in_every_layer_and_calls_are_stateless(
        tmp_path: Path) -> None:
    backend = ScriptedBackend(reply)
    run = make_run(tmp_path, moa_config({}, rounds=2, strategies=["00"]), backend)
    await run.execute(progress=False)
    assert len(backend.calls) == 3 * 3 + 1
    last_layer = [c for c in backend.calls[6:9]]
    for call in last_layer:
        # System message and the current prompt: no earlier turns of the agent's own.
        assert [m.role for m in call] == ["system", "user"]
        # Stateless proposers each say "@0"; the prompt shows all of layer 1, its own included.
        assert tags(call[-1].content) == ["agent1@0", "agent2@0", "agent3@0"]
    (record,) = run.store.records()
    assert all(t.pattern == "debate" for r in record.rounds[1:] for t in r.turns)


async def test_layer_size_cuts_the_society_in_order(tmp_path: Path) -> None:
    backend = ScriptedBackend(reply)
    run = make_run(tmp_path, moa_config({"layer_size": 1}, rounds=2, strategies=["00"]),
                   backend)
    await run.execute(progress=False)
    assert [speaker(c) for c in backend.calls] == ["agent1", "agent2", "agent3", "aggregator"]
    (record,) = run.store.records()
    assert [t.saw for r in record.rounds for t in r.turns if t.pattern == "debate"] == [
        ["agent1"], ["agent2"]]


async def test_consensus_stop_leaves_the_aggregator_the_last_layer_that_spoke(
        tmp_path: Path) -> None:
    backend = ScriptedBackend(lambda m: "Combined: 9." if speaker(m) == "aggregator"
                              else "The answer is 5.")
    cfg = moa_config({}, rounds=2, strategies=["00"], early_stop={"consensus": True})
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    (record,) = run.store.records()
    assert record.stopped_after == 0
    assert record.final is not None and record.final.method == "aggregator"
    assert record.final.turn is not None and record.final.turn.saw == ["agent1", "agent2",
                                                                       "agent3"]


@pytest.mark.parametrize("protocol, rounds, message", [
    ({"layers": [["agent1"], ["zed"]]}, 1,
     "protocol.layers[1][0]: 'zed' is not an agent of societies[0]"),
    ({"layers": [["agent1", "agent1"], ["agent2", "agent3"]]}, 1,
     "protocol.layers[0][1]: 'agent1' is listed twice"),
    ({"layers": [["agent1"], ["agent2"]]}, 1,
     "societies[0]: agent 'agent3' is in no layer of protocol.layers"),
    ({"layers": [["agent1", "agent2"], ["agent3"]]}, 2,
     "protocol.layers: 2 layers need rounds: 1; got rounds: 2"),
    ({"layer_size": 2}, 2, "protocol.layer_size: 3 agents of societies[0] in layers of 2 make "
                           "2 layers, which need rounds: 1; got rounds: 2"),
    ({"layer_size": 0}, 1, "protocol.layer_size: expected a positive integer"),
    ({"layers": [["agent1"], []]}, 1, "protocol.layers[1]: expected a non-empty list"),
    ({"layers": [["agent1"]], "layer_size": 1}, 1, "protocol: give layers or layer_size"),
    ({"aggregator": {"trait": "nope"}}, 1, "protocol.aggregator.trait: unknown trait card"),
])
def test_bad_layers_are_refused_at_plan_time_naming_the_field(
        protocol: dict[str, Any], rounds: int, message: str) -> None:
    cfg = moa_config(protocol, rounds=rounds, strategies=["0" * rounds])
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_plan(parse_config(cfg))


def test_the_aggregator_defaults_to_the_first_agents_model() -> None:
    models = {"s": {"backend": "scripted", "replies": ["1"]},
              "t": {"backend": "scripted", "replies": ["2"]}}
    cfg = moa_config({}, models=models, rounds=1, strategies=["0"],
                     societies=[{"machinesom": "S2", "model": "t"}])
    plan = build_plan(parse_config(cfg))
    (aggregator,) = plan.protocol.roles
    assert aggregator.name == "aggregator" and aggregator.model == "t"
    assert aggregator.card.name == "neutral"


def test_strategies_with_reflection_are_refused_when_checked() -> None:
    plan = build_plan(parse_config(moa_config({}, rounds=2, strategies=["00"])))
    check = plan.protocol.check_strategies  # type: ignore[attr-defined]
    check([parse_strategy("00", 2, "s")])
    with pytest.raises(ConfigError, match=r"strategies\[1\]: moa does not reflect; '01'"):
        check([parse_strategy("00", 2, "s"), parse_strategy("01", 2, "s")])


def test_the_experiment_config_plans() -> None:
    from societies.config import load_config
    from societies.paths import asset_dir

    plan = build_plan(load_config(asset_dir("experiments") / "protocols" / "moa.yaml"))
    assert plan.protocol.name == "moa"
    assert plan.protocol.schedule(plan.societies[0], 2) == [(0, 1, 2)]
    shipped = pickle.loads(pickle.dumps(plan))  # run.executor: ray pickles the plan
    assert shipped.protocol.roles == plan.protocol.roles
