"""A 100-agent Watts–Strogatz society through ``llamacpp_batch`` vs bare batched decoding.

The society (30 % overconfident, 70 % easy-going, k = 4, p = 0.1) answers one one-digit sum
and debates it for ``--rounds`` rounds on the bundled SmolLM2 (converted to F16 as in the
quickstart), through :class:`societies.engine.Engine` with every agent's call in flight at once
and ``max_sequences`` = the society's size. The backend is a subclass that only times its own
steps: each ``_decode`` call is a *prompt chunk* (one sequence's prompt tokens) or a *decode
step* (one new token for every decoding sequence), timed whole, sampling and detokenizing
included, with the sampling part apart.

Then, on the same llama context, it times bare ``llama_decode`` steps: one token for each of b
sequences whose KV already holds ``context`` tokens (the mean position of the society's decode
steps), for b on a grid up to the society's largest batch; other b are interpolated. What a
society's decode steps would cost as bare steps is the sum of the bare time at each step's
batch size, so the ratio

    decode throughput ratio = sum over steps of t_bare(b_step) / sum of t_step

compares the two at the same batch sizes, step by step (goal >= 0.8). It also prints the
end-to-end figure (completion tokens per second of the whole run, prompts included) and where
the run's wall time went: prompt chunks, decode steps, sampling, and the rest (waiting for the
engine, admitting requests, moving KV streams). Each figure is also taken in CPU seconds of the
thread running llama.cpp (with ``--threads 1``, the only one computing), which other processes
on a shared machine do not inflate; that ratio is the one to read there.

The backend keeps decoding sequences in its lowest, consecutive KV streams (a placement first
measured here as ``--contiguous``: 0.61 → 0.76 of bare decode throughput with a debate round).

Run: ``python experiments/bench/bench_batch_society.py [--agents 100] [--rounds 1]
[--max-tokens 24] [--threads 1] [--ctx 640]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

from machine import cpu_model  # experiments/bench/machine.py (the script's folder)

from societies.backends import llamacpp_batch
from societies.backends.base import Message, Settings
from societies.backends.llamacpp_batch import LlamaCppBatchBackend, _Seq
from societies.backends.model import Model
from societies.config import parse_config
from societies.engine import Engine
from societies.plan import build_plan
from societies.records import UnitRecord
from societies.tasks import load_task


def runs_of(slots: list[int]) -> tuple[int, ...]:
    """Lengths of the runs of consecutive ids in sorted ``slots``.

    >>> runs_of([0, 1, 2, 5, 6, 9])
    (3, 2, 1)
    """
    runs = [1]
    for a, b in itertools.pairwise(slots):
        if b == a + 1:
            runs[-1] += 1
        else:
            runs.append(1)
    return tuple(runs)


@dataclass
class Call:
    """One timed ``_decode`` call of the backend."""

    kind: str  # "prompt" or "decode"
    sequences: int
    tokens: int
    seconds: float  # the whole call: batch filling, llama_decode, sampling, detokenizing
    sampling: float  # the part spent picking and detokenizing the next tokens
    position: float  # mean KV position of the call's sequences
    runs: tuple[int, ...]  # sizes of the runs of consecutive stream ids (llama.cpp's splits)
    cpu: float  # CPU seconds of the worker thread (llama.cpp's only thread with n_threads 1)


@dataclass
class Timeline:
    calls: list[Call] = field(default_factory=list)
    sampling: float = 0.0


class TimedBatchBackend(LlamaCppBatchBackend):
    """``llamacpp_batch`` with each decode call and each token's sampling timed (no change in
    what it computes)."""

    def __init__(self, options: llamacpp_batch.Options) -> None:
        super().__init__(options)
        self.timeline = Timeline()

    def _decode(self, work: list[tuple[_Seq, list[int]]]) -> None:
        kind = "prompt" if any(seq.fed < len(seq.prompt) for seq, _ in work) else "decode"
        position = sum(seq.fed for seq, _ in work) / len(work)
        runs = runs_of(sorted(seq.slot for seq, _ in work))
        sampled_before = self.timeline.sampling
        start, cpu = time.perf_counter(), time.thread_time()
        super()._decode(work)
        took = time.perf_counter() - start
        self.timeline.calls.append(Call(kind, len(work), sum(len(t) for _, t in work), took,
                                        self.timeline.sampling - sampled_before, position,
                                        runs, time.thread_time() - cpu))

    def _advance(self, seq: _Seq, token: int) -> None:
        start = time.perf_counter()
        super()._advance(seq, token)
        self.timeline.sampling += time.perf_counter() - start


def society_config(agents: int, rounds: int, max_tokens: int, model: dict[str, Any]
                   ) -> dict[str, Any]:
    """The benchmark's experiment: one mixed society, one question, all-debate."""
    return {
        "name": "bench-batch-society",
        "models": {"m": model},
        "defaults": {"model": "m", "sampling": {"temperature": 0.7, "max_tokens": max_tokens,
                                                "seed": 0}},
        "societies": [{"name": f"ws{agents}", "size": agents,
                       "traits": {"overconfident": 0.3, "easy-going": 0.7}, "seed": 0}],
        "graph": {"generator": "watts_strogatz", "k": 4, "p": 0.1, "seed": 0},
        "rounds": rounds,
        "strategies": ["0" * rounds],
        "task": {"name": "arithmetic", "expression": "a+b", "high": 9, "n": 1, "seed": 0},
        "run": {"concurrency": agents, "cache": False},
    }


def bare_steps(backend: LlamaCppBatchBackend, sizes: list[int], context: int,
               repeats: int = 9) -> tuple[dict[int, float], dict[int, float]]:
    """Median wall seconds and median CPU seconds (this thread's) of a bare ``llama_decode``
    step holding one token for each of b sequences at KV position ``context``, for each b in
    ``sizes``.

    Sequence 0's KV is filled with ``context`` prompt tokens in one call and copied to the
    others (a copy is cheap; computing each would take minutes). The backend must be idle;
    it is unusable afterwards.
    """
    import llama_cpp

    ctx, batch, memory = backend._ctx, backend._batch, backend._ctx.memory
    llama_cpp.llama_memory_clear(memory, True)
    for i in range(context):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = 200 + i % 1000, i, 1
        batch.seq_id[i][0], batch.logits[i] = 0, int(i == context - 1)
    batch.n_tokens = context
    if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
        raise RuntimeError("llama_decode failed filling the context")
    for s in range(1, max(sizes)):
        llama_cpp.llama_memory_seq_cp(memory, 0, s, -1, -1)
    out, cpu = {}, {}
    for b in sizes:
        times, cpus = [], []
        for k in range(repeats):
            for s in range(b):
                batch.token[s], batch.pos[s], batch.n_seq_id[s] = 300 + s, context + k, 1
                batch.seq_id[s][0], batch.logits[s] = s, 1
            batch.n_tokens = b
            start, used = time.perf_counter(), time.thread_time()
            if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            times.append(time.perf_counter() - start)
            cpus.append(time.thread_time() - used)
        for s in range(b):  # back to the shared context for the next size
            llama_cpp.llama_memory_seq_rm(memory, s, context, -1)
        out[b] = sorted(times)[len(times) // 2]
        cpu[b] = sorted(cpus)[len(cpus) // 2]
    llama_cpp.llama_memory_clear(memory, True)
    return out, cpu


def interpolate(table: dict[int, float], b: int) -> float:
    """The bare step time at batch size ``b``, linear between measured sizes."""
    sizes = sorted(table)
    if b in table:
        return table[b]
    upper = next(s for s in sizes if s > b)
    lower = max(s for s in sizes if s < b)
    w = (b - lower) / (upper - lower)
    return table[lower] * (1 - w) + table[upper] * w


def grid(largest: int) -> list[int]:
    """Batch sizes to measure bare: powers of two up to ``largest``, and ``largest``."""
    sizes = [1]
    while sizes[-1] * 2 < largest:
        sizes.append(sizes[-1] * 2)
    return sorted({*sizes, largest})


async def run_society(args: argparse.Namespace) -> tuple[TimedBatchBackend, list[UnitRecord],
                                                          float]:
    spec = {"backend": "llamacpp_batch", "path": "bundled:smollm2", "requantize": "f16",
            "max_sequences": args.agents, "n_ctx": args.ctx * args.agents,
            "n_threads": args.threads}
    plan = build_plan(parse_config(society_config(args.agents, args.rounds, args.max_tokens,
                                                  spec)))
    backend = TimedBatchBackend(llamacpp_batch.Options(
        **{k: v for k, v in spec.items() if k != "backend"}))
    engine = Engine.from_plan(plan, load_task(plan.task), {"m": Model(backend, "m")})
    await backend.generate([Message("user", "Hi")], Settings(temperature=0.0, max_tokens=2))
    backend.timeline = Timeline()  # the warm-up (model load) does not count
    question = engine.task.questions()[0]
    start = time.perf_counter()
    records = await engine.run_question(plan.societies[0], plan.strategies, question, 0)
    return backend, records, time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1, help="debate rounds after round 0")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=640, help="KV cells per sequence")
    args = parser.parse_args()

    backend, records, wall = await run_society(args)
    calls = backend.timeline.calls
    decode = [c for c in calls if c.kind == "decode"]
    prompt = [c for c in calls if c.kind == "prompt"]
    largest = max(c.sequences for c in decode)
    position = round(sum(c.position * c.tokens for c in decode) / sum(c.tokens for c in decode))
    bare, bare_cpu = bare_steps(backend, grid(largest), position)
    await backend.aclose()

    turns = [t for r in records[0].rounds for t in r.turns]
    completion = sum(t.completion_tokens for t in turns)
    t_decode = sum(c.seconds for c in decode)
    t_prompt = sum(c.seconds for c in prompt)
    t_sampling = sum(c.sampling for c in decode)
    t_bare = sum(interpolate(bare, c.sequences) for c in decode)
    decoded = sum(c.tokens for c in decode)
    mean_b = decoded / len(decode)
    print(f"CPU: {cpu_model()}; {os.cpu_count()} CPUs; llama.cpp threads {args.threads}; load "
          f"average {os.getloadavg()[0]:.1f}")
    print(f"society: {args.agents} agents, watts_strogatz k=4 p=0.1, {args.rounds} debate "
          f"round(s), 1 question, max_tokens {args.max_tokens}, temperature 0.7; SmolLM2-135M "
          f"F16 via llamacpp_batch (max_sequences {args.agents}, {args.ctx} KV cells each)")
    print(f"calls: {len(turns)}; prompt tokens {sum(t.prompt_tokens for t in turns)} "
          f"({backend.stats.reused_tokens} reused from kept KV), completion tokens "
          f"{completion}; wall {wall:.1f} s")
    print(f"wall time: prompt chunks {t_prompt:.1f} s ({len(prompt)} calls), decode steps "
          f"{t_decode:.1f} s ({len(decode)} steps; sampling+detokenizing {t_sampling:.2f} s "
          f"of it), other {wall - t_prompt - t_decode:.1f} s")
    print(f"decode steps: batch size mean {mean_b:.1f} (token-weighted "
          f"{sum(c.sequences ** 2 for c in decode) / decoded:.1f}), largest {largest}; "
          f"mean KV position {position}")
    print("bare llama_decode step at that position: " + ", ".join(
        f"b={b} {t * 1000:.1f} ms ({b / t:.0f} tok/s; CPU {bare_cpu[b] * 1000:.1f} ms)"
        for b, t in bare.items()))
    print(f"decode throughput: society {decoded / t_decode:.1f} tok/s vs bare at the same "
          f"batch sizes {decoded / t_bare:.1f} tok/s -> ratio {t_bare / t_decode:.2f} "
          f"(goal >= 0.8)")
    # Other processes take the CPU away from a step at random; CPU seconds of llama.cpp's one
    # thread do not count that time, so this ratio is the one to trust on a shared machine.
    c_decode = sum(c.cpu for c in decode)
    c_bare = sum(interpolate(bare_cpu, c.sequences) for c in decode)
    print(f"  in CPU seconds (llama.cpp's one thread): society {decoded / c_decode:.1f} tok/s vs "
          f"bare {decoded / c_bare:.1f} tok/s -> ratio {c_bare / c_decode:.2f}")
    # llama.cpp puts streams in one ubatch only when their ids are consecutive: a step whose
    # decoding streams are split by others (still computing prompts) costs one pass per run.
    t_split = sum(interpolate(bare, r) for c in decode for r in c.runs)
    split = [c for c in decode if len(c.runs) > 1]
    print(f"stream runs: {len(split)} of {len(decode)} decode steps split, mean "
          f"{sum(len(c.runs) for c in decode) / len(decode):.2f} runs per step; bare time of "
          f"the same steps split as llama.cpp splits them: ratio {t_split / t_decode:.2f} "
          f"(CPU {sum(interpolate(bare_cpu, r) for c in decode for r in c.runs) / c_decode:.2f})")
    b_equiv = interpolate(bare, round(mean_b)) if round(mean_b) >= 1 else bare[1]
    print(f"end to end: {completion / wall:.1f} completion tok/s vs bare decode at batch "
          f"{round(mean_b)} {round(mean_b) / b_equiv:.1f} tok/s -> "
          f"{completion / wall * b_equiv / round(mean_b):.2f} (prompts included)")
    digest = hashlib.sha256("\n".join(t.reply for t in turns).encode()).hexdigest()[:12]
    print(f"{backend.stats.moves} stream moves; replies digest {digest}")
    print(f"accuracy: round 0 {sum(t.correct for t in records[0].rounds[0].turns)}"
          f"/{args.agents}, last round {sum(t.correct for t in records[0].rounds[-1].turns)}"
          f"/{args.agents}")


if __name__ == "__main__":
    asyncio.run(main())
