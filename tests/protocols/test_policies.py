"""Debate-prompt policies: seeded sampling of neighbours, a summariser, cuts (scripted)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from societies.backends.base import ContextOverflowError, Message, Reply, Settings
from societies.backends.scripted import ScriptedBackend
from societies.config import parse_config
from societies.errors import ConfigError
from societies.plan import build_plan
from societies.protocols.policies import CUT_MARK, DebatePolicy
from tests.helpers import config, make_run, speaker, tagged_reply

CARD = "name: persona\nkind: trait\ndescription: test\nprompt: You are {{ name }}, an agent.\n"


def tags(message: Message) -> list[str]:
    return re.findall(r"<(\w+@\d+)>", message.content)


def society(tmp_path: Path, n: int) -> list[dict[str, Any]]:
    card = tmp_path / "persona.yaml"
    card.write_text(CARD)
    return [{"name": "big", "agents": [{"name": f"agent{i + 1}", "trait": str(card)}
                                       for i in range(n)]}]


def test_sampling_is_a_function_of_seed_question_agent_and_round() -> None:
    names = [f"a{i}" for i in range(10)]
    p = DebatePolicy(show="sample", k=3, seed=7)
    draw = p.sample(names, "q1", "x", 2)
    assert len(draw) == 3 and draw == sorted(draw, key=names.index)  # society order kept
    assert p.sample(names, "q1", "x", 2) == draw
    others = {tuple(p.sample(names, q, a, r)) for q in ("q1", "q2") for a in ("x", "y")
              for r in (1, 2, 3)}
    assert len(others) > 6  # each of question, agent and round changes the draw
    assert DebatePolicy(show="sample", k=3, seed=8).sample(names, "q1", "x", 2) != draw \
        or DebatePolicy(show="sample", k=3, seed=9).sample(names, "q1", "x", 2) != draw
    # Over many rounds every neighbour is drawn about k/n of the time.
    counts = Counter(n for r in range(600) for n in p.sample(names, "q", "x", r))
    assert set(counts) == set(names) and all(120 < c < 240 for c in counts.values())
    assert DebatePolicy().sample(names, "q", "x", 1) == names


async def test_show_sample_shows_k_replies_and_a_rerun_shows_the_same(tmp_path: Path) -> None:
    cfg = config(societies=society(tmp_path, 5), rounds=2, strategies=["00"],
                 debate={"show": "sample", "k": 2, "seed": 3},
                 task={"name": "arithmetic", "n": 2})
    seen = []
    for attempt in ("a", "b"):
        backend = ScriptedBackend(tagged_reply)
        run = make_run(tmp_path / attempt, cfg, backend)
        await run.execute(progress=False)
        debates = [c for c in backend.calls if any(m.role == "assistant" for m in c)]
        assert debates and all(len(tags(c[-1])) == 2 for c in debates)
        assert all(speaker(c) not in " ".join(tags(c[-1])) for c in debates)
        records = run.store.records()
        seen.append([t.saw for r in records for rnd in r.rounds[1:] for t in rnd.turns])
        assert all(len(s) == 2 for s in seen[-1])
    assert seen[0] == seen[1]
    assert len({tuple(s) for s in seen[0]}) > 1  # not the same two for everyone


def test_show_sample_needs_k() -> None:
    with pytest.raises(ConfigError, match=r"^debate\.k: required with show: sample"):
        build_plan(parse_config(config(debate={"show": "sample"})))


async def test_a_summarizer_condenses_each_agents_shown_replies_once_a_round(
        tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    cfg = config(rounds=2, strategies=["01"], graph="chain",
                 debate={"summarizer": {"name": "digest", "trait": "neutral"}},
                 task={"name": "arithmetic", "n": 1})
    plan = build_plan(parse_config(cfg))
    assert "summary" in plan.protocol.templates and plan.protocol.roles[0].name == "digest"
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    summaries = [c for c in backend.calls if speaker(c) == "digest"]
    # chain: agent2 reads agent1, agent3 reads agent2, agent1 nobody; reflection needs none.
    assert [tags(c[-1]) for c in summaries] == [["agent1@0"], ["agent2@0"]]
    assert all("Do not add a solution of your own" in c[-1].content for c in summaries)
    members = {speaker(c): c for c in backend.calls
               if speaker(c) != "digest" and sum(m.role == "assistant" for m in c) == 1}
    assert tags(members["agent2"][-1]) == tags(members["agent3"][-1]) == ["digest@0"]
    assert tags(members["agent1"][-1]) == []
    (record,) = run.store.records()
    assert [t.agent for t in record.rounds[1].asides] == ["digest", "digest"]
    assert [t.saw for t in record.rounds[1].asides] == [["agent1"], ["agent2"]]
    assert record.rounds[2].asides == []
    assert [t.saw for t in record.rounds[1].turns] == [[], ["agent1"], ["agent2"]]


class SummaryOverflows(ScriptedBackend):
    """The summariser's context is too small: its calls overflow, members' do not."""

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        if speaker(messages) == "digest":
            self.calls.append(tuple(messages))
            raise ContextOverflowError("prompt longer than the context")
        return await super().generate(messages, settings)


async def test_a_failed_summary_falls_back_to_the_replies(tmp_path: Path) -> None:
    backend = SummaryOverflows(tagged_reply)
    cfg = config(rounds=1, strategies=["0"],
                 debate={"summarizer": {"name": "digest", "trait": "neutral"}},
                 task={"name": "arithmetic", "n": 1})
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    members = [c for c in backend.calls if speaker(c) != "digest" and len(c) > 2]
    assert all(len(tags(c[-1])) == 2 for c in members)
    (record,) = run.store.records()
    assert record.status == "ok" and all(t.error for t in record.rounds[1].asides)


async def test_max_chars_and_last_rounds(tmp_path: Path) -> None:
    def long_reply(messages: Sequence[Message]) -> str:
        return tagged_reply(messages) + " " + "x" * 100

    backend = ScriptedBackend(long_reply)
    cfg = config(rounds=2, strategies=["00"], debate={"max_chars": 40, "last_rounds": 2},
                 task={"name": "arithmetic", "n": 1})
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    last = [c for c in backend.calls if sum(m.role == "assistant" for m in c) == 2]
    for call in last:
        me = speaker(call)
        assert sorted(tags(call[-1])) == sorted(f"{a}@{k}" for a in ("agent1", "agent2",
                                                                     "agent3")
                                                if a != me for k in (0, 1))
        assert call[-1].content.count(CUT_MARK) == 4 and "x" * 40 not in call[-1].content
        assert "(round 0)" in call[-1].content and "(round 1)" in call[-1].content
