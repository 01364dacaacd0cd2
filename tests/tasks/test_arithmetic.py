"""Behaviour of the arithmetic task: generation, gold values, answer parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from societies.errors import ConfigError
from societies.tasks import load_task, validate_task
from societies.tasks.arithmetic import ArithmeticTask, Options, create, parse_integer


def make(n: int = 20, seed: int = 0) -> ArithmeticTask:
    return create(validate_task({"name": "arithmetic", "n": n, "seed": seed}))


def test_gold_is_the_value_of_the_expression() -> None:
    for question in make(50).questions():
        expr = question.meta["expression"]
        assert expr in question.text
        assert question.gold == str(eval(expr))  # the test's independent check
        assert all(0 <= x <= 29 for x in question.meta["numbers"])


def test_same_seed_same_questions_and_different_seed_differs() -> None:
    first = [(q.id, q.text, q.gold) for q in make(10, seed=3).questions()]
    again = [(q.id, q.text, q.gold) for q in make(10, seed=3).questions()]
    other = [q.text for q in make(10, seed=4).questions()]
    assert first == again
    assert other != [text for _, text, _ in first]


def test_larger_n_extends_the_list() -> None:
    short = make(5, seed=7).questions()
    long = make(12, seed=7).questions()
    assert long[:5] == short
    assert len({q.id for q in long}) == 12


def test_registry_builds_the_task() -> None:
    task = load_task(validate_task({"name": "arithmetic", "n": 2}))
    assert task.name == "arithmetic"
    assert len(task.questions()) == 2
    assert "integer" in task.answer_form


def test_n_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"task\.n"):
        validate_task({"name": "arithmetic", "n": 0})


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"task\.topics"):
        validate_task({"name": "arithmetic", "topics": ["x"]})


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The answer is 42.", "42"),
        ("First 3*4 = 12, then 12 + 5 = 17. So the result is **-13**", "-13"),
        ("Total: 1,234", "1234"),
        ("= −7", "-7"),
        ("27-3 = 24", "24"),
        # An unevaluated expression states no result (this read 15, an operand, before).
        ("10 - 15", None),
        ("8 + 9*21 + 29 - 21 * 25", None),
        ("Here's your answer: 8 + 8 = 16", "16"),
        ("= 35\n-13", "-13"),
        ("A total of **72**.", "72"),
        ("I am a 14-year-old", None),
        ("I get 24.0", "24"),
        ("maybe 3.5", "3.5"),
        ("-0", "0"),
        ("list 1,2,3", "3"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_parse(reply: str, expected: str | None) -> None:
    assert parse_integer(reply) == expected
    assert ArithmeticTask(Options(name="arithmetic")).parse(reply) == expected


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_parse_reads_back_any_integer(value: int) -> None:
    assert parse_integer(f"so the final result is {value}") == str(value)
    assert parse_integer(f"result: {value:,}.") == str(value)


@given(st.text())
def test_parse_never_crashes(reply: str) -> None:
    answer = parse_integer(reply)
    assert answer is None or isinstance(answer, str)


def test_score() -> None:
    task = make(1)
    question = task.questions()[0]
    assert task.score(task.parse(f"... = {question.gold}"), question.gold)
    assert not task.score(None, question.gold)
    assert not task.score(str(int(str(question.gold)) + 1), question.gold)


def test_sums_of_two_one_digit_numbers() -> None:
    from societies.tasks import load_task, validate_task

    task = load_task(validate_task({"name": "arithmetic", "expression": "a+b", "high": 9,
                                    "n": 30, "seed": 0}))
    questions = task.questions()
    assert len({q.id for q in questions}) == 30
    for q in questions:
        a, b = q.meta["numbers"]
        assert 0 <= a <= 9 and 0 <= b <= 9 and q.text == f"What is {a} + {b}?"
        assert q.gold == str(a + b) and q.id.startswith("arithmetic-a+b-9-0-")
    # The benchmark's own ids are unchanged by the new options.
    du = load_task(validate_task({"name": "arithmetic", "n": 1}))
    assert du.questions()[0].id == "arithmetic-0-0"
