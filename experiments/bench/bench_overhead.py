"""Framework overhead: the share of a run's wall time during which no backend call is running.

A 3-agent MachineSoM society (S2: two overconfident agents, one easy-going) debates 20 MMLU
questions for 4 rounds (strategy 0000, so 5 calls per agent per question, 300 calls in all)
through the real :class:`~societies.runner.Run`. Every backend call is timed by a wrapper put in
through ``Run(model_factory=...)``. Calls overlap, so summing their durations would overstate
the busy time; we take the union of their [start, end] intervals instead:

    overhead share = 1 - busy_union / wall

where wall is ``Run.execute`` (scheduling, prompt rendering, parsing, scoring, fsynced record
writes, the summary). Building the ``Run`` (loading MMLU, resolving models) is printed apart.

Two backends: the bundled SmolLM2 through ``llamacpp_batch`` with small ``max_tokens`` (a real
model, a few minutes on 2 cores), and ``scripted`` with a fixed sleep per call (no compute at
all, so the framework's own cost is as visible as it gets; stands in for a remote server).

Run: ``python experiments/bench/bench_overhead.py [--backend real|scripted|both] [--n 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from societies.backends import registry
from societies.backends.base import ChatBackend, Message, Reply, Settings
from societies.backends.model import Model
from societies.config import ExperimentConfig, parse_config
from societies.plan import build_plan
from societies.runner import Run
from societies.storage import RunStore


class TimedBackend(ChatBackend):
    """Passes calls through and records each one's [start, end] in ``intervals``."""

    def __init__(self, inner: ChatBackend) -> None:
        self.inner = inner
        self.intervals: list[tuple[float, float]] = []

    @property
    def identity(self) -> str:
        return self.inner.identity

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        start = time.perf_counter()
        try:
            return await self.inner.generate(messages, settings)
        finally:
            self.intervals.append((start, time.perf_counter()))

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()


def union_length(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping intervals."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def experiment(model: dict[str, Any], n: int, concurrency: int,
               max_tokens: int) -> ExperimentConfig:
    """The benchmark's config: S2 on ``n`` MMLU questions, 4 debate rounds."""
    return parse_config({
        "name": "bench-overhead",
        "models": {"m": model},
        "defaults": {"model": "m",
                     "sampling": {"temperature": 0.7, "max_tokens": max_tokens, "seed": 0}},
        "societies": [{"machinesom": "S2"}],
        "rounds": 4,
        "strategies": ["0000"],
        "task": {"name": "mmlu", "n": n, "seed": 0},
        "run": {"concurrency": concurrency, "cache": False},
    })


async def measure(config: ExperimentConfig) -> dict[str, Any]:
    """Run the config once in a temporary directory: times, call counts, replies' digest."""
    timed: list[TimedBackend] = []

    def factory(pool: registry.BackendPool, name: str) -> Model:
        timed.append(TimedBackend(pool.chat(name)))
        return Model(timed[-1], name)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = RunStore(Path(tmp) / "run")
        run = Run(build_plan(config), store, model_factory=factory)
        store.prepare(config.model_dump(mode="json"), config.identity())
        t1 = time.perf_counter()
        await run.execute(progress=False)
        t2 = time.perf_counter()
        records = store.records()
    replies = [[t.reply for r in rec.rounds for t in r.turns] for rec in records]
    intervals = [iv for backend in timed for iv in backend.intervals]
    busy = union_length(intervals)
    return {"setup": t1 - t0, "wall": t2 - t1, "busy": busy, "calls": len(intervals),
            "call_mean": sum(b - a for a, b in intervals) / max(len(intervals), 1),
            "units": len(records), "overhead": 1 - busy / (t2 - t1),
            "digest": hashlib.sha256(json.dumps(replies).encode()).hexdigest()[:12]}


def report(label: str, m: dict[str, Any]) -> None:
    print(f"{label}: {m['calls']:.0f} calls (mean {m['call_mean'] * 1000:.0f} ms), "
          f"{m['units']:.0f} units; setup {m['setup']:.2f} s; wall {m['wall']:.2f} s, "
          f"backend busy (union) {m['busy']:.2f} s -> overhead share {m['overhead']:.2%}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["real", "scripted", "both"], default="both")
    parser.add_argument("--n", type=int, default=20, help="MMLU questions")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16, help="for the real model")
    parser.add_argument("--delay", type=float, default=0.05, help="scripted seconds per call")
    # One thread by default: on a shared 2-core machine, two OpenMP threads stall each other
    # whenever another process runs (measured up to 6x slower); see README.md.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"S2 society, 3 agents, 4 debate rounds, {args.n} MMLU questions, "
          f"concurrency {args.concurrency}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.backend in ("scripted", "both"):
        scripted = {"backend": "scripted", "replies": ["I am sure the answer is (A)."],
                    "delay": args.delay}
        report(f"scripted, {args.delay * 1000:.0f} ms per call",
               await measure(experiment(scripted, args.n, args.concurrency, 16)))
    if args.backend in ("real", "both"):
        # Spare streams keep each agent's last prompt for its next round (see the backend).
        real = {"backend": "llamacpp_batch", "path": "bundled:smollm2",
                "max_sequences": args.concurrency, "keep_streams": args.concurrency,
                "n_ctx": 2048 * 2 * args.concurrency, "n_threads": args.threads}
        report(f"SmolLM2 via llamacpp_batch, max_tokens {args.max_tokens}",
               await measure(experiment(real, args.n, args.concurrency, args.max_tokens)))


if __name__ == "__main__":
    asyncio.run(main())
