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
}

__all__ = ["TASKS", "Extraction", "Question", "Task", "TaskOptions", "load_task", "validate_task"]


def validate_task(raw: Mapping[str, Any], where: str = "task") -> TaskOptions:
    """Validate a task section; errors name the field path (``task.n``) and what is allowed."""
    name = raw.get("name")
    if name not in TASKS:
        raise ConfigError(f"{where}.name: unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    options_cls: type[TaskOptions] = importlib.import_module(TASKS[name]).Options
    try:
        return options_cls.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError.from_validation(err, where) from None


def load_task(options: TaskOptions) -> Task:
    """Build the task described by validated ``options``."""
    task: Task = importlib.import_module(TASKS[options.name]).create(options)
    return task
