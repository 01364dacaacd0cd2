"""How a task's answers are asked for, read and scored: one object per task.

An :class:`AnswerFormat` holds the instruction appended to every prompt (``answer_form``), the
extraction pipeline that reads replies written that way (:mod:`societies.tasks.extract`) and
the answer kind that makes the read span canonical and scores it (:mod:`societies.tasks.kinds`).
Keeping them together is what lets a test check that a reply written as the instruction asks is
always read back.

The ``answer`` section of a task's config changes any part of it::

    task: {name: jsonl, path: q.jsonl, answer: {kind: number, extract: [after_marker, last_number]}}
    task: {name: jsonl, path: q.jsonl,
           answer: {kind: text, extract: [{regex: "ANS=(\\\\w+)", pick: last}],
                    instruction: "End your reply with ANS=<your answer>."}}

- ``kind``: ``choice``, ``number``, ``text``, ``math`` or ``set`` (fixed for the generated tasks:
  arithmetic is number, mmlu choice, chess a set of squares);
- ``of``: a set's element kind (``number``, ``text`` or ``math``);
- ``extract``: the pipeline, a list of steps (names, or mappings with ``step`` or ``regex`` and
  optionally ``pick``, ``otherwise``, ``group``);
- ``instruction``: the sentence telling agents how to write the answer; set it when your
  pipeline expects a form the default instruction does not ask for;
- ``max_words``: the longest text answer, in words (default 8).

>>> fmt = default_format("number", "End with the number.", "{answer}")
>>> fmt.extract("Here's your answer: 8 + 8 = 16")
Extraction(raw='16', answer='16')
>>> fmt.score("16", "16.0"), fmt.score(None, "16")
(True, False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from societies.errors import ConfigError
from societies.records import Gold
from societies.tasks.extract import SHORTHANDS, STEPS, StepSpec, run_span, step
from societies.tasks.kinds import (
    ELEMENT_KINDS,
    KIND_NAMES,
    LETTERS,
    AnswerSet,
    Context,
    Kind,
    make_kind,
)

if TYPE_CHECKING:
    from societies.tasks.base import Extraction, Question

KindName = Literal["choice", "number", "text", "math", "set"]
ElementName = Literal["number", "text", "math"]
STEP_NAMES = tuple(sorted({*STEPS, *SHORTHANDS} - {"regex"}))

# What each kind reads by default: markers first, then what the kind's answers look like.
DEFAULT_STEPS: dict[str, tuple[StepSpec, ...]] = {
    "number": (step("after_marker"), step("last_number")),
    "choice": (step("after_marker"), step("last_letter", otherwise="keep")),
    "text": (step("after_marker"), step("copula"), step("last_line")),
    "math": (step("after_marker"), step("copula"), step("last_line")),
}
ANSWER_LINE = "End your reply with a last line of the form 'Answer: <your answer>'."


class StepOptions(BaseModel):
    """One extraction step in a config: a name (``last_number``) or a mapping."""

    model_config = ConfigDict(extra="forbid")
    step: str | None = None
    regex: str | None = None
    group: int = Field(1, ge=1, description="the regex capture group holding the answer")
    pick: Literal["first", "last"] | None = None
    otherwise: Literal["keep", "fail"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            raw = {"step": raw}
        if not isinstance(raw, dict):
            raise ValueError(f"a step is a name ({', '.join(STEP_NAMES)}) or a mapping with "
                             "'step' or 'regex'")
        name = raw.get("step")
        if name is not None and name not in STEP_NAMES:
            raise ValueError(f"unknown step {name!r}; known: {', '.join(STEP_NAMES)}, "
                             "or {regex: PATTERN}")
        if (name is None) == (raw.get("regex") is None):
            raise ValueError("a step has either 'step' (a name) or 'regex', not both or neither")
        return raw

    @field_validator("regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is None:
            return None
        try:
            compiled = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"does not compile ({err})") from None
        if compiled.groups < 1:
            raise ValueError("needs a capture group around the answer, as in 'ANS=(\\w+)'")
        return pattern

    @model_validator(mode="after")
    def _group_exists(self) -> StepOptions:
        if self.regex is not None and self.group > re.compile(self.regex).groups:
            raise ValueError(f"group {self.group}: the regex has only "
                             f"{re.compile(self.regex).groups} capture group(s)")
        if self.regex is None and "group" in self.model_fields_set:
            raise ValueError("'group' goes with 'regex' only")
        return self

    def spec(self) -> StepSpec:
        """The pipeline step this describes, with the step's defaults filled in."""
        if self.regex is not None:
            return StepSpec(pick=self.pick or "last", otherwise=self.otherwise or "fail",
                            regex=self.regex, group=self.group)
        return step(self.step or "", self.pick, self.otherwise)


class AnswerOptions(BaseModel):
    """The ``answer`` section of a task config (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    kind: KindName | None = None
    of: ElementName | None = Field(None, description="element kind of a set")
    extract: list[StepOptions] | None = Field(None, min_length=1)
    instruction: str | None = Field(None, min_length=1)
    max_words: int | None = Field(None, gt=0, description="longest text answer, in words")

    def check(self, kinds: tuple[str, ...], set_of: tuple[str, ...], task: str,
              where: str) -> None:
        """Raise ConfigError naming the field when the options do not fit the task."""
        if self.kind is not None and self.kind not in kinds:
            raise ConfigError(f"{where}.kind: the {task} task's answers are of kind "
                              f"{' or '.join(kinds)}, not {self.kind!r}")
        if self.of is not None and (self.kind or kinds[0]) != "set":
            raise ConfigError(f"{where}.of: only a set has an element kind (kind: set)")
        if self.of is not None and self.of not in set_of:
            raise ConfigError(f"{where}.of: the {task} task's sets hold "
                              f"{' or '.join(set_of)}, not {self.of!r}")
        # None where the task decides later (a jsonl file's kind is read from the file).
        kind = self.kind or (kinds[0] if len(kinds) == 1 else None)
        element = (self.of or (set_of[0] if len(set_of) == 1 else None)) if kind == "set" else kind
        if self.max_words is not None and element not in (None, "text"):
            raise ConfigError(f"{where}.max_words: only for text answers")


@dataclass(frozen=True)
class AnswerFormat:
    """The instruction, the pipeline and the kind of a task's answers.

    Attributes:
        kind: how spans become canonical answers and are scored.
        steps: the extraction pipeline.
        instruction: the sentence appended to prompts (the task's ``answer_form``).
        template: how a reply following ``instruction`` ends, ``{answer}`` standing for the
            answer (``"Answer: {answer}"``); None when the instruction came from a config.
        letters: the choice letters allowed when no question is given.
    """

    kind: Kind
    steps: tuple[StepSpec, ...]
    instruction: str
    template: str | None = None
    letters: str = LETTERS

    def context(self, question: Question | None) -> Context:
        """What extraction knows about ``question`` (its choices and text), if given."""
        if question is None:
            return Context(letters=self.letters)
        letters = LETTERS[: len(question.choices)] if question.choices else self.letters
        return Context(letters=letters, choices=tuple(question.choices), question=question.text)

    def extract(self, reply: str, question: Question | None = None) -> Extraction:
        """The raw span and canonical answer of a reply."""
        from societies.tasks.base import Extraction

        context = self.context(question)
        span = run_span(self.steps, reply, context)
        if span is None:
            return Extraction(raw=None, answer=None)
        raw = reply[span.start : span.end]
        return Extraction(raw=raw, answer=self.kind.canonical(raw, context))

    def score(self, answer: str | None, gold: Gold) -> bool:
        """Whether a canonical answer is correct for ``gold`` (any of a list)."""
        return self.kind.correct(answer, gold)


def default_format(kind: str, instruction: str, template: str | None, *, of: str | None = None,
                   letters: str = LETTERS, steps: tuple[StepSpec, ...] | None = None,
                   ) -> AnswerFormat:
    """A format with the kind's default pipeline (a set uses its element kind's)."""
    element = (of or "text") if kind == "set" else kind
    return AnswerFormat(make_kind(kind, of), steps or DEFAULT_STEPS[element], instruction,
                        template, letters)


def configured(default: AnswerFormat, options: AnswerOptions | None) -> AnswerFormat:
    """``default`` (already of the kind the task settled on) changed by ``answer`` options:
    its pipeline, instruction and longest text answer. The kind itself is the task's to pick.
    """
    if options is None:
        return default
    kind = default.kind
    if options.max_words is not None:
        element = kind.element.name if isinstance(kind, AnswerSet) else None
        kind = make_kind(kind.name, element, options.max_words)
    instruction = options.instruction
    return AnswerFormat(
        kind=kind,
        steps=tuple(s.spec() for s in options.extract) if options.extract else default.steps,
        instruction=default.instruction if instruction is None else instruction,
        # A config's own instruction asks for a form this code does not know.
        template=default.template if instruction is None else None,
        letters=default.letters,
    )


__all__ = ["ANSWER_LINE", "DEFAULT_STEPS", "ELEMENT_KINDS", "KIND_NAMES", "AnswerFormat",
           "AnswerOptions", "StepOptions", "configured", "default_format"]
