"""One `societies run`: expand the plan into questions, run them concurrently, record in order.

Questions run on an executor (``run.executor``): this process's event loop, or Ray tasks (see
:mod:`societies.executors`). Either way only this process writes the run directory. Records
are written in a deterministic order (society, repeat, question; strategies in config order)
through a reorder buffer: a finished question waits only for earlier questions. On an
interrupt, whatever finished is flushed first, so a re-run resumes without loss or duplicates,
on the same executor or the other one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from societies.backends.cache import CallCache
from societies.backends.model import Model, RetryPolicy
from societies.backends.registry import BackendPool
from societies.executors import check_executor, make_executor
from societies.ledger import build_ledger
from societies.metrics import Summary, summarize
from societies.plan import Plan, SocietyPlan
from societies.provenance import Provenance, provenance
from societies.records import UnitRecord, unit_id
from societies.storage import RunStore
from societies.strategies import Strategy
from societies.tasks import Question, Task, load_task

ModelFactory = Callable[[BackendPool, str], Model]


@dataclass(frozen=True)
class Job:
    """One question for one society in one repeat, with the strategies still to run.

    The unit of work of every executor: its strategies share their common rounds' replies.
    """

    index: int
    society: SocietyPlan
    repeat: int
    question: Question
    strategies: tuple[Strategy, ...]


def open_models(plan: Plan, factory: ModelFactory | None, retry: RetryPolicy,
                cache: CallCache | None) -> tuple[BackendPool, dict[str, Model]]:
    """Every model ``plan`` calls, built by ``factory`` or, by default, as the pool's shared
    backend with retries and the call cache. (Ray workers build theirs the same way.)"""
    pool = BackendPool(plan.models)
    make = factory or (lambda pool, name: Model(pool.chat(name), name, retry=retry, cache=cache))
    return pool, {name: make(pool, name) for name in plan.model_names()}


class _Reorder:
    """Appends finished jobs' records to the store in job order, whatever order they end in."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.finished: dict[int, list[UnitRecord]] = {}
        self.next_index = 0

    def add(self, index: int, records: list[UnitRecord]) -> None:
        """Hold job ``index``'s records and write every record now in order."""
        self.finished[index] = records
        while self.next_index in self.finished:
            self.store.append(self.finished.pop(self.next_index))
            self.next_index += 1

    def flush_all(self) -> None:
        """Interrupted: keep finished work even if out of order (resume skips it)."""
        for index in sorted(self.finished):
            self.store.append(self.finished.pop(index))


def summarize_run(plan: Plan, store: RunStore) -> Summary:
    """Per-round metrics plus the token ledger (priced with the config's ``run.prices``).

    Records are streamed twice (metrics, then ledger), so memory does not grow with the run.
    """
    summary = summarize(store.iter_records())
    agent_models = {f"{s.name}/{a.name}": a.model for s in plan.societies for a in s.agents}
    summary.ledger = build_ledger(store.iter_records(), agent_models, plan.config.run.prices)
    return summary


class Run:
    """A prepared run: the plan, its task and models, and where records go.

    Building a ``Run`` loads the task and creates backends (resolving model files), so every
    input error surfaces before :meth:`execute` writes anything.

    Args:
        plan: the validated plan.
        store: the run directory.
        limit: run only the first ``limit`` questions (a later run without it continues).
        model_factory: how a model name becomes a :class:`Model` (tests inject wrappers);
            the default wraps the pool's shared backend with retries and the call cache.
            With ``run.executor: ray`` it is pickled to the workers, so it must be a
            module-level function there.
        cache: the call cache; by default the user cache if the config's ``run.cache`` is on.
    """

    def __init__(self, plan: Plan, store: RunStore, limit: int | None = None,
                 model_factory: ModelFactory | None = None,
                 cache: CallCache | None = None) -> None:
        check_executor(plan.config.run.executor)  # ray without its extra: refuse before work
        self.plan = plan
        self.store = store
        self.task: Task = load_task(plan.task)
        self.questions = self.task.questions()[:limit]
        if cache is None and plan.config.run.cache:
            cache = CallCache()
        self.cache = cache
        r = plan.config.run.retry
        self.retry = RetryPolicy(r.attempts, r.base_delay, r.max_delay)
        self.model_factory = model_factory
        self.pool, self.models = open_models(plan, model_factory, self.retry, cache)
        self.provenance: Provenance = provenance(
            plan, self.task, {name: m.backend.identity for name, m in self.models.items()})

    def prepare(self) -> None:
        """Create the run directory, or check that it holds this same experiment (resume)."""
        p = self.provenance
        self.store.prepare(self.plan.config.model_dump(mode="json"), p.identity, p.parts,
                           p.effective)

    def jobs(self, done: set[str],
             groups: Sequence[tuple[SocietyPlan, Sequence[Strategy]]] | None = None,
             start: int = 0) -> list[Job]:
        """Every (society, repeat, question) with at least one unfinished strategy, indexed
        from ``start``; ``groups`` (society, its strategies) defaults to the plan's societies
        with the plan's strategies (baselines pass their own)."""
        if groups is None:
            groups = [(society, self.plan.strategies) for society in self.plan.societies]
        jobs: list[Job] = []
        for society, strategies in groups:
            for repeat in range(self.plan.config.repeats):
                for q in self.questions:
                    todo = tuple(s for s in strategies
                                 if unit_id(society.name, s.label, repeat, q.id) not in done)
                    if todo:
                        jobs.append(Job(start + len(jobs), society, repeat, q, todo))
        return jobs

    @property
    def total_units(self) -> int:
        """Units in the whole run."""
        return (len(self.plan.societies) * self.plan.config.repeats * len(self.questions)
                * len(self.plan.strategies))

    async def check(self) -> None:
        """Ask every backend whether it can serve (e.g. a server is reachable)."""
        for model in self.models.values():
            await model.backend.check()

    async def execute(self, progress: bool = True) -> Summary:
        """Run every unfinished unit, append records in order, and write the summary.

        ``RUN/.running`` marks the directory as being written until this returns or raises,
        so a report can say its figures are partial and a second run is refused.

        Raises:
            UserError: another live process is writing the same run directory.
        """
        with self.store.writing():
            return await self._execute(progress)

    async def _execute(self, progress: bool) -> Summary:
        jobs = self.jobs(self.store.done())
        bar = tqdm(total=self.total_units, initial=self.total_units - sum(
            len(j.strategies) for j in jobs), unit="unit", disable=not progress)
        order = _Reorder(self.store)

        def done(job: Job, records: list[UnitRecord]) -> None:
            order.add(job.index, records)
            bar.update(len(job.strategies))

        executor = make_executor(self.plan.config.run.executor, self)
        try:
            await executor.run(jobs, done)
            if self.plan.config.baselines.enabled:
                # Baselines come after the societies: self-consistency's k is read from the
                # tokens the societies spent (see societies.baselines).
                from societies.baselines import baseline_jobs

                await executor.run(baseline_jobs(self, self.store.done(),
                                                 start=order.next_index), done)
        finally:
            order.flush_all()
            bar.close()
            await executor.aclose()
            await self.pool.aclose()
        summary = summarize_run(self.plan, self.store)
        self.store.write_summary(summary)
        return summary
