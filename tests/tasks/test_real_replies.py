"""Extraction against a person's reading of real replies of the bundled models.

``fixtures/replies.jsonl`` holds 80 replies of SmolLM2-135M-Instruct and Gemma-3-270M (plain
prompt format) to the questions of ``fixtures/tasks.json``, collected once with
``fixtures/collect_replies.py``, and 24 replies of SmolLM2 from a run of the quickstart society
on one-digit sums (``arithmetic-sums``, rounds 0-2, debate and reflection turns included), and
in ``person`` the answer a person reads in each (``none`` when a person reads no answer),
filled in by reading the reply, not by running the extractor.
Where the extractor reads otherwise the case stays in the table as a strict xfail saying why.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from societies.tasks import Question, Task, load_task, validate_task

FIXTURES = Path(__file__).parent / "fixtures"
ROWS: list[dict[str, Any]] = [
    json.loads(line) for line in (FIXTURES / "replies.jsonl").read_text().splitlines()
]

# (task, model, question id) -> why the extractor does not read what a person reads.
DISAGREE = {
    ("arithmetic", "smollm2", "arithmetic-13-4"):
        "cut off mid-reasoning; the text does not show it (the record's finish_reason does), "
        "so the last result it states (39) is read",
    ("arithmetic", "smollm2", "arithmetic-13-7"):
        "cut off mid-reasoning after 'which is 4'; 4 is read",
    ("chess", "smollm2", "chess-13-4"):
        "a made-up list of moves, cut off; its last square (d5) is read",
    ("jsonl-number", "smollm2", "add-5-5"):
        "'5 + 5 is 10, 10 is 5.': a person takes the first statement, the extractor the last",
    ("jsonl-number", "smollm2", "add-5-3"):
        "'no answer ... the original answer of 5 and 3': 3 is read",
    ("chess", "gemma3", "chess-13-14"):
        "echoes the question's move list; its last square (h4) is read",
    ("chess", "gemma3", "chess-13-15"):
        "rambles through c4, c5 and c6 as 'the next move'; the last (c6) is read",
    ("jsonl-text", "gemma3", "capital-kenya"):
        "a short last line of an imagined dialogue ('Assistant: I'll be waiting.') is read",
}


@cache
def task(label: str) -> Task:
    raw: dict[str, Any] = json.loads((FIXTURES / "tasks.json").read_text())[label]
    if "path" in raw:
        raw["path"] = str(FIXTURES / raw["path"])
    return load_task(validate_task(raw))


@cache
def question(label: str, question_id: str) -> Question:
    return next(q for q in task(label).questions() if q.id == question_id)


def person_reads(row: dict[str, Any]) -> str | None:
    """The person's reading in the task's canonical form."""
    if row["person"] == "none":
        return None
    t = task(row["task"])
    return t.answer.kind.canonical(row["person"], t.answer.context(question(row["task"],
                                                                              row["question_id"])))


def cases() -> list[Any]:
    out = []
    for row in ROWS:
        key = (row["task"], row["model"], row["question_id"])
        marks = [pytest.mark.xfail(strict=True, reason=DISAGREE[key])] if key in DISAGREE else []
        out.append(pytest.param(row, id="/".join(key), marks=marks))
    return out


def test_the_table_covers_every_task_and_both_models() -> None:
    assert len(ROWS) == 104 and all(row["person"] for row in ROWS)
    sections = {(row["task"], row["model"]) for row in ROWS}
    labels = set(json.loads((FIXTURES / "tasks.json").read_text())) - {"arithmetic-sums"}
    assert sections == {(label, model) for label in labels
                        for model in ("smollm2", "gemma3")} | {("arithmetic-sums", "smollm2")}
    assert all(person_reads(row) is not None for row in ROWS if row["person"] != "none")


@pytest.mark.parametrize("row", cases())
def test_extraction_reads_what_a_person_reads(row: dict[str, Any]) -> None:
    t = task(row["task"])
    read = t.extract(row["reply"], question(row["task"], row["question_id"]))
    assert read.answer == person_reads(row)
    if read.answer is not None:
        assert read.raw and read.raw in row["reply"]


def test_agreement_figure() -> None:
    """96 of 104 with the question known; without it two choice texts are lost."""
    with_question = without = 0
    for row in ROWS:
        t, q = task(row["task"]), question(row["task"], row["question_id"])
        with_question += t.extract(row["reply"], q).answer == person_reads(row)
        without += t.extract(row["reply"]).answer == person_reads(row)
    assert (with_question, without) == (len(ROWS) - len(DISAGREE), 93)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("Here's your answer: 8 + 8 = 16", "16"), ("The answer to your question is 28.", "28")],
)
def test_the_issue_examples(reply: str, expected: str) -> None:
    numeric = task("jsonl-number")
    assert numeric.answer.kind.name == "number"  # the file's answers are all numbers
    read = numeric.extract(reply)
    assert (read.raw, read.answer) == (expected, expected)
    assert numeric.score(read.answer, expected)
