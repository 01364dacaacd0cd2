"""The society engine: round 0 answers, then later rounds, per question, as a protocol says.

All strategies of a run are walked as a prefix tree: strategies that share their first k rounds
share those rounds' replies, so the 8 three-round strategies cost 1+2+4+8 agent-rounds per agent,
not 32. Within a round the protocol's groups update in order; an agent's prompt is built from the
state left by the groups before its own, so one group of everyone is MachineSoM's simultaneous
update (nobody sees a same-round reply) and one group per agent is a sequential update. Role
calls (summaries, verdicts, judges) are recorded as asides; a unit may stop early (consensus, a
moderator), its later rounds carried without calls.
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
from societies.plan import AgentPlan, Plan, SocietyPlan, SocietyRules
from societies.protocols import Ask, Decision, Protocol, RoundPrompt, View
from societies.protocols.aggregate import Aggregator
from societies.protocols.machinesom import MachineSoM
from societies.records import Final, Pattern, Round, Turn, UnitRecord, unit_id
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


@dataclass(frozen=True)
class Node:
    """Every agent's state after some round, the role calls so far, and whether it stopped.

    Attributes:
        states: each agent's state, in society order.
        asides: the role calls of each finished round (``asides[r]`` for round r).
        stopped_after: the round after which the unit stopped early, if it did.
        decision: the moderator's (or other protocol decider's) answer that stopped it.
    """

    states: tuple[AgentState, ...]
    asides: tuple[tuple[Turn, ...], ...] = ()
    stopped_after: int | None = None
    decision: Decision | None = None

    def view(self, society: SocietyPlan, question: Question, task: Task, strategy: Strategy,
             round: int) -> View:
        """A protocol's view of this node at ``round``."""
        history = {a.name: s.turns for a, s in zip(society.agents, self.states, strict=True)}
        return View(society, question, task, strategy, round, history,
                    tuple(t for r in self.asides for t in r))


class Engine:
    """Runs societies on questions.

    Args:
        task: parses and scores replies.
        models: the wrapped model for each model name used by agents and role agents.
        concurrency: backend calls in flight at once, across all questions (a call waiting
            out a retry back-off does not hold a place).
        protocol: what agents are told each round (MachineSoM's by default).
        seeding: ``paired`` (an agent's seed does not depend on its society, so agent *i* of
            S1 and of S2 draw the same random numbers: common random numbers) or
            ``independent`` (the society name is part of every seed).
        aggregator: how a unit's final answer is chosen when the protocol does not decide
            (majority by default).
        stop_on_consensus: end a unit once every answering agent agrees; later rounds carry.
    """

    def __init__(self, task: Task, models: dict[str, Model], concurrency: int = 4,
                 protocol: Protocol | None = None, seeding: Seeding = "paired",
                 aggregator: Aggregator | None = None, stop_on_consensus: bool = False) -> None:
        if seeding not in ("paired", "independent"):
            raise ValueError(f"seeding must be 'paired' or 'independent', got {seeding!r}")
        self.task = task
        self.models = models
        self.limit = asyncio.Semaphore(concurrency)
        self.protocol = protocol or MachineSoM()
        self.seeding = seeding
        self.aggregator = aggregator or Aggregator()
        self.stop_on_consensus = stop_on_consensus
        self.rules: SocietyRules | None = None  # set on a twin (see twin)

    @classmethod
    def from_plan(cls, plan: Plan, task: Task, models: dict[str, Model]) -> Engine:
        """The engine a plan describes: its protocol, aggregator, seeding and early stop."""
        cfg = plan.config
        return cls(task, models, cfg.run.concurrency, plan.protocol, seeding=cfg.seeding,
                   aggregator=plan.aggregator, stop_on_consensus=cfg.early_stop.consensus)

    def twin(self, rules: SocietyRules) -> Engine:
        """This engine with a society's own protocol, aggregator and early stop: the same
        task, models, seeding and cap on calls in flight."""
        twin = Engine(self.task, self.models, 1, rules.protocol, seeding=self.seeding,
                      aggregator=rules.aggregator, stop_on_consensus=rules.stop_on_consensus)
        twin.limit = self.limit
        twin.rules = rules
        return twin

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
        if society.rules is not None and society.rules is not self.rules:
            return await self.twin(society.rules).run_question(society, strategies, question,
                                                               repeat)
        rounds = len(strategies[0].rounds) if strategies else 0
        first = strategies[0] if strategies else Strategy(())
        frontier: dict[str, Node | UnitFailed] = {
            "": await self._round(society, None, first, 0, question, repeat)}
        for k in range(rounds):
            children = {s.prefix(k + 1): s for s in strategies}
            steps = [self._round(society, frontier[s.prefix(k) if k else ""], s, k + 1,
                                 question, repeat) for s in children.values()]
            frontier = dict(zip(children, await asyncio.gather(*steps), strict=True))
        ends = [frontier[s.prefix(rounds) if rounds else ""] for s in strategies]
        return list(await asyncio.gather(*(
            self._finish(society, s, question, repeat, end)
            for s, end in zip(strategies, ends, strict=True))))

    async def _round(self, society: SocietyPlan, parent: Node | UnitFailed | None,
                     strategy: Strategy, r: int, question: Question, repeat: int
                     ) -> Node | UnitFailed:
        """Round ``r`` of one branch: the protocol's groups in order, then its after-round."""
        if isinstance(parent, UnitFailed):
            return parent
        if parent is not None and parent.stopped_after is not None:
            return _carried(parent)
        label = strategy.prefix(r) if r else "-"
        if parent is None:
            states = [AgentState(_opening(self.protocol, society, a), ()) for a in society.agents]
            before: tuple[tuple[Turn, ...], ...] = ()
        else:
            states, before = list(parent.states), parent.asides
        asides: list[Turn | None] = []
        ask = self._asker(society, question, repeat, label, asides)
        # One history mapping for the whole round, updated as groups answer: rebuilding it
        # per group would cost O(society) per agent in a sequential round.
        history = {a.name: s.turns for a, s in zip(society.agents, states, strict=True)}
        earlier = tuple(t for rnd in before for t in rnd)

        def view() -> View:
            made = tuple(t for t in asides if t is not None)
            return View(society, question, self.task, strategy, r, history, earlier + made)

        def node() -> Node:
            return Node(tuple(states), (*before, tuple(t for t in asides if t is not None)))

        updated: set[int] = set()
        try:
            for group in self.protocol.schedule(society, r):
                prompts = await self.protocol.prompts(view(), group, ask)
                done = await gather_or_fail([
                    self._advance(society, society.agents[i], states[i], prompt, question,
                                  repeat, label)
                    for i, prompt in zip(group, prompts, strict=True)])
                for i, state in zip(group, done, strict=True):
                    states[i] = state
                    history[society.agents[i].name] = state.turns
                    updated.add(i)
            for i in set(range(len(states))) - updated:  # not scheduled this round: no call
                states[i] = _carry(states[i], "idle", society.agents[i].name)
                history[society.agents[i].name] = states[i].turns
            decision = await self.protocol.after_round(view(), ask)
        except UnitFailed as err:
            return err.after(parent) if parent is not None else err
        result = node()
        last = r == len(strategy.rounds)
        if decision is not None or (self.stop_on_consensus and not last and _consensus(result)):
            # A decision after the last round decides the unit but stops nothing early.
            return replace(result, stopped_after=None if last else r, decision=decision)
        return result

    def _asker(self, society: SocietyPlan, question: Question, repeat: int, label: str,
               asides: list[Turn | None]) -> Ask:
        """The ``ask`` a protocol uses for role calls: each is recorded as an aside turn in the
        order the calls were made (not the order they finished), so records are reproducible."""

        async def ask(role: AgentPlan, messages: Sequence[Message], saw: Sequence[str]) -> Turn:
            slot = len(asides)
            asides.append(None)
            seed = self.seed_for(society, role, repeat, question, f"{label}#{slot}")
            turn = await self._turn(role, messages, "aside", question, seed, saw)
            asides[slot] = turn
            return turn

        return ask

    async def _advance(self, society: SocietyPlan, agent: AgentPlan, state: AgentState,
                       prompt: RoundPrompt, question: Question, repeat: int, label: str
                       ) -> AgentState:
        if state.ended:
            dead = state.turns[-1].model_copy(update=dict(
                pattern=prompt.pattern, reply="", prompt_tokens=0, completion_tokens=0,
                retries=0, cached=False, latency_s=0.0, saw=[]))
            return AgentState(state.messages, (*state.turns, dead))
        msgs = (*state.messages, prompt.message)
        seed = self.seed_for(society, agent, repeat, question, label)
        turn = await self._turn(agent, self.protocol.context(msgs), prompt.pattern, question,
                                seed, prompt.saw)
        return AgentState((*msgs, Message("assistant", turn.reply)), (*state.turns, turn))

    async def _finish(self, society: SocietyPlan, strategy: Strategy, question: Question,
                      repeat: int, end: Node | UnitFailed) -> UnitRecord:
        """The unit's record, with its final answer (the protocol's decision, else the
        aggregator's)."""
        if isinstance(end, UnitFailed):
            return self._record(society, strategy, question, repeat, end)
        label = (strategy.prefix(len(strategy.rounds)) if strategy.rounds else "-") + "/final"
        asides: list[Turn | None] = []
        ask = self._asker(society, question, repeat, label, asides)
        view = end.view(society, question, self.task, strategy, len(end.states[0].turns) - 1)
        try:
            decision = end.decision or await self.protocol.finish(view, ask)
            if decision is not None:
                turn = decision.turn
                final = Final(method=decision.method, answer=turn.answer, correct=turn.correct,
                              turn=turn)
            else:
                final = await self.aggregator.decide(view, ask)
        except UnitFailed as err:
            return self._record(society, strategy, question, repeat, err.after(end))
        return self._record(society, strategy, question, repeat, end, final)

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
                node: Node | UnitFailed, final: Final | None = None) -> UnitRecord:
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
        return UnitRecord(**common, rounds=_rounds(node), final=final,  # type: ignore[arg-type]
                          stopped_after=node.stopped_after)


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
    asides = list(node.asides) + [()] * (len(node.states[0].turns) - len(node.asides))
    return [Round(index=r, turns=[state.turns[r] for state in node.states],
                  asides=list(asides[r]))
            for r in range(len(node.states[0].turns))]


def _opening(protocol: Protocol, society: SocietyPlan, agent: AgentPlan) -> tuple[Message, ...]:
    system = protocol.system(society, agent)
    return (system,) if system is not None else ()


def _consensus(node: Node) -> bool:
    """True if every agent still answering gives the same (non-None) answer."""
    answers = {s.turns[-1].answer for s in node.states if not s.ended}
    return len(answers) == 1 and None not in answers


def _carry(state: AgentState, pattern: Pattern, agent: str = "") -> AgentState:
    """The agent one round later without a call: its last answer carried forward."""
    if not state.turns:  # not scheduled in round 0: no answer yet
        empty = Turn(agent=agent, pattern=pattern, reply="", answer=None, correct=False)
        return AgentState(state.messages, (empty,))
    carried = state.turns[-1].model_copy(update=dict(
        pattern=pattern, reply="", prompt_tokens=0, completion_tokens=0, retries=0,
        cached=False, latency_s=0.0, saw=[]))
    return AgentState(state.messages, (*state.turns, carried))


def _carried(node: Node) -> Node:
    """The node one round later without calls: each agent's last answer carried forward."""
    states = tuple(_carry(s, "stopped") for s in node.states)
    return replace(node, states=states, asides=(*node.asides, ()))
