"""The Ray executor: each job a Ray task, a bounded number in flight, the driver writing alone.

``ray.init`` connects to ``run.ray.address``, else ``$RAY_ADDRESS``, else starts a local Ray
instance on this machine's cores (no dashboard); a Ray already initialised in this process is
used as it is. The plan, the model factory and where the call cache lives are put in Ray's
object store once per run; each worker process builds the run's models and engine from them on
its first job and keeps them for the next ones (a local model is loaded once per process, not
per job). Every job asks for ``run.ray.num_cpus`` CPUs, and at most ``run.ray.in_flight`` are
submitted and not yet collected.

A worker that dies mid-job (killed, out of memory, its node lost) makes Ray run the job again,
up to ``run.ray.max_retries`` times; its records come back once, to the driver, which is the
only writer of the run directory. Errors raised inside a job (an unreachable server: a
``UserError``) reach the driver as themselves.

Workers need this package installed (the same version) and, for an ``openai`` model with
``api_key_env``, that variable set in their environment: the key is never shipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from societies.backends.cache import CallCache
from societies.backends.model import RetryPolicy
from societies.errors import MissingDependency, UserError
from societies.executors import Done

if TYPE_CHECKING:
    from societies.backends.registry import BackendPool
    from societies.engine import Engine
    from societies.plan import Plan
    from societies.records import UnitRecord
    from societies.runner import Job, ModelFactory, Run


class RayJobLost(UserError):
    """A job whose worker died on every try; finished units are kept for a resume."""


def check() -> None:
    """Raise a one-line error naming the extra if Ray is not installed."""
    _ray()


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise MissingDependency("the ray executor", "ray", err.name or "ray") from None
    return ray


@dataclass(frozen=True)
class Recipe:
    """What a worker needs to build a run's engine; ``key`` tells runs apart in a worker."""

    key: str
    plan: Plan
    factory: ModelFactory | None
    retry: RetryPolicy
    cache_path: str | None


@dataclass
class _Bench:
    key: str
    engine: Engine
    pool: BackendPool


# Per worker process: one event loop for its whole life (backends keep sessions and locks per
# loop) and the engine of the run it last worked for.
_LOOP: asyncio.AbstractEventLoop | None = None
_BENCH: _Bench | None = None


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
    return _LOOP


def _engine(recipe: Recipe) -> Engine:
    global _BENCH
    if _BENCH is None or _BENCH.key != recipe.key:
        from societies.engine import Engine
        from societies.runner import open_models
        from societies.tasks import load_task

        if _BENCH is not None:  # a worker reused by a later run: free the earlier models
            _loop().run_until_complete(_BENCH.pool.aclose())
            _BENCH = None
        cache = CallCache(recipe.cache_path) if recipe.cache_path else None
        pool, models = open_models(recipe.plan, recipe.factory, recipe.retry, cache)
        engine = Engine.from_plan(recipe.plan, load_task(recipe.plan.task), models)
        _BENCH = _Bench(recipe.key, engine, pool)
    return _BENCH.engine


def run_job(recipe: Recipe, job: Job) -> list[UnitRecord]:
    """The Ray task: one job on this worker's engine for the run (built on first use)."""
    engine = _engine(recipe)
    return _loop().run_until_complete(
        engine.run_question(job.society, job.strategies, job.question, job.repeat))


class RayExecutor:
    """Submits jobs as Ray tasks and hands their records to the driver as they finish.

    Args:
        run: the prepared run (its plan, model factory, retry policy and call cache).
    """

    def __init__(self, run: Run) -> None:
        self._ray = _ray()
        self.config = run.plan.config.run.ray
        cache = str(run.cache.path) if run.cache is not None else None
        self.recipe = Recipe(uuid.uuid4().hex, run.plan, run.model_factory, run.retry, cache)
        self._started = False
        self._recipe_ref: Any = None
        self._task: Any = None

    def _connect(self) -> None:
        ray = self._ray
        if not ray.is_initialized():
            address = self.config.address or os.environ.get("RAY_ADDRESS")
            try:
                if address:
                    ray.init(address=address)
                else:  # "local": not a cluster a `ray start` left running; no dashboard
                    ray.init(address="local", num_cpus=os.cpu_count() or 1,
                             include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                what = (f"run.ray.address: cannot connect to Ray at {address}" if address
                        else "run.executor: cannot start a local Ray instance")
                raise UserError(f"{what}: {first}") from None
            self._started = True
        if self._task is None:
            self._recipe_ref = ray.put(self.recipe)
            self._task = ray.remote(run_job).options(
                num_cpus=self.config.num_cpus, max_retries=self.config.max_retries)

    async def run(self, jobs: Sequence[Job], done: Done) -> None:
        """Run every job as a Ray task (see the module doc); ``done`` is called in order of
        completion."""
        if not jobs:
            return
        self._connect()
        todo = iter(jobs)
        # Each task's result as an asyncio future (Ray completes it from its own thread): no
        # thread of ours blocks in Ray, so an interrupt is seen at once.
        pending: dict[asyncio.Future[Any], tuple[Any, Job]] = {}
        try:
            while True:
                while len(pending) < self.config.in_flight and (job := next(todo, None)):
                    ref = self._task.remote(self._recipe_ref, job)
                    pending[asyncio.wrap_future(ref.future())] = (ref, job)
                if not pending:
                    return
                ready, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in ready:
                    _, job = pending.pop(future)
                    done(job, self._result(future, job))
        except BaseException:
            for future, (ref, _) in pending.items():  # abandoned: a resume redoes them
                future.cancel()
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
            raise

    def _result(self, future: asyncio.Future[Any], job: Job) -> list[UnitRecord]:
        ray = self._ray
        try:
            records: list[UnitRecord] = future.result()
        except ray.exceptions.RayTaskError as err:  # raised by the job itself: pass it on
            cause = getattr(err, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except ray.exceptions.RayError as err:  # the worker or its node died on every try
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise RayJobLost(
                f"{job.society.name} repeat {job.repeat} question {job.question.id}: its Ray "
                f"worker died ({self.config.max_retries + 1} tries, run.ray.max_retries "
                f"{self.config.max_retries}): {first}; finished units are kept, run the same "
                "command again to resume") from None
        return records

    async def aclose(self) -> None:
        """Shut down the local Ray instance if this executor started it."""
        if self._started:
            self._ray.shutdown()
            self._started = False


def create(run: Run) -> RayExecutor:
    """The Ray executor of ``run``."""
    return RayExecutor(run)
