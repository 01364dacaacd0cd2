"""Extraction steps: what each finds, ``pick``, ``otherwise``, and the raw span it reports."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from societies.tasks.extract import StepSpec, run, step
from societies.tasks.kinds import Context

MARK_NUMBER = (step("after_marker"), step("last_number"))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("8 + 8 = 16. Final answer: 17", "17"),
        ("The answer is: 12, not 13 + 4", "12"),  # 13 and 4 are operands
        ("**Answer:**\n\n42\n\n(from 6*7)", "42"),  # marker ends its line: the next line
        ("Answer would be 7", "7"),
        ("the answer is $\\boxed{9}$ and 8 + 1", "9"),  # a box after the marker wins
        ("Answer: <your answer>\nI think 5.", "5"),  # an echoed instruction is no marker
        ("Your answer is:", None),  # announced, then nothing: no answer
        ("To answer this, 3 + 4 = 7", "7"),  # "answer" alone is not a marker
    ],
)
def test_after_marker(reply: str, expected: str | None) -> None:
    assert run(MARK_NUMBER, reply) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("1. Add them.\n2. Check.\n16", "16"),  # list labels are not answers
        ("(2) Which one?", None),
        ("It is the 19th", "19"),
        ("COVID-19 or 5x", None),
        ("4 + 5 = 10", "10"),
        ("16 = 8 + 8", "16"),
        ("2^10 = 1024", "1024"),
        ("= 17\n-13", "-13"),  # a minus at the start of a line is a sign
        ("17 -13", None),  # after a digit, a binary minus: both operands
        ("costs $1,250.50 in all", "$1,250.50"),
    ],
)
def test_number_step(reply: str, expected: str | None) -> None:
    assert run((step("last_number"),), reply) == expected


def test_pick_and_otherwise() -> None:
    assert run((step("first_number"),), "3 then 4 then 5") == "3"
    assert run((step("number", pick="first"),), "3 then 4 then 5") == "3"
    assert run((step("last_number"),), "no digits") is None  # readers fail by default
    assert run((step("number", otherwise="keep"),), "no digits") == "no digits"
    assert run((step("after_marker"), step("last_line")), "a\nb") == "b"  # hints keep
    assert run((step("after_marker", otherwise="fail"),), "a\nb") is None
    assert run((step("after_marker", pick="first"), step("last_number")),
               "Answer: 3\nAnswer: 4") == "3"


def test_regex_step_uses_its_group() -> None:
    pipeline = (StepSpec(regex=r"(\w+)=(\d+)", group=2),)
    assert run(pipeline, "a=1, b=22") == "22"
    assert run((StepSpec(regex=r"(\w+)=(\d+)", group=2, pick="first"),), "a=1, b=22") == "1"
    assert run(pipeline, "nothing") is None
    # A group that did not take part in a match is skipped.
    assert run((StepSpec(regex=r"x(\d)?"),), "x1 x") == "1"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("(A) seems fine, but (C) is right", "(C)"),
        ("The answer is B, because", "B"),
        ("The answer is actually A.", "A"),
        ("A good question. I pick (D).", "(D)"),
        ("A good question.", None),  # a capital letter counts only right after a marker
        ("(A) x\n(B) y\n(C) z\n(D) w", None),  # an echoed option list
        ("(A) x\n(B) y\n(C) z\n(D) w\nAnswer: (B) y", "(B)"),
        ("Answer: (E)", None),  # not a letter of this question
    ],
)
def test_letter_step(reply: str, expected: str | None) -> None:
    pipeline = (step("after_marker"), step("last_letter"))
    assert run(pipeline, reply, Context(letters="ABCD")) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("The knight on g1 can go to f3.", "f3"),
        ("Nf3", "f3"), ("e2e4", "e4"), ("exd5!", "d5"), ("Bxe5+", "e5"), ("O-O", None),
        ("The rook on h8 stays.", None), ("from a2 to a4", "a4"), ("i9 z1 each1", None),
    ],
)
def test_square_step(reply: str, expected: str | None) -> None:
    assert run((step("last_square"),), reply) == expected


@pytest.mark.parametrize(
    ("reply", "question", "expected"),
    [
        ("The capital city of Japan is Tokyo.", "", "Tokyo"),
        ("Paris is the capital of France.", "What is the capital of France?", "Paris"),
        ("It is indeed Berlin.\nHope that helps!", "", "Berlin"),
        ("What is the capital? It is Rome.", "", "Rome"),
        ("Answer: what is left", "", "what is left"),  # after a marker: the answer as given
        ("Assistant: What is the largest", "", None),  # a question, even cut off
    ],
)
def test_copula_step(reply: str, question: str, expected: str | None) -> None:
    pipeline = (step("after_marker"), step("copula"), step("last_line", otherwise="fail"))
    got = run(pipeline, reply, Context(question=question))
    assert got == expected


@given(st.text(max_size=200))
def test_pipelines_never_crash_and_report_a_span_of_the_reply(reply: str) -> None:
    for pipeline in [MARK_NUMBER, (step("after_marker"), step("copula"), step("last_line")),
                     (step("after_marker"), step("last_letter", otherwise="keep")),
                     (step("boxed"), step("last_square"))]:
        raw = run(pipeline, reply)
        assert raw is None or (raw and raw in reply and raw == raw.strip())


def test_regex_anchors_at_the_span() -> None:
    pipeline = (step("after_marker"), StepSpec(regex=r"^(\w+)$"))
    assert run(pipeline, "First: x\nAnswer: yes") == "yes"


@pytest.mark.parametrize(("reply", "expected"), [
    # Debate replies judge other answers: "answer is correct" announces no answer.
    ("4 + 2 = 6.\n\nThis answer is correct and follows the pattern.", "6"),
    ("Your answer is not correct. 3 + 4 = 7.", "7"),
    # A rejected number is not the answer; a name's number is a label.
    ("The answer you're looking for is 10, not 11.", "10"),
    ("It is 7 rather than 8", "7"),
    ("I agree with Agent 2: 5 + 4 = 9", "9"),
    ("I am Agent 3.", None),
    # A bare "final answer" at a sentence's end announces nothing.
    ("4 + 8 = 12\n\nYou are left with the final answer.", "12"),
    ("Final answer: 12", "12"),
])
def test_debate_phrasings_of_the_quickstart(reply: str, expected: str | None) -> None:
    from societies.tasks import load_task, validate_task

    sums = load_task(validate_task({"name": "arithmetic", "expression": "a+b", "high": 9}))
    assert sums.extract(reply).answer == expected
