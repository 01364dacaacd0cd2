"""The protocol contract: what each agent is asked, in which order, and who decides at the end.

The engine owns the calls; a protocol only writes prompts. In each round the engine asks
:meth:`Protocol.schedule` for groups of agents: the agents of one group answer together, each
seeing the state left by the groups before it. One group of everyone is MachineSoM's
simultaneous update; one group per agent is a sequential (one-by-one) update. Protocols that
need a model to write something that is not a society member's answer (a summary, a
moderator's verdict, a judge's decision) call ``ask`` with a role agent; those calls are
recorded as the round's *asides*.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from societies.backends.base import Message
from societies.errors import ConfigError
from societies.plan import AgentPlan, SocietyPlan
from societies.records import Pattern, Turn
from societies.strategies import Strategy
from societies.tasks import Question, Task


@dataclass(frozen=True)
class RoundPrompt:
    """What one agent is asked in one round.

    Attributes:
        pattern: answer (round 0), debate, reflection, or alone (due to debate but shown
            nobody: no in-neighbour, or every in-neighbour's branch ended).
        message: the user message appended to the agent's history.
        saw: the agents whose replies the message shows, in society order.
    """

    pattern: Pattern
    message: Message
    saw: tuple[str, ...] = ()


@dataclass(frozen=True)
class View:
    """What a protocol may read when it writes a round's prompts.

    Attributes:
        society: the agents and their per-round graphs.
        question: the question of this unit.
        task: parses and scores replies; gives the answer form.
        strategy: the unit's strategy (debate/reflection per round and agent).
        round: the round being prompted (0 = first answers).
        history: every agent's turns so far, in round order. In a sequential round, agents of
            earlier groups already hold this round's turn.
        asides: the aside turns of this unit so far (summaries, verdicts), oldest first.
    """

    society: SocietyPlan
    question: Question
    task: Task
    strategy: Strategy
    round: int
    history: Mapping[str, tuple[Turn, ...]]
    asides: tuple[Turn, ...] = ()

    def latest(self, agent: str) -> Turn:
        """The agent's most recent turn."""
        return self.history[agent][-1]

    def answered(self, agent: str) -> bool:
        """True if the agent's branch is alive (its latest call did not fail for good)."""
        turns = self.history.get(agent, ())
        return bool(turns) and not turns[-1].error


Ask = Callable[[AgentPlan, Sequence[Message], Sequence[str]], Awaitable[Turn]]
"""``await ask(role, messages, saw)``: one call by a role agent, recorded as an aside turn."""


@dataclass(frozen=True)
class Decision:
    """A final answer chosen by someone other than the majority rule (a judge, a moderator).

    Attributes:
        method: how it was chosen (``judge``, ``moderator``, ``aggregator``, ...).
        turn: the aside turn that decided (its ``answer`` is the final answer).
    """

    method: str
    turn: Turn


class Protocol(abc.ABC):
    """What agents are told each round. Subclasses override what differs.

    ``templates`` names the prompt templates the protocol renders (their text is part of a run's
    identity). ``roles`` are agents that are not society members (moderator, judge, summariser);
    their models are loaded with the society's.
    """

    name: str = ""
    templates: tuple[str, ...] = ()
    roles: tuple[AgentPlan, ...] = ()

    def check(self, society: SocietyPlan, rounds: int, where: str) -> None:  # noqa: B027
        """Refuse a society or round count this protocol cannot run (ConfigError naming
        ``where``). The default accepts everything."""

    def check_strategies(self, strategies: Sequence[Strategy], where: str) -> None:  # noqa: B027
        """Refuse strategies this protocol cannot run (ConfigError naming ``where``). The
        default accepts every strategy."""

    def system(self, society: SocietyPlan, agent: AgentPlan) -> Message | None:
        """The agent's system message (its trait card), or None for none."""
        return Message("system", agent.card.system_prompt(agent.name))

    def context(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        """What of an agent's own history is sent with a call (all of it by default)."""
        return messages

    def schedule(self, society: SocietyPlan, round: int) -> list[tuple[int, ...]]:
        """Groups of agent positions in the order they update in ``round``; simultaneous by
        default (one group of everyone)."""
        return [tuple(range(len(society.agents)))]

    @abc.abstractmethod
    async def prompts(self, view: View, members: Sequence[int], ask: Ask) -> list[RoundPrompt]:
        """The prompts of the agents at ``members`` (society positions) in ``view.round``."""

    async def after_round(self, view: View, ask: Ask) -> Decision | None:
        """Called after every round (``view.round`` just finished). A decision ends the unit
        early with that answer (MAD's moderator); None goes on."""
        return None

    async def finish(self, view: View, ask: Ask) -> Decision | None:
        """Called after the last round: the protocol's own final decision (a judge, an
        aggregator), or None to leave it to the run's ``aggregate`` rule."""
        return None


def options(raw: Mapping[str, Any], allowed: Sequence[str], where: str) -> dict[str, Any]:
    """A protocol's options with unknown keys refused (one line naming the field).

    >>> options({"name": "du", "rounds": 2}, ["rounds"], "protocol")
    {'rounds': 2}
    >>> options({"name": "du", "roundz": 2}, ["rounds"], "protocol")
    Traceback (most recent call last):
    ...
    societies.errors.ConfigError: protocol.roundz: unknown key; allowed: name, rounds
    """
    out = {k: v for k, v in raw.items() if k != "name"}
    for key in out:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key; allowed: "
                              f"{', '.join(['name', *allowed])}")
    return out
