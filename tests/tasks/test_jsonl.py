"""Behaviour of the jsonl task: loading a user's file, its errors, sampling, parsing, scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from societies.errors import UserError
from societies.tasks import load_task, validate_task
from societies.tasks.jsonl import JsonlTask, normalise, parse_free_text


def write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "data.jsonl"
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def task_for(path: Path, n: int = 10, seed: int = 0) -> JsonlTask:
    task = load_task(validate_task({"name": "jsonl", "path": str(path), "n": n, "seed": seed}))
    assert isinstance(task, JsonlTask)
    return task


MC = {"question": "Capital of France?", "choices": ["Berlin", "Paris", "Rome"], "answer": "B"}


def test_multiple_choice_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MC,
        "",
        {"question": "2+2?", "choices": ["4", "5"], "answer": "4", "id": "sum", "topic": "maths"},
        {"question": "Colour of the sky?", "choices": ["red", "blue"], "answer": "(b)"},
    )
    task = task_for(path)
    questions = task.questions()
    assert [q.id for q in questions] == ["line-1", "sum", "line-4"]
    assert [q.gold for q in questions] == ["B", "A", "B"]
    assert "(B) Paris" in questions[0].text and questions[0].choices == ("Berlin", "Paris", "Rome")
    assert questions[1].meta == {"topic": "maths", "line": 3}
    assert task.multiple_choice and "(X)" in task.answer_form
    assert task.parse("(A) or maybe (C)") == "C"
    assert task.parse("(D)") is None  # no question here has a fourth choice
    assert task.score("B", "B") and not task.score(None, "B")


def test_free_text_file(tmp_path: Path) -> None:
    task = task_for(
        write(
            tmp_path,
            {"question": "Capital of France?", "answer": "Paris"},
            {"question": "6*7?", "answer": 42},
        )
    )
    assert [q.gold for q in task.questions()] == ["Paris", "42"]
    assert not task.multiple_choice and "Answer:" in task.answer_form
    assert task.score(task.parse("Let me think.\nAnswer: **paris.**"), "Paris")
    assert task.score(task.parse("It is\n  PARIS  "), "Paris")
    assert not task.score(task.parse("Answer: Lyon"), "Paris")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([MC, "{broken"], r"data\.jsonl:2: not valid JSON"),
        ([MC, "", {"question": "q"}], r'data\.jsonl:3: missing "answer"'),
        ([{"answer": "x"}], r'data\.jsonl:1: missing "question"'),
        ([[1, 2]], r"data\.jsonl:1: expected a JSON object"),
        ([{"question": "q", "answer": ""}], r'data\.jsonl:1: "answer" must be'),
        ([{**MC, "answer": "D"}], r"data\.jsonl:1: \"answer\" 'D' is neither a letter A-C"),
        ([{**MC, "answer": "Madrid"}], r"data\.jsonl:1: .*neither"),
        ([{**MC, "choices": ["only one"]}], r'data\.jsonl:1: "choices" must be a list of 2 to 26'),
        ([{**MC, "choices": "ab"}], r'data\.jsonl:1: "choices" must be'),
        ([{**MC, "choices": ["x", "x"], "answer": "x"}], r"more than one choice"),
        ([{**MC, "id": "a"}, {**MC, "id": "a"}], r"data\.jsonl:2: duplicate id 'a'"),
        ([MC, {"question": "q", "answer": "a"}], r"data\.jsonl:2: .*all multiple choice"),
        (["", "  "], r"data\.jsonl: no questions"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, lines: list[object], message: str) -> None:
    path = write(tmp_path, *lines)
    with pytest.raises(UserError, match=message) as info:
        task_for(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nope\.jsonl: no such questions file"):
        task_for(tmp_path / "nope.jsonl")


def test_byte_order_mark_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(MC).encode() + b"\r\n\r\n")
    assert [q.gold for q in task_for(path).questions()] == ["B"]


def test_path_is_required() -> None:
    with pytest.raises(UserError, match=r"task\.path"):
        validate_task({"name": "jsonl"})


def test_choice_text_answer_maps_to_letter(tmp_path: Path) -> None:
    task = task_for(write(tmp_path, {**MC, "answer": " paris "}))
    assert task.questions()[0].gold == "B"


def test_seeded_sample_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, *({"question": f"q{i}", "answer": str(i)} for i in range(40)))
    sample = [q.meta["line"] for q in task_for(path, n=8, seed=1).questions()]
    assert len(sample) == 8 and sample == sorted(sample)
    assert sample == [q.meta["line"] for q in task_for(path, n=8, seed=1).questions()]
    assert sample != [q.meta["line"] for q in task_for(path, n=8, seed=2).questions()]
    assert len(task_for(path, n=100).questions()) == 40


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Answer: Paris", "paris"),
        # Articles are dropped, as SQuAD-style exact match does ("the moon" before).
        ("answer: first\nthen more thought\nFinal answer: The Moon.", "moon"),
        ("The capital city of Japan is Tokyo.", "tokyo"),
        ("one two three four five six seven eight nine", None),
        ("The answer is Rome", "rome"),
        ("just\n\n  Two   words \n\n", "two words"),
        ("Answer:\nParis", "paris"),
        ("", None),
        ("   \n ", None),
    ],
)
def test_parse_free_text(reply: str, expected: str | None) -> None:
    assert parse_free_text(reply) == expected


def test_normalise() -> None:
    assert normalise("  The   Moon. ") == "moon"
    assert normalise("It's 3.5, isn't it?") == "its 3.5 isnt it"
    assert normalise('"**Paris**"') == "paris"


@given(st.text())
def test_free_text_parse_never_crashes(reply: str) -> None:
    answer = parse_free_text(reply)
    assert answer is None or (answer and answer == normalise(answer))


def test_list_answer_every_listed_one_is_correct(tmp_path: Path) -> None:
    """``answer`` may list the accepted answers of a question; each of them scores correct."""
    path = write(
        tmp_path,
        {"question": "A primary colour?", "answer": ["red", "Blue", "yellow"]},
        {"question": "The capital of Bolivia?", "answer": "Sucre"},  # one accepted answer
    )
    task = task_for(path)
    colours, capital = task.questions()
    assert task.kind == "set" and colours.gold == ["red", "Blue", "yellow"]
    assert capital.gold == ["Sucre"]  # in a file of sets a single answer is a set of one
    for accepted in colours.gold:
        assert task.score(task.parse(f"Let me think.\nAnswer: {accepted.upper()}"), colours.gold)
    assert not task.score(task.parse("Answer: green"), colours.gold)
    numbers = task_for(write(tmp_path, {"question": "A prime below 6?", "answer": [2, "3", 5.0]}))
    assert numbers.kind == "set" and numbers.questions()[0].gold == ["2", "3", "5.0"]
    assert all(numbers.score(numbers.parse(f"Answer: {n}"), numbers.questions()[0].gold)
               for n in ("2", "3.0", "5"))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ([1, {"a": 2}], r'data\.jsonl:2: "answer" as a list must hold non-empty strings'),
        ([["nested"]], r'data\.jsonl:2: "answer" as a list must hold'),
        ([True, "x"], r'data\.jsonl:2: "answer" as a list must hold'),
        ([], r'data\.jsonl:2: "answer" as a list must hold'),
        (True, r'data\.jsonl:2: "answer" must be a non-empty string, a number, or a list'),
        ({"a": 1}, r'data\.jsonl:2: "answer" must be a non-empty string'),
    ],
)
def test_bad_answer_types_name_file_and_line(tmp_path: Path, answer: object,
                                             message: str) -> None:
    path = write(tmp_path, {"question": "ok", "answer": ["a"]}, {"question": "q", "answer": answer})
    with pytest.raises(UserError, match=message) as info:
        task_for(path)
    assert "\n" not in str(info.value)
