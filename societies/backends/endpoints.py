"""Several servers for one model: spread calls, cap each server, set a failing one aside.

The ``openai`` backend takes ``base_url`` as a list when the same model is served by several
servers (vLLM replicas on other machines, llama.cpp servers on other ports). Each call goes to
the server with the fewest calls in flight (ties taken in turn), and no server gets more than
``max_concurrent`` at once. A server whose last ``failures`` calls all failed in transport (no
connection, dropped reply, timeout) or with a 5xx is set aside for ``cooldown`` seconds; after
that it is tried again, and one more failure sets it aside again. When every server is set
aside, the call raises :class:`TransientBackendError` with the time until the first comes back,
so the usual retry and backoff apply and a call that still finds none fails as usual.

Everything here belongs to one event loop (the condition variable does): the backend keeps one
pool per loop, as it does its HTTP session.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from societies.backends.base import TransientBackendError

log = logging.getLogger(__name__)


@dataclass
class Endpoint:
    """One server's state: calls in flight, consecutive failures, when it may be used again."""

    url: str
    in_flight: int = 0
    failures: int = 0
    aside_until: float = 0.0  # monotonic time; set aside while now < aside_until
    calls: int = 0  # calls sent, for tests and benchmarks
    set_aside: int = 0  # how many times it was set aside


class EndpointPool:
    """Chooses a server for each call and tracks each server's health.

    Args:
        urls: the servers' API roots, in config order.
        limit: most calls in flight per server.
        failures: consecutive failed calls that set a server aside.
        cooldown: seconds a server stays aside.
        clock: monotonic time source (tests may pass a fake one).

    Example:
        >>> import asyncio
        >>> pool = EndpointPool(["http://a/v1", "http://b/v1"], limit=1)
        >>> async def two() -> list[str]:
        ...     async with pool.use() as a, pool.use() as b:
        ...         return [a.url, b.url]
        >>> asyncio.run(two())
        ['http://a/v1', 'http://b/v1']
    """

    def __init__(self, urls: Sequence[str], limit: int, failures: int = 3,
                 cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("an endpoint pool needs at least one URL")
        self.endpoints = [Endpoint(u) for u in urls]
        self.limit, self.failures, self.cooldown = limit, failures, cooldown
        self._clock = clock
        self._turn = itertools.count()
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def available(self) -> list[Endpoint]:
        """Servers not set aside now."""
        now = self._clock()
        return [e for e in self.endpoints if e.aside_until <= now]

    def _pick(self) -> Endpoint | None:
        free = [e for e in self.available() if e.in_flight < self.limit]
        if not free:
            return None
        fewest = min(e.in_flight for e in free)
        tied = [e for e in free if e.in_flight == fewest]
        return tied[next(self._turn) % len(tied)]

    def wait(self) -> float | None:
        """Seconds until some server can be used (None if one can be now).

        >>> pool = EndpointPool(["http://a/v1"], limit=1)
        >>> pool.wait() is None
        True
        """
        if self.available():
            return None
        return max(min(e.aside_until for e in self.endpoints) - self._clock(), 0.0)

    def _raise_if_all_aside(self) -> None:
        wait = self.wait()
        if wait is None:
            return
        raise TransientBackendError(
            f"all {len(self.endpoints)} endpoints are set aside "
            f"(failing, or asked us to wait; the first returns in {wait:.1f} s)",
            retry_after=wait)

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Endpoint]:
        """Hold a slot on the least busy server that is not set aside.

        Raises:
            TransientBackendError: every server is set aside (``retry_after``: until the
                first comes back).
        """
        changed = self._condition()
        async with changed:
            while (chosen := self._pick()) is None:
                self._raise_if_all_aside()
                # Every usable server is full: wait for a slot, or for a set-aside one to return.
                returns = [e.aside_until - self._clock() for e in self.endpoints
                           if e.aside_until > self._clock()]
                with suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(returns) if returns else None)
            chosen.in_flight += 1
            chosen.calls += 1
        try:
            yield chosen
        finally:
            async with changed:
                chosen.in_flight -= 1
                changed.notify_all()

    def succeeded(self, endpoint: Endpoint) -> None:
        """A call got an answer (any status but 5xx): the server is healthy."""
        endpoint.failures = 0

    def failed(self, endpoint: Endpoint, why: str) -> None:
        """A call failed in transport or with a 5xx; enough in a row set the server aside."""
        endpoint.failures += 1
        if endpoint.failures < self.failures or len(self.endpoints) == 1:
            return  # one server alone is never set aside: retries and backoff handle it
        self.set_aside(endpoint, self.cooldown, why)

    def set_aside(self, endpoint: Endpoint, seconds: float, why: str) -> None:
        """Send no call to ``endpoint`` for ``seconds``; on return one failure sets it aside
        again (it is on probation)."""
        endpoint.aside_until = max(endpoint.aside_until, self._clock() + seconds)
        endpoint.failures = self.failures - 1
        endpoint.set_aside += 1
        log.warning("endpoint %s set aside for %.0f s: %s", endpoint.url, seconds, why)

    def pause(self, endpoint: Endpoint, seconds: float) -> None:
        """Send no call to ``endpoint`` for ``seconds`` (its ``Retry-After``); no mark against
        its health."""
        endpoint.aside_until = max(endpoint.aside_until, self._clock() + seconds)
