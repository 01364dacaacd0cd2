"""The wrapper every call goes through: retries and token accounting, once for all backends."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from societies.backends.base import ChatBackend, Message, Reply, Settings, TransientBackendError


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
    """

    def __init__(
        self, backend: ChatBackend, name: str, retry: RetryPolicy | None = None
    ) -> None:
        self.backend = backend
        self.name = name
        self.retry = retry or RetryPolicy()
        self._rng = random.Random(0)
        self.calls = 0
        self.retries = 0

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        """Call the backend, retrying transient errors; the reply says how many retries."""
        for attempt in range(self.retry.attempts):
            try:
                reply = await self.backend.generate(messages, settings)
            except TransientBackendError as err:
                if attempt + 1 == self.retry.attempts:
                    raise
                self.retries += 1
                await asyncio.sleep(self.retry.delay(attempt, err.retry_after, self._rng))
                continue
            self.calls += 1
            return replace(reply, retries=attempt)
        raise AssertionError("unreachable")  # the loop either returns or raises
