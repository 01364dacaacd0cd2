"""The ``arithmetic`` task: evaluate ``a+b*c+d-e*f`` for six random integers in 0..29.

This is the arithmetic benchmark of Du et al. (2023), "Improving Factuality and Reasoning in
Language Models through Multiagent Debate": small enough that any error is a reasoning error,
and generated, so there is no data to ship and no contamination.

``expression: a+b`` asks for the sum of two integers in ``0..high`` instead ("What is 8 + 3?"):
with ``high: 9`` it is within reach of the bundled 135M-parameter model, so a society of them
has correct answers to keep or lose (the quickstart).
"""

from __future__ import annotations

import random
from typing import ClassVar, Literal

from pydantic import Field

from societies.tasks.answers import configured, default_format
from societies.tasks.base import Question, Task, TaskOptions

LOW, HIGH = 0, 29
TEMPLATE = "{a}+{b}*{c}+{d}-{e}*{f}"

FORMAT = default_format(
    "number", "End your reply with the final result written as a single integer.", "{answer}"
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
    """The answer the default pipeline reads in a reply: the last number stated as a result.

    Reads the text after an answer marker if there is one, then its last number that is not
    an operand of an unevaluated expression (``"10 - 15"`` states no result). Accepts a sign,
    thousands commas and a zero fractional part (``"-1,234"`` gives ``"-1234"``, ``"24.0"``
    gives ``"24"``); a non-integer is kept (``"3.5"``) and is then simply wrong.

    Args:
        reply: free text from a model.

    Returns:
        The canonical number, or None.
    """
    return FORMAT.extract(reply).answer


class Options(TaskOptions):
    """Options of the ``arithmetic`` task; answers are numbers."""

    answer_kinds: ClassVar[tuple[str, ...]] = ("number",)
    expression: Literal["a+b*c+d-e*f", "a+b"] = Field(
        "a+b*c+d-e*f", description="Du et al.'s six-number expression, or a sum of two")
    high: int = Field(HIGH, ge=1, description="numbers are drawn from 0..high")


class ArithmeticTask(Task):
    """Generated arithmetic questions; question ``i`` depends only on ``seed`` and ``i``."""

    name = "arithmetic"

    def __init__(self, options: Options) -> None:
        """Keep the options; questions are generated on demand (cheaply)."""
        self.options = options
        self.answer = configured(FORMAT, options.answer)

    def questions(self) -> list[Question]:
        """``n`` questions drawn in sequence from ``random.Random(seed)``.

        Drawing in sequence means a larger ``n`` extends the list for the same seed. Ids carry
        the seed so that records from runs with different seeds never share a question id.
        """
        if self.options.expression == "a+b":
            return self._sums()
        rng = random.Random(self.options.seed)
        out: list[Question] = []
        for index in range(self.options.n):
            numbers = tuple(rng.randint(LOW, self.options.high) for _ in range(6))
            expr = expression(numbers)
            out.append(
                Question(
                    id=f"arithmetic-{self._tag()}{self.options.seed}-{index}",
                    text=(
                        f"Work out the value of {expr}. Use the standard order of operations: "
                        "multiplication comes before addition and subtraction."
                    ),
                    gold=str(evaluate(numbers)),
                    meta={"expression": expr, "numbers": list(numbers)},
                )
            )
        return out

    def _tag(self) -> str:
        # Ids of the original benchmark stay as they were; other settings get their own.
        o = self.options
        original = (o.expression, o.high) == ("a+b*c+d-e*f", HIGH)
        return "" if original else f"{o.expression}-{o.high}-"

    def _sums(self) -> list[Question]:
        rng = random.Random(self.options.seed)
        out: list[Question] = []
        for index in range(self.options.n):
            a, b = rng.randint(LOW, self.options.high), rng.randint(LOW, self.options.high)
            out.append(Question(id=f"arithmetic-{self._tag()}{self.options.seed}-{index}",
                                text=f"What is {a} + {b}?", gold=str(a + b),
                                meta={"expression": f"{a}+{b}", "numbers": [a, b]}))
        return out


def create(options: TaskOptions) -> ArithmeticTask:
    """Build the ``arithmetic`` task from validated options."""
    if not isinstance(options, Options):
        options = Options.model_validate(options.model_dump())
    return ArithmeticTask(options)
