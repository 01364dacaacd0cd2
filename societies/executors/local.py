"""The local executor: jobs as asyncio tasks in this process, ``run.questions`` at a time.

Few questions in flight with many calls each keeps what a batched local backend must hold in
memory small (see ``run.questions``); the engine's own limit caps calls at ``run.concurrency``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from societies.engine import Engine
from societies.executors import Done

if TYPE_CHECKING:
    from societies.runner import Job, Run


class LocalExecutor:
    """Works through jobs with ``workers`` asyncio workers sharing one engine.

    Args:
        engine: the run's engine (its models are the run's).
        workers: jobs in progress at once.
    """

    def __init__(self, engine: Engine, workers: int) -> None:
        self.engine = engine
        self.workers = workers

    async def run(self, jobs: Sequence[Job], done: Done) -> None:
        """Run every job; ``done`` is called as each finishes (see the package doc)."""
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)

        async def worker() -> None:
            while not queue.empty():
                job = queue.get_nowait()
                done(job, await self.engine.run_question(
                    job.society, job.strategies, job.question, job.repeat))

        await asyncio.gather(*(worker() for _ in range(self.workers)))

    async def aclose(self) -> None:
        """Nothing to release: the run closes its own models."""


def create(run: Run) -> LocalExecutor:
    """The local executor of ``run``: its engine over its models."""
    cfg = run.plan.config.run
    return LocalExecutor(Engine.from_plan(run.plan, run.task, run.models),
                         cfg.questions or cfg.concurrency)
