"""What a debate prompt shows: a policy over an agent's in-neighbours and their replies.

MachineSoM shows the latest reply of every in-neighbour. Larger societies need less: at most
``k`` neighbours sampled with a seed, each neighbour's last ``r`` replies, replies cut to a
length, or one summary written by a summariser agent. A protocol asks the policy for the
neighbours' replies an agent sees and renders them in its own template.
"""

from __future__ import annotations

from dataclasses import dataclass

from societies.backends.base import Message
from societies.plan import AgentPlan
from societies.protocols.base import Ask, View

CUT_MARK = " […]"


@dataclass(frozen=True)
class Shown:
    """One neighbour's replies as a debate prompt shows them."""

    label: str
    reply: str


@dataclass(frozen=True)
class DebatePolicy:
    """Which in-neighbours' replies a debate prompt shows, and how much of them.

    Attributes:
        show: ``all`` (every in-neighbour) or ``sample`` (at most ``k``, drawn with ``seed``).
        k: with ``sample``, how many.
        seed: with ``sample``, which (the draw also depends on the agent, round and question).
        last_rounds: each neighbour's last ``r`` replies (1 = MachineSoM).
        summarizer: if set, the shown replies are condensed into one summary by this agent.
        max_chars: cut each shown reply to this many characters (head kept, marked with
            ``CUT_MARK``).
    """

    show: str = "all"
    k: int | None = None
    seed: int = 0
    last_rounds: int = 1
    summarizer: AgentPlan | None = None
    max_chars: int | None = None
    keep_rounds: int | None = None

    def trim(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        """What of an agent's own history is sent: with ``keep_rounds`` set, the opening
        (system message and question) and the last ``keep_rounds`` exchanges before the current
        prompt; the rounds in between are dropped whole, so no message is cut mid-text.

        >>> m = tuple(Message("user" if i % 2 else "assistant", str(i)) for i in range(1, 8))
        >>> [x.content for x in DebatePolicy(keep_rounds=1).trim((Message("system", "s"), *m))]
        ['s', '1', '2', '5', '6', '7']
        """
        if self.keep_rounds is None:
            return messages
        head = 2 if messages and messages[0].role == "system" else 1
        opening, rest = messages[:head + 1], messages[head + 1:]  # + round 0's answer
        keep = 2 * self.keep_rounds + 1  # exchanges (prompt + reply) and the current prompt
        return messages if len(rest) <= keep else (*opening, *rest[-keep:])

    def sources(self, view: View, agent: str) -> list[str]:
        """The in-neighbours whose replies ``agent`` sees this round, in society order.

        Neighbours whose branch ended are left out.
        """
        return [name for name in view.society.sources_for(agent, view.round)
                if view.answered(name)]

    async def shown(self, view: View, agent: str, ask: Ask) -> tuple[list[Shown], tuple[str, ...]]:
        """The replies ``agent`` is shown this round, and whose they are."""
        names = self.sources(view, agent)
        shown = [Shown(name, self._text(view, name)) for name in names]
        return shown, tuple(names)

    def _text(self, view: View, name: str) -> str:
        kept = [(i, t.reply) for i, t in enumerate(view.history[name]) if t.reply]
        kept = kept[-self.last_rounds:]
        if len(kept) == 1:
            return self._cut(kept[0][1])
        return "\n".join(f"(round {i}) {self._cut(reply)}" for i, reply in kept)

    def _cut(self, text: str) -> str:
        if self.max_chars is None or len(text) <= self.max_chars:
            return text
        return text[:self.max_chars] + CUT_MARK
