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
from typing import Any, Literal, TypeVar

from societies.analysis.confidence import answer_probability
from societies.backends.base import BackendError, ContextOverflowError, Message, Reply
from societies.backends.model import Model
from societies.errors import UserError
from societies.plan import AgentPlan, SocietyPlan
from societies.protocols import MachineSoM, Protocol, RoundPrompt
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
Seeding = Literal["paired", "independent"]
Node = tuple[AgentState, ...]  # every agent's state after some round, in society order


class UnitFailed(Exception):
    """A call failed; the units below this node are recorded as failed.

    Attributes:
        completed: every agent's state after the last round that finished before the failure
            (None if round 0 failed), kept so the failed record still carries those rounds'
            replies, tokens and retries.
    """

    def __init__(self, message: str, completed: Node | None = None) -> None:
        super().__init__(message)
        self.completed = completed

    def after(self, completed: Node) -> UnitFailed:
        """The same failure, recorded as happening after the rounds of ``completed``."""
        return UnitFailed(str(self), completed)


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
    """A per-call seed: a hash of the agent's base seed and where the call sits.

    The engine passes the repeat, question id, agent name and strategy prefix, and (with
    ``seeding: independent``) the society name; see :meth:`Engine.seed_for`.

    >>> call_seed(0, 0, "q1", "agent1", "-") == call_seed(0, 0, "q1", "agent1", "-")
    True
    >>> call_seed(0, 0, "q1", "agent1", "-") == call_seed(0, 1, "q1", "agent1", "-")
    False
    """
    key = "|".join(map(str, (base, *parts))).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


class Engine:
    """Runs societies on questions.

    Args:
        task: parses and scores replies.
        models: the wrapped model for each model name used by the agents.
        concurrency: backend calls in flight at once, across all questions (a call waiting
            out a retry back-off does not hold a place).
        protocol: what agents are told each round (MachineSoM's by default).
        seeding: ``paired`` (an agent's seed does not depend on its society, so agent *i* of
            S1 and of S2 draw the same random numbers: common random numbers) or
            ``independent`` (the society name is part of every seed).
    """

    def __init__(self, task: Task, models: dict[str, Model], concurrency: int = 4,
                 protocol: Protocol | None = None, seeding: Seeding = "paired") -> None:
        if seeding not in ("paired", "independent"):
            raise ValueError(f"seeding must be 'paired' or 'independent', got {seeding!r}")
        self.task = task
        self.models = models
        self.limit = asyncio.Semaphore(concurrency)
        self.protocol = protocol or MachineSoM()
        self.seeding = seeding

    def seed_for(self, society: SocietyPlan, agent: AgentPlan, repeat: int, question: Question,
                 label: str) -> int:
        """The seed of ``agent``'s call at strategy prefix ``label`` ("-" for round 0)."""
        where: tuple[object, ...] = (repeat, question.id, agent.name, label)
        if self.seeding == "independent":
            where = (society.name, *where)
        return call_seed(agent.settings.seed or 0, *where)

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
            self._turn(agent, msgs, "answer", question,
                       self.seed_for(society, agent, repeat, question, "-"))
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

        async def advance(agent: AgentPlan, state: AgentState, prompt: RoundPrompt) -> AgentState:
            if state.ended:
                dead = state.turns[-1].model_copy(update=dict(
                    pattern=prompt.pattern, reply="", prompt_tokens=0, completion_tokens=0,
                    retries=0, cached=False, latency_s=0.0, saw=[]))
                return AgentState(state.messages, (*state.turns, dead))
            msgs = (*state.messages, prompt.message)
            seed = self.seed_for(society, agent, repeat, question, label)
            turn = await self._turn(agent, msgs, prompt.pattern, question, seed, prompt.saw)
            return AgentState((*msgs, Message("assistant", turn.reply)), (*state.turns, turn))

        try:
            return tuple(await gather_or_fail([
                advance(agent, state, prompt)
                for agent, state, prompt in zip(society.agents, parent, prompts, strict=True)]))
        except UnitFailed as err:
            return err.after(parent)

    async def _turn(self, agent: AgentPlan, messages: Sequence[Message], pattern: Pattern,
                    question: Question, seed: int, saw: Sequence[str] = ()) -> Turn:
        settings = replace(agent.settings, seed=seed)
        try:
            reply = await self.models[agent.model].generate(messages, settings, slot=self.limit)
        except ContextOverflowError as err:  # the history outgrew the model: this branch ends
            return Turn(agent=agent.name, pattern=pattern, reply="", answer=None,
                        correct=False, error=str(err), finish_reason="error", model=agent.model,
                        seed=seed, saw=list(saw))
        except BackendError as err:  # retries ran out, or the backend broke: a re-run redoes it
            raise UnitFailed(f"{agent.name}: {err}") from None
        except UserError:  # the input is wrong (e.g. a model name the server does not know)
            raise
        except Exception as err:  # any backend bug fails the unit, not the run
            raise UnitFailed(f"{agent.name}: {type(err).__name__}: {err}") from None
        try:
            read = self.task.extract(reply.text, question)
        except Exception as err:  # an extractor bug must not take the whole run down
            raise UnitFailed(f"{agent.name}: reading the answer failed: "
                             f"{type(err).__name__}: {err}") from None
        return Turn(agent=agent.name, pattern=pattern, reply=reply.text, answer=read.answer,
                    raw_answer=read.raw, answer_prob=_answer_prob(reply, read.raw),
                    correct=self.task.score(read.answer, question.gold),
                    prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                    retries=reply.retries, cached=reply.cached,
                    finish_reason="length" if reply.finish_reason == "length" else "stop",
                    model=agent.model, seed=seed, latency_s=round(reply.latency_s, 4),
                    saw=list(saw))

    def _record(self, society: SocietyPlan, strategy: Strategy, question: Question, repeat: int,
                node: Node | UnitFailed) -> UnitRecord:
        common = dict(
            unit_id=unit_id(society.name, strategy.label, repeat, question.id),
            task=self.task.name, question_id=question.id, society=society.name,
            strategy=strategy.label, repeat=repeat, gold=question.gold,
            agents=[a.name for a in society.agents],
            traits=[a.card.name for a in society.agents],
        )
        if isinstance(node, UnitFailed):
            done = _rounds(node.completed) if node.completed is not None else []
            return UnitRecord(**common, rounds=done, status="failed", error=str(node))  # type: ignore[arg-type]
        return UnitRecord(**common, rounds=_rounds(node))  # type: ignore[arg-type]


def _answer_prob(reply: Reply, raw: str | None) -> float | None:
    """The answer's probability from the reply's token log-probabilities, if it has them.

    Backends strip the reply text; the tokens spell it with its surrounding white space.
    """
    if not reply.logprobs or raw is None:
        return None
    tokens = [(t.token, t.logprob) for t in reply.logprobs]
    spelled = "".join(text for text, _ in tokens)
    if spelled.strip() != reply.text:
        return None
    prob = answer_probability(spelled, raw, tokens)
    return None if prob is None else round(prob, 6)


def _rounds(node: Node) -> list[Round]:
    """The rounds of a node, each with every agent's turn in society order."""
    return [Round(index=r, turns=[state.turns[r] for state in node])
            for r in range(len(node[0].turns))]
