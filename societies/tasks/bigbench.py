"""The ``bigbench`` task: any JSON task of BIG-bench, free text or multiple choice.

Name the file, or a task of the data directory that ``make data`` fills
(:mod:`societies.tasks.bigbench_data`)::

    task: {name: bigbench, task: chess_state_tracking/synthetic_short, n: 50}
    task: {name: bigbench, path: my_task/}          # a directory holding task.json, or the file

Each example becomes one question, in file order; its id is the file's ``name`` and the
example's index (``synthetic_short-1``), so ids do not depend on ``n`` or the seed. ``n``
smaller than the file takes a seeded sample as the ``jsonl`` task does (``random.Random(seed)
.sample``, the rule MachineSoM's scripts are described as using with seed 0 for their 50 chess
examples; we could not check their draw against ours), returned in file order.

What the file says and how it is used:

- the question text is ``task_prefix`` + ``example_input_prefix`` + ``input``, as BIG-bench
  builds a zero-shot prompt (the input prefix defaults to BIG-bench's ``"\\nQ: "``), stripped;
  ``example_output_prefix`` is not added: the answer instruction says where the answer goes;
- ``target`` (a string or a list): free text, every listed target accepted (answer kind
  ``set``, of numbers when every target is a plain number, else of text); when every target
  of the file is a chess square (``e4``) replies are read with the ``square`` step, else with
  ``output_regex`` if the file has one (its last match after an answer marker), else as text;
- ``target_scores`` (choice → score): the choices, in file order, become options ``(A)``,
  ``(B)``, ... after the input, whatever ``append_choices_to_input`` says (agents must see
  them); the gold is the best-scored letter, or all of them when several tie;
- a file whose examples all have ``target_scores`` is multiple choice unless
  ``task.answer.kind: set`` asks for the targets; ``kind: choice`` asks for the choices.

Examples whose targets are all empty strings (four in the whole benchmark) are skipped and
counted in ``skipped``. Anything else the task cannot use is one :class:`ConfigError` naming the
file and the example (``task.json: examples[3] has neither 'target' nor 'target_scores'``).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import model_validator

from societies.errors import ConfigError
from societies.tasks.answers import ANSWER_LINE, AnswerFormat, AnswerOptions, configured
from societies.tasks.answers import default_format as _format
from societies.tasks.base import Question, Task, TaskOptions
from societies.tasks.bigbench_data import resolve
from societies.tasks.extract import StepSpec, step
from societies.tasks.jsonl import CHOICE_LINE, LETTERS
from societies.tasks.kinds import DEFAULT_MAX_WORDS, make_kind
from societies.tasks.mmlu import format_choices
from societies.tasks.numeric import is_plain_number

DEFAULT_INPUT_PREFIX = "\nQ: "  # BIG-bench's, for files that set none
SQUARE_LINE = "End your reply with a last line holding only the destination square, like e4."
_SQUARE = re.compile(r"[a-h][1-8]")
_FLAGS = re.compile(r"^\(\?[aiLmsux]+\)")


class Options(TaskOptions):
    """Options of the ``bigbench`` task: exactly one of ``path`` and ``task``."""

    answer_kinds: ClassVar[tuple[str, ...]] = ("choice", "set")
    path: str | None = None
    task: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Options:
        if (self.path is None) == (self.task is None):
            raise ValueError("give either path (a task.json or its directory) or task (a task "
                             "name in the BIG-bench data directory), not both or neither")
        return self


def task_file(options: Options) -> Path:
    """The ``task.json`` the options name; ConfigError if there is none."""
    if options.task is not None:
        return resolve(options.task)
    path = Path(options.path or "").expanduser()
    if path.is_dir():
        if not (path / "task.json").is_file() and (path / "task.py").is_file():
            raise ConfigError(f"{path}: a programmatic BIG-bench task (task.py, no task.json); "
                              "only JSON tasks can be run")
        path = path / "task.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no such BIG-bench task file")
    return path


def read_file(path: Path) -> dict[str, Any]:
    """The task's JSON object, checked to have a list of examples."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a BIG-bench JSON task (expected an object with "
                          "'examples')")
    if "examples" not in data:
        subtasks = sorted(p.parent.name for p in path.parent.glob("*/task.json"))
        if subtasks:
            more = f", ... ({len(subtasks)} in all)" if len(subtasks) > 4 else ""
            raise ConfigError(f"{path}: no 'examples'; it groups subtasks ("
                              f"{', '.join(subtasks[:4])}{more}): name one of them")
        raise ConfigError(f"{path}: no 'examples' (not a BIG-bench JSON task)")
    if not isinstance(data["examples"], list) or not data["examples"]:
        raise ConfigError(f"{path}: 'examples' must be a non-empty list")
    return data


def _targets(path: Path, i: int, raw: Any) -> list[str]:
    """An example's accepted answers (empty strings dropped)."""
    values = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{path}: examples[{i}].target must be a string or a list of strings")
    return [str(v).strip() for v in values if str(v).strip()]


def _choices(path: Path, i: int, raw: Any) -> tuple[tuple[str, ...], list[str]]:
    """An example's choices and the letter(s) of its best score."""
    if not isinstance(raw, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw.values()
    ):
        raise ConfigError(f"{path}: examples[{i}].target_scores must map each choice to a "
                          "number")
    if not 2 <= len(raw) <= len(LETTERS):
        raise ConfigError(f"{path}: examples[{i}] has {len(raw)} choices; 2 to {len(LETTERS)} "
                          "can be lettered")
    choices = tuple(str(c).strip() for c in raw)
    best = max(raw.values())
    return choices, [LETTERS[k] for k, score in enumerate(raw.values()) if score == best]


class BigbenchTask(Task):
    """The questions of one BIG-bench JSON task.

    Attributes:
        path: the ``task.json`` read.
        multiple_choice: whether questions are asked with lettered choices.
        skipped: examples left out because their targets were all empty.
    """

    name = "bigbench"

    def __init__(self, options: Options) -> None:
        """Read and check the whole file now, so a bad file fails before a run starts."""
        self.options = options
        self.path = task_file(options)
        data = read_file(self.path)
        examples: list[Any] = data["examples"]
        asked = options.answer or AnswerOptions()
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict) or "input" not in ex:
                raise ConfigError(f"{self.path}: examples[{i}] has no 'input'")
            if "target" not in ex and "target_scores" not in ex:
                raise ConfigError(f"{self.path}: examples[{i}] has neither 'target' nor "
                                  "'target_scores'")
        scored = all("target_scores" in ex for ex in examples)
        self.multiple_choice = asked.kind == "choice" or (asked.kind is None and scored)
        field = "target_scores" if self.multiple_choice else "target"
        lacking = next((i for i, ex in enumerate(examples) if field not in ex), None)
        if lacking is not None:
            why = (f"task.answer.kind is {asked.kind}" if asked.kind else
                   "not every example has 'target_scores', so the file is read as free text")
            raise ConfigError(f"{self.path}: examples[{lacking}] has no '{field}' ({why})")
        prefix = str(data.get("task_prefix", "")) + str(
            data.get("example_input_prefix", DEFAULT_INPUT_PREFIX))
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(data.get("name") or self.path.parent.name))
        self.skipped = 0
        self.all_questions: list[Question] = []
        for i, ex in enumerate(examples):
            text = (prefix + str(ex["input"])).strip()
            meta = {"index": i}
            qid = f"{label}-{i}"
            if self.multiple_choice:
                choices, best = _choices(self.path, i, ex["target_scores"])
                self.all_questions.append(Question(qid, format_choices(text, choices),
                                                   best[0] if len(best) == 1 else best,
                                                   choices, meta))
                continue
            targets = _targets(self.path, i, ex["target"])
            if targets:
                self.all_questions.append(Question(qid, text, targets, meta=meta))
            else:
                self.skipped += 1
        if not self.all_questions:
            raise ConfigError(f"{self.path}: no example has a non-empty target")
        self.answer = configured(self._format(data, asked), options.answer)

    def _format(self, data: dict[str, Any], asked: AnswerOptions) -> AnswerFormat:
        """The answer format the file calls for (see the module docstring)."""
        if self.multiple_choice:
            widest = max(len(q.choices) for q in self.all_questions)
            return _format("choice", CHOICE_LINE, "({answer})", letters=LETTERS[:widest])
        targets = [t for q in self.all_questions for t in q.gold]
        numeric = all(is_plain_number(t) for t in targets)
        of = asked.of or ("number" if numeric else "text")
        kind = make_kind("set", of, max(DEFAULT_MAX_WORDS, *(len(t.split()) for t in targets)))
        for q in self.all_questions:
            for j, gold in enumerate(q.gold):
                problem = kind.gold_problem(gold)
                if problem:
                    raise ConfigError(f"{self.path}: examples[{q.meta['index']}].target[{j}] "
                                      f"{gold!r} {problem} (task.answer.of is {of})")
        if of == "text" and all(_SQUARE.fullmatch(t) for t in targets):
            steps: tuple[StepSpec, ...] = (step("after_marker"), step("last_square"))
            return AnswerFormat(kind, steps, SQUARE_LINE, "{answer}")
        regex = str(data.get("output_regex") or "")
        steps = ((step("after_marker"), StepSpec(regex=self._wrapped(regex))) if regex
                 else _format("set", ANSWER_LINE, None, of=of).steps)
        return AnswerFormat(kind, steps, ANSWER_LINE, "Answer: {answer}")

    def _wrapped(self, regex: str) -> str:
        """``output_regex`` as a pattern whose group 1 is the whole match."""
        flags = _FLAGS.match(regex)
        head, body = (flags.group(0), regex[flags.end():]) if flags else ("", regex)
        pattern = f"{head}({body})"
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"{self.path}: output_regex does not compile ({err})") from None
        return pattern

    def questions(self) -> list[Question]:
        """All questions in file order if ``n`` covers the file; else a seeded sample of ``n``,
        drawn with ``random.Random(seed).sample`` and returned in file order."""
        pool = self.all_questions
        if self.options.n >= len(pool):
            return list(pool)
        picked = random.Random(self.options.seed).sample(range(len(pool)), self.options.n)
        return [pool[i] for i in sorted(picked)]


def create(options: TaskOptions) -> BigbenchTask:
    """Build the ``bigbench`` task from validated options (reads the file)."""
    if not isinstance(options, Options):
        options = Options.model_validate(options.model_dump())
    return BigbenchTask(options)
