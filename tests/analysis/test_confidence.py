"""Answer probabilities from token log-probabilities, and the confidence-weighted majority."""

from __future__ import annotations

import math

import pytest

from societies.analysis.confidence import answer_probability, confidence_weighted_majority

TOKENS = [("The", -0.1), (" answer", -0.2), (" is", -0.3), (" 4", -0.4), ("2", -0.5),
          (". So", -0.6), (" 4", -0.7), ("2", -0.8), (".", -0.9)]
REPLY = "The answer is 42. So 42."


def test_product_over_the_tokens_of_the_last_occurrence() -> None:
    # The last "42" spans the tokens " 4" (-0.7) and "2" (-0.8); the leading space is included
    # because the token covering "4" starts with it.
    assert answer_probability(REPLY, "42", TOKENS) == pytest.approx(math.exp(-1.5))


def test_span_inside_one_token() -> None:
    tokens = [("x=", -0.2), ("123", -0.25), ("!", -3.0)]
    assert answer_probability("x=123!", "2", tokens) == pytest.approx(math.exp(-0.25))


def test_span_across_three_tokens() -> None:
    tokens = [("(", -1.0), ("B", -0.1), (")", -0.2), (" done", -2.0)]
    assert answer_probability("(B) done", "(B)", tokens) == pytest.approx(math.exp(-1.3))


@pytest.mark.parametrize(("reply", "raw", "tokens"), [
    (REPLY, None, TOKENS),  # no answer read
    (REPLY, "", TOKENS),
    (REPLY, "17", TOKENS),  # not in the reply
    (REPLY + " ", "42", TOKENS),  # the tokens do not spell the reply
])
def test_undefined(reply: str, raw: str | None, tokens: list[tuple[str, float]]) -> None:
    assert answer_probability(reply, raw, tokens) is None


@pytest.mark.parametrize(("answers", "weights", "expected"), [
    (["A", "B", "B"], [0.9, 0.3, 0.4], "A"),  # one confident agent beats two unsure ones
    (["A", "B", "B"], [0.5, 0.3, 0.4], "B"),
    (["A", "B"], [0.5, 0.5], None),  # tie
    (["A", None, None], [0.1, 0.9, 0.9], "A"),  # None answers carry nothing
    (["A", "B"], [None, 0.2], "B"),  # no log-probabilities: no weight
    (["A", "B"], [0.0, 0.0], None),
    ([], [], None),
])
def test_confidence_weighted_majority(answers: list[str | None], weights: list[float | None],
                                      expected: str | None) -> None:
    assert confidence_weighted_majority(answers, weights) == expected


@pytest.mark.parametrize("weights", [[0.1], [0.1, -0.2], [0.1, math.nan], [math.inf, 0.1]])
def test_bad_weights_rejected(weights: list[float]) -> None:
    with pytest.raises(ValueError):
        confidence_weighted_majority(["A", "B"], weights)
