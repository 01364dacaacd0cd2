"""Numbers in model replies: finding them, reading them exactly, and writing them canonically.

A number token is an optional sign (ASCII ``-``/``+``, the Unicode minus ``−`` or an en dash),
an optional currency sign (``$ € £ ¥``), digits (``1,000`` grouped by thousands or plain),
an optional decimal part, an optional ``/denominator`` written without spaces (``3/4``), and
an optional percent sign. Values are exact :class:`fractions.Fraction` objects.

Canonical form (equal values give equal strings): an integer as digits (``"16"``, ``"-3"``,
``"1000"``); a value with a finite decimal expansion as a decimal without trailing zeros
(``"2.5"``); any other fraction in lowest terms (``"1/3"``). The percent sign is dropped:
``16%`` reads as ``16`` because the question asked for a percentage, not as ``0.16``.

>>> canonical_number("$1,000.50")
'1000.5'
>>> canonical_number("−3"), canonical_number("16.0"), canonical_number("16%")
('-3', '16', '16')
>>> canonical_number("6/4"), canonical_number("2/3"), canonical_number("sixteen") is None
('1.5', '2/3', True)

Not every number in a reply can be an answer. :func:`answer_numbers` leaves out operands of
an unevaluated expression (``8 + 9*21`` states no result; ``8 + 8 = 16`` states 16), list
labels at the start of a line (``7. What ...``) and numbers glued to words (``14-year-old``,
``COVID-19``, ``5x``); an ordinal suffix is allowed (``19th`` reads as 19).

>>> [m.group(0) for m in answer_numbers("4 + 5 = 10, and 8 + 9*21 - 3 is left open")]
['10']
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction

# Signs count only where they cannot be a binary minus glued to a word or bracket ("27-3").
NUMBER = re.compile(
    r"(?<![\w.])"
    r"(?P<sign>[-+\u2212\u2013](?=[$€£¥]?\.?\d))?"
    r"(?P<cur>[$€£¥])?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?![\d,]\d)|\d+)?"
    r"(?:\.(?P<frac>\d+))?"
    r"(?:/(?P<den>\d+)(?![\d.]))?"
    r"(?P<pct>\s?%)?"
)
# Operators of an unevaluated expression; "=" is not one (what follows it is a result).
_OPERATORS = set("+-*/×÷^·\u2212\u2013")
_ORDINAL = re.compile(r"(?:st|nd|rd|th)\b", re.IGNORECASE)
_MAX_DIGITS = 60  # longer "numbers" are not answers, and int() of huge strings is slow


def _value(match: re.Match[str]) -> Fraction | None:
    """The exact value of a number token, or None if it has no digits or is absurdly long."""
    whole, frac, den = match.group("int"), match.group("frac"), match.group("den")
    if whole is None and frac is None:
        return None
    digits = (whole or "").replace(",", "") + (frac or "")
    if len(digits) + len(den or "") > _MAX_DIGITS:
        return None
    value = Fraction(int(digits or "0"), 10 ** len(frac or ""))
    if den is not None:
        if int(den) == 0 or frac is not None:
            return None
        value /= int(den)
    return -value if match.group("sign") in ("-", "\u2212", "\u2013") else value


def parse_number(text: str) -> Fraction | None:
    """The value of ``text`` if it is one number token (surrounding spaces allowed), else None.

    >>> parse_number(" -2.50 "), parse_number("1/3"), parse_number("2 apples")
    (Fraction(-5, 2), Fraction(1, 3), None)
    """
    text = text.strip()
    match = NUMBER.fullmatch(text)
    return _value(match) if match else None


def decimals(text: str) -> int | None:
    """Decimal places written in a number (``"3.140"``: 3, ``"16"``: 0); None for a fraction."""
    match = NUMBER.fullmatch(text.strip())
    if match is None or match.group("den") is not None:
        return None
    return len(match.group("frac") or "")


def format_number(value: Fraction) -> str:
    """The canonical string of a value (see the module docstring).

    >>> format_number(Fraction(5, 2)), format_number(Fraction(-7, 1)), format_number(Fraction(1, 6))
    ('2.5', '-7', '1/6')
    """
    if value.denominator == 1:
        return str(value.numerator)
    rest = value.denominator
    twos = fives = 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value) * 10**places
    whole, part = divmod(int(scaled), 10**places)
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{str(part).zfill(places).rstrip('0')}"


def canonical_number(text: str) -> str | None:
    """The canonical string of a number token, or None if ``text`` is not one number."""
    value = parse_number(text)
    return None if value is None else format_number(value)


def _neighbour(text: str, index: int, step: int) -> str:
    """The nearest character from ``index`` in direction ``step`` that is not space or markup,
    on the same line ('' if there is none).

    Markdown bold (``**16**``) and code (`` `16` ``) are presentation: a run of two or more
    ``*`` is skipped, while a single ``*`` is a multiplication.
    """
    while 0 <= index < len(text):
        char = text[index]
        if char == "*" and 0 <= index + step < len(text) and text[index + step] == "*":
            while 0 <= index < len(text) and text[index] == "*":
                index += step
            continue
        if char == "\n":  # an expression does not run on across lines
            return ""
        if not (char.isspace() or char == "`"):
            return char
        index += step
    return ""


_REJECTED = re.compile(r"\b(?:not|isn't|is\s+not|rather\s+than|instead\s+of)\s*[$\u20ac\u00a3]?$",
                       re.IGNORECASE)


_LABEL_WORD = re.compile(r"\b(?:agent|step|round|question|option|part|chapter|member|player)"
                         r"\s*#?\s*$", re.IGNORECASE)


def _is_answer(text: str, match: re.Match[str]) -> bool:
    """Whether a number token can be an answer (see the module docstring)."""
    start, end = match.span()
    before, after = _neighbour(text, start - 1, -1), _neighbour(text, end, 1)
    # Glued to a word: "14-year-old", "COVID-19", "5x" (but "19th" is an ordinal).
    if end < len(text) and text[end].isalpha() and not _ORDINAL.match(text, end):
        return False
    if end + 1 < len(text) and text[end] in "-\u2013" and text[end + 1].isalpha():
        return False
    if start >= 2 and text[start - 1] in "-\u2013" and text[start - 2].isalpha():
        return False
    # A sign right after a digit or bracket is a binary minus: "10 -15" is an expression.
    sign = match.group("sign")
    if sign and before and (before.isdigit() or before in ")]"):
        return False
    if (not sign and before in _OPERATORS) or after in _OPERATORS:
        return False
    # A number the reply rejects: "It is 10, not 11." states 10.
    if _REJECTED.search(text, max(0, start - 12), start):
        return False
    # A name's number: "Agent 2", "Step 3", "Round 1" label something, they answer nothing.
    if not sign and _LABEL_WORD.search(text, max(0, start - 12), start):
        return False
    # A list label: "7. What ..." or "(2) Which ..." at the start of a line, text following.
    line_start = text.rfind("\n", 0, start) + 1
    if not text[line_start:start].strip(" \t*#(-"):
        label = re.match(r"[.)]\s+\S", text[end : end + 3])
        if label and not match.group("frac"):
            return False
    return True


def answer_numbers(text: str) -> Iterator[re.Match[str]]:
    """The number tokens of ``text`` that can be answers, in order."""
    for match in NUMBER.finditer(text):
        if match.group(0) and _value(match) is not None and _is_answer(text, match):
            yield match


_PLAIN = re.compile(r"[-+\u2212]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")


def is_plain_number(text: str) -> bool:
    """Whether ``text`` is a number written plainly: sign, digits, decimals, thousands commas.

    This is what makes a jsonl file numeric by default; ``$5``, ``16%`` and ``1/2`` need
    ``kind: number`` said explicitly.

    >>> [is_plain_number(s) for s in ("16", "-2.5", "1,000", "$5", "1/2", "16 apples")]
    [True, True, True, False, False, False]
    """
    return _PLAIN.fullmatch(text.strip()) is not None
