"""The ``jsonl`` task: the user's own questions, one JSON object per line.

Each line holds ``question`` (string), ``answer`` and optionally ``choices`` (2 to 26 strings)
and ``id``; any other keys are kept in the question's ``meta``. Blank lines are allowed. A file
is either all multiple choice or all free text.

The answer kind (:mod:`societies.tasks.kinds`) is ``task.answer.kind`` if the config says,
otherwise read from the file: ``choice`` when there are choices; ``set`` when some ``answer`` is
a list of accepted answers (a set of numbers if they are all plain numbers, else of text);
``number`` when every answer is a plain number (``16``, ``-3``, ``2.5``, ``1,000``, or a JSON
number); ``text`` otherwise. ``answer`` is a string or a JSON number; a list only for a set (a
single answer in a set file is a set of one). With ``choices`` it is a letter (any case,
optionally ``(B)``) or the text of one choice.

The whole file is read and checked when the task is created, so a bad file stops a run before
anything is written; every problem is reported as ``file:line: what is wrong``.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from societies.errors import UserError
from societies.tasks.answers import ANSWER_LINE, AnswerFormat, AnswerOptions, configured
from societies.tasks.answers import default_format as _format
from societies.tasks.base import Question, Task, TaskOptions
from societies.tasks.kinds import make_kind, normalise_text
from societies.tasks.mmlu import format_choices
from societies.tasks.numeric import is_plain_number

MIN_CHOICES, MAX_CHOICES = 2, 26
LETTERS = string.ascii_uppercase
_RESERVED = {"question", "answer", "choices", "id"}
CHOICE_LINE = ("End your reply with your final answer written as (X), where X is the letter of "
               "the option you choose.")


def normalise(text: str) -> str:
    """Free text reduced for comparison; see :func:`societies.tasks.kinds.normalise_text`."""
    return normalise_text(text)


def parse_free_text(reply: str) -> str | None:
    """The text answer the default text pipeline reads in a reply, normalised; None if none.

    After the last "answer:"/"answer is" if there is one, else the answering side of the last
    "X is Y" statement, else the last line (:mod:`societies.tasks.extract`); more than eight
    words is prose, not an answer.
    """
    return _format("text", ANSWER_LINE, "Answer: {answer}").extract(reply).answer


def _error(path: Path, line: int, problem: str) -> UserError:
    return UserError(f"{path}:{line}: {problem}")


def _scalar(value: Any) -> str | None:
    """A JSON string or number as a gold string (None for anything else or an empty string)."""
    # Numbers are accepted for convenience ({"answer": 42}); bool is an int but not an answer.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")  # 1e-07 as 0.0000001, a plain number
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _answer_value(path: Path, line: int, value: Any) -> str | list[str]:
    """The gold of a line: a string, or a list of accepted answers."""
    if isinstance(value, list):
        items = [_scalar(item) for item in value]
        if not items or any(item is None for item in items):
            raise _error(path, line, '"answer" as a list must hold non-empty strings or numbers')
        return [item for item in items if item is not None]
    single = _scalar(value)
    if single is None:
        raise _error(path, line, '"answer" must be a non-empty string, a number, or a list of '
                     "accepted answers")
    return single


def _question_from(path: Path, line: int, raw: Any) -> Question:
    """One checked question from a decoded line; raises UserError naming the line."""
    if not isinstance(raw, dict):
        raise _error(path, line, f"expected a JSON object, got {type(raw).__name__}")
    text = raw.get("question")
    if text is None:
        raise _error(path, line, 'missing "question"')
    if not isinstance(text, str) or not text.strip():
        raise _error(path, line, '"question" must be a non-empty string')
    if raw.get("answer") is None:
        raise _error(path, line, 'missing "answer"')
    answer = _answer_value(path, line, raw["answer"])
    qid = raw.get("id", f"line-{line}")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
        raise _error(path, line, '"id" must be a non-empty string or an integer')
    meta = {key: value for key, value in raw.items() if key not in _RESERVED}
    meta["line"] = line
    choices = raw.get("choices")
    if choices is None:
        return Question(id=str(qid), text=text.strip(), gold=answer, meta=meta)
    if isinstance(answer, list):
        raise _error(path, line, '"answer" must be one letter or choice text when there are '
                     '"choices"')
    if (
        not isinstance(choices, list)
        or not MIN_CHOICES <= len(choices) <= MAX_CHOICES
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise _error(
            path,
            line,
            f'"choices" must be a list of {MIN_CHOICES} to {MAX_CHOICES} non-empty strings',
        )
    options = tuple(c.strip() for c in choices)
    return Question(
        id=str(qid),
        text=format_choices(text, options),
        gold=_answer_letter(path, line, answer, options),
        choices=options,
        meta=meta,
    )


def _answer_letter(path: Path, line: int, answer: str, choices: tuple[str, ...]) -> str:
    """The letter of ``answer``: a letter in range (any case, optionally "(B)") or a choice."""
    letters = LETTERS[: len(choices)]
    bare = answer.strip("()").strip().upper()
    # A lone letter is read as a letter, even if some choice's text is also that letter.
    if len(bare) == 1 and bare in letters:
        return bare
    matches = [i for i, c in enumerate(choices) if normalise(c) == normalise(answer)]
    if len(matches) == 1:
        return letters[matches[0]]
    if matches:
        raise _error(path, line, f'"answer" {answer!r} matches more than one choice')
    raise _error(
        path,
        line,
        f'"answer" {answer!r} is neither a letter A-{letters[-1]} nor one of the choices',
    )


def detect_kind(questions: list[Question]) -> tuple[str, str | None]:
    """The answer kind (and a set's element kind) a file gets when the config names none."""
    if questions[0].choices:
        return "choice", None
    values = [g for q in questions for g in (q.gold if isinstance(q.gold, list) else [q.gold])]
    numeric = all(is_plain_number(v) for v in values)
    if any(isinstance(q.gold, list) for q in questions):
        return "set", "number" if numeric else "text"
    return ("number" if numeric else "text"), None


def check_answers(path: Path, questions: list[Question], kind: str, of: str | None
                  ) -> list[Question]:
    """The questions with golds checked against the kind (a set's scalar golds made lists).

    Raises:
        UserError: ``file:line`` of the first gold the kind cannot use.
    """
    checker = make_kind(kind, of)
    out: list[Question] = []
    for q in questions:
        line = int(q.meta["line"])
        if q.choices and kind != "choice":
            raise _error(path, line,
                         f'"choices" need task.answer.kind: choice (the kind is {kind})')
        if not q.choices and kind == "choice":
            raise _error(path, line, 'missing "choices" (task.answer.kind is choice)')
        if isinstance(q.gold, list) and kind != "set":
            raise _error(path, line, '"answer" is a list, which needs task.answer.kind: set '
                         f"(the kind is {kind})")
        golds = q.gold if isinstance(q.gold, list) else [q.gold]
        for i, gold in enumerate(golds):
            problem = None if q.choices else checker.gold_problem(gold)
            if problem:
                where = f"[{i}]" if isinstance(q.gold, list) else ""
                said = f"task.answer.of is {of}" if kind == "set" else f"task.answer.kind is {kind}"
                raise _error(path, line, f'"answer"{where} {gold!r} {problem} ({said})')
        out.append(replace(q, gold=golds) if kind == "set" else q)
    return out


def load_questions(path: Path) -> list[Question]:
    """Read and check a questions file (answers are checked against a kind by the task).

    Raises:
        UserError: the file is missing or unreadable, or a line is malformed (``file:line``).
    """
    try:
        # utf-8-sig: editors on Windows often save a byte-order mark, which JSON rejects.
        content = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: no such questions file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read questions file ({err})") from None
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for line, text in enumerate(content.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise _error(path, line, f"not valid JSON ({err.msg} at column {err.colno})") from None
        question = _question_from(path, line, raw)
        if question.id in seen:
            raise _error(
                path, line, f"duplicate id {question.id!r} (first on line {seen[question.id]})"
            )
        if questions and bool(questions[0].choices) != bool(question.choices):
            raise _error(
                path,
                line,
                'some questions have "choices" and some do not; a file must be '
                "all multiple choice or all free text",
            )
        seen[question.id] = line
        questions.append(question)
    if not questions:
        raise UserError(f"{path}: no questions in file")
    return questions


class Options(TaskOptions):
    """Options of the ``jsonl`` task."""

    path: str


class JsonlTask(Task):
    """Questions from a user's JSON-lines file.

    Attributes:
        multiple_choice: whether the file has choices.
        kind: the answer kind in effect (the config's, or read from the file).
    """

    name = "jsonl"

    def __init__(self, options: Options) -> None:
        """Load and check the whole file now, so a bad file fails before a run starts."""
        self.options = options
        path = Path(options.path).expanduser()
        questions = load_questions(path)
        asked = options.answer or AnswerOptions()
        detected, detected_of = detect_kind(questions)
        self.kind = asked.kind or detected
        of = (asked.of or detected_of or "text") if self.kind == "set" else None
        self.all_questions = check_answers(path, questions, self.kind, of)
        self.multiple_choice = bool(self.all_questions[0].choices)
        widest = max(len(q.choices) for q in self.all_questions)
        self.answer: AnswerFormat = configured(
            _format("choice", CHOICE_LINE, "({answer})", letters=LETTERS[:widest])
            if self.kind == "choice"
            else _format(self.kind, ANSWER_LINE, "Answer: {answer}", of=of),
            options.answer,
        )

    def questions(self) -> list[Question]:
        """All questions in file order if ``n`` covers the file; else a seeded sample.

        The sample is drawn with ``random.Random(seed)`` and returned in file order, which
        makes records easy to compare with the file.
        """
        pool = self.all_questions
        if self.options.n >= len(pool):
            return list(pool)
        picked = random.Random(self.options.seed).sample(range(len(pool)), self.options.n)
        return [pool[i] for i in sorted(picked)]


def create(options: TaskOptions) -> JsonlTask:
    """Build the ``jsonl`` task from validated options (reads the file)."""
    if not isinstance(options, Options):
        options = Options.model_validate(options.model_dump())
    return JsonlTask(options)
