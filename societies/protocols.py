"""Protocols decide what each agent is asked in each round; the engine runs them.

A protocol sees the society (agents + graph), the task, and the latest turn of every agent, and
returns one user message per agent. It never sees a same-round reply: the engine asks for all
of a round's messages before any agent answers.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass

from societies.backends.base import Message
from societies.cards import render
from societies.plan import SocietyPlan
from societies.records import Pattern, Turn
from societies.strategies import Strategy
from societies.tasks import Question, Task


@dataclass(frozen=True)
class RoundPrompt:
    """What one agent is asked in a round after round 0.

    Attributes:
        pattern: debate or reflection.
        message: the user message appended to the agent's history.
        saw: the agents whose replies the message shows, in society order (empty when it shows
            none); recorded in the turn so exposure measures need only the records.
    """

    pattern: Pattern
    message: Message
    saw: tuple[str, ...] = ()


class Protocol(abc.ABC):
    """What agents are told in round 0 and in each later round.

    ``templates`` names the prompt templates the protocol renders: their text is part of a run's
    identity, so editing one makes a new run instead of mixing two protocols in one.
    """

    templates: tuple[str, ...] = ()

    @abc.abstractmethod
    def opening(self, society: SocietyPlan, question: Question, task: Task
                ) -> list[tuple[Message, ...]]:
        """Round 0: the messages each agent answers first, in society order."""

    @abc.abstractmethod
    def round_prompts(self, society: SocietyPlan, latest: Mapping[str, Turn],
                      strategy: Strategy, k: int, task: Task) -> list[RoundPrompt]:
        """Round ``k + 1``: each agent's pattern, message and what it shows, in society order."""


class MachineSoM(Protocol):
    """MachineSoM's protocol: a trait system prompt, then debate or reflection per round.

    Debate shows the agent the latest replies of its in-neighbours on the graph (agents whose
    branch ended are left out); reflection shows nothing new, only the agent's own history.
    """

    templates = ("question", "debate", "reflection")

    def opening(self, society: SocietyPlan, question: Question, task: Task
                ) -> list[tuple[Message, ...]]:
        prompt = render("question", question=question.text, answer_form=task.answer_form)
        return [(Message("system", a.card.system_prompt(a.name)), Message("user", prompt))
                for a in society.agents]

    def round_prompts(self, society: SocietyPlan, latest: Mapping[str, Turn],
                      strategy: Strategy, k: int, task: Task) -> list[RoundPrompt]:
        prompts: list[RoundPrompt] = []
        for i, agent in enumerate(society.agents):
            if strategy.pattern(k, i) == "debate":
                seen = [name for name in society.sources_for(agent.name)
                        if not latest[name].error]
                others = [{"label": name, "reply": latest[name].reply} for name in seen]
                text = render("debate", others=others, answer_form=task.answer_form)
                prompts.append(RoundPrompt("debate", Message("user", text), tuple(seen)))
            else:
                text = render("reflection", answer_form=task.answer_form)
                prompts.append(RoundPrompt("reflection", Message("user", text)))
        return prompts


PROTOCOLS: dict[str, type[Protocol]] = {"machinesom": MachineSoM}
