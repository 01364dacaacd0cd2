"""MAD (Liang et al. 2023, multi-agent debate): two sides argue, a moderator may end it early,
a judge decides after the last round.

The society's two agents are the debaters: the first argues the affirmative side, the second
the negative. Each round is sequential (two groups): in round 0 the affirmative answers and the
negative then answers after reading it; in each later round the affirmative answers the
negative's latest reply, then the negative the affirmative's new one. After every round a
moderator role reads that round's two replies and either settles the debate (its answer ends the
unit: ``Final.method == "moderator"``) or leaves it open. A debate still open after the last
round goes to a judge role (``judge_final``, ``Final.method == "judge"``).

Options: ``moderator`` and ``judge``, each an agent mapping (``name``, ``trait``, ``model``,
``sampling``); by default a neutral card on the first debater's model. The graph is not used
(the two sides always read each other). MAD itself only debates (write strategies of ``0``, e.g.
``["00"]``); a reflection symbol is kept meaningful rather than refused: in that round the
debater re-checks its own last reply without reading the other side (pattern ``reflection``),
and the moderator still reads both replies after it.

Example config::

    protocol: {name: mad, moderator: {trait: neutral}, judge: {model: smollm2}}
    societies: [{agents: [{name: pro}, {name: con, trait: devils-advocate}]}]
    strategies: ["00"]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from societies.backends.base import Message
from societies.cards import render
from societies.errors import ConfigError
from societies.plan import AgentPlan, SocietyPlan
from societies.protocols.base import Ask, Decision, Protocol, RoundPrompt, View, options
from societies.protocols.judge import judge_final
from societies.protocols.policies import DebatePolicy
from societies.records import Pattern

if TYPE_CHECKING:
    from societies.protocols import BuildContext

SIDES = ("affirmative", "negative")
# The moderator's first line; anything else (a model that ignores the format) leaves it open.
VERDICT = re.compile(r"verdict\W{0,3}\s*(settled|open)", re.IGNORECASE)


def settled(reply: str) -> bool:
    """True if a moderator's reply settles the debate (its first verdict says so).

    >>> settled("Verdict: settled. The affirmative is right. The answer is 4.")
    True
    >>> settled("Verdict: open"), settled("The affirmative side wins.")
    (False, False)
    """
    match = VERDICT.search(reply)
    return match is not None and match.group(1).lower() == "settled"


class RoleSpec:
    """A role agent given in the options, resolved per society when it names no model."""

    def __init__(self, role: str, raw: object, ctx: BuildContext, where: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}.{role}: expected a mapping (name, trait, model, "
                              f"sampling), got {type(raw).__name__}")
        self.raw: dict[str, Any] = {"name": role, "trait": "neutral", **raw}
        self.where = f"{where}.{role}"
        self.make = ctx.make_agent
        self.fixed = "model" in raw
        self.plan = self.make(self.raw, self.where)  # validates the mapping now

    def __getstate__(self) -> dict[str, Any]:
        # make_agent is a plan-time closure: a plan shipped to Ray workers (pickled) runs with
        # the roles check() resolved and needs no more of it.
        return {**self.__dict__, "make": None}

    def for_society(self, society: SocietyPlan) -> AgentPlan:
        """The role agent of ``society``: its own model, else the society's first agent's."""
        if self.fixed:
            return self.plan
        return self.make({**self.raw, "model": society.agents[0].model}, self.where)

    def fallback(self, society: SocietyPlan) -> AgentPlan:
        """Like :meth:`for_society` without re-validating (a society ``check`` did not see)."""
        return self.plan if self.fixed else replace(self.plan, model=society.agents[0].model)


class RoleAgents:
    """Role agents resolved per society at plan time (``check``), kept for the run."""

    def __init__(self, specs: Sequence[RoleSpec]) -> None:
        self.specs = tuple(specs)
        self.resolved: dict[str, tuple[AgentPlan, ...]] = {}

    def resolve(self, society: SocietyPlan) -> tuple[AgentPlan, ...]:
        """Resolve (and remember) the roles of ``society``."""
        plans = tuple(s.for_society(society) for s in self.specs)
        self.resolved[society.name] = plans
        return plans

    def of(self, society: SocietyPlan) -> tuple[AgentPlan, ...]:
        """The roles of ``society`` (resolved at check time, else by fallback)."""
        found = self.resolved.get(society.name)
        return found if found is not None else tuple(s.fallback(society) for s in self.specs)

    def all(self) -> tuple[AgentPlan, ...]:
        """Every distinct role agent resolved so far (their models are loaded for the run)."""
        seen: dict[tuple[str, str], AgentPlan] = {}
        for plans in self.resolved.values():
            for plan in plans:
                seen.setdefault((plan.name, plan.model), plan)
        for spec in self.specs:
            if spec.fixed:
                seen.setdefault((spec.plan.name, spec.plan.model), spec.plan)
        return tuple(seen.values())


class MAD(Protocol):
    """Affirmative vs negative, a moderator after each round, a judge at the end."""

    name = "mad"
    templates = ("mad_debater", "mad_moderator", "judge")

    def __init__(self, moderator: RoleSpec, judge: RoleSpec,
                 policy: DebatePolicy | None = None) -> None:
        self.policy = policy or DebatePolicy()
        self.agents = RoleAgents([moderator, judge])
        self.roles = self.agents.all()

    def check(self, society: SocietyPlan, rounds: int, where: str) -> None:
        n = len(society.agents)
        if n != 2:
            raise ConfigError(f"{where}: mad needs exactly two debaters (affirmative, then "
                              f"negative); this society has {n} agents")
        self.agents.resolve(society)
        self.roles = self.agents.all()

    def context(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        return self.policy.trim(messages)

    def schedule(self, society: SocietyPlan, round: int) -> list[tuple[int, ...]]:
        return [(0,), (1,)]  # the affirmative speaks first, then the negative answers it

    async def prompts(self, view: View, members: Sequence[int], ask: Ask) -> list[RoundPrompt]:
        names = [a.name for a in view.society.agents]
        out: list[RoundPrompt] = []
        first = view.round == 0
        for i in members:
            side, other = SIDES[i], names[1 - i]
            if not first and view.strategy.pattern(view.round - 1, i) == "reflection":
                text = render("mad_debater", side=side, question="", opponent="", alone=False,
                              reflect=True, answer_form=view.task.answer_form)
                out.append(RoundPrompt("reflection", Message("user", text)))
                continue
            # The affirmative's round-0 turn has no opponent yet; every other turn answers the
            # other side's latest reply (this round's for the negative, last round's otherwise).
            opens = first and i == 0
            alive = not opens and view.answered(other)
            text = render("mad_debater", side=side, question=view.question.text if first else "",
                          opponent=view.latest(other).reply if alive else "",
                          alone=not opens and not alive, reflect=False,
                          answer_form=view.task.answer_form)
            saw = (other,) if alive else ()
            pattern: Pattern = "answer" if first else ("debate" if alive else "alone")
            out.append(RoundPrompt(pattern, Message("user", text), saw))
        return out

    async def after_round(self, view: View, ask: Ask) -> Decision | None:
        affirmative, negative = (a.name for a in view.society.agents)
        if not (view.answered(affirmative) or view.answered(negative)):
            return None
        moderator = self.agents.of(view.society)[0]
        text = render("mad_moderator", question=view.question.text, round=view.round,
                      affirmative=view.latest(affirmative).reply or "(no reply)",
                      negative=view.latest(negative).reply or "(no reply)",
                      answer_form=view.task.answer_form)
        messages = [Message("system", moderator.card.system_prompt(moderator.name)),
                    Message("user", text)]
        turn = await ask(moderator, messages, [affirmative, negative])
        if turn.error or turn.answer is None or not settled(turn.reply):
            return None
        return Decision("moderator", turn)

    async def finish(self, view: View, ask: Ask) -> Decision | None:
        judge = self.agents.of(view.society)[1]
        labels = {a.name: f"{side.capitalize()} side ({a.name})"
                  for side, a in zip(SIDES, view.society.agents, strict=True)}
        final = await judge_final(judge, view, ask, labels)
        assert final.turn is not None
        return Decision("judge", final.turn)


def build(spec: Mapping[str, Any], ctx: BuildContext, where: str) -> MAD:
    """MAD from ``{name: mad, moderator: {...}, judge: {...}}``."""
    opts = options(spec, ["moderator", "judge"], where)
    return MAD(RoleSpec("moderator", opts.get("moderator"), ctx, where),
               RoleSpec("judge", opts.get("judge"), ctx, where), ctx.policy)
