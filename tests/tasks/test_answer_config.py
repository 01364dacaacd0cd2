"""The ``answer`` section of a task config and a jsonl file's answer kinds: checked up front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from societies.errors import ConfigError, UserError
from societies.tasks import load_task, validate_task
from societies.tasks.jsonl import JsonlTask


def write(tmp_path: Path, *lines: dict[str, Any]) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def jsonl(path: Path, **answer: Any) -> JsonlTask:
    raw: dict[str, Any] = {"name": "jsonl", "path": str(path)}
    if answer:
        raw["answer"] = answer
    task = load_task(validate_task(raw))
    assert isinstance(task, JsonlTask)
    return task


ADD = {"question": "What is 8 + 8?", "answer": "16"}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"extract": [{"regex": "ANS=\\w+"}]},
         r"^task\.answer\.extract\[0\]\.regex: needs a capture group"),
        ({"extract": ["after_marker", {"regex": "ANS=(\\w+"}]},
         r"^task\.answer\.extract\[1\]\.regex: does not compile \(missing \)"),
        ({"extract": [{"regex": "(a)", "group": 2}]},
         r"^task\.answer\.extract\[0\]: group 2: the regex has only 1 capture group"),
        ({"extract": ["last_numbr"]},
         r"^task\.answer\.extract\[0\]: unknown step 'last_numbr'; known: after_marker, "),
        ({"extract": [{"step": "number", "regex": "(a)"}]},
         r"^task\.answer\.extract\[0\]: a step has either 'step' \(a name\) or 'regex'"),
        ({"extract": [3]}, r"^task\.answer\.extract\[0\]: a step is a name"),
        ({"extract": [{"step": "number", "pick": "middle"}]},
         r"^task\.answer\.extract\[0\]\.pick: Input should be 'first' or 'last'"),
        ({"extract": ["line", {"step": "number", "group": 2}]},
         r"^task\.answer\.extract\[1\]: 'group' goes with 'regex' only"),
        ({"extract": []}, r"^task\.answer\.extract: List should have at least 1 item"),
        ({"kind": "integer"}, r"^task\.answer\.kind: Input should be 'choice', 'number'"),
        ({"kind": "text", "of": "number"}, r"^task\.answer\.of: only a set has an element"),
        ({"kind": "number", "max_words": 3}, r"^task\.answer\.max_words: only for text"),
        ({"colour": "red"}, r"^task\.answer\.colour: Extra inputs are not permitted"),
    ],
)
def test_bad_answer_options_name_the_field(answer: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        validate_task({"name": "jsonl", "path": "q.jsonl", "answer": answer})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "arithmetic", "answer": {"kind": "text"}},
         r"^task\.answer\.kind: the arithmetic task's answers are of kind number, not 'text'"),
        ({"name": "mmlu", "answer": {"kind": "number"}}, r"^task\.answer\.kind: .* choice"),
        ({"name": "chess", "answer": {"kind": "set", "of": "number"}},
         r"^task\.answer\.of: the chess task's sets hold text, not 'number'"),
        ({"name": "arithmetic", "answer": {"max_words": 3}},
         r"^task\.answer\.max_words: only for text answers"),
    ],
)
def test_generated_tasks_keep_their_kind(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_task(raw)


def test_max_words_reaches_the_text_kind(tmp_path: Path) -> None:
    path = write(tmp_path, {"question": "Motto?", "answer": "liberty equality fraternity"})
    long = "Answer: " + " ".join(["word"] * 9)
    assert jsonl(path).parse(long) is None  # more than 8 words: prose, not an answer
    assert jsonl(path, max_words=12).parse(long) == " ".join(["word"] * 9)
    chess = load_task(validate_task({"name": "chess", "n": 1, "answer": {"max_words": 1}}))
    assert chess.parse("e2e4") == "e4"


def test_configured_pipeline_and_instruction_are_used() -> None:
    task = load_task(validate_task({
        "name": "arithmetic",
        "answer": {"extract": [{"regex": r"RESULT=(-?\d+)", "pick": "first"}],
                   "instruction": "End with RESULT=<n>."},
    }))
    assert task.answer_form == "End with RESULT=<n>."
    assert task.answer.template is None  # a config's instruction has no known reply form
    assert task.parse("RESULT=7 or RESULT=9; the answer is 12") == "7"
    assert task.parse("the answer is 12") is None  # a regex that finds nothing fails


def test_numeric_file_defaults_to_number(tmp_path: Path) -> None:
    task = jsonl(write(tmp_path, ADD, {"question": "q", "answer": 2.5},
                       {"question": "r", "answer": "-1,000"}))
    assert task.kind == "number"
    assert "Answer: <your answer>" in task.answer_form
    assert task.score(task.parse("Here's your answer: 8 + 8 = 16.0"), "16")
    assert task.score(task.parse("so 2.50"), "2.5")
    assert [q.gold for q in task.questions()] == ["16", "2.5", "-1,000"]


def test_mixed_file_is_text_and_list_file_is_a_set(tmp_path: Path) -> None:
    mixed = jsonl(write(tmp_path, ADD, {"question": "Capital of Peru?", "answer": "Lima"}))
    assert mixed.kind == "text"
    assert not mixed.score(mixed.parse("Answer: 16.0"), "16")  # compared as text
    sets = jsonl(write(tmp_path, {"question": "A prime below 5?", "answer": [2, "3"]}, ADD))
    assert sets.kind == "set" and sets.answer.kind.name == "set"
    assert [q.gold for q in sets.questions()] == [["2", "3"], ["16"]]  # a scalar: a set of one
    assert sets.score(sets.parse("Answer: 3.0"), ["2", "3"])  # a set of numbers
    words = jsonl(write(tmp_path, {"question": "A colour of the sky?", "answer": ["blue", "grey"]}))
    assert words.score(words.parse("Answer: Grey."), words.questions()[0].gold)


def test_declared_kind_wins_over_detection(tmp_path: Path) -> None:
    task = jsonl(write(tmp_path, ADD), kind="text")
    assert task.kind == "text" and task.parse("The answer is 16.") == "16"
    maths = jsonl(write(tmp_path, {"question": "Half?", "answer": "\\frac{1}{2}"}), kind="math")
    assert maths.score(maths.parse("So the answer is $\\boxed{0.5}$."), "\\frac{1}{2}")


@pytest.mark.parametrize(
    ("lines", "answer", "message"),
    [
        ([{"question": "q", "answer": "sixteen"}], {"kind": "number"},
         r"q\.jsonl:1: \"answer\" 'sixteen' is not a number \(task\.answer\.kind is number\)"),
        ([ADD, {"question": "q", "answer": ["1", "2"]}], {"kind": "number"},
         r"q\.jsonl:2: \"answer\" is a list, which needs task\.answer\.kind: set \(the kind is "
         r"number\)"),
        ([{"question": "q", "answer": ["1", "x"]}], {"kind": "set", "of": "number"},
         r"q\.jsonl:1: \"answer\"\[1\] 'x' is not a number \(task\.answer\.of is number\)"),
        ([{"question": "q", "answer": "B", "choices": ["x", "y"]}], {"kind": "text"},
         r"q\.jsonl:1: \"choices\" need task\.answer\.kind: choice \(the kind is text\)"),
        ([ADD], {"kind": "choice"}, r"q\.jsonl:1: missing \"choices\""),
        ([{"question": "q", "answer": []}], {}, r"q\.jsonl:1: \"answer\" as a list must hold"),
        ([{"question": "q", "answer": ["a", ""]}], {}, r"q\.jsonl:1: \"answer\" as a list"),
        ([{"question": "q", "answer": True}], {}, r"q\.jsonl:1: \"answer\" must be a non-empty"),
        ([{"question": "q", "answer": ["B"], "choices": ["x", "y"]}], {},
         r"q\.jsonl:1: \"answer\" must be one letter or choice text"),
    ],
)
def test_bad_answers_name_file_and_line(tmp_path: Path, lines: list[dict[str, Any]],
                                        answer: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        jsonl(write(tmp_path, *lines), **answer)
    assert "\n" not in str(info.value)
