"""The ``math`` answer kind: expressions compared with sympy, as MATH-style answers need.

A span is read in four stages:

1. Presentation goes: ``$``, ``\\(``/``\\)``, ``\\boxed{}``, ``\\left``/``\\right``, spacing
   commands, ``^\\circ`` and ``\\%``; ``\\text{...}`` next to a value is a unit and goes too
   (``5\\text{ cm}`` is 5). An equation keeps its right-hand side (``x = 3`` is 3).
2. LaTeX becomes sympy syntax: ``\\frac{a}{b}``, ``\\sqrt[n]{x}``, ``\\cdot``, ``\\times``,
   ``\\pi``, ``\\infty``, braces, ``^``. Any other command, a name that is not a known function
   or single-letter variable, or a span over 160 characters, stops here.
3. sympy parses it without evaluating, and the tree is checked to be small: at most 200 nodes,
   no numeric power of more than 1000 digits (``2^(3^40)`` is refused before it is computed),
   no exponent over 1000. Only then is it evaluated, with floats made exact
   rationals (``0.5`` is ``1/2``).
4. The canonical answer is sympy's string of the evaluated expression (``sqrt(2)/2``, ``1/2``,
   ``2*x + 1``); sympy's automatic simplification gives many equal values the same string.

Whatever fails on the way falls back to the ``text`` kind's normalisation, so an answer such
as ``\\text{Monday}`` is compared as text. Two answers are equivalent when their canonical
strings are equal, or both are sympy expressions whose difference is zero: numerically (to
1e-9 relative) for numbers, and at three fixed points of the free variables otherwise (a test
that never hangs, unlike ``simplify``).

sympy is imported on first use, since importing it takes about a second.

>>> [canonical_math(s) for s in (r"\\frac{1}{2}", "0.5", "1/2", r"$\\boxed{\\dfrac12}$")]
['1/2', '1/2', '1/2', '1/2']
>>> canonical_math(r"2\\sqrt{3}"), canonical_math("x = 3"), canonical_math(r"\\text{Monday}")
('2*sqrt(3)', '3', 'monday')
>>> equivalent_math("(x+1)^2", "x^2 + 2x + 1"), equivalent_math(r"\\frac{\\pi}{2}", "1.5708")
(True, False)
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from typing import Any

from societies.tasks.kinds import normalise_text, strip_decoration

MAX_CHARS = 160
MAX_NODES = 200
MAX_POWER = 1000  # digits of a numeric power, or the exponent of a symbolic one
_FUNCTIONS = {"sqrt", "root", "pi", "oo", "sin", "cos", "tan", "log", "ln", "exp", "E", "I"}
# Every letter is a variable except E (Euler's number) and I (the imaginary unit).
_VARIABLES = "abcdefghijklmnopqrstuvwxyzABCDFGHJKLMNOPQRSTUVWXYZ"
_SIMPLE = {
    r"\left": "", r"\right": "", r"\displaystyle": "", r"\!": "", r"\,": " ", r"\;": " ",
    r"\:": " ", r"\ ": " ", r"\cdot": "*", r"\times": "*", r"\div": "/", r"\pi": " pi ",
    r"\infty": " oo ", r"\%": "", r"\$": "", "%": "", "$": "", r"\dfrac": r"\frac",
    r"\tfrac": r"\frac", r"\(": "", r"\)": "", r"\[": "", r"\]": "", r"\ln": " log ",
    r"\log": " log ", r"\sin": " sin ", r"\cos": " cos ", r"\tan": " tan ", r"\exp": " exp ",
    "−": "-", "~": " ",
}


class _Unreadable(ValueError):
    """The span is not a (small enough) expression; fall back to text."""


def _group(text: str, start: int) -> tuple[str, int]:
    """The braced group (or single character) at ``start``, and the index after it."""
    while start < len(text) and text[start] == " ":
        start += 1
    if start >= len(text):
        raise _Unreadable("missing argument")
    if text[start] != "{":
        return text[start], start + 1
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i], i + 1
    raise _Unreadable("unbalanced braces")


def _unwrap(text: str, command: str, keep: bool) -> str:
    """Replace every ``\\command{x}`` by ``x`` (``keep``) or by nothing."""
    while (at := text.find(command + "{")) >= 0:
        inner, end = _group(text, at + len(command))
        text = text[:at] + (inner if keep else " ") + text[end:]
    return text


def _latex_to_sympy(text: str) -> str:
    """Stage 1 and 2 of the module docstring: sympy syntax, or _Unreadable."""
    text = _unwrap(text, r"\boxed", keep=True)
    for command in (r"\text", r"\textbf", r"\mathrm", r"\mbox", r"\operatorname"):
        units = _unwrap(text, command, keep=False)
        text = units if units.strip(" $") else _unwrap(text, command, keep=True)
    text = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", text)
    for old, new in _SIMPLE.items():
        text = text.replace(old, new)
    text = text.rsplit("=", 1)[-1] if "=" in text else text
    while (at := text.find(r"\frac")) >= 0:
        top, end = _group(text, at + 5)
        bottom, end = _group(text, end)
        text = f"{text[:at]}(({top})/({bottom})){text[end:]}"
    while (at := text.find(r"\sqrt")) >= 0:
        index, end = None, at + 5
        if text[end : end + 1] == "[":
            close = text.index("]", end)
            index, end = text[end + 1 : close], close + 1
        body, end = _group(text, end)
        call = f"root({body}, {index})" if index else f"sqrt({body})"
        text = f"{text[:at]}{call}{text[end:]}"
    if "\\" in text:
        raise _Unreadable("unknown LaTeX command")
    text = strip_decoration(text.replace("{", "(").replace("}", ")").replace("^", "**"))
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")  # thousands, not a tuple
    if (not re.fullmatch(r"[0-9A-Za-z+\-*/().,\s]*", text) or not text.strip()
            or re.search(r"\.(?!\d)", text)):
        raise _Unreadable("characters outside an expression")
    # Words: known functions stay; a run of up to three letters is a product of variables.
    def words(match: re.Match[str]) -> str:
        word = match.group(0)
        if word in _FUNCTIONS or len(word) == 1:
            return word
        if len(word) <= 3:
            return "*".join(word)
        raise _Unreadable(f"unknown name {word!r}")

    return re.sub(r"[A-Za-z]+", words, text)


@functools.lru_cache(maxsize=1)
def _sympy() -> Any:
    import sympy
    from sympy.parsing import sympy_parser

    return sympy, sympy_parser


def _parse(text: str, evaluate: bool) -> Any:
    # Safe to hand to parse_expr (which evaluates Python): _latex_to_sympy let through only
    # digits, operators, brackets, known function names and single-letter variables.
    sympy, parser = _sympy()
    transformations = (*parser.standard_transformations,
                       parser.implicit_multiplication_application, parser.rationalize)
    local: dict[str, Any] = {c: sympy.Symbol(c) for c in _VARIABLES}
    local["ln"] = sympy.log
    return parser.parse_expr(text, local_dict=local, transformations=transformations,
                             evaluate=evaluate)


def _check_size(tree: Any) -> None:
    """Refuse trees that are large or whose evaluation could explode (``2^(3^40)``)."""
    sympy, _ = _sympy()
    nodes = list(sympy.postorder_traversal(tree))  # inner exponents are checked first
    if len(nodes) > MAX_NODES:
        raise _Unreadable("expression too large")
    for node in nodes:
        if isinstance(node, sympy.Pow) and not node.exp.free_symbols:
            size = abs(complex(node.exp.evalf(15)))
            if not node.base.free_symbols:  # evaluated exactly: bound the digits it makes
                size *= math.log10(max(2.0, abs(complex(node.base.evalf(15)))))
            if not size <= MAX_POWER:
                raise _Unreadable("power too large")


@functools.lru_cache(maxsize=4096)
def _expression(text: str) -> Any:
    """The evaluated sympy expression of a span; raises _Unreadable."""
    if len(text) > MAX_CHARS:
        raise _Unreadable("too long")
    source = _latex_to_sympy(text)
    try:
        with warnings.catch_warnings():  # odd input makes sympy warn about deprecated forms
            warnings.simplefilter("ignore")
            _check_size(_parse(source, evaluate=False))
            return _parse(source, evaluate=True)
    except _Unreadable:
        raise
    except Exception as err:  # sympy raises many kinds of error on odd input
        raise _Unreadable(str(err)) from None


def canonical_math(raw: str) -> str | None:
    """The canonical string of a math answer (module docstring); None for an empty span."""
    try:
        return str(_expression(strip_decoration(raw)))
    except _Unreadable:
        return normalise_text(_as_text(raw)) or None


def _as_text(raw: str) -> str:
    """A span that is not an expression, without its LaTeX wrappers (``\\text{Monday}``)."""
    try:
        for command in (r"\boxed", r"\text", r"\textbf", r"\mathrm", r"\mbox"):
            raw = _unwrap(raw, command, keep=True)
    except _Unreadable:
        pass
    return raw.replace("$", " ")


def equivalent_math(answer: str, gold: str) -> bool:
    """Whether two math answers are equal (module docstring)."""
    left, right = canonical_math(answer), canonical_math(gold)
    if left is None or right is None:
        return False
    if left == right:
        return True
    try:
        a, b = _expression(left), _expression(strip_decoration(gold))
        sympy, _ = _sympy()
        difference = a - b
        symbols = sorted(difference.free_symbols, key=str)
        points = [{s: sympy.Rational(3 + 2 * i + k, 7 + i) for k, s in enumerate(symbols)}
                  for i in range(3 if symbols else 1)]
        scale = max(1.0, abs(complex(b.evalf(30, subs=points[0]))))
        return all(abs(complex(difference.evalf(30, subs=p))) <= 1e-9 * scale for p in points)
    except (_Unreadable, TypeError, ValueError, ArithmeticError):
        return False
