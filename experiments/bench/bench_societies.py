"""Engine time per agent-round from 10 to 1,000 agents on a sparse graph (scripted backend).

A mixed society (30 % overconfident, 70 % easy-going) of n agents on a Watts–Strogatz graph
(k = 4, p = 0.1: every agent reads about four neighbours) debates ``--questions`` arithmetic
questions for ``--rounds`` rounds (strategy all-debate) through :class:`societies.engine.Engine`
on a scripted backend that answers at once. No model, no run directory: what is timed is the
engine itself (prompt rendering, the debate policy, turns, parsing, scoring, unit records).
``--store`` adds a run directory and times ``Run.execute`` instead (records are fsynced JSON
lines, and a record holds every agent's turns, so that part grows with the society by nature).

It prints, per size: seconds per agent-round (best of ``--repeats``), the ratio to the smallest
size (the goal is a flat ~1.0x), the graph's mean in-degree and the mean prompt tokens of an
agent's call in each round. A second table holds the size fixed and varies k (the in-degree):
debate prompts grow with what an agent reads, not with how many agents there are. The scripted
backend counts a prompt's tokens as the words of every message it receives.

Run: ``python experiments/bench/bench_societies.py [--sizes 10 100 1000] [--rounds 2]
[--questions 3] [--repeats 3] [--degrees 2 4 8 16] [--store]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machine import cpu_model  # experiments/bench/machine.py (the script's folder)

from societies.backends.base import Message
from societies.backends.model import Model
from societies.backends.scripted import ScriptedBackend
from societies.config import parse_config
from societies.engine import Engine
from societies.plan import build_plan
from societies.records import UnitRecord
from societies.runner import Run
from societies.storage import RunStore
from societies.tasks import load_task


def reply(messages: Sequence[Message]) -> str:
    """A reply of realistic length whose answer depends on the round (answers do change)."""
    turn = sum(m.role == "assistant" for m in messages)
    return (f"Working it through step by step, the products come first and the sums after. "
            f"The answer is {turn + 12}.")


def society_config(n: int, rounds: int, questions: int, k: int = 4) -> dict[str, Any]:
    """A mixed n-agent society on a Watts–Strogatz graph (k neighbours), scripted, all-debate."""
    return {
        "name": f"bench-{n}",
        "models": {"s": {"backend": "scripted", "replies": ["unused"]}},
        "defaults": {"model": "s", "sampling": {"temperature": 0.0, "max_tokens": 32}},
        "societies": [{"name": f"ws{n}", "size": n,
                       "traits": {"overconfident": 0.3, "easy-going": 0.7}, "seed": 0}],
        "graph": {"generator": "watts_strogatz", "k": k, "p": 0.1, "seed": 0},
        "rounds": rounds,
        "strategies": ["0" * rounds],
        "task": {"name": "arithmetic", "n": questions, "seed": 0},
        "run": {"concurrency": 64, "cache": False},
    }


async def engine_pass(cfg: dict[str, Any]) -> tuple[float, list[UnitRecord]]:
    """One pass of every question through the engine; wall seconds and the records."""
    plan = build_plan(parse_config(cfg))
    task = load_task(plan.task)
    engine = Engine.from_plan(plan, task, {"s": Model(ScriptedBackend(reply), "s")})
    society = plan.societies[0]
    gc.collect()
    start = time.perf_counter()
    records: list[UnitRecord] = []
    for q in task.questions():
        records += await engine.run_question(society, plan.strategies, q, 0)
    return time.perf_counter() - start, records


async def store_pass(cfg: dict[str, Any]) -> tuple[float, list[UnitRecord]]:
    """One pass through ``Run.execute`` into a fresh run directory."""
    with tempfile.TemporaryDirectory() as tmp:
        backend = ScriptedBackend(reply)
        run = Run(build_plan(parse_config(cfg)), RunStore(Path(tmp) / "run"),
                  model_factory=lambda pool, name: Model(backend, name))
        run.prepare()
        gc.collect()
        start = time.perf_counter()
        await run.execute(progress=False)
        took = time.perf_counter() - start
        return took, run.store.records()


def tokens_by_round(records: list[UnitRecord]) -> list[float]:
    """Mean prompt tokens of an agent's call, per round (0 = first answers)."""
    rounds = len(records[0].rounds)
    out = []
    for r in range(rounds):
        counts = [t.prompt_tokens for rec in records for t in rec.rounds[r].turns]
        out.append(sum(counts) / len(counts))
    return out


def mean_indegree(cfg: dict[str, Any]) -> float:
    """The mean in-degree of the society's graph (neighbours an agent reads)."""
    graph = build_plan(parse_config(cfg)).societies[0].graph
    return float(sum(d for _, d in graph.in_degree()) / graph.number_of_nodes())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", action="store_true",
                        help="time Run.execute with a run directory instead of the engine")
    parser.add_argument("--degrees", type=int, nargs="+", default=[2, 4, 8, 16],
                        help="Watts–Strogatz k values for the in-degree table")
    args = parser.parse_args()
    measure = store_pass if args.store else engine_pass
    print(f"CPU: {cpu_model()}; {os.cpu_count()} CPUs, 1 thread (asyncio, scripted backend); "
          f"load average {os.getloadavg()[0]:.1f}; Python {platform.python_version()}")
    print(f"timing {'Run.execute (run directory)' if args.store else 'Engine.run_question'}; "
          f"watts_strogatz k=4 p=0.1; {args.rounds} debate rounds; {args.questions} questions; "
          f"best of {args.repeats}")
    rounds = " ".join(f"r{r}" for r in range(args.rounds + 1))
    print(f"{'agents':>7} {'agent-rounds':>12} {'best s':>8} {'us/agent-round':>15} "
          f"{'vs first':>9} {'in-degree':>9}  prompt tokens per agent-round ({rounds})")
    base = None
    for n in args.sizes:
        cfg = society_config(n, args.rounds, args.questions)
        times: list[float] = []
        records: list[UnitRecord] = []
        for _ in range(args.repeats):
            took, records = await measure(cfg)
            times.append(took)
        agent_rounds = n * (args.rounds + 1) * args.questions
        per = min(times) / agent_rounds
        base = base or per
        tokens = " ".join(f"{t:.1f}" for t in tokens_by_round(records))
        print(f"{n:>7} {agent_rounds:>12} {min(times):>8.3f} {per * 1e6:>15.1f} "
              f"{per / base:>8.2f}x {mean_indegree(cfg):>9.2f}  {tokens}")
    n = args.sizes[len(args.sizes) // 2]
    print(f"\nprompt tokens per agent-round against in-degree ({n} agents, one pass)")
    print(f"{'k':>4} {'in-degree':>9}  {rounds}")
    for k in args.degrees:
        cfg = society_config(n, args.rounds, args.questions, k)
        _, records = await engine_pass(cfg)
        tokens = " ".join(f"{t:.1f}" for t in tokens_by_round(records))
        print(f"{k:>4} {mean_indegree(cfg):>9.2f}  {tokens}")

if __name__ == "__main__":
    asyncio.run(main())
