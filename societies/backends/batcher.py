"""Gather concurrent requests into batches and run them one batch at a time.

A local model answers a batch of prompts nearly as fast as one prompt, so when many agents of a
society ask the same model at once, it pays to queue their calls for a few milliseconds and run
them together. :class:`Batcher` is that queue, independent of any model library.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from societies.backends.base import BackendError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Entry(Generic[T, R]):
    request: T
    key: Hashable
    future: asyncio.Future[R]
    queued_at: float


class Batcher(Generic[T, R]):
    """A queue that runs requests in batches of compatible ones.

    Only requests submitted with equal ``key`` share a batch. A batch starts when it is full or
    ``wait_s`` after its oldest request arrived; batches run one at a time, oldest first, so
    while one runs, the next fills up.

    Args:
        run: runs one batch; returns one result per request, in order, where an exception
            instance fails only that request. If ``run`` itself raises, the whole batch fails.
        max_batch_size: the most requests in one batch.
        wait_s: how long the oldest request waits for company before its batch starts.

    Attributes:
        batch_sizes: the size of every batch run so far, in order (for tests and metrics).
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch_size: int,
        wait_s: float,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._run = run
        self.max_batch_size = max_batch_size
        self.wait_s = max(0.0, wait_s)
        self.batch_sizes: list[int] = []
        self._pending: list[_Entry[T, R]] = []
        self._running: list[_Entry[T, R]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, request: T, key: Hashable) -> R:
        """Queue ``request`` and wait for its own result."""
        loop = asyncio.get_running_loop()
        # A backend outlives event loops (one asyncio.run per test or CLI command): start a
        # fresh worker in each loop; futures of a finished loop can never be awaited anyway.
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._pending, self._running = loop, [], []
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._worker())
        assert self._wakeup is not None
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(_Entry(request, key, future, loop.time()))
        self._wakeup.set()
        return await future

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            # Callers that gave up (cancelled) leave done futures behind: drop them.
            self._pending = [e for e in self._pending if not e.future.done()]
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            first = self._pending[0]
            deadline = first.queued_at + self.wait_s
            while self._count(first.key) < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            batch = [e for e in self._pending if e.key == first.key and not e.future.done()]
            batch = batch[: self.max_batch_size]
            taken = {id(e) for e in batch}
            self._pending = [e for e in self._pending if id(e) not in taken]
            if batch:
                await self._run_batch(batch)

    def _count(self, key: Hashable) -> int:
        return sum(1 for e in self._pending if e.key == key and not e.future.done())

    async def _run_batch(self, batch: list[_Entry[T, R]]) -> None:
        self.batch_sizes.append(len(batch))
        self._running = batch
        try:
            results: Sequence[R | BaseException] = await self._run([e.request for e in batch])
            if len(results) != len(batch):
                raise BackendError(f"batch of {len(batch)} gave {len(results)} results")
        except Exception as err:
            results = [err] * len(batch)
        # Left in place on cancellation, so that aclose() can fail these callers.
        self._running = []
        for entry, result in zip(batch, results, strict=True):
            if entry.future.done():
                continue
            if isinstance(result, BaseException):
                entry.future.set_exception(result)
            else:
                entry.future.set_result(result)

    async def aclose(self) -> None:
        """Stop the worker; requests still queued or running fail with :class:`BackendError`."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            # A worker of an earlier, closed loop cannot be cancelled or awaited: just drop it.
            with contextlib.suppress(RuntimeError):
                task.cancel()
            if self._loop is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for entry in [*self._pending, *self._running]:
            if not entry.future.done():
                entry.future.set_exception(BackendError("backend closed"))
        self._pending, self._running = [], []
