"""Errors that reach the user as one line and exit status 2."""

from __future__ import annotations

from pydantic import ValidationError


class UserError(Exception):
    """Bad input from the user: config, files, model paths. Printed as one line, exit 2.

    The message names *what* is wrong and *where* (field path, ``file:line`` or model path).
    """

    exit_code = 2


class ConfigError(UserError):
    """An experiment config that does not validate."""

    @classmethod
    def from_validation(cls, err: ValidationError, where: str) -> ConfigError:
        """One line from pydantic's first error, prefixed with the section's field path."""
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return cls(f"{where}.{loc}: {first['msg']}")


class MissingDependency(UserError):
    """An optional dependency is needed for the feature asked for."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the optional dependency {module!r}: "
            f"pip install 'societies[{extra}]'"
        )
