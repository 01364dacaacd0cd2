"""The society engine: round 0 answers, then debate or reflection rounds, per question.

All strategies of a run are walked as a prefix tree: strategies that share their first k rounds
share those rounds' replies, so the 8 three-round strategies cost 1+2+4+8 agent-rounds per agent,
not 32. Within a round every agent's messages are built from the previous round's state before
any agent answers (simultaneous update).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from societies.backends.base import BackendError, ContextOverflowError, Message
from societies.backends.model import Model
from societies.plan import AgentPlan, SocietyPlan
from societies.protocols import MachineSoM, Protocol
from societies.records import Pattern, Round, Turn, UnitRecord, unit_id
from societies.strategies import Strategy
from societies.tasks import Question, Task


@dataclass(frozen=True)
class AgentState:
    """One agent's conversation so far and its turns, one per round."""

    messages: tuple[Message, ...]
    turns: tuple[Turn, ...]

    @property
    def ended(self) -> bool:
        """True once a call failed for good: the agent says nothing more in this branch."""
        return any(t.error for t in self.turns)


T = TypeVar("T")
Node = tuple[AgentState, ...]  # every agent's state after some round, in society order


class UnitFailed(Exception):
    """A call failed even after retries; the units below this node are recorded as failed."""


async def gather_or_fail(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``coros`` together; if one raises, cancel the others and re-raise that error.

    (``asyncio.gather`` alone would leave the siblings running, retrying calls nobody reads.)
    """
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # let the cancellations land
        raise


def call_seed(base: int, *parts: object) -> int:
    """A per-call seed: the same agent at the same node of the same question gets the same seed."""
    key = "|".join(map(str, (base, *parts))).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


class Engine:
    """Runs societies on questions.

    Args:
        task: parses and scores replies.
        models: the wrapped model for each model name used by the agents.
        concurrency: backend calls in flight at once, across all questions.
    """

    def __init__(self, task: Task, models: dict[str, Model], concurrency: int = 4,
                 protocol: Protocol | None = None) -> None:
        self.task = task
        self.models = models
        self.limit = asyncio.Semaphore(concurrency)
        self.protocol = protocol or MachineSoM()

    async def run_question(
        self, society: SocietyPlan, strategies: Sequence[Strategy], question: Question, repeat: int
    ) -> list[UnitRecord]:
        """Run every strategy on one question; one record per strategy, in the given order."""
        rounds = len(strategies[0].rounds) if strategies else 0
        try:
            frontier: dict[str, Node | UnitFailed] = {
                "": await self._round0(society, question, repeat)}
        except UnitFailed as err:
            frontier = {"": err}
        for k in range(rounds):
            children = {s.prefix(k + 1): s for s in strategies}
            steps = [self._step(society, frontier[s.prefix(k) if k else ""], s, k, question,
                                repeat) for s in children.values()]
            frontier = dict(zip(children, await asyncio.gather(*steps), strict=True))
        return [self._record(society, s, question, repeat, frontier[s.prefix(rounds) if rounds
                                                                      else ""])
                for s in strategies]

    async def _round0(self, society: SocietyPlan, question: Question, repeat: int) -> Node:
        starts = self.protocol.opening(society, question, self.task)
        turns = await gather_or_fail([
            self._turn(agent, msgs, "answer", question, call_seed(agent.settings.seed or 0, repeat,
                                                                  question.id, agent.name, "-"))
            for agent, msgs in zip(society.agents, starts, strict=True)])
        return tuple(AgentState((*msgs, Message("assistant", t.reply)), (t,))
                     for msgs, t in zip(starts, turns, strict=True))

    async def _step(self, society: SocietyPlan, parent: Node | UnitFailed, strategy: Strategy,
                    k: int, question: Question, repeat: int) -> Node | UnitFailed:
        if isinstance(parent, UnitFailed):
            return parent
        latest = {a.name: s.turns[-1] for a, s in zip(society.agents, parent, strict=True)}
        # Every agent's prompt comes from the parent state first: nobody sees a same-round reply.
        prompts = self.protocol.round_prompts(society, latest, strategy, k, self.task)
        label = strategy.prefix(k + 1)

        async def advance(agent: AgentPlan, state: AgentState, pattern: Pattern,
                          msg: Message) -> AgentState:
            if state.ended:
                dead = state.turns[-1].model_copy(update=dict(
                    pattern=pattern, reply="", prompt_tokens=0, completion_tokens=0, retries=0,
                    cached=False))
                return AgentState(state.messages, (*state.turns, dead))
            msgs = (*state.messages, msg)
            seed = call_seed(agent.settings.seed or 0, repeat, question.id, agent.name, label)
            turn = await self._turn(agent, msgs, pattern, question, seed)
            return AgentState((*msgs, Message("assistant", turn.reply)), (*state.turns, turn))

        try:
            return tuple(await gather_or_fail([
                advance(agent, state, pattern, msg)
                for agent, state, (pattern, msg) in zip(society.agents, parent, prompts,
                                                        strict=True)]))
        except UnitFailed as err:
            return err

    async def _turn(self, agent: AgentPlan, messages: Sequence[Message], pattern: Pattern,
                    question: Question, seed: int) -> Turn:
        settings = replace(agent.settings, seed=seed)
        try:
            async with self.limit:
                reply = await self.models[agent.model].generate(messages, settings)
        except ContextOverflowError as err:  # the history outgrew the model: this branch ends
            return Turn(agent=agent.name, pattern=pattern, reply="", answer=None,
                        correct=False, error=str(err))
        except BackendError as err:  # retries ran out, or the backend broke: a re-run redoes it
            raise UnitFailed(f"{agent.name}: {err}") from None
        answer = self.task.parse(reply.text)
        return Turn(agent=agent.name, pattern=pattern, reply=reply.text, answer=answer,
                    correct=self.task.score(answer, question.gold),
                    prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                    retries=reply.retries, cached=reply.cached)

    def _record(self, society: SocietyPlan, strategy: Strategy, question: Question, repeat: int,
                node: Node | UnitFailed) -> UnitRecord:
        common = dict(
            unit_id=unit_id(society.name, strategy.label, repeat, question.id),
            task=self.task.name, question_id=question.id, society=society.name,
            strategy=strategy.label, repeat=repeat, gold=question.gold,
            agents=[a.name for a in society.agents],
        )
        if isinstance(node, UnitFailed):
            return UnitRecord(**common, rounds=[], status="failed", error=str(node))  # type: ignore[arg-type]
        n_rounds = len(node[0].turns)
        rounds = [Round(index=r, turns=[state.turns[r] for state in node])
                  for r in range(n_rounds)]
        return UnitRecord(**common, rounds=rounds)  # type: ignore[arg-type]
