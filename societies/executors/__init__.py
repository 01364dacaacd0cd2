"""Executors: where a run's jobs (one society × repeat × question each) are worked on.

``run.executor`` (or ``societies run --executor``) names one:

* ``local``: this process's event loop, ``run.questions`` jobs at a time (the default);
* ``ray``: each job a Ray task on a local Ray instance or a cluster (``pip install
  'societies[ray]'``); see :mod:`societies.executors.ray`.

The contract is small: :meth:`Executor.run` takes the jobs and calls ``done(job, records)``
in the driver as each job finishes, in any order; the runner alone writes the run directory
(in job order, through its reorder buffer), so records, resume, reports and the call cache do
not depend on the executor, and a run may be resumed on another one. Modules are imported on
first use, so Ray is needed only when asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from societies.errors import ConfigError

if TYPE_CHECKING:
    from societies.records import UnitRecord
    from societies.runner import Job, Run

EXECUTORS: dict[str, str] = {
    "local": "societies.executors.local",
    "ray": "societies.executors.ray",
}

Done = Callable[["Job", "list[UnitRecord]"], None]
"""Called in the driver with each finished job and its records (one per strategy)."""


class Executor(Protocol):
    """Runs jobs and reports each one finished; built per run by its module's ``create``."""

    async def run(self, jobs: Sequence[Job], done: Done) -> None:
        """Run every job, calling ``done`` as each finishes; return when all have.

        On an error or cancellation, jobs not yet reported are abandoned (their units are
        simply not recorded, and a resume redoes them); the error is raised.
        """
        ...

    async def aclose(self) -> None:
        """Release what the executor holds (a Ray connection it opened)."""
        ...


def _module(name: str) -> object:
    if name not in EXECUTORS:
        raise ConfigError(f"run.executor: unknown executor {name!r}; "
                          f"known: {', '.join(sorted(EXECUTORS))}")
    return importlib.import_module(EXECUTORS[name])


def check_executor(name: str) -> None:
    """Raise a one-line UserError now if executor ``name`` cannot run (e.g. Ray missing).

    >>> check_executor("local")
    >>> check_executor("slurm")
    Traceback (most recent call last):
    ...
    societies.errors.ConfigError: run.executor: unknown executor 'slurm'; known: local, ray
    """
    check = getattr(_module(name), "check", None)
    if check is not None:
        check()


def make_executor(name: str, run: Run) -> Executor:
    """The executor ``name`` for ``run`` (a prepared :class:`~societies.runner.Run`)."""
    executor: Executor = _module(name).create(run)  # type: ignore[attr-defined]
    return executor
