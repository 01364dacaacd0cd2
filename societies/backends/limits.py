"""Pacing for remote backends: requests and tokens per minute, concurrency, ``Retry-After``.

Hosted APIs meter requests *and* tokens per minute. Staying under both is cheaper than paying
for 429s in retries, and a server that does answer 429 with ``Retry-After`` pauses every caller
of the backend, not only the one that was refused.

Everything here is bound to the event loop that first waits on it (asyncio locks are), so a
backend builds one :class:`RequestLimiter` per loop.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from typing import Any

MAX_RETRY_AFTER = 300.0  # a server asking for an hour is better answered by failing the unit
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns None when the header is absent or unreadable; negative waits become 0 and waits
    over ``MAX_RETRY_AFTER`` are capped.
    """
    if not value or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class TokenBucket:
    """A bucket holding up to ``capacity`` tokens, refilled at ``capacity / period`` per second.

    Callers take an *estimate* before a request and :meth:`settle` the difference once the
    server reports real usage, so the level can go negative after an underestimate; later
    callers then wait for the debt to refill.

    Args:
        capacity: tokens allowed per ``period`` (also the largest burst).
        period: seconds over which ``capacity`` tokens refill.
        clock: monotonic time source (tests pass a fake one).
        sleep: how to wait (tests pass one that advances the fake clock).
    """

    def __init__(self, capacity: int, period: float = 60.0, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        if capacity < 1 or period <= 0:
            raise ValueError("a token bucket needs capacity >= 1 and period > 0")
        self.capacity = capacity
        self.rate = capacity / period
        self._clock = clock
        self._sleep = sleep
        self._level = float(capacity)
        self._stamp = clock()
        self._lock = asyncio.Lock()  # first come, first served: big requests do not starve

    @property
    def level(self) -> float:
        """Tokens available now (negative while paying off an underestimate)."""
        self._refill()
        return self._level

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(float(self.capacity), self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, tokens: int) -> None:
        """Wait until ``tokens`` are available and remove them.

        A request larger than the whole bucket is clamped to the capacity: it waits for a full
        bucket instead of forever.
        """
        need = float(min(max(tokens, 0), self.capacity))
        async with self._lock:
            self._refill()
            while self._level < need:
                await self._sleep((need - self._level) / self.rate)
                self._refill()
            self._level -= need

    def settle(self, estimated: int, actual: int) -> None:
        """Correct an earlier :meth:`take` of ``estimated`` once ``actual`` usage is known."""
        self._refill()
        charged = min(max(estimated, 0), self.capacity)
        self._level = min(float(self.capacity), self._level + charged - actual)


@dataclass
class Ticket:
    """One admitted request; set :attr:`used` to the real token count when the reply says."""

    estimate: int
    used: int | None = None


class RequestLimiter:
    """Concurrency, requests/minute and tokens/minute limits for one backend in one event loop.

    Requests per minute are spread evenly (one every ``60 / rpm`` seconds) with an
    asyncio-throttle ``Throttler``, rather than allowing a burst of a whole minute's quota.

    Args:
        max_concurrent: requests in flight at once.
        requests_per_minute: the request rate limit, or None for none.
        tokens_per_minute: the token rate limit (prompt + completion), or None for none.
        clock: monotonic time source of the pause and the token bucket (tests pass a fake one).
        sleep: how to wait for them (tests pass one that advances the fake clock).

    Attributes:
        tokens: the tokens-per-minute bucket, if there is a limit.
    """

    def __init__(self, max_concurrent: int, requests_per_minute: int | None = None,
                 tokens_per_minute: int | None = None, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._slots = asyncio.Semaphore(max_concurrent)
        self._throttler: Any = None
        if requests_per_minute is not None:
            from asyncio_throttle import Throttler  # optional dependency, the [openai] extra

            period = 60.0 / requests_per_minute
            # The throttler polls; a twentieth of the spacing keeps it precise but not busy.
            self._throttler = Throttler(rate_limit=1, period=period,
                                        retry_interval=min(0.05, period / 20))
        self.tokens = (TokenBucket(tokens_per_minute, clock=clock, sleep=sleep)
                       if tokens_per_minute else None)
        self._paused_until = -math.inf

    def pause(self, seconds: float) -> None:
        """Hold back every request of this backend for ``seconds`` (a server's Retry-After).

        Requests admitted after this wait until the pause ends, whoever was refused. A pause
        only ever grows: a later, shorter Retry-After does not end a longer one early.
        """
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when there is none)."""
        return max(self._paused_until - self._clock(), 0.0)

    @asynccontextmanager
    async def admit(self, estimate: int) -> AsyncIterator[Ticket]:
        """Wait for a slot, the pause, the request rate and ``estimate`` tokens, in that order.

        The concurrency slot comes first so that requests queued behind it do not use up
        request-rate slots they cannot use yet. A ticket left without ``used`` (the request
        failed) keeps its estimate charged: a refused request should slow us down, not up.
        """
        ticket = Ticket(estimate)
        async with self._slots:
            while (wait := self._paused_until - self._clock()) > 0:
                await self._sleep(wait)  # re-checked: the pause may have grown meanwhile
            if self._throttler is not None:
                await self._throttler.acquire()
            if self.tokens is not None:
                await self.tokens.take(estimate)
            try:
                yield ticket
            finally:
                if self.tokens is not None and ticket.used is not None:
                    self.tokens.settle(estimate, ticket.used)
