"""MachineSoM's protocol: a trait system prompt, then debate or reflection per round.

Agents update simultaneously by default, as in MachineSoM: everyone's round-r prompt is built
from round r-1. ``update: sequential`` makes rounds after round 0 asynchronous: agents answer
one at a time, each shown the latest replies of its in-neighbours, so an agent later in the
order reads this round's replies of those before it. The order is society order, or with
``order_seed`` a fresh random order each round (a function of the seed, the society and the
round only, so every question and strategy of a society uses the same orders).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from societies.backends.base import Message
from societies.cards import render
from societies.errors import ConfigError
from societies.plan import SocietyPlan
from societies.protocols.base import Ask, Protocol, RoundPrompt, View, options
from societies.protocols.policies import DebatePolicy

if TYPE_CHECKING:
    from societies.protocols import BuildContext

UPDATES = ("simultaneous", "sequential")


class MachineSoM(Protocol):
    """Round 0 answers the question; each later round debates or reflects per the strategy.

    Debate shows the agent its in-neighbours' replies on the round's graph, as the debate
    policy chooses (MachineSoM: every in-neighbour's latest reply). An agent due to debate that
    is shown nobody is recorded as ``alone`` and asked to re-check its own answer; reflection
    shows nothing new.
    """

    name = "machinesom"
    templates: tuple[str, ...] = ("question", "debate", "reflection")

    def __init__(self, policy: DebatePolicy | None = None, update: str = "simultaneous",
                 order_seed: int | None = None) -> None:
        if update not in UPDATES:
            raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
        self.policy = policy or DebatePolicy()
        self.update = update
        self.order_seed = order_seed
        self.roles = (self.policy.summarizer,) if self.policy.summarizer else ()
        self.templates = (*type(self).templates, *self.policy.templates)

    def schedule(self, society: SocietyPlan, round: int) -> list[tuple[int, ...]]:
        everyone = list(range(len(society.agents)))
        if self.update == "simultaneous" or round == 0:
            return [tuple(everyone)]
        if self.order_seed is not None:
            random.Random(f"{self.order_seed}|{society.name}|{round}").shuffle(everyone)
        return [(i,) for i in everyone]

    def context(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        return self.policy.trim(messages)

    async def prompts(self, view: View, members: Sequence[int], ask: Ask) -> list[RoundPrompt]:
        # The class's three templates, in order: question, debate, reflection (Du's own are
        # worded differently and take the same variables).
        question, debate, reflection = type(self).templates
        answer_form = view.task.answer_form
        if view.round == 0:
            text = render(question, question=view.question.text, answer_form=answer_form)
            return [RoundPrompt("answer", Message("user", text)) for _ in members]
        prompts: list[RoundPrompt] = []
        for i in members:
            if view.strategy.pattern(view.round - 1, i) != "debate":
                text = render(reflection, answer_form=answer_form)
                prompts.append(RoundPrompt("reflection", Message("user", text)))
                continue
            shown, saw = await self.policy.shown(view, view.society.agents[i].name, ask)
            others = [{"label": s.label, "reply": s.reply, "summary": s.summary} for s in shown]
            text = render(debate, others=others, answer_form=answer_form)
            prompts.append(RoundPrompt("debate" if shown else "alone", Message("user", text),
                                       saw))
        return prompts


def build(spec: Mapping[str, Any], ctx: BuildContext, where: str) -> MachineSoM:
    """Options: ``update`` (simultaneous, the default, or sequential) and, with sequential,
    ``order_seed``; the debate policy comes from ``debate:``."""
    opts = options(spec, ["update", "order_seed"], where)
    update = opts.get("update", "simultaneous")
    if update not in UPDATES:
        raise ConfigError(f"{where}.update: must be one of {', '.join(UPDATES)}, got {update!r}")
    seed = opts.get("order_seed")
    if seed is not None and (update != "sequential" or not isinstance(seed, int)
                             or isinstance(seed, bool)):
        raise ConfigError(f"{where}.order_seed: an integer, only with update: sequential")
    return MachineSoM(ctx.policy, update, seed)
