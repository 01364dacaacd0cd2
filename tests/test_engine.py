"""Engine logic on scripted backends: simultaneous update, graphs, prefix sharing, failures."""

from __future__ import annotations

import json
import math
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
    TokenLogprob,
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
    # The records say the same, so exposure is computable from records alone.
    record = run.store.records()[0]
    assert [t.saw for t in record.rounds[1].turns] == [[], ["agent1"], ["agent2"]]
    assert [t.saw for t in record.rounds[0].turns] == [[], [], []]
    assert record.traits == ["overconfident", "overconfident", "easy-going"]


async def test_explicit_edges_and_mixed_round(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    cfg = config(rounds=1, strategies=["[100]"], graph=[["agent3", "agent2"]])
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    records = run.store.records()
    patterns = [t.pattern for t in records[0].rounds[1].turns]
    # agent3 was due to debate but reads nobody: recorded as alone, not as having debated.
    assert patterns == ["reflection", "debate", "alone"]
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


class SimulatedCrash(BaseException):
    """Stands for the process dying (a kill): not an Exception, so nothing may catch it."""


class Flaky(ScriptedBackend):
    """Crashes the run on the n-th call."""

    def __init__(self, crash_at: int) -> None:
        super().__init__(tagged_reply)
        self.crash_at = crash_at

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        if len(self.calls) + 1 == self.crash_at:
            self.calls.append(tuple(messages))
            raise SimulatedCrash("simulated crash")
        return await super().generate(messages, settings)


async def test_resume_after_crash_no_loss_no_duplicates(tmp_path: Path) -> None:
    cfg = config(task={"name": "arithmetic", "n": 6}, run={"concurrency": 1, "cache": False})
    run = make_run(tmp_path, cfg, Flaky(crash_at=20))
    with pytest.raises(SimulatedCrash, match="simulated crash"):
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


class Raising(ScriptedBackend):
    """Raises a plain exception (not a BackendError) for one agent after round 0."""

    def __init__(self, error: Exception) -> None:
        super().__init__(tagged_reply)
        self.error = error

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        if speaker(messages) == "agent2" and len(messages) > 2:
            raise self.error
        return await super().generate(messages, settings)


@pytest.mark.parametrize("error", [ValueError("cross-tokenizer hand-off: no token for byte"),
                                   RuntimeError("torch: shape mismatch")])
async def test_any_backend_exception_fails_the_unit_and_the_run_goes_on(
        tmp_path: Path, error: Exception) -> None:
    cfg = config(rounds=1, strategies=["0", "1"], task={"name": "arithmetic", "n": 2})
    run = make_run(tmp_path, cfg, Raising(error))
    await run.execute(progress=False)  # no exception escapes
    records = run.store.records()
    assert len(records) == 4 and all(r.status == "failed" for r in records)
    assert all(type(error).__name__ in (r.error or "") and "agent2" in (r.error or "")
               for r in records)
    run2 = make_run(tmp_path, cfg, ScriptedBackend(tagged_reply))
    await run2.execute(progress=False)
    assert [r.status for r in run2.store.records()] == ["ok"] * 4


async def test_a_failed_unit_keeps_the_rounds_it_completed(tmp_path: Path) -> None:
    cfg = config(rounds=2, strategies=["00"], task={"name": "arithmetic", "n": 1})
    run = make_run(tmp_path, cfg, Broken(tagged_reply))
    summary = await run.execute(progress=False)
    (record,) = run.store.records()
    assert record.status == "failed"
    # Round 0 finished before the backend broke: its replies and tokens are kept.
    assert [r.index for r in record.rounds] == [0]
    assert all(t.reply and t.completion_tokens > 0 for t in record.rounds[0].turns)
    assert summary.ledger is not None and summary.ledger.total.completion_tokens > 0


class BackOff(ScriptedBackend):
    """The very first call is refused with Retry-After; the log shows who entered when."""

    def __init__(self) -> None:
        super().__init__(tagged_reply)
        self.entered: list[str] = []

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        self.entered.append(speaker(messages))
        if len(self.entered) == 1:
            raise TransientBackendError("HTTP 429", retry_after=0.3)
        return await super().generate(messages, settings)


async def test_a_call_waiting_out_a_back_off_frees_its_concurrency_slot(
        tmp_path: Path) -> None:
    backend = BackOff()
    cfg = config(rounds=0, strategies=[""], task={"name": "arithmetic", "n": 1},
                 run={"concurrency": 1, "cache": False})
    run = make_run(tmp_path, cfg, backend, retry=RetryPolicy(attempts=3, base_delay=0.0))
    await run.execute(progress=False)
    first = backend.entered[0]
    # With one slot, the others ran while the refused call waited, and it came back last.
    assert backend.entered[-1] == first and backend.entered.count(first) == 2
    assert len(set(backend.entered[1:3])) == 2 and first not in backend.entered[1:3]
    (record,) = run.store.records()
    assert record.status == "ok"


class Cut(ScriptedBackend):
    """Says it stopped at max_tokens for agent1, normally for the others."""

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        reply = await super().generate(messages, settings)
        reason = "length" if speaker(messages) == "agent1" else "stop"
        return Reply(reply.text, reply.prompt_tokens, reply.completion_tokens,
                     finish_reason=reason)


async def test_turns_record_finish_reason_seed_model_and_latency(tmp_path: Path) -> None:
    cfg = config(rounds=1, strategies=["0"], task={"name": "arithmetic", "n": 1})
    run = make_run(tmp_path, cfg, Cut(tagged_reply))
    await run.execute(progress=False)
    (record,) = run.store.records()
    turns = [t for r in record.rounds for t in r.turns]
    assert [t.finish_reason for t in turns] == ["length", "stop", "stop"] * 2
    assert all(t.model == "s" and t.latency_s >= 0 and t.seed is not None for t in turns)
    assert len({t.seed for t in turns}) == len(turns)  # every call has its own seed
    assert turns[0].raw_answer == "0" and turns[0].answer == "0"


async def seeds_by_society(tmp_path: Path, seeding: str) -> dict[tuple[str, int, str], int]:
    cfg = config(societies=[{"machinesom": "S1"}, {"machinesom": "S2"}], repeats=2,
                 rounds=0, strategies=[""], task={"name": "arithmetic", "n": 1},
                 seeding=seeding)
    run = make_run(tmp_path, cfg, ScriptedBackend(tagged_reply))
    await run.execute(progress=False)
    return {(r.society, r.repeat, t.agent): t.seed or 0
            for r in run.store.records() for t in r.rounds[0].turns}


async def test_paired_seeding_shares_seeds_across_societies_not_repeats(tmp_path: Path) -> None:
    seeds = await seeds_by_society(tmp_path / "paired", "paired")
    assert seeds[("S1", 0, "agent1")] == seeds[("S2", 0, "agent1")]
    assert seeds[("S1", 0, "agent1")] != seeds[("S1", 1, "agent1")]
    assert seeds[("S1", 0, "agent1")] != seeds[("S1", 0, "agent2")]
    independent = await seeds_by_society(tmp_path / "independent", "independent")
    assert independent[("S1", 0, "agent1")] != independent[("S2", 0, "agent1")]
    assert independent[("S1", 0, "agent1")] != independent[("S1", 1, "agent1")]
    assert json.loads((tmp_path / "independent" / "config.json").read_text())[
        "effective"]["seeding"] == "independent"


async def test_equal_answers_written_differently_are_one_cluster(tmp_path: Path) -> None:
    replies = {"agent1": "So 2 + 14 = 16.", "agent2": "The answer is 16.0", "agent3": "$16"}
    backend = ScriptedBackend(lambda messages: replies[speaker(messages)])
    cfg = config(rounds=0, strategies=[""],
                 task={"name": "jsonl", "path": str(write_questions(tmp_path))})
    run = make_run(tmp_path / "run", cfg, backend)
    summary = await run.execute(progress=False)
    (record,) = run.store.records()
    turns = record.rounds[0].turns
    assert [t.raw_answer for t in turns] == ["16", "16.0", "$16"]
    assert [t.answer for t in turns] == ["16", "16", "16"] and all(t.correct for t in turns)
    (rnd,) = summary.groups[0].rounds
    assert rnd.n_clusters == 1 and rnd.majority_accuracy == 1


def write_questions(folder: Path) -> Path:
    path = folder / "sums.jsonl"
    path.write_text('{"question": "What is 8 + 8?", "answer": "16"}\n')
    return path


class WithLogprobs(ScriptedBackend):
    """Replies with token log-probabilities, as an OpenAI-compatible server gives them."""

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        assert settings.logprobs == 0  # asked for because sampling.logprobs is on
        me = speaker(messages)
        answer, p = {"agent1": ("7", 0.5), "agent2": ("7", 0.25), "agent3": ("9", 0.9)}[me]
        tokens = (TokenLogprob(" The answer is", -0.1), TokenLogprob(" " + answer, math.log(p)),
                  TokenLogprob(".", 0.0))
        return Reply("The answer is " + answer + ".", 5, 3, logprobs=tokens)


async def test_answer_probability_and_confidence_weighted_majority(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "3 + 6?", "answer": "9"}\n')
    cfg = config(rounds=0, strategies=[""], task={"name": "jsonl", "path": str(questions)},
                 defaults={"model": "s", "sampling": {"temperature": 0.0, "logprobs": True}})
    run = make_run(tmp_path / "run", cfg, WithLogprobs(["x"]))
    summary = await run.execute(progress=False)
    (record,) = run.store.records()
    assert [t.answer_prob for t in record.rounds[0].turns] == [0.5, 0.25, 0.9]
    (rnd,) = summary.groups[0].rounds
    # MachineSoM's majority is 7 (two agents, wrong); weighted, 9 carries 0.9 > 0.75 (right).
    assert rnd.majority_accuracy == 0 and rnd.weighted_majority_accuracy == 1
