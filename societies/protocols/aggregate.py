"""A unit's final answer when its protocol does not decide: majority, confidence, or a judge.

``majority`` is MachineSoM's rule (:func:`societies.compact.majority_answer`: a strict plurality
of at least two agents; a lone agent's answer is its own). ``confidence`` weighs each agent's
vote by the probability its model gave the answer (``sampling.logprobs``; an answer without one
counts 1/2, documented in the README), ties giving no answer. ``judge`` asks a judge agent to
read every final reply and answer the question itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from societies.compact import majority_answer
from societies.plan import AgentPlan
from societies.protocols.base import Ask, View
from societies.records import Final, Turn

UNKNOWN_CONFIDENCE = 0.5  # the weight of an answer whose probability was not recorded


@dataclass(frozen=True)
class Aggregator:
    """Chooses a unit's final answer from the last round.

    Attributes:
        method: ``majority``, ``confidence`` or ``judge``.
        judge: the judge agent (``judge`` only).
    """

    method: str = "majority"
    judge: AgentPlan | None = None

    @property
    def templates(self) -> tuple[str, ...]:
        """The prompt templates this aggregator renders (part of a run's identity)."""
        return ("judge",) if self.method == "judge" else ()

    def __post_init__(self) -> None:
        if self.method not in ("majority", "confidence", "judge"):
            raise ValueError(f"aggregate method must be majority, confidence or judge, "
                             f"got {self.method!r}")
        if self.method == "judge" and self.judge is None:
            raise ValueError("aggregate method judge needs a judge agent")

    async def decide(self, view: View, ask: Ask) -> Final:
        """The final answer of the unit whose last round ``view`` shows."""
        last = [view.latest(a.name) for a in view.society.agents]
        if self.method == "judge":
            from societies.protocols.judge import judge_final

            assert self.judge is not None
            return await judge_final(self.judge, view, ask)
        answer = (confidence_answer(last) if self.method == "confidence"
                  else lone_or_majority([t.answer for t in last if not t.error]))
        correct = answer is not None and view.task.score(answer, view.question.gold)
        return Final(method=self.method, answer=answer, correct=correct)


def lone_or_majority(answers: Sequence[str | None]) -> str | None:
    """MachineSoM's majority; a society of one answering agent has its answer.

    >>> lone_or_majority(["4", "4", "5"]), lone_or_majority(["7"]), lone_or_majority(["1", "2"])
    ('4', '7', None)
    """
    if len(answers) == 1:
        return answers[0]
    return majority_answer(answers)


def confidence_answer(turns: Sequence[Turn]) -> str | None:
    """The answer with the largest summed answer probability (a tie gives None).

    >>> from societies.records import Turn
    >>> t = lambda a, p: Turn(agent="x", pattern="answer", reply="", answer=a, correct=False,
    ...                       answer_prob=p)
    >>> confidence_answer([t("4", 0.9), t("5", 0.4), t("5", 0.3)])
    '4'
    """
    weights: dict[str, float] = {}
    for t in turns:
        if t.answer is None or t.error:
            continue
        weight = t.answer_prob if t.answer_prob is not None else UNKNOWN_CONFIDENCE
        weights[t.answer] = weights.get(t.answer, 0.0) + weight
    if not weights:
        return None
    top = max(weights.values())
    leaders = [a for a, w in weights.items() if w == top]
    return leaders[0] if len(leaders) == 1 else None
