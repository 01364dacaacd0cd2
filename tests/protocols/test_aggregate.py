"""The final aggregator: majority, confidence-weighted majority and a judge agent."""

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
from societies.plan import AgentPlan, Plan, build_plan
from societies.protocols.aggregate import Aggregator
from societies.protocols.base import View
from societies.records import Pattern, Turn
from societies.strategies import parse_strategy
from societies.tasks import Question, load_task
from tests.helpers import config, make_run, speaker

QUESTION = Question(id="q", text="What is 2 + 2?", gold="4")


def turn(agent: str, answer: str | None, prob: float | None = None, reply: str | None = None,
         pattern: Pattern = "debate", error: str | None = None) -> Turn:
    text = reply if reply is not None else (f"I say {answer}." if answer else "no idea")
    return Turn(agent=agent, pattern=pattern, reply=text, answer=answer,
                correct=answer == "4", answer_prob=prob, error=error)


def view_of(plan: Plan, history: dict[str, tuple[Turn, ...]]) -> View:
    society = plan.societies[0]
    return View(society, QUESTION, load_task(plan.task), parse_strategy("1", 1, "s"), 1, history)


def s2_plan(**overrides: Any) -> Plan:
    return build_plan(parse_config(config(rounds=1, strategies=["1"], **overrides)))


class FakeAsk:
    """Records role calls; replies as a judge that answers ``answer``."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.calls: list[tuple[AgentPlan, list[Message], list[str]]] = []

    async def __call__(self, role: AgentPlan, messages: Sequence[Message],
                       saw: Sequence[str]) -> Turn:
        self.calls.append((role, list(messages), list(saw)))
        return Turn(agent=role.name, pattern="aside", reply="judged", answer=self.answer,
                    correct=self.answer == "4", saw=list(saw))


async def test_majority_is_machinesoms_rule() -> None:
    plan = s2_plan()
    ask = FakeAsk(None)
    agg = Aggregator("majority")
    final = await agg.decide(view_of(plan, {"agent1": (turn("agent1", "4"),),
                                            "agent2": (turn("agent2", "4"),),
                                            "agent3": (turn("agent3", "5"),)}), ask)
    assert (final.method, final.answer, final.correct, final.turn) == ("majority", "4", True, None)
    split = await agg.decide(view_of(plan, {"agent1": (turn("agent1", "4"),),
                                            "agent2": (turn("agent2", "5"),),
                                            "agent3": (turn("agent3", "6"),)}), ask)
    assert (split.answer, split.correct) == (None, False)
    # An agent whose branch ended does not vote: one 4 against nothing is not a majority of two.
    ended = await agg.decide(view_of(plan, {"agent1": (turn("agent1", "4"),),
                                            "agent2": (turn("agent2", "5", error="overflow"),),
                                            "agent3": (turn("agent3", None),)}), ask)
    assert ended.answer is None
    assert ask.calls == []  # no model is asked


async def test_a_lone_agent_is_its_own_majority() -> None:
    plan = s2_plan(societies=[{"agents": [{"name": "solo"}]}])
    final = await Aggregator().decide(view_of(plan, {"solo": (turn("solo", "4"),)}), FakeAsk(None))
    assert (final.answer, final.correct) == ("4", True)


async def test_confidence_weighs_votes_by_answer_probability() -> None:
    plan = s2_plan()
    agg = Aggregator("confidence")

    async def decide(*turns: Turn) -> str | None:
        view = view_of(plan, {t.agent: (t,) for t in turns})
        return (await agg.decide(view, FakeAsk(None))).answer

    # One confident 4 outweighs two unsure 5s (a plain majority would say 5).
    assert await decide(turn("agent1", "4", 0.9), turn("agent2", "5", 0.4),
                        turn("agent3", "5", 0.3)) == "4"
    # An answer without a recorded probability counts 1/2.
    assert await decide(turn("agent1", "4"), turn("agent2", "5", 0.3),
                        turn("agent3", None)) == "4"
    assert await decide(turn("agent1", "4", 0.5), turn("agent2", "5"),
                        turn("agent3", None)) is None  # a tie


async def test_the_judge_reads_every_agents_last_reply_and_answers() -> None:
    plan = s2_plan(aggregate={"method": "judge", "judge": {"name": "arbiter"}})
    agg = plan.aggregator
    assert agg.templates == ("judge",) and agg.judge is not None
    history = {
        "agent1": (turn("agent1", "5", reply="five, surely"), turn("agent1", "4", reply="four")),
        # Stopped early: the carried turn is empty, so the judge reads the reply before it.
        "agent2": (turn("agent2", "4", reply="it is 4"),
                   turn("agent2", "4", reply="", pattern="stopped")),
        "agent3": (turn("agent3", None, reply="", error="context overflow"),),
    }
    ask = FakeAsk("4")
    final = await agg.decide(view_of(plan, history), ask)
    assert (final.method, final.answer, final.correct) == ("judge", "4", True)
    assert final.turn is not None and final.turn.agent == "arbiter"
    ((role, messages, saw),) = ask.calls
    assert role is agg.judge and saw == ["agent1", "agent2"]
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0].content.startswith("You are arbiter")
    prompt = messages[1].content
    assert QUESTION.text in prompt and "--- agent1 ---\nfour" in prompt
    assert "--- agent2 ---\nit is 4" in prompt
    assert "five, surely" not in prompt and "agent3" not in prompt


def judge_script(messages: Sequence[Message]) -> str:
    if speaker(messages) == "arbiter":
        return "After reading all of them, the answer is 12."
    return "The answer is 3."


async def test_aggregate_judge_decides_a_machinesom_run(tmp_path: Path) -> None:
    backend = ScriptedBackend(judge_script)
    cfg = config(strategies=["00"], task={"name": "arithmetic", "n": 1, "seed": 0},
                 aggregate={"method": "judge", "judge": {"name": "arbiter"}})
    run = make_run(tmp_path, cfg, backend)
    await run.execute(progress=False)
    (record,) = run.store.records()
    assert record.final is not None and record.final.method == "judge"
    assert record.final.answer == "12"  # not the agents' unanimous 3
    assert record.final.turn is not None and record.final.turn.pattern == "aside"
    assert record.final.turn.saw == ["agent1", "agent2", "agent3"]
    judged = [c for c in backend.calls if speaker(c) == "arbiter"]
    assert len(judged) == 1 and judged[0][-1].content.count("The answer is 3.") == 3


def test_judge_method_without_a_judge_is_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape("aggregate.judge: required")):
        s2_plan(aggregate={"method": "judge"})
