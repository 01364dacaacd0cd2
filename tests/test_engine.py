"""Engine logic on scripted backends: simultaneous update, graphs, prefix sharing, failures."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from societies.backends.base import (
    BackendError,
    ContextOverflowError,
    Message,
    Reply,
    Settings,
    TransientBackendError,
)
from societies.backends.model import RetryPolicy
from societies.backends.scripted import ScriptedBackend
from societies.engine import call_seed
from tests.helpers import config, make_run, speaker, tagged_reply


def shown_tags(message: Message) -> list[str]:
    return re.findall(r"<(\w+@\d+)>", message.content)


async def test_round_zero_then_debate_sees_only_previous_round(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    run = make_run(tmp_path, config(rounds=3, strategies=["000"]), backend)
    await run.execute(progress=False)
    debate_calls = [c for c in backend.calls if sum(m.role == "assistant" for m in c) >= 1]
    assert debate_calls
    for call in debate_calls:
        me = speaker(call)
        round_k = sum(m.role == "assistant" for m in call)
        seen = shown_tags(call[-1])
        # Exactly the two other agents' replies from round k-1: never a same-round answer.
        assert sorted(seen) == sorted(f"{a}@{round_k - 1}" for a in ("agent1", "agent2",
                                                                     "agent3") if a != me)


async def test_reflection_sees_only_own_history(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    run = make_run(tmp_path, config(rounds=2, strategies=["11"]), backend)
    await run.execute(progress=False)
    for call in backend.calls:
        me = speaker(call)
        for message in call:
            assert all(tag.startswith(me + "@") for tag in shown_tags(message))


async def test_who_sees_whom_follows_the_graph(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    cfg = config(rounds=1, strategies=["0"], graph="chain")
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    seen = {speaker(c): shown_tags(c[-1]) for c in backend.calls if len(c) > 2}
    assert seen == {"agent1": [], "agent2": ["agent1@0"], "agent3": ["agent2@0"]}


async def test_explicit_edges_and_mixed_round(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    cfg = config(rounds=1, strategies=["[100]"], graph=[["agent3", "agent2"]])
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    records = run.store.records()
    patterns = [t.pattern for t in records[0].rounds[1].turns]
    assert patterns == ["reflection", "debate", "debate"]
    seen = {speaker(c): shown_tags(c[-1]) for c in backend.calls if len(c) > 2}
    assert seen["agent2"] == ["agent3@0"] and seen["agent3"] == []


async def test_prefix_sharing_costs_one_call_per_tree_node(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    run = make_run(tmp_path, config(rounds=3, strategies="all",
                                    task={"name": "arithmetic", "n": 1}), backend)
    await run.execute(progress=False)
    assert len(backend.calls) == 3 * (1 + 2 + 4 + 8)  # not 3 * 4 * 8
    records = {r.strategy: r for r in run.store.records()}
    assert len(records) == 8
    # Strategies sharing a prefix carry the identical earlier rounds.
    assert records["000"].rounds[:3] == records["001"].rounds[:3]
    assert records["000"].rounds[:2] == records["011"].rounds[:2]
    assert records["000"].rounds[2] != records["010"].rounds[2]


async def test_records_in_deterministic_order(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply, delay=0.001)
    run = make_run(tmp_path, config(task={"name": "arithmetic", "n": 5}), backend)
    await run.execute(progress=False)
    ids = [r.unit_id for r in run.store.records()]
    questions = [q.id for q in run.questions]
    assert ids == [f"S2/{s}/0/{q}" for q in questions for s in ("00", "01")]


class Flaky(ScriptedBackend):
    """Raises RuntimeError (a crash, not a backend error) on the n-th call."""

    def __init__(self, crash_at: int) -> None:
        super().__init__(tagged_reply)
        self.crash_at = crash_at

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        if len(self.calls) + 1 == self.crash_at:
            self.calls.append(tuple(messages))
            raise RuntimeError("simulated crash")
        return await super().generate(messages, settings)


async def test_resume_after_crash_no_loss_no_duplicates(tmp_path: Path) -> None:
    cfg = config(task={"name": "arithmetic", "n": 6}, run={"concurrency": 1, "cache": False})
    run = make_run(tmp_path, cfg, Flaky(crash_at=20))
    with pytest.raises(RuntimeError, match="simulated crash"):
        await run.execute(progress=False)
    first = run.store.records()
    assert 0 < len(first) < 12
    again = ScriptedBackend(tagged_reply)
    run2 = make_run(tmp_path, cfg, again)
    await run2.execute(progress=False)
    records = run2.store.records()
    ids = [r.unit_id for r in records]
    assert len(ids) == len(set(ids)) == 12
    assert len(run2.store.records_path.read_text().splitlines()) == 12
    # Only unfinished questions were asked again: 3 agents × (1 + 1 + 2) tree nodes each.
    assert len(again.calls) == 12 * (6 - len(first) // 2)


async def test_torn_last_line_is_dropped_and_redone(tmp_path: Path) -> None:
    cfg = config(task={"name": "arithmetic", "n": 2})
    run = make_run(tmp_path, cfg, ScriptedBackend(tagged_reply))
    await run.execute(progress=False)
    text = run.store.records_path.read_text()
    run.store.records_path.write_text(text[: len(text) - 40])  # cut the last record
    run2 = make_run(tmp_path, cfg, ScriptedBackend(tagged_reply))
    await run2.execute(progress=False)
    lines = run2.store.records_path.read_text().splitlines()
    assert len(lines) == 4 and len({r.unit_id for r in run2.store.records()}) == 4


class Transient(ScriptedBackend):
    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        self.calls.append(tuple(messages))
        raise TransientBackendError("HTTP 503", retry_after=0.0)


async def test_exhausted_retries_mark_units_failed_then_rerun_fixes(tmp_path: Path) -> None:
    cfg = config(task={"name": "arithmetic", "n": 1})
    fast = RetryPolicy(attempts=3, base_delay=0.0)
    run = make_run(tmp_path, cfg, Transient(["x"]), retry=fast)
    summary = await run.execute(progress=False)
    records = run.store.records()
    assert [r.status for r in records] == ["failed", "failed"]
    assert "HTTP 503" in (records[0].error or "")
    assert summary.groups[0].failed_units == 1
    run2 = make_run(tmp_path, cfg, ScriptedBackend(tagged_reply))
    await run2.execute(progress=False)
    assert [r.status for r in run2.store.records()] == ["ok", "ok"]


class Overflow(ScriptedBackend):
    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        if speaker(messages) == "agent1" and len(messages) > 2:
            self.calls.append(tuple(messages))
            raise ContextOverflowError("prompt exceeds context window")
        return await super().generate(messages, settings)


async def test_context_overflow_ends_only_that_agents_branch(tmp_path: Path) -> None:
    backend = Overflow(tagged_reply)
    run = make_run(tmp_path, config(rounds=2, strategies=["00"],
                                    task={"name": "arithmetic", "n": 1}), backend)
    await run.execute(progress=False)
    (record,) = run.store.records()
    assert record.status == "ok"
    r1, r2 = record.rounds[1].turns, record.rounds[2].turns
    assert r1[0].error and r2[0].error and r2[0].answer is None
    assert not r1[1].error and not r2[2].error
    # Agent1 asked once in round 1 only; the others no longer see it in round 2.
    assert all("agent1@" not in m.content for c in backend.calls if len(c) > 4 for m in c[-1:])


def test_call_seed_is_stable_and_node_specific() -> None:
    assert call_seed(0, 0, "q1", "agent1", "0") == call_seed(0, 0, "q1", "agent1", "0")
    assert call_seed(0, 0, "q1", "agent1", "0") != call_seed(0, 0, "q1", "agent1", "1")
    assert call_seed(0, 0, "q1", "agent1", "0") != call_seed(1, 0, "q1", "agent1", "0")


class Broken(ScriptedBackend):
    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        if len(messages) > 2:  # round 0 works, then the backend breaks
            raise BackendError("decode loop failed")
        return await super().generate(messages, settings)


async def test_a_broken_backend_fails_the_unit_instead_of_recording_empty_turns(
        tmp_path: Path) -> None:
    cfg = config(rounds=1, strategies=["0"], task={"name": "arithmetic", "n": 1})
    run = make_run(tmp_path, cfg, Broken(tagged_reply))
    await run.execute(progress=False)
    (record,) = run.store.records()
    assert record.status == "failed" and "decode loop failed" in (record.error or "")
    run2 = make_run(tmp_path, cfg, ScriptedBackend(tagged_reply))
    await run2.execute(progress=False)
    assert [r.status for r in run2.store.records()] == ["ok"]


class InFlight(ScriptedBackend):
    """Records, at every call, how many calls and distinct questions are in flight."""

    def __init__(self) -> None:
        super().__init__(tagged_reply, delay=0.01)
        self.flying: list[str] = []
        self.peaks: list[tuple[int, int]] = []

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        question = messages[1].content  # the round-0 question opens every conversation
        self.flying.append(question)
        self.peaks.append((len(self.flying), len(set(self.flying))))
        try:
            return await super().generate(messages, settings)
        finally:
            self.flying.remove(question)


async def test_run_questions_bounds_questions_in_flight_apart_from_calls(
        tmp_path: Path) -> None:
    backend = InFlight()
    cfg = config(task={"name": "arithmetic", "n": 6},
                 run={"concurrency": 6, "questions": 2, "cache": False})
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    assert len(run.store.records()) == 12
    assert max(q for _, q in backend.peaks) == 2  # never a third question at once
    assert max(c for c, _ in backend.peaks) == 6  # but all six agent calls of two questions
