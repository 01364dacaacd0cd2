"""Du et al. (2023) multi-agent debate: every agent reads every other agent's latest solution.

Round 0 asks the question; each later round shows an agent the other agents' latest solutions
(unnamed, as in the paper: "another agent") and asks for an updated answer, treating them as
extra advice. Differences from MachineSoM's protocol, all deliberate:

* **No trait prompt for neutral agents.** Du et al. give agents no persona, so an agent whose
  card is ``neutral`` gets no system message at all; any other card (a trait you chose) is sent
  as usual.
* **Connected graphs only.** The paper's agents talk all-to-all (``graph: complete``, the
  default); a sparser graph is allowed but a disconnected one is refused at plan time, since
  the protocol is about agents converging together.
* **Strategies.** Du et al. only debate, so use strategies of ``0`` (e.g. ``["00"]``). A ``1``
  (reflection) round is kept meaningful rather than refused: the agent re-checks its own solution
  shown nobody's (``du_reflection.j2``), as MachineSoM's reflection does.

The debate policy (``debate:``: sampling ``k`` neighbours, a summariser, ``max_chars``,
``keep_rounds``) applies as for any protocol.

>>> from societies.protocols.policies import DebatePolicy
>>> Du(DebatePolicy()).templates
('du_question', 'du_debate', 'du_reflection')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from societies import graphs
from societies.backends.base import Message
from societies.cards import render
from societies.plan import AgentPlan, SocietyPlan
from societies.protocols.base import Ask, Protocol, RoundPrompt, View, options
from societies.protocols.policies import DebatePolicy

if TYPE_CHECKING:
    from societies.protocols import BuildContext

NEUTRAL = "neutral"  # the card that means "no persona": no system message


class Du(Protocol):
    """Du et al.'s debate: answer, then read the others' latest solutions and update."""

    name = "du"

    def __init__(self, policy: DebatePolicy) -> None:
        self.policy = policy
        self.templates = ("du_question", "du_debate", "du_reflection", *policy.templates)
        self.roles = (policy.summarizer,) if policy.summarizer else ()

    def check(self, society: SocietyPlan, rounds: int, where: str) -> None:
        which: list[int | None] = list(range(1, rounds + 1)) if society.schedule else [None]
        for r in which:
            graphs.require_connected(society.graph_at(r), f"{where}.graph", self.name)

    def system(self, society: SocietyPlan, agent: AgentPlan) -> Message | None:
        if agent.card.name == NEUTRAL:
            return None
        return super().system(society, agent)

    def context(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        return self.policy.trim(messages)

    async def prompts(self, view: View, members: Sequence[int], ask: Ask) -> list[RoundPrompt]:
        form = view.task.answer_form
        if view.round == 0:
            text = render("du_question", question=view.question.text, answer_form=form)
            return [RoundPrompt("answer", Message("user", text)) for _ in members]
        out: list[RoundPrompt] = []
        for i in members:
            if view.strategy.pattern(view.round - 1, i) != "debate":
                text = render("du_reflection", answer_form=form)
                out.append(RoundPrompt("reflection", Message("user", text)))
                continue
            shown, saw = await self.policy.shown(view, view.society.agents[i].name, ask)
            others = [{"reply": s.reply, "summary": s.summary} for s in shown]
            text = render("du_debate", others=others, answer_form=form)
            out.append(RoundPrompt("debate" if shown else "alone", Message("user", text), saw))
        return out


def build(spec: Mapping[str, Any], ctx: BuildContext, where: str) -> Du:
    """Du takes no options of its own; the debate policy comes from ``debate:``."""
    options(spec, [], where)
    return Du(ctx.policy)
