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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from societies import graphs
from societies.backends.base import Message
from societies.plan import AgentPlan, SocietyPlan
from societies.protocols.base import options
from societies.protocols.machinesom import MachineSoM
from societies.protocols.policies import DebatePolicy

if TYPE_CHECKING:
    from societies.protocols import BuildContext

NEUTRAL = "neutral"  # the card that means "no persona": no system message


class Du(MachineSoM):
    """Du et al.'s debate: answer, then read the others' latest solutions and update.

    MachineSoM's rounds with Du's prompts, no persona for neutral agents, connected graphs.
    """

    name = "du"
    templates = ("du_question", "du_debate", "du_reflection")

    def __init__(self, policy: DebatePolicy) -> None:
        super().__init__(policy)  # simultaneous update, as in the paper

    def check(self, society: SocietyPlan, rounds: int, where: str) -> None:
        which: list[int | None] = list(range(1, rounds + 1)) if society.schedule else [None]
        for r in which:
            graphs.require_connected(society.graph_at(r), f"{where}.graph", self.name)

    def system(self, society: SocietyPlan, agent: AgentPlan) -> Message | None:
        if agent.card.name == NEUTRAL:
            return None
        return super().system(society, agent)


def build(spec: Mapping[str, Any], ctx: BuildContext, where: str) -> Du:
    """Du takes no options of its own; the debate policy comes from ``debate:``."""
    options(spec, [], where)
    return Du(ctx.policy)
