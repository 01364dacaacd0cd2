"""Tasks by name, imported lazily. A task module provides ``Options`` and ``create(options)``."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from societies.errors import ConfigError
from societies.tasks.base import Extraction, Question, Task, TaskOptions

TASKS: dict[str, str] = {
    "mmlu": "societies.tasks.mmlu",
    "arithmetic": "societies.tasks.arithmetic",
    "chess": "societies.tasks.chess_moves",
    "jsonl": "societies.tasks.jsonl",
    "bigbench": "societies.tasks.bigbench",
}

__all__ = ["TASKS", "Extraction", "Question", "Task", "TaskOptions", "load_task", "validate_task"]


def _config_error(err: ValidationError, where: str) -> ConfigError:
    """One line from pydantic's first error: ``task.answer.extract[0].regex: what is wrong``."""
    first = err.errors()[0]
    path = where
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    message = str(first["msg"]).removeprefix("Value error, ")
    return ConfigError(f"{path}: {message}")


def validate_task(raw: Mapping[str, Any], where: str = "task") -> TaskOptions:
    """Validate a task section; errors name the field path (``task.n``) and what is allowed."""
    name = raw.get("name")
    if name not in TASKS:
        raise ConfigError(f"{where}.name: unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    options_cls: type[TaskOptions] = importlib.import_module(TASKS[name]).Options
    try:
        options = options_cls.model_validate(dict(raw))
    except ValidationError as err:
        raise _config_error(err, where) from None
    if options.answer is not None:
        options.answer.check(options_cls.answer_kinds, options_cls.set_of, str(name),
                             f"{where}.answer")
    return options


def load_task(options: TaskOptions) -> Task:
    """Build the task described by validated ``options``."""
    task: Task = importlib.import_module(TASKS[options.name]).create(options)
    return task
