"""The ``jsonl`` task: the user's own questions, one JSON object per line.

Each line holds ``question`` (string), ``answer`` (string, or a number for free-text answers),
optionally ``choices`` (2 to 26 strings) and ``id``; any other keys are kept in the question's
``meta``. Blank lines are allowed. A file is either all multiple choice or all free text,
because ``parse`` sees only a reply and must know which kind of answer to look for.

The whole file is read and checked when the task is created, so a bad file stops a run before
anything is written; every problem is reported as ``file:line: what is wrong``.
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path
from typing import Any

from societies.errors import UserError
from societies.records import Gold
from societies.tasks.base import Question, Task, TaskOptions
from societies.tasks.mmlu import format_choices, parse_letter

MIN_CHOICES, MAX_CHOICES = 2, 26
LETTERS = string.ascii_uppercase
_RESERVED = {"question", "answer", "choices", "id"}
# "Answer: x", "Final answer: x", "the answer is x"; the text after the last one is the answer.
_ANSWER_PREFIX = re.compile(r"\banswer(?:\s+is\b\s*:?|\s*:)", re.IGNORECASE)


def normalise(text: str) -> str:
    """Text reduced for comparison: lower case, single spaces, no surrounding markup or period."""
    text = " ".join(text.lower().split())
    # Markdown emphasis and quotes around an answer are presentation, not content.
    return text.lstrip(" *_`\"'").rstrip(" .*_`\"'")


def parse_free_text(reply: str) -> str | None:
    """A free-text answer: after the last "answer:" or "answer is", else the last line.

    Returns:
        The answer normalised with :func:`normalise`, or None if the reply is empty.
    """
    lines = [line for line in reply.splitlines() if line.strip()]
    for line in reversed(lines):
        found = list(_ANSWER_PREFIX.finditer(line))
        if found:
            answer = normalise(line[found[-1].end() :])
            if answer:
                return answer
            break
    if not lines:
        return None
    return normalise(lines[-1]) or None


def _error(path: Path, line: int, problem: str) -> UserError:
    return UserError(f"{path}:{line}: {problem}")


def _question_from(path: Path, line: int, raw: Any) -> Question:
    """One checked question from a decoded line; raises UserError naming the line."""
    if not isinstance(raw, dict):
        raise _error(path, line, f"expected a JSON object, got {type(raw).__name__}")
    text = raw.get("question")
    if text is None:
        raise _error(path, line, 'missing "question"')
    if not isinstance(text, str) or not text.strip():
        raise _error(path, line, '"question" must be a non-empty string')
    answer = raw.get("answer")
    if answer is None:
        raise _error(path, line, 'missing "answer"')
    # Numbers are accepted for convenience ({"answer": 42}); bool is an int but not an answer.
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise _error(path, line, '"answer" must be a non-empty string')
    qid = raw.get("id", f"line-{line}")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
        raise _error(path, line, '"id" must be a non-empty string or an integer')
    meta = {key: value for key, value in raw.items() if key not in _RESERVED}
    meta["line"] = line
    choices = raw.get("choices")
    if choices is None:
        return Question(id=str(qid), text=text.strip(), gold=answer.strip(), meta=meta)
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
        gold=_answer_letter(path, line, answer.strip(), options),
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


def load_questions(path: Path) -> list[Question]:
    """Read and check a questions file.

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
    """Questions from a user's JSON-lines file."""

    name = "jsonl"

    def __init__(self, options: Options) -> None:
        """Load and check the whole file now, so a bad file fails before a run starts."""
        self.options = options
        self.all_questions = load_questions(Path(options.path).expanduser())
        self.multiple_choice = bool(self.all_questions[0].choices)
        widest = max(len(q.choices) for q in self.all_questions)
        self._letters = LETTERS[:widest]
        self.answer_form = (
            "End your reply with your final answer written as (X), where X is the letter of "
            "the option you choose."
            if self.multiple_choice
            else "End your reply with a last line of the form 'Answer: <your answer>'."
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

    def parse(self, reply: str) -> str | None:
        """The last ``(X)`` letter for multiple choice, else the free-text answer, normalised."""
        if self.multiple_choice:
            return parse_letter(reply, self._letters)
        return parse_free_text(reply)

    def score(self, answer: str | None, gold: Gold) -> bool:
        """Letters must match; free text matches after :func:`normalise` on both sides."""
        if answer is None:
            return False
        golds = gold if isinstance(gold, list) else [gold]
        if self.multiple_choice:
            return answer in golds
        return any(normalise(answer) == normalise(g) for g in golds)


def create(options: TaskOptions) -> JsonlTask:
    """Build the ``jsonl`` task from validated options (reads the file)."""
    if not isinstance(options, Options):
        options = Options.model_validate(options.model_dump())
    return JsonlTask(options)
