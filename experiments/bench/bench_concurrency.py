"""Concurrent run vs a sequential loop, on the same backend.

MachineSoM runs its agents one call at a time. Here the same config (S2 society, 3 agents,
4 debate rounds, MMLU) runs twice through :class:`~societies.runner.Run`: ``run.concurrency: 1``
(one backend call in flight: the sequential loop) and ``run.concurrency: 8`` (every agent of a
round, across several questions, at once). Wall times and their ratio are printed for

(a) ``llamacpp_batch`` on the bundled SmolLM2, where concurrent calls share decode steps
    (compute on 2 CPU cores: the gain is what batching buys on this machine), and
(b) ``scripted`` with a fixed 50 ms sleep per call and no compute, standing in for a remote
    server: the gain is what asyncio buys while calls wait on the network.

Both runs of a pair should give the same replies: concurrency changes when calls run, never
their prompts or seeds, and ``llamacpp_batch`` replies do not depend on what shares a batch.
The script compares a digest of all replies of the two runs.

Run: ``python experiments/bench/bench_concurrency.py [--n-real 5] [--n-scripted 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_overhead import experiment, measure  # a sibling script, not a package


async def pair(label: str, model: dict[str, Any], n: int, max_tokens: int,
               concurrency: int) -> None:
    """Run the config at concurrency 1 and ``concurrency``; print both walls and the ratio."""
    runs = []
    for c in (1, concurrency):
        runs.append(m := await measure(experiment(model, n, c, max_tokens)))
        print(f"  {label}, concurrency {c}: {m['calls']:.0f} calls, wall {m['wall']:.2f} s "
              f"(mean call {m['call_mean'] * 1000:.0f} ms), replies digest {m['digest']}")
    same = "identical" if runs[0]["digest"] == runs[1]["digest"] else "DIFFERENT"
    print(f"  {label}: concurrency {concurrency} is {runs[0]['wall'] / runs[1]['wall']:.2f}x "
          f"faster than one call at a time; replies {same}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-real", type=int, default=5, help="MMLU questions, real model")
    parser.add_argument("--n-scripted", type=int, default=20, help="MMLU questions, scripted")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    # One thread by default: on a shared 2-core machine, two OpenMP threads stall each other
    # whenever another process runs (measured up to 6x slower); see README.md.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args()
    print(f"S2 society, 3 agents, 4 debate rounds (5 calls per agent and question); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    scripted = {"backend": "scripted", "replies": ["I am sure the answer is (A)."],
                "delay": 0.05}
    await pair("scripted 50 ms/call", scripted, args.n_scripted, 16, args.concurrency)
    if not args.skip_real:
        # Up to `concurrency` questions run at once, each with 3 agents whose next prompt
        # extends their last one: 3 spare streams per call in flight keep all of those prompts
        # (with fewer, some are evicted before their agent's next round). 1536 cells per
        # stream hold the last round's ~750-token prompts.
        real = {"backend": "llamacpp_batch", "path": "bundled:smollm2",
                "max_sequences": args.concurrency, "keep_streams": 3 * args.concurrency,
                "n_ctx": 1536 * 4 * args.concurrency, "n_threads": args.threads}
        await pair(f"SmolLM2 llamacpp_batch, max_tokens {args.max_tokens}", real,
                   args.n_real, args.max_tokens, args.concurrency)


if __name__ == "__main__":
    asyncio.run(main())
