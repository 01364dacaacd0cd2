"""Answer kinds: how an extracted span becomes a canonical answer, and when it equals the gold.

Metrics compare answers as strings (majority, consensus, conformity), so every kind maps equal
answers to equal strings. A kind answers three questions:

- ``canonical(raw, context)``: the canonical string of a span, or None when the span is not an
  answer of this kind (``"sixteen"`` for a number, twelve words of prose for text).
- ``correct(answer, gold)``: whether a canonical answer matches the gold; a list gold is a set
  of accepted answers (any match is correct).
- ``gold_problem(gold)``: why a gold value is unusable for this kind (None when it is fine).

The kinds:

- ``choice``: a letter. ``(B)``, ``B``, ``b)``, ``**B**`` and, on one line, ``B. Paris`` read as
  ``"B"``;
  so does the text of a choice (``Paris`` when choice B is Paris), or a span naming exactly one
  choice's text, when the question's choices are known.
- ``number``: see :mod:`societies.tasks.numeric` for the canonical form. Correctness: equal
  values; an integer gold needs exactly that integer; a gold written with ``d`` decimals also
  accepts any answer within half a unit of its last place (``3.14`` accepts ``3.1416``, not
  ``3.1``); a gold fraction without a finite decimal (``1/3``) also accepts a decimal of at least
  two places within half a unit of that decimal's last place (``0.33``, ``0.333``).
- ``text``: lower case, no punctuation (except ``.``/``,`` inside numbers), no articles
  (``a``, ``an``, ``the``), single spaces: the SQuAD exact-match normalisation. A span of more
  than ``max_words`` words as written (default 8) is prose, not a short answer: no answer.
- ``math``: see :mod:`societies.tasks.mathexpr` (sympy; falls back to text).
- ``set``: the gold is a list of accepted answers, each of the element kind (``of``).

>>> ctx = Context(letters="ABC", choices=("Berlin", "Paris", "Rome"))
>>> [Choice().canonical(s, ctx) for s in ("(b)", "**C**", "paris", "It is Paris.", "(D)")]
['B', 'C', 'B', 'B', None]
>>> Number().correct("3.1416", "3.14"), Number().correct("3.1", "3.14")
(True, False)
>>> Text().canonical("The Moon.", Context()), Text().correct("moon", ["Luna", "The Moon"])
('moon', True)
"""

from __future__ import annotations

import abc
import re
import string
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

from societies.records import Gold
from societies.tasks.numeric import decimals, format_number, parse_number

LETTERS = string.ascii_uppercase
KIND_NAMES = ("choice", "number", "text", "math", "set")
ELEMENT_KINDS = ("number", "text", "math")
DEFAULT_MAX_WORDS = 8


@dataclass(frozen=True)
class Context:
    """What extraction may know besides the reply: the question being answered.

    Attributes:
        letters: the choice letters allowed (upper case).
        choices: the choices' texts, in letter order; empty when unknown or not multiple choice.
        question: the question text; empty when unknown.
    """

    letters: str = LETTERS
    choices: tuple[str, ...] = ()
    question: str = ""


_DECORATION = " \t\n*_`\"'“”‘’"


def strip_decoration(text: str) -> str:
    """Text without surrounding spaces, markdown, quotes, or final ``. , ; : ! ?``.

    >>> strip_decoration(' **16.** '), strip_decoration('"Paris"!'), strip_decoration('-2.5')
    ('16', 'Paris', '-2.5')
    """
    previous = None
    while text != previous:
        previous = text
        text = text.strip(_DECORATION)
        if text and text[-1] in ".,;:!?":
            text = text[:-1]
    return text


def normalise_text(text: str) -> str:
    """Free text reduced for comparison (SQuAD-style; idempotent).

    >>> normalise_text("  The   Moon. "), normalise_text('"**Paris**"'), normalise_text("It's 3.5!")
    ('moon', 'paris', 'its 3.5')
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"['’`]", "", text)
    # A point or comma between digits belongs to a number; other punctuation separates words.
    text = "".join(
        " " if unicodedata.category(c).startswith("P")
        and not (c in ".," and text[i - 1 : i].isdigit() and text[i + 1 : i + 2].isdigit())
        else c
        for i, c in enumerate(text)
    )
    words = text.split()
    kept = [w for w in words if w not in ("a", "an", "the")]
    # An answer that is only an article ("A") keeps it rather than vanishing.
    return " ".join(kept or words)


class Kind(abc.ABC):
    """An answer kind; see the module docstring."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def canonical(self, raw: str, context: Context) -> str | None:
        """The canonical answer in ``raw``, or None if ``raw`` is not an answer of this kind."""

    @abc.abstractmethod
    def equivalent(self, answer: str, gold: str) -> bool:
        """Whether canonical ``answer`` matches one gold value as written."""

    def gold_problem(self, gold: str) -> str | None:
        """Why one gold value cannot be used with this kind; None when it can."""
        return None if gold.strip() else "is empty"

    def correct(self, answer: str | None, gold: Gold) -> bool:
        """Whether ``answer`` matches the gold, or any of a list of golds. None never does."""
        if answer is None:
            return False
        golds = gold if isinstance(gold, list) else [gold]
        return any(self.equivalent(answer, g) for g in golds)


class Choice(Kind):
    """A choice letter."""

    name = "choice"
    _LONE = re.compile(r"\(?\s*([A-Za-z])\s*\)?")
    _LEADING = re.compile(r"(?:\(\s*([A-Za-z])\s*\)|([A-Z])[.):])\s")

    def canonical(self, raw: str, context: Context) -> str | None:
        text = strip_decoration(raw)
        text = re.sub(r"^(?:option|choice|letter)\s+", "", text, flags=re.IGNORECASE)
        # "B. Paris" on one line is choice B; a whole reply opening "A: ..." is not.
        leading = self._LEADING.match(text + " ") if "\n" not in text else None
        for pattern in (self._LONE.fullmatch(text), leading):
            if pattern:
                letter = (pattern.group(1) or pattern.group(pattern.lastindex or 1)).upper()
                return letter if letter in context.letters else None
        return self._by_text(text, context)

    @staticmethod
    def _by_text(text: str, context: Context) -> str | None:
        """The letter of the one choice whose text the span is, or names."""
        choices = [normalise_text(c) for c in context.choices]
        said = normalise_text(text)
        if not said:
            return None
        if said in choices:
            return context.letters[choices.index(said)]
        padded = f" {said} "
        named = {i for i, c in enumerate(choices) if c and f" {c} " in padded}
        # A choice whose text lies inside another named choice's text is not named by itself.
        named = {i for i in named if not any(j != i and choices[i] in choices[j] for j in named)}
        return context.letters[named.pop()] if len(named) == 1 else None

    def equivalent(self, answer: str, gold: str) -> bool:
        return answer.strip("() ").upper() == gold.strip("() ").upper()


class Number(Kind):
    """A number, compared by value (see the module docstring for the tolerance rule)."""

    name = "number"

    def canonical(self, raw: str, context: Context) -> str | None:
        value = parse_number(strip_decoration(raw))
        return None if value is None else format_number(value)

    def equivalent(self, answer: str, gold: str) -> bool:
        value, target = parse_number(answer), parse_number(strip_decoration(gold))
        if value is None or target is None:
            return False
        if value == target:
            return True
        places = decimals(strip_decoration(gold))
        if places:  # gold written with decimals: the answer rounds to it at that precision
            return abs(value - target) <= Fraction(1, 2 * 10**places)
        if places is None and not _finite_decimal(target):
            given = decimals(answer) or 0
            return given >= 2 and abs(value - target) <= Fraction(1, 2 * 10**given)
        return False

    def gold_problem(self, gold: str) -> str | None:
        return None if parse_number(strip_decoration(gold)) is not None else "is not a number"


def _finite_decimal(value: Fraction) -> bool:
    rest = value.denominator
    for prime in (2, 5):
        while rest % prime == 0:
            rest //= prime
    return rest == 1


class Text(Kind):
    """Short free text, compared after :func:`normalise_text`."""

    name = "text"

    def __init__(self, max_words: int = DEFAULT_MAX_WORDS) -> None:
        self.max_words = max_words

    def canonical(self, raw: str, context: Context) -> str | None:
        text = normalise_text(raw)
        if not text or len(raw.split()) > self.max_words:  # words as written, articles too
            return None
        return text

    def equivalent(self, answer: str, gold: str) -> bool:
        return normalise_text(answer) == normalise_text(gold)


class Math(Kind):
    """A mathematical expression, compared with sympy (see :mod:`societies.tasks.mathexpr`)."""

    name = "math"

    def canonical(self, raw: str, context: Context) -> str | None:
        from societies.tasks.mathexpr import canonical_math

        return canonical_math(raw)

    def equivalent(self, answer: str, gold: str) -> bool:
        from societies.tasks.mathexpr import equivalent_math

        return equivalent_math(answer, gold)


class AnswerSet(Kind):
    """Several accepted answers of one element kind; right if equivalent to any of them."""

    name = "set"

    def __init__(self, element: Kind) -> None:
        self.element = element

    def canonical(self, raw: str, context: Context) -> str | None:
        return self.element.canonical(raw, context)

    def equivalent(self, answer: str, gold: str) -> bool:
        return self.element.equivalent(answer, gold)

    def gold_problem(self, gold: str) -> str | None:
        return self.element.gold_problem(gold)


def make_kind(name: str, of: str | None = None, max_words: int | None = None) -> Kind:
    """The kind called ``name``; ``of`` is a set's element kind (default text)."""
    words = max_words or DEFAULT_MAX_WORDS
    simple: dict[str, Kind] = {
        "choice": Choice(), "number": Number(), "text": Text(words), "math": Math()
    }
    if name == "set":
        return AnswerSet(simple[of or "text"])
    return simple[name]
