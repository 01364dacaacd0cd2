"""The ``arithmetic`` task: evaluate ``a+b*c+d-e*f`` for six random integers in 0..29.

This is the arithmetic benchmark of Du et al. (2023), "Improving Factuality and Reasoning in
Language Models through Multiagent Debate": small enough that any error is a reasoning error,
and generated, so there is no data to ship and no contamination.
"""

from __future__ import annotations

import random
import re

from societies.tasks.base import Question, Task, TaskOptions

LOW, HIGH = 0, 29
TEMPLATE = "{a}+{b}*{c}+{d}-{e}*{f}"

# A number: thousands-grouped ("1,234") or plain digits, optionally with a decimal part. A minus
# (ASCII or the Unicode minus sign) counts as a sign only when it does not follow a digit, a
# letter or a closing bracket, so "27-3" reads as 27 and 3, not 27 and -3.
_NUMBER = re.compile(
    r"(?<![\w.])(?:(?<![\w)\]])([-\u2212]))?"
    r"(\d{1,3}(?:,\d{3})+(?![\d,]\d)|\d+)"
    r"(?:\.(\d+))?"
)


def expression(numbers: tuple[int, ...]) -> str:
    """The expression for six numbers, in the benchmark's fixed shape ``a+b*c+d-e*f``."""
    a, b, c, d, e, f = numbers
    return TEMPLATE.format(a=a, b=b, c=c, d=d, e=e, f=f)


def evaluate(numbers: tuple[int, ...]) -> int:
    """The exact value of :func:`expression` for ``numbers`` (no ``eval``)."""
    a, b, c, d, e, f = numbers
    return a + b * c + d - e * f


def parse_integer(reply: str) -> str | None:
    """The last number in a reply as a normalised integer string; None if there is none.

    Accepts a leading minus and thousands commas (``"-1,234"`` gives ``"-1234"``). A final
    number with a zero fractional part (``"24.0"``) is read as the integer; one with a non-zero
    fractional part is returned as written (``"3.5"``), which is then simply wrong, rather than
    reading only its digits after the point.

    Args:
        reply: free text from a model.

    Returns:
        The number as a string, or None.
    """
    matches = list(_NUMBER.finditer(reply))
    if not matches:
        return None
    sign, digits, fraction = matches[-1].groups()
    whole = str(int(digits.replace(",", "")))
    minus = "-" if sign else ""
    if fraction and fraction.strip("0"):
        return f"{minus}{whole}.{fraction.rstrip('0')}"
    # int() turns "-0" into "0"; the sign of zero is not an answer.
    return str(int(minus + whole))


class Options(TaskOptions):
    """Options of the ``arithmetic`` task (only the common ``n`` and ``seed``)."""


class ArithmeticTask(Task):
    """Generated arithmetic questions; question ``i`` depends only on ``seed`` and ``i``."""

    name = "arithmetic"
    answer_form = "End your reply with the final result written as a single integer."

    def __init__(self, options: Options) -> None:
        """Keep the options; questions are generated on demand (cheaply)."""
        self.options = options

    def questions(self) -> list[Question]:
        """``n`` questions drawn in sequence from ``random.Random(seed)``.

        Drawing in sequence means a larger ``n`` extends the list for the same seed. Ids carry
        the seed so that records from runs with different seeds never share a question id.
        """
        rng = random.Random(self.options.seed)
        out: list[Question] = []
        for index in range(self.options.n):
            numbers = tuple(rng.randint(LOW, HIGH) for _ in range(6))
            expr = expression(numbers)
            out.append(
                Question(
                    id=f"arithmetic-{self.options.seed}-{index}",
                    text=(
                        f"Work out the value of {expr}. Use the standard order of operations: "
                        "multiplication comes before addition and subtraction."
                    ),
                    gold=str(evaluate(numbers)),
                    meta={"expression": expr, "numbers": list(numbers)},
                )
            )
        return out

    def parse(self, reply: str) -> str | None:
        """The last integer in a reply; see :func:`parse_integer`."""
        return parse_integer(reply)


def create(options: TaskOptions) -> ArithmeticTask:
    """Build the ``arithmetic`` task from validated options."""
    if not isinstance(options, Options):
        options = Options.model_validate(options.model_dump())
    return ArithmeticTask(options)
