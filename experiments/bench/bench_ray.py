"""The Ray executor against the local one, and one model served by two servers against one.

Part 1, per-question overhead of Ray. The same grid (MachineSoM S2, two rounds, strategies 00
and 01: 5 calls per agent per question) runs through :class:`~societies.runner.Run` on the
``scripted`` backend with a fixed sleep per call, so no compute competes with the executors:

* local: ``run.questions = P`` questions in progress in this process;
* Ray: ``run.ray.in_flight = P`` tasks on a local Ray instance of P CPUs (one per task), twice:
  the first run's workers start and build the engine; the second's processes are warm.

Each executor has P questions in progress at once, so the extra wall time spread over the
questions is what Ray adds per question: ``(wall_ray - wall_local) * P / questions``.
``ray.init`` is timed apart.

Part 2, throughput with several endpoints. Two ``llama_cpp.server`` processes on loopback serve
the bundled SmolLM2 with one thread each (one core per server, as one machine per server
would be); the same batch of chat calls goes through the ``openai`` backend with ``base_url``
naming one of them, then both. Ratio = calls per second with two / with one. The same again
with stand-in servers that answer one request at a time in a fixed service time (as a busy
GPU server does), which measures the spreading alone, with no CPU shared by the servers.

Run: ``python experiments/bench/bench_ray.py [--questions 16] [--delay 0.05] [--calls 24]``
(``--skip-servers``, ``--skip-ray``: leave out the llama.cpp servers, or part 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_model  # experiments/bench/machine.py (the script's folder)

from societies.backends.base import Message, Settings
from societies.backends.bundled import bundled_path
from societies.backends.openai_http import Options, create
from societies.config import parse_config
from societies.plan import build_plan
from societies.runner import Run
from societies.storage import RunStore


def grid(executor: str, questions: int, delay: float, parallel: int) -> dict[str, Any]:
    return {
        "name": "bench-ray",
        "models": {"s": {"backend": "scripted", "replies": ["The answer is 1."],
                         "delay": delay}},
        "defaults": {"model": "s", "sampling": {"temperature": 0.0, "max_tokens": 8}},
        "societies": [{"machinesom": "S2"}],
        "rounds": 2, "strategies": ["00", "01"],
        "task": {"name": "arithmetic", "n": questions, "seed": 0},
        "run": {"concurrency": 8, "questions": parallel, "cache": False, "executor": executor,
                "ray": {"in_flight": parallel, "num_cpus": 1}},
    }


def timed_run(cfg: dict[str, Any]) -> float:
    with tempfile.TemporaryDirectory() as root:
        run = Run(build_plan(parse_config(cfg)), RunStore(root))
        run.prepare()
        start = time.perf_counter()
        asyncio.run(run.execute(progress=False))
        wall = time.perf_counter() - start
        assert len(run.store.done()) == 2 * questions_of(cfg)
    return wall


def questions_of(cfg: dict[str, Any]) -> int:
    n: int = cfg["task"]["n"]
    return n


def part_ray(questions: int, delay: float, parallel: int) -> None:
    import ray

    local = timed_run(grid("local", questions, delay, parallel))
    start = time.perf_counter()
    ray.init(num_cpus=parallel, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - start
    try:
        cold = timed_run(grid("ray", questions, delay, parallel))
        warm = timed_run(grid("ray", questions, delay, parallel))
    finally:
        ray.shutdown()
    floor = questions / parallel * 3 * delay  # three rounds of calls per question, no overhead
    print(f"\n## Ray executor vs local: {questions} questions x 2 strategies, S2, "
          f"{delay * 1000:.0f} ms per call, {parallel} questions at a time")
    print(f"sleep-only floor {floor:.2f} s; ray.init {init:.2f} s (apart)")
    print("| executor | wall s | ratio to local | added per question ms |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| local | {local:.2f} | 1.00 | 0 |")
    for name, wall in (("ray, workers starting", cold), ("ray, warm workers", warm)):
        added = (wall - local) * parallel / questions * 1000
        print(f"| {name} | {wall:.2f} | {wall / local:.2f} | {added:.0f} |")


async def _throughput(urls: list[str], calls: int, model: str = "smollm2") -> float:
    backend = create(Options(base_url=urls if len(urls) > 1 else urls[0], model=model,
                             max_concurrent=2, timeout=300), None)
    settings = Settings(temperature=0.0, max_tokens=16, seed=1)
    prompts = [[Message("user", f"What is {i} + {i + 1}? Answer with one number.")]
               for i in range(calls)]
    try:
        await backend.check()
        await backend.generate(prompts[0], settings)  # warm both paths' connections
        start = time.perf_counter()
        await asyncio.gather(*(backend.generate(p, settings) for p in prompts))
        return calls / (time.perf_counter() - start)
    finally:
        await backend.aclose()


def part_endpoints(calls: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the tests' server helper
    from tests.servers import start_llama_server, stop_process

    model = bundled_path("smollm2")
    servers = [start_llama_server(model, extra_args=("--n_threads", "1",
                                                     "--n_threads_batch", "1"))
               for _ in range(2)]
    try:
        urls = [f"{url}/v1" for url, _ in servers]
        one = asyncio.run(_throughput(urls[:1], calls))
        two = asyncio.run(_throughput(urls, calls))
    finally:
        for _, proc in servers:
            stop_process(proc)
    print(f"\n## One model on two llama_cpp.server endpoints vs one: {calls} calls of <= 16 "
          "tokens, SmolLM2, 1 thread per server, max_concurrent 2 per server")
    print("| endpoints | calls/s | ratio |")
    print("| ---: | ---: | ---: |")
    print(f"| 1 | {one:.2f} | 1.00 |")
    print(f"| 2 | {two:.2f} | {two / one:.2f} |")


async def _stand_ins(calls: int, service: float) -> tuple[float, float]:
    """Calls/s through one and two stand-in servers that serve one request at a time."""
    from aiohttp import web

    from tests.servers import StubServer, completion

    def serial() -> StubServer:
        lock = asyncio.Lock()

        async def handler(body: dict[str, Any], request: web.Request) -> web.Response:
            async with lock:  # one request at a time, like a server with one slot
                await asyncio.sleep(service)
            return web.json_response(completion("6"))
        return StubServer(handler)

    async with serial() as a, serial() as b:
        one = await _throughput([f"{a.url}/v1"], calls, "stub")
        two = await _throughput([f"{a.url}/v1", f"{b.url}/v1"], calls, "stub")
    return one, two


def part_stand_ins(calls: int, service: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the tests' server helper
    one, two = asyncio.run(_stand_ins(calls, service))
    print(f"\n## Stand-in servers serving one request at a time in {service * 1000:.0f} ms: "
          f"{calls} calls")
    print("| endpoints | calls/s | ratio |")
    print("| ---: | ---: | ---: |")
    print(f"| 1 | {one:.2f} | 1.00 |")
    print(f"| 2 | {two:.2f} | {two / one:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--calls", type=int, default=24)
    parser.add_argument("--skip-servers", action="store_true")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} threads; load average {load:.1f} at start")
    if not args.skip_ray:
        part_ray(args.questions, args.delay, args.parallel)
    part_stand_ins(args.calls * 2, 0.05)
    if not args.skip_servers:
        part_endpoints(args.calls)


if __name__ == "__main__":
    main()
