"""How a response-level ensemble chooses among whole replies: answers, similarity, verdicts.

Pure functions over reply texts; :mod:`societies.ensembles.response` does the model calls.

- :func:`answer_key`: the answer a reply gives, read without knowing the task (for
  ``majority``);
- :func:`token_f1` and :func:`medoid`: minimum Bayes risk with a bag-of-words F1 as the
  similarity (for ``mbr``);
- :func:`ordered_pairs`, :func:`read_verdict` and :func:`tally`: pairwise comparisons asked in
  both orders and counted as wins (for ``rank`` and ``fuse``).

>>> texts = ["The answer is 16.", "I get 15. Answer: 15", "8 + 8 = 16"]
>>> [answer_key(t) for t in texts]
['16', '15', '16']
>>> majority(texts), medoid(["a b c", "a b d", "x y z"])
(0, 0)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from societies.tasks.extract import run, step
from societies.tasks.kinds import Choice, Context, normalise_text
from societies.tasks.numeric import answer_numbers, canonical_number

Verdict = Literal["A", "B"]
# After an answer marker if there is one, else the last line that is not a question.
_PIPELINE = (step("after_marker"), step("last_line"))
_NAMED = re.compile(r"\b(?:reply|response|answer|option)\s*[(\[]?\s*([AB])\b(?![a-z'])",
                    re.IGNORECASE)
_LEADING = re.compile(r"[\s*_\"'`#>]*[(\[]?([AB])(?:[)\].:,!]|\s*$|\s+(?:is|wins)\b)")


def answer_key(text: str) -> str | None:
    """The answer a reply gives, as a string equal replies share; None when none is read.

    The span after the last answer marker (``answer:``, ``answer is``, ``\\boxed{}``), else the
    last line that is not a question; in it, the last number (canonical: ``16.0`` is ``16``),
    else a lone choice letter (``(B)``, ``B.``), else the words, lower case without
    punctuation or articles.

    >>> answer_key("So the final answer is 16.0"), answer_key("The answer is (b)")
    ('16', 'B')
    >>> answer_key("Paris is lovely.\\nAnswer: the Moon"), answer_key("") is None
    ('moon', True)
    """
    span = run(_PIPELINE, text)
    if span is None:
        return None
    numbers = list(answer_numbers(span))
    if numbers:
        return canonical_number(numbers[-1].group(0)) or numbers[-1].group(0)
    letter = Choice().canonical(span, Context())
    if letter is not None:
        return letter
    return normalise_text(span) or None


def majority(texts: Sequence[str]) -> int:
    """Index of the first reply giving the most frequent answer.

    Ties between answers go to the answer given first; when no reply gives an answer the
    choice falls back to :func:`medoid`. Any reply with words gives an answer (its last line
    at worst), so only empty replies or bare markers give none.

    >>> majority(["Answer: 3", "Answer: 4", "Answer: 4", "Answer: 3"])
    0
    >>> majority(["", "Answer: 7"]), majority(["", ""])
    (1, 0)
    """
    keys = [answer_key(t) for t in texts]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return medoid(texts)
    # Counter keeps first-seen order, and max keeps the first of equal counts.
    winner = max(counts, key=lambda k: counts[k])
    return keys.index(winner)


def token_f1(a: str, b: str) -> float:
    """Bag-of-words F1 between two texts (SQuAD-style normalised words); symmetric, in [0, 1].

    Two texts without words are identical (1.0); one empty and one not share nothing (0.0).

    >>> token_f1("The cat sat.", "a cat sat down"), token_f1("", ""), token_f1("x", "")
    (0.8, 1.0, 0.0)
    """
    x, y = Counter(normalise_text(a).split()), Counter(normalise_text(b).split())
    if not x and not y:
        return 1.0
    common = sum((x & y).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(x.values()), common / sum(y.values())
    return 2 * precision * recall / (precision + recall)


def mbr_scores(texts: Sequence[str]) -> list[float]:
    """Each reply's mean :func:`token_f1` with the others (its expected utility)."""
    n = len(texts)
    if n < 2:
        return [1.0] * n
    sim = [[token_f1(a, b) if i != j else 0.0 for j, b in enumerate(texts)]
           for i, a in enumerate(texts)]
    return [sum(row) / (n - 1) for row in sim]


def medoid(texts: Sequence[str]) -> int:
    """Index of the reply most similar on average to the others (first of equals)."""
    scores = mbr_scores(texts)
    return scores.index(max(scores))


def ordered_pairs(n: int) -> list[tuple[int, int]]:
    """Every ordered pair of distinct replies: each pair is judged in both orders.

    >>> ordered_pairs(3)
    [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)]
    """
    out: list[tuple[int, int]] = []
    for i in range(n):
        for j in range(i + 1, n):
            out += [(i, j), (j, i)]
    return out


def read_verdict(text: str) -> Verdict | None:
    """Which reply a judge preferred: ``"A"``, ``"B"`` or None when it did not say.

    A letter named as a reply ("Reply B is better", "Answer: A") counts first; failing that,
    a reply opening with a lone letter ("B", "(A) because ..."). A sentence opening with the
    article "A" is not a verdict.

    >>> [read_verdict(t) for t in ("B", "(A) is clearer", "Reply B.", "A good reply", "tie")]
    ['B', 'A', 'B', None, None]
    """
    named = _NAMED.search(text)
    if named:
        return named.group(1).upper()  # type: ignore[return-value]
    leading = _LEADING.match(text)
    return leading.group(1).upper() if leading else None  # type: ignore[return-value]


def tally(n: int, pairs: Sequence[tuple[int, int]], verdicts: Sequence[Verdict | None],
          ) -> list[float]:
    """Wins per reply: the preferred reply of each pair gets 1; no verdict gives each 0.5.

    >>> tally(2, [(0, 1), (1, 0)], ["A", "B"])
    [2.0, 0.0]
    """
    wins = [0.0] * n
    for (first, second), verdict in zip(pairs, verdicts, strict=True):
        if verdict is None:
            wins[first] += 0.5
            wins[second] += 0.5
        else:
            wins[first if verdict == "A" else second] += 1.0
    return wins


def ranking(wins: Sequence[float], texts: Sequence[str] | None = None) -> list[int]:
    """Reply indices from most to fewest wins.

    Equal wins go to the reply closer to the others (:func:`mbr_scores` of ``texts``), then to
    member order: a judge that always names the same position gives every reply equal wins,
    and the ranking is then MBR's rather than the members' order.

    >>> ranking([1.0, 3.0, 1.0]), ranking([2.0, 2.0, 2.0], ["x y", "a b", "a b c"])
    ([1, 0, 2], [1, 2, 0])
    """
    closeness = mbr_scores(texts) if texts is not None else [0.0] * len(wins)
    return sorted(range(len(wins)), key=lambda i: (-wins[i], -closeness[i]))
