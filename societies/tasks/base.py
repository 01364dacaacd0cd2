"""The task contract: questions with gold answers, and how answers are asked for, read, scored.

How answers are read lives in one :class:`~societies.tasks.answers.AnswerFormat` per task (the
prompt instruction, the extraction pipeline and the answer kind); a task's config can change it
through its ``answer`` section, checked with the rest of the config before anything runs.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from societies.records import Gold
from societies.tasks.answers import ELEMENT_KINDS, KIND_NAMES, AnswerFormat, AnswerOptions


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
    """Options every task takes; tasks subclass this to add their own.

    ``answer_kinds`` and ``set_of`` (class attributes) say which answer kinds, and which element
    kinds of a set, the task's ``answer`` section may name.
    """

    model_config = ConfigDict(extra="forbid")
    answer_kinds: ClassVar[tuple[str, ...]] = KIND_NAMES
    set_of: ClassVar[tuple[str, ...]] = ELEMENT_KINDS
    name: str
    n: int = Field(10, gt=0, description="number of questions")
    seed: int = 0
    answer: AnswerOptions | None = Field(
        None, description="how answers are asked for and read: kind, extract, instruction"
    )


class Task(abc.ABC):
    """A source of questions plus how to read and score answers.

    Subclasses set ``name`` and ``answer`` (an :class:`AnswerFormat`: the instruction telling
    agents how to write their final answer, the pipeline reading it back, the answer kind) and
    implement :meth:`questions`.
    """

    name: str = ""
    answer: AnswerFormat

    @property
    def answer_form(self) -> str:
        """The instruction the prompt templates append: how to write the final answer."""
        return self.answer.instruction

    @answer_form.setter
    def answer_form(self, instruction: str) -> None:
        # Another instruction asks for a form the format's template no longer describes.
        self.answer = replace(self.answer, instruction=instruction, template=None)

    @abc.abstractmethod
    def questions(self) -> list[Question]:
        """The task's questions, in a deterministic order for the options' seed."""

    def extract(self, reply: str, question: Question | None = None) -> Extraction:
        """The raw span and canonical answer of a reply.

        Args:
            reply: the model's reply.
            question: the question answered, if known: its choices let a choice's text stand
                for its letter, and its wording tells the restated part of "X is Y" from the
                answer.
        """
        return self.answer.extract(reply, question)

    def parse(self, reply: str) -> str | None:
        """The canonical answer in a reply; None if there is none."""
        return self.extract(reply).answer

    def score(self, answer: str | None, gold: Gold) -> bool:
        """Whether ``answer`` is correct by the answer kind's equivalence. None never is."""
        return self.answer.score(answer, gold)
