"""A reply written as a task's instruction asks is read back, whatever reasoning precedes it.

Every task's answer form comes from one :class:`AnswerFormat` with its pipeline and kind; its
``template`` is how a reply following the instruction ends. For every task and answer kind, a
reply of random reasoning (with numbers, squares, option letters and "X is Y" statements in it)
followed by an answer in the asked-for form must give that answer back.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from societies.tasks import Question, Task, load_task, validate_task
from societies.tasks.numeric import format_number

REASONING = [
    "Let me think step by step.",
    "First, 3 * 4 = 12 and 12 + 5 = 17, so not 29.",
    "The knight on g1 could also reach f3 or h3.",
    "Option (A) looks tempting, and (B) is close; (C) less so.",
    "An early guess was 41 - 2, which is wrong.",
    "The capital of a country is usually its largest city.",
    "There are 3 cases: 1,000 or 2.5 or -7.",
    "Hmm, (D)? No.",
]
# Only where the instruction itself asks for a marker: before an unmarked final answer, an
# earlier marker narrows the reading to its own line (see societies.tasks.extract).
MARKED = ["The answer is not obvious yet, maybe 12.", "Final answer: (A)... wait."]

words = st.lists(st.sampled_from(["red", "blue", "Paris", "New", "York", "moon", "7th", "gate",
                                  "is", "of", "river", "Nile"]), min_size=1, max_size=6)
numbers = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.integers(-10**6, 10**6).map(lambda n: f"{n:,}"),
    st.decimals(-1000, 1000, places=2, allow_nan=False, allow_infinity=False).map(str),
)


def jsonl_task(tmp: Path, lines: list[dict[str, Any]], **answer: Any) -> Task:
    path = tmp / "q.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    raw: dict[str, Any] = {"name": "jsonl", "path": str(path)}
    if answer:
        raw["answer"] = answer
    return load_task(validate_task(raw))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Task, Question]]:
    """One task per (task, kind) pair, with a question whose answer forms the values drawn."""
    tmp = tmp_path_factory.mktemp("round-trip")
    mc = {"question": "Which?", "choices": ["red", "blue", "green", "grey"], "answer": "B"}
    made = {
        "arithmetic/number": load_task(validate_task({"name": "arithmetic", "n": 1})),
        "mmlu/choice": load_task(validate_task({"name": "mmlu", "n": 1})),
        "chess/set": load_task(validate_task({"name": "chess", "n": 1})),
        "jsonl/choice": jsonl_task(tmp, [mc]),
        "jsonl/number": jsonl_task(tmp, [{"question": "q", "answer": "1"}]),
        "jsonl/text": jsonl_task(tmp, [{"question": "Name it.", "answer": "x"}]),
        "jsonl/math": jsonl_task(tmp, [{"question": "q", "answer": "1"}], kind="math"),
        "jsonl/set": jsonl_task(tmp, [{"question": "q", "answer": ["a", "b"]}]),
    }
    return {name: (task, task.questions()[0]) for name, task in made.items()}


VALUES: dict[str, st.SearchStrategy[str]] = {
    "arithmetic/number": st.integers(-10**6, 10**6).map(str),
    "mmlu/choice": st.sampled_from("ABCD"),
    "chess/set": st.builds(lambda f, r: f + r, st.sampled_from("abcdefgh"),
                           st.sampled_from("12345678")),
    "jsonl/choice": st.sampled_from("ABCD"),
    "jsonl/number": numbers,
    "jsonl/text": words.map(" ".join),
    "jsonl/math": st.fractions(min_value=-100, max_value=100, max_denominator=50).map(
        lambda f: f"\\frac{{{f.numerator}}}{{{f.denominator}}}"),
    "jsonl/set": words.map(" ".join),
}


def test_every_task_and_kind_is_covered(tasks: dict[str, tuple[Task, Question]]) -> None:
    assert {t.answer.kind.name for t, _ in tasks.values()} == {"number", "choice", "set", "text",
                                                               "math"}
    assert {t.name for t, _ in tasks.values()} == {"arithmetic", "mmlu", "chess", "jsonl"}
    for task, _ in tasks.values():
        # The instruction the prompts carry is the format's own, which the template follows.
        assert task.answer_form == task.answer.instruction and task.answer.template


@pytest.mark.parametrize("name", sorted(VALUES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_reply_in_the_asked_form_is_read_back(tasks: dict[str, tuple[Task, Question]],
                                               name: str, data: st.DataObject) -> None:
    task, question = tasks[name]
    template = task.answer.template
    assert template is not None
    pool = REASONING + (MARKED if "Answer" in template else [])
    reasoning = data.draw(st.lists(st.sampled_from(pool), max_size=5))
    value = data.draw(VALUES[name])
    joiner = data.draw(st.sampled_from(["\n", "\n\n", " "]))
    reply = joiner.join([*reasoning, template.format(answer=value)])
    for asked in (question, None):  # with the question known, and without
        read = task.extract(reply, asked)
        assert read.answer == task.answer.kind.canonical(value, task.answer.context(asked))
        assert read.answer is not None and read.raw is not None and read.raw in reply
    if name.endswith("number") and "/" not in value:
        assert read.answer == format_number(Fraction(value.replace(",", "")))
