"""Extraction pipelines: the steps that narrow a reply down to the span holding its answer.

A pipeline is a list of steps run in order on a *span* of the reply (at first, all of it).
Every step looks for candidates inside the span it is given, then:

- candidates found: the span becomes the ``pick``-th one (``last`` by default, or ``first``);
- none found: ``otherwise: keep`` passes the span on unchanged, ``otherwise: fail`` ends the
  pipeline with no answer. Steps that only *hint* where the answer is (``after_marker``,
  ``boxed``, ``copula``, ``line``) keep by default; steps that *read* an answer (``number``,
  ``letter``, ``square``, ``regex``) fail by default.

A step never looks back: once a hint has narrowed the span, later steps read only inside it.
So a marker whose line holds no answer ("The answer is not obvious.") hides an answer written
later without one. Instructions ask for the answer at the end, where the last marker is nearly
always the answer's; in the real replies of ``tests/tasks/fixtures`` retrying without the hint
would have misread one reply and rescued none.

The final span, stripped, is the raw answer; an empty span is no answer. The answer kind then
turns it into a canonical answer (:mod:`societies.tasks.kinds`). The steps:

``after_marker``
    The text after an answer marker: ``answer:``, ``answer is``, ``answer would be``,
    ``final answer`` (any case), up to the end of its line, or the next non-blank line when
    the marker ends its line; or the content of a ``\\boxed{...}``. A marker followed by a
    ``<placeholder>`` is the instruction echoed back, not an answer, and is ignored. A marker
    with nothing after it gives an empty span: the reply announced an answer and stopped.
``boxed``
    The content of ``\\boxed{...}`` or ``\\fbox{...}``.
``copula``
    In the last statement (not a question, as for ``line``) of the form "X is Y" (also are,
    was, were), the side that answers: Y, unless X shares fewer words with the question than
    Y does ("Paris is the capital of France" answers with Paris). Leading hedges ("indeed",
    "actually") are dropped. A span right after an answer marker is left whole: there the
    reply said what its answer is, so "Answer: what is left" answers "what is left".
``line``
    A non-blank line, except a question (one ending in "?", or opening with a question word
    such as "What" or "Is", also after a speaker's name: "Assistant: What is the largest"),
    unless the span follows an answer marker.
``number``
    A number that can be an answer (:func:`societies.tasks.numeric.answer_numbers`): not an
    operand of an unevaluated expression, a list label or part of a word.
``letter``
    A choice letter written ``(X)`` with X one of the question's letters (``(X)`` labels that
    start three or more lines are an echoed list of options and do not count); failing that,
    when the span starts right after an answer marker, a capital letter standing alone there
    ("The answer is B, because").
``square``
    A chess square (``e4``, also inside ``Nf3``, ``exd5``, ``e2e4``), except one right after
    "on" or "from": that is where a piece stands, not where it goes.
``regex``
    Your pattern (``{regex: "ANS=(\\\\w+)"}``), searched in the span (``^`` and ``$`` are its
    ends); the span becomes capture group ``group`` (default 1) of a match.

Shorthands: ``last_number`` is ``{step: number, pick: last}``, likewise ``first_number``,
``last_letter``, ``first_letter``, ``last_square``, ``first_square``, ``last_line``,
``first_line``.

>>> steps = (step("after_marker"), step("last_number"))
>>> run(steps, "Here's your answer: 8 + 8 = 16")
'16'
>>> run(steps, "The answer to your question is 28.")
'28'
>>> run((step("after_marker"), step("last_letter", otherwise="keep")), "The answer is B, as")
'B'
>>> run((step("copula"), step("last_line")), "The capital city of France is Paris.\\n\\nBye")
'Paris'
>>> run((StepSpec(regex=r"ANS=(\\w+)"),), "ANS=x then ANS=yes")
'yes'
>>> run((step("last_number"),), "no number here") is None
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from societies.tasks.kinds import Context
from societies.tasks.numeric import answer_numbers

Pick = Literal["first", "last"]
Otherwise = Literal["keep", "fail"]
STEPS = ("after_marker", "boxed", "copula", "line", "number", "letter", "square", "regex")
SHORTHANDS = {f"{pick}_{name}": (name, pick) for name in ("number", "letter", "square", "line")
              for pick in ("first", "last")}
_KEEPS = {"after_marker", "boxed", "copula", "line"}

_MARKER = re.compile(
    # A bare "final answer" is a marker only when something other than the sentence's end
    # follows ("... left with the final answer." announces nothing).
    r"\bfinal\s+answer\b(?!\s*[.,;!?)])(?:\s*(?:is\b|would\s+be\b|will\s+be\b|[:=]))?\s*:?"
    # "Your answer is correct" judges an answer, it does not give one (debate rounds say it).
    r"|\banswer(?:\s+(?:is|would\s+be|will\s+be|should\s+be)\b(?!\s+(?:not\s+)?(?:correct|"
    r"incorrect|right|wrong|accurate|inaccurate)\b)\s*:?|\s*[:=])",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"[\s*\"'`]*<[^<>\n]{1,40}>")
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_PAREN_LETTER = re.compile(r"\(\s*([A-Za-z])\s*\)")
_LEAD_LETTER = re.compile(
    r"[\s*_\"'`]*(?:(?:actually|indeed|clearly|definitely|option|choice|letter)\s+)*"
    r"([A-Z])(?![A-Za-z0-9])"
)
_SQUARE = re.compile(r"(?<![a-z0-9])(?:[kqrbnp]x?|[a-h][1-8]?[-x]?)?([a-h][1-8])(?![0-9])",
                     re.IGNORECASE)
_ORIGIN = re.compile(r"\b(?:on|from)\s*$", re.IGNORECASE)
_COPULA = re.compile(r"\b(?:is|are|was|were)\b", re.IGNORECASE)
_QUESTION = re.compile(
    r"^\W*(?:[A-Za-z]+:\s*)?"  # a speaker's name ("Assistant: What is ...")
    r"(?:what|which|who|whom|whose|where|when|why|how|is|are|was|were|do|does|did|can|could|"
    r"would|should)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?](?=[^\s.!?]))+[.!?]*")
_HEDGE = re.compile(
    r"(?:\s*(?:indeed|actually|definitely|certainly|clearly|probably|likely|obviously|"
    r"undoubtedly|simply|just|also|still|now|called|known\s+as)\b,?)+\s*",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Span:
    """A part of the reply: ``reply[start:end]``; ``marked`` if it starts after a marker."""

    start: int
    end: int
    marked: bool = False


@dataclass(frozen=True)
class StepSpec:
    """One configured step (see the module docstring); exactly one of ``name``/``regex``."""

    name: str = "regex"
    pick: Pick = "last"
    otherwise: Otherwise = "fail"
    regex: str | None = None
    group: int = 1


def step(name: str, pick: Pick | None = None, otherwise: Otherwise | None = None) -> StepSpec:
    """A named step or shorthand with its defaults (``step("last_number")``)."""
    base, default_pick = SHORTHANDS.get(name, (name, "last"))
    if base not in STEPS or base == "regex":
        raise ValueError(f"unknown step {name!r}")
    keep: Otherwise = "keep" if base in _KEEPS else "fail"
    return StepSpec(base, pick or default_pick, otherwise or keep)  # type: ignore[arg-type]


def _trimmed(text: str, start: int, end: int, marked: bool = False) -> Span:
    """The span without surrounding white space."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end, marked)


def _after_markers(text: str, span: Span) -> list[Span]:
    found: list[tuple[int, Span]] = []
    for match in _MARKER.finditer(text, span.start, span.end):
        if _PLACEHOLDER.match(text, match.end(), span.end):
            continue
        end = text.find("\n", match.end(), span.end)
        end = span.end if end < 0 else end
        rest = _trimmed(text, match.end(), end, marked=True)
        if not text[rest.start : rest.end].strip(" *_`\"'"):
            following = [line for line in _lines(text, Span(end, span.end))]
            rest = following[0] if following else Span(span.end, span.end)
            rest = Span(rest.start, rest.end, marked=True)
        found.append((match.start(), rest))
    found.extend((box.start, Span(box.start, box.end, marked=True))
                 for box in _boxes(text, span))
    return [s for _, s in sorted(found, key=lambda item: item[0])]


def _boxes(text: str, span: Span) -> list[Span]:
    out: list[Span] = []
    for match in _BOX.finditer(text, span.start, span.end):
        depth = 1
        for i in range(match.end(), span.end):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                out.append(_trimmed(text, match.end(), i))
                break
    return out


def _lines(text: str, span: Span, statements: bool = False) -> list[Span]:
    """The non-blank lines of a span; with ``statements``, not those that ask a question."""
    out, start = [], span.start
    for piece in text[span.start : span.end].split("\n"):
        asks = piece.rstrip().endswith("?") or _QUESTION.match(piece.strip())
        if piece.strip() and not (statements and asks):
            out.append(_trimmed(text, start, start + len(piece), span.marked))
        start += len(piece) + 1
    return out


def _letters(text: str, span: Span, context: Context) -> list[Span]:
    found = [m for m in _PAREN_LETTER.finditer(text, span.start, span.end)
             if m.group(1).upper() in context.letters]
    at_line_start = [m for m in found if not text[text.rfind("\n", 0, m.start()) + 1 :
                                                  m.start()].strip(" \t*_#>-")]
    if len({m.group(1).upper() for m in at_line_start}) >= 3:
        found = [m for m in found if m not in at_line_start]
    if found:
        return [Span(m.start(), m.end()) for m in found]
    lead = _LEAD_LETTER.match(text, span.start, span.end) if span.marked else None
    if lead and lead.group(1) in context.letters:
        return [Span(lead.start(1), lead.end(1))]
    return []


def _squares(text: str, span: Span) -> list[Span]:
    return [Span(m.start(1), m.end(1)) for m in _SQUARE.finditer(text, span.start, span.end)
            if not _ORIGIN.search(text, max(0, m.start() - 8), m.start())]


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) > 2}


def _overlap(part: str, asked: set[str]) -> float:
    """The share of a phrase's words that the question also uses (1.0 for no words)."""
    words = _words(part)
    return len(words & asked) / len(words) if words else 1.0


def _copulas(text: str, span: Span, context: Context) -> list[Span]:
    if span.marked:  # the reply said where its answer is: "Answer: X is Y" answers "X is Y"
        return []
    asked = _words(context.question)
    out: list[Span] = []
    for line in _lines(text, span):
        for sentence in _SENTENCE.finditer(text, line.start, line.end):
            said = sentence.group(0)
            if said.rstrip().endswith("?") or _QUESTION.match(said):
                continue
            verbs = list(_COPULA.finditer(said))
            if not verbs:
                continue
            start = sentence.start()
            hedge = _HEDGE.match(said, verbs[-1].end())
            right = (start + (hedge.end() if hedge else verbs[-1].end()), sentence.end())
            left = (start, start + verbs[-1].start())
            said_left, said_right = text[left[0] : left[1]], text[right[0] : right[1]]
            side = right
            if asked and said_left.strip() and (
                _overlap(said_right, asked) > _overlap(said_left, asked)
            ):
                side = left
            found = _trimmed(text, *side)
            while found.end > found.start and text[found.end - 1] in ".!?,;:":
                found = _trimmed(text, found.start, found.end - 1)
            if found.end > found.start:
                out.append(found)
    return out


def candidates(spec: StepSpec, text: str, span: Span, context: Context) -> list[Span]:
    """Every candidate span one step finds inside ``span``, in reply order."""
    if spec.regex is not None:
        # On the span's own text, so that ^ and $ anchor at its ends.
        base = span.start
        return [Span(base + m.start(spec.group), base + m.end(spec.group))
                for m in re.finditer(spec.regex, text[span.start : span.end])
                if m.start(spec.group) >= 0]
    finders = {
        "after_marker": lambda: _after_markers(text, span),
        "boxed": lambda: [Span(s.start, s.end, True) for s in _boxes(text, span)],
        "copula": lambda: _copulas(text, span, context),
        "line": lambda: _lines(text, span, statements=not span.marked),
        "number": lambda: [Span(*m.span()) for m in answer_numbers(text[: span.end])
                           if m.start() >= span.start],
        "letter": lambda: _letters(text, span, context),
        "square": lambda: _squares(text, span),
    }
    return finders[spec.name]()


def run_span(steps: tuple[StepSpec, ...], text: str, context: Context) -> Span | None:
    """The span a pipeline narrows ``text`` to; None when a step fails or nothing is left."""
    span = _trimmed(text, 0, len(text))
    for spec in steps:
        found = candidates(spec, text, span, context)
        if found:
            span = found[-1] if spec.pick == "last" else found[0]
        elif spec.otherwise == "fail":
            return None
    return span if span.end > span.start else None


def run(steps: tuple[StepSpec, ...], text: str, context: Context | None = None) -> str | None:
    """The raw answer a pipeline reads in ``text`` (see the module docstring)."""
    span = run_span(steps, text, context or Context())
    return None if span is None else text[span.start : span.end]
