"""Answer confidence from token log-probabilities, and a majority weighted by it.

Nothing records log-probabilities yet: a backend would have to return, per reply, the sampled
tokens with their log-probabilities (``Settings.logprobs``), and the engine would store the
product computed here in the turn. These functions are the pure part of that, ready to use.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

__all__ = ["TokenLogprob", "answer_probability", "confidence_weighted_majority"]

TokenLogprob = tuple[str, float]  # a sampled token's text and its natural-log probability


def answer_probability(reply_text: str, raw_answer: str | None,
                       logprobs: Sequence[TokenLogprob]) -> float | None:
    """The probability the model gave the answer span: the product of its tokens' probabilities.

    The span is the last occurrence of ``raw_answer`` in ``reply_text`` (where answers are
    usually read from); every token overlapping it counts, so a token that starts before the
    span or runs past it is included whole.

    Args:
        reply_text: the reply as recorded.
        raw_answer: the span the answer was read from (``Turn.raw_answer``).
        logprobs: the reply's tokens in order with their natural-log probabilities; their texts
            must join to ``reply_text`` exactly, or the character offsets mean nothing.

    Returns:
        The probability in [0, 1]; None when there is no answer, it is not in the reply, or the
        tokens do not spell the reply.

    Examples:
        >>> round(answer_probability("x = 42", "42", [("x =", -0.1), (" 4", -0.5), ("2", 0.0)]), 4)
        0.6065
    """
    if not raw_answer or "".join(t for t, _ in logprobs) != reply_text:
        return None
    start = reply_text.rfind(raw_answer)
    if start < 0:
        return None
    end = start + len(raw_answer)
    total, pos = 0.0, 0
    for text, logprob in logprobs:
        if pos < end and pos + len(text) > start:
            total += logprob
        pos += len(text)
    return math.exp(total)


def confidence_weighted_majority(answers: Sequence[str | None],
                                 weights: Sequence[float | None]) -> str | None:
    """The answer with the largest total weight (e.g. each agent's answer probability).

    None answers and None weights (no log-probabilities) add nothing. A tie for the top total,
    or no positive weight at all, gives None. Unlike ``majority_answer`` one confident agent
    can carry the vote: there is no two-agent minimum.

    Raises:
        ValueError: if the lengths differ or a weight is negative or not finite.

    Examples:
        >>> confidence_weighted_majority(["A", "B", "B"], [0.9, 0.3, 0.4])
        'A'
    """
    if len(answers) != len(weights):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    totals: defaultdict[str, float] = defaultdict(float)
    for answer, weight in zip(answers, weights, strict=True):
        if weight is not None and (not math.isfinite(weight) or weight < 0):
            raise ValueError(f"weight {weight!r} is not a finite number ≥ 0")
        if answer is not None and weight:
            totals[answer] += weight
    ranked = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)
    if not ranked or (len(ranked) > 1 and math.isclose(ranked[0][1], ranked[1][1])):
        return None
    return ranked[0][0]
