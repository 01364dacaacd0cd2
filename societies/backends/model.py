"""The wrapper every call goes through: cache, retries and call accounting, once for all backends.

Token accounting per agent and round lives in the records (every turn carries its tokens, and
``societies.ledger`` totals them); this wrapper counts calls, cache hits and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace

from societies.backends.base import ChatBackend, Message, Reply, Settings, TransientBackendError
from societies.backends.cache import CallCache, cache_key


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; ``Retry-After`` from the server wins when longer.

    Attributes:
        attempts: total tries, the first included.
        base_delay: seconds before the first retry (doubled each retry).
        max_delay: cap on one wait.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        backoff = min(self.max_delay, self.base_delay * 2**retry) * rng.random()
        return max(backoff, retry_after or 0.0)


class Model:
    """A backend plus retries and token accounting.

    Args:
        backend: the backend doing the work.
        name: the model's name in the config (used in records and the ledger).
        retry: retry policy for transient errors.
        cache: the call cache, or None to always call the backend.
    """

    def __init__(
        self, backend: ChatBackend, name: str, retry: RetryPolicy | None = None,
        cache: CallCache | None = None,
    ) -> None:
        self.backend = backend
        self.name = name
        self.retry = retry or RetryPolicy()
        self.cache = cache
        self._rng = random.Random(0)
        self.calls = 0
        self.cache_hits = 0
        self.retries = 0

    async def generate(self, messages: Sequence[Message], settings: Settings,
                       slot: AbstractAsyncContextManager[object] | None = None) -> Reply:
        """Answer from the cache, else call the backend, retrying transient errors.

        The reply says whether it was cached, how many retries it needed and how long the
        successful call took. Failed calls are never cached, so a re-run retries them.

        Args:
            messages: the conversation.
            settings: sampling settings, seed included.
            slot: held around each backend attempt only (the engine's concurrency limit), so a
                call waiting out a back-off or ``Retry-After`` does not keep others waiting.
        """
        key = None
        if self.cache is not None:
            key = cache_key(self.backend.identity, messages, settings)
            hit = self.cache.get(key)
            if hit is not None:
                self.cache_hits += 1
                return hit
        reply = await self._call(messages, settings, slot or contextlib.nullcontext())
        if self.cache is not None and key is not None:
            self.cache.put(key, reply)
        return reply

    async def _call(self, messages: Sequence[Message], settings: Settings,
                    slot: AbstractAsyncContextManager[object]) -> Reply:
        for attempt in range(self.retry.attempts):
            try:
                async with slot:
                    start = time.perf_counter()
                    reply = await self.backend.generate(messages, settings)
                    latency = time.perf_counter() - start
            except TransientBackendError as err:
                if attempt + 1 == self.retry.attempts:
                    raise
                self.retries += 1
                await asyncio.sleep(self.retry.delay(attempt, err.retry_after, self._rng))
                continue
            self.calls += 1
            return replace(reply, retries=attempt, latency_s=latency)
        raise AssertionError("unreachable")  # the loop either returns or raises
