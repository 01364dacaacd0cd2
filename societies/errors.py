"""Errors that reach the user as one line and exit status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: config, files, model paths. Printed as one line, exit 2.

    The message names *what* is wrong and *where* (field path, ``file:line`` or model path).
    """

    exit_code = 2


class ConfigError(UserError):
    """An experiment config that does not validate."""


class MissingDependency(UserError):
    """An optional dependency is needed for the feature asked for."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the optional dependency {module!r}: "
            f"pip install 'societies[{extra}]'"
        )
