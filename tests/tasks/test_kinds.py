"""Answer kinds: canonical strings (equal answers, equal strings) and equivalence with gold."""

from __future__ import annotations

import doctest
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from societies.tasks import answers, extract, kinds, mathexpr, numeric
from societies.tasks.kinds import Choice, Context, Math, Number, Text, make_kind
from societies.tasks.numeric import format_number

NUMBER = Number()
NONE = Context()


@pytest.mark.parametrize("module", [numeric, kinds, extract, answers, mathexpr])
def test_docstring_examples(module: object) -> None:
    failures, tried = doctest.testmod(module)  # type: ignore[arg-type]
    assert tried > 0 and failures == 0


def variants(value: Decimal) -> list[str]:
    """Ways a person or a model writes the same number."""
    plain = format(value, "f")
    sign, digits = ("-", plain[1:]) if plain.startswith("-") else ("", plain)
    whole, _, part = digits.partition(".")
    grouped = f"{int(whole):,}" + (f".{part}" if part else "")
    out = [plain, f"{plain}0" if part else f"{plain}.0", f"{sign}{grouped}", f"**{plain}**",
           f"{sign}${grouped}", f"{plain}%", f"{plain}."]
    if sign:
        out.append(f"\u2212{digits}")
    return out


decimals = st.decimals(min_value=-10**9, max_value=10**9, places=3, allow_nan=False,
                       allow_infinity=False)


@given(decimals)
def test_formatting_variants_of_a_number_are_one_canonical_string(value: Decimal) -> None:
    canonical = {NUMBER.canonical(text, NONE) for text in variants(value)}
    assert canonical == {format_number(Fraction(value))}
    assert all(NUMBER.correct(NUMBER.canonical(text, NONE), str(value)) for text in variants(value))


@given(decimals, decimals)
def test_different_numbers_are_different(a: Decimal, b: Decimal) -> None:
    same = Fraction(a) == Fraction(b)
    assert (NUMBER.canonical(str(a), NONE) == NUMBER.canonical(str(b), NONE)) == same
    # Golds written with three places accept answers within 0.0005 of them only.
    assert NUMBER.correct(format_number(Fraction(a)), format(b, ".3f")) == same


@given(st.fractions(max_denominator=10**6))
def test_canonical_numbers_read_back_to_themselves(value: Fraction) -> None:
    text = format_number(value)
    assert numeric.parse_number(text) == value and NUMBER.canonical(text, NONE) == text


@pytest.mark.parametrize(
    ("answer", "gold", "right"),
    [
        ("16", "16", True), ("16", "16.0", True), ("16.04", "16.0", True), ("16.1", "16.0", False),
        ("16.4", "16", False),  # an integer gold is exact
        ("3.1416", "3.14", True), ("3.145", "3.14", True), ("3.1", "3.14", False),
        ("0.33", "1/3", True), ("0.333", "1/3", True), ("0.3", "1/3", False),
        ("0.34", "1/3", False), ("1/3", "1/3", True), ("0.5", "1/2", True),
        ("1000", "1,000", True), ("-3", "\u22123", True), ("16", "$16", True),
        ("16", "sixteen", False),
    ],
)
def test_number_tolerance(answer: str, gold: str, right: bool) -> None:
    assert NUMBER.correct(answer, gold) is right


def test_choice_letters_and_texts() -> None:
    ctx = Context(letters="ABCD", choices=("Wrong, Wrong", "Wrong, Not wrong",
                                           "Not wrong, Wrong", "Not wrong, Not wrong"))
    choice = Choice()
    assert [choice.canonical(s, ctx) for s in ("C", "(c)", " **B** ", "D)", "Option A",
                                               "B. Wrong, Not wrong")] == [
        "C", "C", "B", "D", "A", "B"]
    assert choice.canonical("not wrong, wrong", ctx) == "C"  # its text, not choice A's inside it
    assert choice.canonical("It is Not wrong, Not wrong.", ctx) == "D"
    assert choice.canonical("wrong or not wrong", ctx) is None
    assert choice.canonical("E", ctx) is None
    assert choice.canonical("A: A is right.\nB: no", ctx) is None  # not one line
    assert choice.canonical("Paris", Context(letters="ABCD")) is None  # choices unknown
    assert choice.correct("B", "B") and choice.correct("b", "(B)") and not choice.correct("A", "B")


def test_text_is_squad_normalised_and_short() -> None:
    text = Text()
    assert text.canonical("The Eiffel Tower!", NONE) == "eiffel tower"
    assert text.canonical("  \u201cParis\u201d ", NONE) == "paris"
    assert text.canonical("A", NONE) == "a"  # an article alone is kept
    assert text.canonical("one two three four five six seven eight nine", NONE) is None
    assert Text(max_words=9).canonical("one two three four five six seven eight nine", NONE)
    assert text.correct("eiffel tower", ["Tour Eiffel", "the Eiffel tower"])
    assert not text.correct("eiffel", "Eiffel Tower")


@given(st.text(max_size=60))
def test_text_canonical_is_idempotent(raw: str) -> None:
    once = Text().canonical(raw, NONE)
    assert once is None or Text().canonical(once, NONE) == once


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("\\frac{1}{2}", "0.5"), ("\\dfrac{1}{2}", "1/2"), ("\\boxed{\\frac12}", "0.50"),
        ("2\\sqrt{3}", "\\sqrt{12}"), ("\\frac{\\sqrt{2}}{2}", "1/\\sqrt{2}"),
        ("3\\pi", "\\pi \\cdot 3"), ("x = 5", "5"), ("10\\%", "10"), ("90^\\circ", "90"),
        ("(x+1)^2", "x^2+2x+1"), ("\\text{Monday}", "monday"), ("1,000", "1000"),
    ],
)
def test_math_equivalence(a: str, b: str) -> None:
    assert Math().correct(Math().canonical(a, NONE), b)


@pytest.mark.parametrize(("a", "b"), [("\\frac{1}{3}", "0.333"), ("x+1", "x+2"),
                                      ("\\sqrt{2}", "1.414"), ("(1, 2)", "(2, 1)")])
def test_math_differences(a: str, b: str) -> None:
    assert not Math().correct(Math().canonical(a, NONE), b)


def test_math_canonical_strings_are_equal_for_equal_numbers() -> None:
    forms = ["\\frac{1}{2}", "0.5", "1/2", "$\\frac12$", "\\boxed{0.50}", "2^{-1}"]
    assert {Math().canonical(f, NONE) for f in forms} == {"1/2"}


@pytest.mark.parametrize("hostile", [
    "2^{3^{40}}", "9^9^9^9", "10^{10^{10}}", "__import__('os').system('true')",
    "x" * 500, "(" * 300 + "1" + ")" * 300, "lambda: 1", "x.__class__",
])
def test_math_refuses_what_it_cannot_bound(hostile: str) -> None:
    # Refused expressions fall back to text quickly instead of hanging or evaluating code.
    answer = Math().canonical(hostile, NONE)
    assert answer is None or "**" not in answer


def test_set_uses_its_element_kind() -> None:
    squares = make_kind("set")
    assert squares.canonical("E4", NONE) == "e4" and squares.correct("e4", ["d4", "e4"])
    numbers = make_kind("set", "number")
    assert numbers.correct("3", ["2", "3.0"]) and not numbers.correct("4", ["2", "3"])
