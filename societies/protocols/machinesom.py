"""MachineSoM's protocol: a trait system prompt, then debate or reflection per round."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from societies.backends.base import Message
from societies.cards import render
from societies.protocols.base import Ask, Protocol, RoundPrompt, View, options
from societies.protocols.policies import DebatePolicy

if TYPE_CHECKING:
    from societies.protocols import BuildContext


class MachineSoM(Protocol):
    """Round 0 answers the question; each later round debates or reflects per the strategy.

    Debate shows the agent its in-neighbours' replies on the round's graph, as the debate
    policy chooses (MachineSoM: every in-neighbour's latest reply). An agent due to debate that
    is shown nobody is recorded as ``alone`` and asked to re-check its own answer; reflection
    shows nothing new.
    """

    name = "machinesom"
    templates = ("question", "debate", "reflection")

    def __init__(self, policy: DebatePolicy | None = None) -> None:
        self.policy = policy or DebatePolicy()
        self.roles = (self.policy.summarizer,) if self.policy.summarizer else ()

    def context(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        return self.policy.trim(messages)

    async def prompts(self, view: View, members: Sequence[int], ask: Ask) -> list[RoundPrompt]:
        answer_form = view.task.answer_form
        if view.round == 0:
            text = render("question", question=view.question.text, answer_form=answer_form)
            return [RoundPrompt("answer", Message("user", text)) for _ in members]
        prompts: list[RoundPrompt] = []
        for i in members:
            agent = view.society.agents[i].name
            if view.strategy.pattern(view.round - 1, i) == "debate":
                shown, saw = await self.policy.shown(view, agent, ask)
                if shown:
                    others = [{"label": s.label, "reply": s.reply} for s in shown]
                    text = render("debate", others=others, answer_form=answer_form)
                    prompts.append(RoundPrompt("debate", Message("user", text), saw))
                    continue
                text = render("debate", others=[], answer_form=answer_form)
                prompts.append(RoundPrompt("alone", Message("user", text)))
            else:
                text = render("reflection", answer_form=answer_form)
                prompts.append(RoundPrompt("reflection", Message("user", text)))
        return prompts


def build(spec: Mapping[str, Any], ctx: BuildContext, where: str) -> MachineSoM:
    """MachineSoM takes no options; the debate policy comes from ``debate:``."""
    options(spec, [], where)
    return MachineSoM(ctx.policy)
