"""ChatEval's three orders on scripted backends: who speaks when and who is shown what."""

from __future__ import annotations

import re
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


def chateval(order: str, **overrides: Any) -> dict[str, Any]:
    return config(**{"protocol": {"name": "chateval", "order": order}, "rounds": 2,
                     "strategies": ["00"], "task": {"name": "arithmetic", "n": 1},
                     **overrides})


def member_calls(backend: ScriptedBackend) -> list[tuple[Message, ...]]:
    return [c for c in backend.calls if speaker(c) != "summarizer"]


async def test_one_by_one_shows_what_was_said_since_the_last_turn(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    run = make_run(tmp_path, chateval("one_by_one"), backend)
    await run.execute(progress=False)
    calls = backend.calls
    # Round 0 together, then one at a time in society order.
    assert [speaker(c) for c in calls[3:]] == [*AGENTS, *AGENTS]
    for call in calls[3:]:
        me, k = speaker(call), sum(m.role == "assistant" for m in call)
        i = AGENTS.index(me)
        # Oldest first: later speakers' previous-round replies, then this round's earlier
        # speakers (in round 1 also their round-0 answers, given alongside mine).
        before = [(r, a) for a in AGENTS[:i] for r in ([0, 1] if k == 1 else [k])]
        said = sorted([(k - 1, a) for a in AGENTS[i + 1:]] + before)
        assert tags(call[-1]) == [f"{a}@{r}" for r, a in said]
        assert "since your last turn" in call[-1].content
    # With its own history the last speaker has seen the whole chat, every reply exactly once.
    seen = [t for m in calls[-1] for t in tags(m)]
    assert sorted(seen) == sorted([f"{a}@{r}" for a in AGENTS for r in (0, 1)]
                                  + ["agent1@2", "agent2@2"])
    record = run.store.records()[0]
    assert [t.saw for t in record.rounds[1].turns] == [["agent2", "agent3"],
                                                       ["agent1", "agent3"],
                                                       ["agent1", "agent2"]]


async def test_simultaneous_shows_only_the_previous_round(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    run = make_run(tmp_path, chateval("simultaneous"), backend)
    await run.execute(progress=False)
    assert len(backend.calls) == 9
    for call in backend.calls[3:]:
        me, k = speaker(call), sum(m.role == "assistant" for m in call)
        assert tags(call[-1]) == [f"{a}@{k - 1}" for a in AGENTS if a != me]


async def test_simultaneous_summary_shows_one_summary_per_round(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    run = make_run(tmp_path, chateval("simultaneous_summary"), backend)
    await run.execute(progress=False)
    summaries = [c for c in backend.calls if speaker(c) == "summarizer"]
    assert len(summaries) == 2 and len(member_calls(backend)) == 9  # one summary per round
    # The first summary reads round 0's replies; the second also the first summary.
    assert tags(summaries[0][-1]) == [f"{a}@0" for a in AGENTS]
    assert tags(summaries[1][-1]) == ["summarizer@0", *(f"{a}@1" for a in AGENTS)]
    assert "Do not add a solution of your own" in summaries[0][-1].content
    for call in member_calls(backend)[3:]:
        # The members see the summary, not the replies themselves.
        assert tags(call[-1]) == ["summarizer@0"]
        assert "summarised the discussion" in call[-1].content
    record = run.store.records()[0]
    assert [[t.agent for t in r.asides] for r in record.rounds] == [[], ["summarizer"],
                                                                    ["summarizer"]]
    assert record.rounds[1].asides[0].pattern == "aside"
    assert record.rounds[1].asides[0].model == "s"  # the first member's model
    assert record.rounds[1].turns[0].saw == ["agent2", "agent3"]


async def test_a_configured_summarizer_runs_on_its_own_model(tmp_path: Path) -> None:
    models = {"s": {"backend": "scripted", "replies": ["The answer is 1."]},
              "t": {"backend": "scripted", "replies": ["They all say 1."]}}
    cfg = chateval("simultaneous_summary", models=models)
    cfg["protocol"]["summarizer"] = {"model": "t", "trait": "easy-going"}
    plan = build_plan(parse_config(cfg))
    assert plan.model_names() == ["s", "t"]
    run = make_run(tmp_path, cfg)
    await run.execute(progress=False)
    record = run.store.records()[0]
    aside = record.rounds[1].asides[0]
    assert (aside.agent, aside.model, aside.reply) == ("summarizer", "t", "They all say 1.")


@pytest.mark.parametrize(("protocol", "graph", "message"), [
    ({"name": "chateval", "order": "round_robin"}, "complete",
     r"^protocol\.order: must be one of one_by_one"),
    ({"name": "chateval", "summarizer": {"model": "s"}}, "complete",
     r"^protocol\.summarizer: only used with order: simultaneous_summary"),
    ({"name": "chateval", "order": "simultaneous_summary", "summarizer": {"modle": "s"}},
     "complete", r"^protocol\.summarizer\.modle: "),
    ({"name": "chateval"}, "chain", r"^societies\[0\]\.graph: chateval is a group discussion"),
])
def test_bad_chateval_options_are_refused_with_the_field(
        protocol: dict[str, Any], graph: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_plan(parse_config(config(protocol=protocol, graph=graph)))


def test_orders_name_their_templates() -> None:
    plan = build_plan(parse_config(chateval("one_by_one")))
    assert plan.protocol.templates == ("chateval_question", "chateval_chat")
    plan = build_plan(parse_config(chateval("simultaneous_summary")))
    assert plan.protocol.templates == ("chateval_question", "chateval_chat", "summary")
