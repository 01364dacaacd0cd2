"""What a debate prompt shows: a policy over an agent's in-neighbours and their replies.

MachineSoM shows the latest reply of every in-neighbour. Larger societies need less: at most
``k`` neighbours sampled with a seed, each neighbour's last ``r`` replies, replies cut to a
length, or one summary written by a summariser agent. A protocol asks the policy for the
neighbours' replies an agent sees and renders them in its own template.

The rules, in the order they apply:

1. **Sources**: the agent's in-neighbours on the round's graph whose branch is alive, in society
   order.
2. **Sample** (``show: sample``): at most ``k`` of them, drawn by ``random.Random`` seeded with
   ``seed``, the question id, the agent and the round; so a re-run, another strategy sharing the
   prefix, or a resume shows the same ones. The kept neighbours stay in society order.
3. **Replies**: each neighbour's last ``last_rounds`` non-empty replies, each cut to
   ``max_chars`` characters (the head kept, marked with ``CUT_MARK``).
4. **Summary** (``summarizer``): the shown replies go to the summariser agent in one call
   (``prompts/summary.j2``), and the agent is shown its summary instead, as one entry. A failed
   summary call (context overflow) falls back to the replies themselves.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from societies.backends.base import Message
from societies.cards import render
from societies.plan import AgentPlan
from societies.protocols.base import Ask, View
from societies.records import Turn

CUT_MARK = " […]"
SUMMARY_TEMPLATE = "summary"


@dataclass(frozen=True)
class Shown:
    """One neighbour's replies as a debate prompt shows them.

    Attributes:
        label: whose replies (an agent name), or who was summarised.
        reply: the text shown.
        summary: True when ``reply`` is a summariser's summary of several agents' replies.
    """

    label: str
    reply: str
    summary: bool = False


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
        keep_rounds: send an agent only its opening and its last ``keep_rounds`` exchanges.
    """

    show: str = "all"
    k: int | None = None
    seed: int = 0
    last_rounds: int = 1
    summarizer: AgentPlan | None = None
    max_chars: int | None = None
    keep_rounds: int | None = None

    @property
    def templates(self) -> tuple[str, ...]:
        """The templates this policy renders (the summary prompt when summarising)."""
        return (SUMMARY_TEMPLATE,) if self.summarizer is not None else ()

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

        Neighbours whose branch ended are left out; with ``show: sample`` at most ``k`` remain.
        """
        names = [name for name in view.society.sources_for(agent, view.round)
                 if view.answered(name)]
        return self.sample(names, view.question.id, agent, view.round)

    def sample(self, names: Sequence[str], question: str, agent: str, round: int) -> list[str]:
        """``names`` as ``show`` keeps them: all, or ``k`` drawn by a seed of (seed, question,
        agent, round), in their given order.

        >>> p = DebatePolicy(show="sample", k=2, seed=1)
        >>> p.sample("abcde", "q1", "x", 1) == p.sample("abcde", "q1", "x", 1)
        True
        >>> len(p.sample("abcde", "q1", "x", 1)), p.sample("ab", "q1", "x", 1)
        (2, ['a', 'b'])
        """
        if self.show != "sample" or self.k is None or len(names) <= self.k:
            return list(names)
        rng = random.Random(f"{self.seed}|{question}|{agent}|{round}")
        picked = set(rng.sample(list(names), self.k))
        return [name for name in names if name in picked]

    async def shown(self, view: View, agent: str, ask: Ask) -> tuple[list[Shown], tuple[str, ...]]:
        """The replies ``agent`` is shown this round, and whose they are."""
        names = self.sources(view, agent)
        shown = [Shown(name, self._text(view, name)) for name in names]
        return await self.condense(view, shown, ask), tuple(names)

    async def condense(self, view: View, shown: list[Shown], ask: Ask) -> list[Shown]:
        """``shown`` as the agent sees it: unchanged, or with a summariser one summary of it
        (the replies themselves if the summary call failed)."""
        if self.summarizer is None or not shown:
            return shown
        turn = await summarize(self.summarizer, view, shown, ask)
        if turn.error or not turn.reply.strip():
            return shown
        names = dict.fromkeys(s.label for s in shown)
        return [Shown(", ".join(names), turn.reply, summary=True)]

    def _text(self, view: View, name: str) -> str:
        kept = [(i, t.reply) for i, t in enumerate(view.history[name]) if t.reply]
        kept = kept[-self.last_rounds:]
        if len(kept) == 1:
            return self.cut(kept[0][1])
        return "\n".join(f"(round {i}) {self.cut(reply)}" for i, reply in kept)

    def cut(self, text: str) -> str:
        """``text`` cut to ``max_chars`` (head kept, marked with ``CUT_MARK``)."""
        if self.max_chars is None or len(text) <= self.max_chars:
            return text
        return text[:self.max_chars] + CUT_MARK


async def summarize(role: AgentPlan, view: View, shown: Sequence[Shown], ask: Ask,
                    earlier: str | None = None) -> Turn:
    """One call by ``role`` condensing ``shown`` (and an ``earlier`` summary, if any) into a
    summary of the discussion on ``view.question``; recorded as an aside turn."""
    text = render(SUMMARY_TEMPLATE, question=view.question.text, earlier=earlier,
                  replies=[{"label": s.label, "reply": s.reply} for s in shown])
    messages = [Message("system", role.card.system_prompt(role.name)), Message("user", text)]
    return await ask(role, messages, [s.label for s in shown if not s.summary])
