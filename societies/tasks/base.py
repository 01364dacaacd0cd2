"""The task contract: questions with gold answers, a prompt, a parser and a scorer."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from societies.records import Gold


@dataclass(frozen=True)
class Question:
    """One question of a task.

    Attributes:
        id: stable identifier within the task (used in unit ids, so resume is exact).
        text: the question as shown to agents (choices already included where there are some).
        gold: the correct answer, or every correct answer (chess) as a list.
        choices: answer options, if multiple choice.
        meta: anything else worth keeping (topic, FEN, ...), JSON-serialisable.
    """

    id: str
    text: str
    gold: Gold
    choices: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Extraction:
    """What was read from a reply.

    Attributes:
        raw: the span of the reply the answer was taken from, as written; None if none.
        answer: the canonical answer (equal answers are equal strings); None if none.
    """

    raw: str | None
    answer: str | None


class TaskOptions(BaseModel):
    """Options every task takes; tasks subclass this to add their own."""

    model_config = ConfigDict(extra="forbid")
    name: str
    n: int = Field(10, gt=0, description="number of questions")
    seed: int = 0


class Task(abc.ABC):
    """A source of questions plus how to read and score answers.

    Subclasses set ``name`` and ``answer_form`` (the instruction telling agents how to write
    their final answer, used by the prompt templates) and implement the three methods.
    """

    name: str = ""
    answer_form: str = ""

    @abc.abstractmethod
    def questions(self) -> list[Question]:
        """The task's questions, in a deterministic order for the options' seed."""

    @abc.abstractmethod
    def parse(self, reply: str) -> str | None:
        """The final answer in a free-text reply, normalised; None if there is none."""

    def extract(self, reply: str) -> Extraction:
        """The raw span and canonical answer of a reply (default: both are :meth:`parse`)."""
        answer = self.parse(reply)
        return Extraction(raw=answer, answer=answer)

    def score(self, answer: str | None, gold: Gold) -> bool:
        """Whether ``answer`` is correct. A None answer is never correct."""
        if answer is None:
            return False
        if isinstance(gold, list):
            return answer in gold
        return answer == gold
