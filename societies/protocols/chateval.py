"""ChatEval's communication orders (Chan et al., 2023) for a group discussion.

Every member reads every other member (the society's graph must be complete). ``order`` says
how a round's turns are taken:

* ``one_by_one``: members speak in society order, one at a time. Each is shown what was said
  since its own last turn, oldest first: the previous round's replies of the members after it,
  then this round's replies of the members before it (in round 1 also the round-0 answers of
  the members before it, given at the same time as its own). With its own history that is the
  whole chat so far, every reply once.
* ``simultaneous``: everyone speaks at once, shown the previous round's replies of the others.
* ``simultaneous_summary``: as ``simultaneous``, but before each round a summariser role writes
  one summary of the discussion so far (the previous summary plus the round's replies,
  ``prompts/summary.j2``) and every member is shown the summary instead of the replies. One
  summariser call per round, recorded as that round's aside. ``summarizer: {model, trait,
  sampling}`` chooses it; by default it runs on the first member's model and sampling with the
  ``neutral`` card. A failed summary call falls back to showing the replies.

Round 0 is everyone's independent answer whatever the order, so the three orders start from the
same first answers (with ``seeding: paired`` they are the same calls, answered once by the
cache) and differ only in how they discuss. A strategy's reflection round (``1``) shows the
member nobody's reply; ChatEval itself only discusses, so use strategies of ``0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from societies.backends.base import Message
from societies.cards import load_card, render
from societies.errors import ConfigError
from societies.plan import AgentPlan, SocietyPlan
from societies.protocols.base import Ask, Protocol, RoundPrompt, View, options
from societies.protocols.policies import SUMMARY_TEMPLATE, DebatePolicy, Shown, summarize

if TYPE_CHECKING:
    from societies.protocols import BuildContext

ORDERS = ("one_by_one", "simultaneous", "simultaneous_summary")
SUMMARIZER = "summarizer"  # the default summariser's name in records


class ChatEval(Protocol):
    """A group discussion in one of ChatEval's orders (see the module doc).

    >>> from societies.protocols.policies import DebatePolicy
    >>> ChatEval(DebatePolicy(), "simultaneous_summary").templates
    ('chateval_question', 'chateval_chat', 'summary')
    """

    name = "chateval"

    def __init__(self, policy: DebatePolicy, order: str = "one_by_one",
                 summarizer: AgentPlan | None = None) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        self.policy = policy
        self.order = order
        self.summarizer = summarizer
        summary = order == "simultaneous_summary"
        extra = (SUMMARY_TEMPLATE,) if summary else policy.templates
        self.templates = ("chateval_question", "chateval_chat", *extra)
        role = summarizer if summary else policy.summarizer
        self.roles = (role,) if role is not None else ()

    def check(self, society: SocietyPlan, rounds: int, where: str) -> None:
        names = [a.name for a in society.agents]
        which: list[int | None] = list(range(1, rounds + 1)) if society.schedule else [None]
        for r in which:
            graph = society.graph_at(r)
            if graph.number_of_edges() == len(names) * (len(names) - 1):  # no self-loops
                continue
            for reader in names:
                for source in names:
                    if source != reader and not graph.has_edge(source, reader):
                        raise ConfigError(
                            f"{where}.graph: chateval is a group discussion in which every "
                            f"member reads every other (graph: complete); {reader} does not "
                            f"read {source}")

    def context(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        return self.policy.trim(messages)

    def schedule(self, society: SocietyPlan, round: int) -> list[tuple[int, ...]]:
        if self.order == "one_by_one" and round > 0:
            return [(i,) for i in range(len(society.agents))]
        return [tuple(range(len(society.agents)))]

    async def prompts(self, view: View, members: Sequence[int], ask: Ask) -> list[RoundPrompt]:
        form = view.task.answer_form
        if view.round == 0:
            text = render("chateval_question", question=view.question.text, answer_form=form)
            return [RoundPrompt("answer", Message("user", text)) for _ in members]
        summary = None
        if self.order == "simultaneous_summary" and any(
                view.strategy.pattern(view.round - 1, i) == "debate" for i in members):
            summary = await self._summary(view, ask)
        out: list[RoundPrompt] = []
        for i in members:
            agent = view.society.agents[i].name
            if view.strategy.pattern(view.round - 1, i) != "debate":
                text = render("chateval_chat", others=[], summary=None, answer_form=form)
                out.append(RoundPrompt("reflection", Message("user", text)))
                continue
            if summary is not None:
                saw = tuple(n for n in self._speakers(view) if n != agent)
                text = render("chateval_chat", others=[], summary=summary, answer_form=form)
                out.append(RoundPrompt("debate" if saw else "alone", Message("user", text), saw))
                continue
            if self.order == "one_by_one":
                shown, saw = await self._since_last_turn(view, i, ask)
            else:
                shown, saw = await self.policy.shown(view, agent, ask)
            others = [{"label": s.label, "reply": s.reply} for s in shown]
            text = render("chateval_chat", others=others, summary=None, answer_form=form)
            out.append(RoundPrompt("debate" if shown else "alone", Message("user", text), saw))
        return out

    async def _since_last_turn(self, view: View, me: int, ask: Ask
                               ) -> tuple[list[Shown], tuple[str, ...]]:
        """What member ``me`` has not yet seen when its turn comes in ``view.round``."""
        r, agents = view.round, view.society.agents
        position = {a.name: j for j, a in enumerate(agents)}
        sources = self.policy.sources(view, agents[me].name)
        said: list[tuple[int, int, str]] = []  # (round, position, name), in chat order
        for name in sources:
            j = position[name]
            rounds = [r - 1] if j > me else ([0, 1] if r == 1 else [r])
            said += [(k, j, name) for k in rounds if k < len(view.history[name])]
        shown = [Shown(name, self.policy.cut(view.history[name][k].reply))
                 for k, _, name in sorted(said) if view.history[name][k].reply]
        return await self.policy.condense(view, shown, ask), tuple(sources)

    def _speakers(self, view: View) -> list[str]:
        return [a.name for a in view.society.agents if view.answered(a.name)]

    async def _summary(self, view: View, ask: Ask) -> str | None:
        """One summary of the discussion so far, written before this round (None if the call
        failed: the members are then shown the replies)."""
        role = self.summarizer or _default_summarizer(view.society)
        earlier = next((t.reply for t in reversed(view.asides)
                        if t.agent == role.name and t.reply and not t.error), None)
        replies = [Shown(n, view.latest(n).reply) for n in self._speakers(view)]
        turn = await summarize(role, view, replies, ask, earlier=earlier)
        return None if turn.error or not turn.reply.strip() else turn.reply


def _default_summarizer(society: SocietyPlan) -> AgentPlan:
    """The summariser when none is configured: the first member's model and sampling, with
    the neutral card."""
    first = society.agents[0]
    return AgentPlan(SUMMARIZER, load_card("neutral"), first.model, first.settings)


def build(spec: Mapping[str, Any], ctx: BuildContext, where: str) -> ChatEval:
    """``order`` (default ``one_by_one``) and, with ``simultaneous_summary``, ``summarizer``."""
    opts = options(spec, ["order", "summarizer"], where)
    order = opts.get("order", "one_by_one")
    if order not in ORDERS:
        raise ConfigError(f"{where}.order: must be one of {', '.join(ORDERS)}, got {order!r}")
    raw = opts.get("summarizer")
    if raw is not None and order != "simultaneous_summary":
        raise ConfigError(f"{where}.summarizer: only used with order: simultaneous_summary")
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{where}.summarizer: expected a mapping such as "
                          "{model: smollm2, trait: neutral}")
    summarizer = (ctx.make_agent({"name": SUMMARIZER, **raw}, f"{where}.summarizer")
                  if raw is not None else None)
    return ChatEval(ctx.policy, order, summarizer)
