"""The shared Retry-After pause of RequestLimiter, on an injected clock (no real waiting)."""

from __future__ import annotations

import asyncio

from societies.backends.limits import RequestLimiter


class FakeTime:
    """A clock that only moves when someone sleeps on it; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)  # let other tasks run while this one "waits"
        self.now += seconds


def limiter(time: FakeTime, **limits: int) -> RequestLimiter:
    return RequestLimiter(max_concurrent=4, clock=time.clock, sleep=time.sleep, **limits)


async def test_a_retry_after_pauses_a_caller_that_was_not_refused() -> None:
    time = FakeTime()
    lim = limiter(time)
    admitted: dict[str, float] = {}
    refused = asyncio.Event()

    async def refused_caller() -> None:
        async with lim.admit(10):
            admitted["refused"] = time.now
            lim.pause(5.0)  # what the backend does on a 429 with Retry-After: 5
        refused.set()

    async def other_caller() -> None:
        await refused.wait()
        async with lim.admit(10):
            admitted["other"] = time.now

    await asyncio.gather(refused_caller(), other_caller())
    assert admitted == {"refused": 0.0, "other": 5.0}
    assert time.sleeps == [5.0]


async def test_the_refused_caller_waits_too_and_after_the_pause_nobody_does() -> None:
    time = FakeTime()
    lim = limiter(time)
    lim.pause(2.0)
    async with lim.admit(1):
        assert time.now == 2.0
    assert lim.paused_for == 0.0
    async with lim.admit(1):
        assert time.now == 2.0
    assert time.sleeps == [2.0]


async def test_a_later_shorter_retry_after_does_not_shorten_a_longer_pause() -> None:
    time = FakeTime()
    lim = limiter(time)
    lim.pause(30.0)
    time.now = 1.0
    lim.pause(2.0)  # another caller's 429 asks for less: the first pause still holds
    assert lim.paused_for == 29.0
    async with lim.admit(1):
        assert time.now == 30.0


async def test_a_longer_pause_arriving_while_a_caller_waits_holds_it_longer() -> None:
    time = FakeTime()
    lim = limiter(time)
    lim.pause(5.0)
    admitted: list[float] = []

    async def caller() -> None:
        async with lim.admit(1):
            admitted.append(time.now)

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)  # the caller starts its 5 s wait
    assert time.sleeps == [5.0]
    lim.pause(20.0)  # a 429 elsewhere, still at t = 0
    await task
    assert admitted == [20.0]
    assert time.sleeps == [5.0, 15.0]


async def test_token_bucket_runs_on_the_same_injected_clock() -> None:
    time = FakeTime()
    lim = limiter(time, tokens_per_minute=120)  # 2 tokens per second
    async with lim.admit(120):
        pass
    async with lim.admit(60):  # the bucket is empty: 60 tokens take 30 s to refill
        assert time.now == 30.0
