"""Du et al.'s debate on scripted backends (prompt structure, visibility), and once for real."""

from __future__ import annotations

import asyncio
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

CARD = "name: persona\nkind: trait\ndescription: test\nprompt: You are {{ name }}, an agent.\n"


def tags(message: Message) -> list[str]:
    return re.findall(r"<(\w+@\d+)>", message.content)


def du_config(tmp_path: Path, n: int = 3, **overrides: Any) -> dict[str, Any]:
    """A du run of ``n`` agents with a non-neutral card (so prompts name the speaker)."""
    card = tmp_path / "persona.yaml"
    card.write_text(CARD)
    agents = [{"name": f"agent{i + 1}", "trait": str(card)} for i in range(n)]
    return config(**{"protocol": "du", "societies": [{"name": "du", "agents": agents}],
                     "rounds": 2, "strategies": ["00"], **overrides})


async def test_round_zero_asks_the_question_and_debate_shows_the_others_unnamed(
        tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    run = make_run(tmp_path / "run", du_config(tmp_path), backend)
    await run.execute(progress=False)
    questions = [q.text for q in run.questions]
    first = [c for c in backend.calls if not any(m.role == "assistant" for m in c)]
    assert len(first) == 6
    assert all(any(c[-1].content.startswith(q) for q in questions) for c in first)
    assert all("state your answer at the end" in c[-1].content for c in first)
    debates = [c for c in backend.calls if any(m.role == "assistant" for m in c)]
    assert len(debates) == 2 * 3 * 2  # 2 questions, 3 agents, 2 rounds
    for call in debates:
        me, k = speaker(call), sum(m.role == "assistant" for m in call)
        # Every other agent's solution of the previous round, none of this round, never mine.
        assert sorted(tags(call[-1])) == [f"{a}@{k - 1}" for a in ("agent1", "agent2", "agent3")
                                          if a != me]
        text = call[-1].content
        assert text.count("Solution from another agent") == 2
        assert "additional advice" in text and "updated answer" in text
        # Du et al. do not name the other agents (names only appear inside replies here).
        assert not re.search(r"(?<![<\w])agent\d", re.sub(r"<\w+@\d+>", "", text))
    record = run.store.records()[0]
    assert [t.pattern for t in record.rounds[1].turns] == ["debate"] * 3
    assert record.rounds[1].turns[0].saw == ["agent2", "agent3"]
    assert record.final is not None and record.final.method == "majority"


async def test_neutral_agents_get_no_system_message_other_cards_do(tmp_path: Path) -> None:
    backend = ScriptedBackend(["The answer is 1."])
    agents = [{"name": "plain", "trait": "neutral"}, {"name": "bold", "trait": "overconfident"}]
    cfg = config(protocol="du", societies=[{"agents": agents}], rounds=1, strategies=["0"],
                 task={"name": "arithmetic", "n": 1})
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    systems = [c[0].content for c in backend.calls if c[0].role == "system"]
    assert len(backend.calls) == 4 and len(systems) == 2
    assert all("bold" in s for s in systems)


async def test_a_reflection_round_shows_nobody(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply)
    run = make_run(tmp_path / "run", du_config(tmp_path, strategies=["01"],
                                               task={"name": "arithmetic", "n": 1}), backend)
    await run.execute(progress=False)
    last = [c for c in backend.calls if sum(m.role == "assistant" for m in c) == 2]
    assert len(last) == 3
    for call in last:
        assert tags(call[-1]) == [] and "Go through your own solution" in call[-1].content
    record = run.store.records()[0]
    assert [t.pattern for t in record.rounds[2].turns] == ["reflection"] * 3
    assert all(t.saw == [] for t in record.rounds[2].turns)


def test_a_disconnected_graph_is_refused_at_plan_time(tmp_path: Path) -> None:
    cfg = du_config(tmp_path, graph=[["agent1", "agent2"]])
    with pytest.raises(ConfigError, match=r"^societies\[0\]\.graph: .*disconnected.*du"):
        build_plan(parse_config(cfg))
    # A connected but sparse graph is accepted (the paper's default is complete).
    build_plan(parse_config(du_config(tmp_path, graph="chain")))


def test_du_takes_no_options_of_its_own(tmp_path: Path) -> None:
    cfg = du_config(tmp_path, protocol={"name": "du", "agents": 3})
    with pytest.raises(ConfigError, match=r"^protocol\.agents: unknown key"):
        build_plan(parse_config(cfg))


def test_du_templates_are_part_of_the_run_identity(tmp_path: Path) -> None:
    plan = build_plan(parse_config(du_config(tmp_path)))
    assert plan.protocol.templates == ("du_question", "du_debate", "du_reflection")
    with_summary = du_config(tmp_path, debate={"summarizer": {"name": "s", "trait": "neutral"}})
    assert "summary" in build_plan(parse_config(with_summary)).protocol.templates


@pytest.mark.real
def test_du_on_the_bundled_model_end_to_end(tmp_path: Path) -> None:
    """Two neutral agents, one debate round, one question on SmolLM2 (a few seconds)."""
    from societies.storage import RunStore

    cfg = {
        "name": "du-real",
        "protocol": "du",
        "societies": [{"name": "pair", "size": 2, "traits": {"neutral": 2}}],
        "defaults": {"model": "smollm2",
                     "sampling": {"temperature": 0.7, "max_tokens": 24, "seed": 1}},
        "rounds": 1,
        "strategies": ["0"],
        "task": {"name": "arithmetic", "n": 1, "expression": "a+b", "high": 9},
        "run": {"cache": False},
    }
    run = make_run(tmp_path, cfg)
    asyncio.run(run.execute(progress=False))
    (record,) = RunStore(tmp_path).records()
    assert record.status == "ok" and record.final is not None
    assert [t.pattern for t in record.rounds[1].turns] == ["debate", "debate"]
    assert record.rounds[1].turns[0].saw == ["neutral-2"]
    turns = [t for r in record.rounds for t in r.turns]
    assert all(t.reply and t.completion_tokens > 0 for t in turns)
    # Round 1 prompts carry the other agent's round-0 solution: longer than round 0's.
    assert all(b.prompt_tokens > a.prompt_tokens + a.completion_tokens
               for a, b in zip(record.rounds[0].turns, record.rounds[1].turns, strict=True))
