"""Batched round decoding (``llamacpp_batch``) vs one call at a time (``llamacpp``).

A debate round is N concurrent generate calls. This times one such round of N greedy requests
with ``max_tokens`` new tokens each on a bundled model (SmolLM2 by default), (a) all at once
through the batched backend and (b) one after another through the single-sequence backend, with
the same thread count, and prints completion tokens per second of each and their ratio. Each
side runs ``--repeats`` times after a warm-up and the best run counts, which damps noise from
other processes on a shared machine.

It then prints the ceiling for the step itself: the time of one ``llama_decode`` holding one
token of each of N sequences against one holding a single token (median of 8 steps, same
context settings as the backend). Batching cannot beat that ratio; CPU kernels set it.

Run: ``python experiments/bench/bench_llamacpp_batch.py [--model smollm2|gemma3] [--n 8]
[--requantize q8_0]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from societies.backends import llamacpp, llamacpp_batch
from societies.backends.base import ChatBackend, Message, Reply, Settings

TOPICS = ["a lighthouse keeper", "a lost robot", "the first snow", "a dragon who bakes bread",
          "a city under the sea", "a clockmaker's apprentice", "a comet", "an old library",
          "a desert caravan", "a talking cat", "a mountain village", "a ship of glass"]


def requests(n: int, take: int = 0) -> list[list[Message]]:
    """N prompts that make SmolLM2 write at length (so most run to max_tokens).

    ``take`` numbers the story, so that repeated runs do not find their prompts cached (both
    backends keep earlier prompts; they share only the chat template's system prompt).
    """
    return [[Message("user", f"Story {take}: write a long, detailed story about "
                             f"{TOPICS[i % len(TOPICS)]}.")] for i in range(n)]


async def timed(run: Callable[[int], Awaitable[list[Reply]]],
                repeats: int) -> tuple[float, int]:
    """Best wall time over ``repeats`` runs (takes 1, 2, ...), and one run's completion tokens."""
    best, tokens = float("inf"), 0
    for take in range(1, repeats + 1):
        start = time.perf_counter()
        replies = await run(take)
        best = min(best, time.perf_counter() - start)
        tokens = sum(r.completion_tokens for r in replies)
    return best, tokens


def step_medians(ctx: Any, batch: Any, n: int, context: int = 32) -> tuple[float, float]:
    """Median seconds of a ``llama_decode`` step for 1 and for ``n`` sequences.

    ``ctx`` is a ``LlamaContext`` with at least ``n`` KV streams and ``batch`` a llama_batch of
    at least ``n`` tokens. Each sequence gets ``context`` tokens first so that attention has
    something to read; the context is cleared before and after.
    """
    import llama_cpp

    def step(seqs: int, pos: int) -> float:
        for i in range(seqs):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = 100 + i, pos, 1
            batch.seq_id[i][0], batch.logits[i] = i, 1
        batch.n_tokens = seqs
        start = time.perf_counter()
        if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        return time.perf_counter() - start

    out = []
    for seqs in (1, n):
        llama_cpp.llama_memory_clear(ctx.memory, True)
        for pos in range(context):
            step(seqs, pos)
        times = sorted(step(seqs, context + k) for k in range(8))
        out.append(times[len(times) // 2])
    llama_cpp.llama_memory_clear(ctx.memory, True)
    return out[0], out[1]


def step_ceiling(backend: llamacpp_batch.LlamaCppBatchBackend, n: int) -> tuple[float, float]:
    """:func:`step_medians` on the loaded backend's own context, while it is idle.

    Its worker thread waits; what its streams kept is cleared. The backend is unusable
    afterwards: close it.
    """
    return step_medians(backend._ctx, backend._batch, n)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "gemma3"], default="smollm2")
    parser.add_argument("--n", type=int, default=8, help="concurrent requests (one round)")
    parser.add_argument("--max-tokens", type=int, default=64)
    # One thread by default: on a shared 2-core machine, two OpenMP threads stall each other
    # whenever another process runs (measured up to 6x slower); see README.md.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--requantize", choices=["q8_0", "f16"], default=None,
                        help="convert the weights first (SmolLM2's Q4_1 has no GEMM kernel)")
    args = parser.parse_args()
    settings = Settings(temperature=0.0, max_tokens=args.max_tokens, seed=0)
    warm = requests(1)[0]

    # Gemma-3-270M is a base model without a chat template: llamacpp's plain format.
    fmt = "plain" if args.model == "gemma3" else "chat"
    batched = llamacpp_batch.LlamaCppBatchBackend(llamacpp_batch.Options(
        path=f"bundled:{args.model}", max_sequences=args.n, n_ctx=2048 * args.n,
        n_threads=args.threads, prompt_format=fmt, requantize=args.requantize))
    single = llamacpp.LlamaCppBackend(llamacpp.Options(
        path=f"bundled:{args.model}", n_ctx=2048, n_threads=args.threads, prompt_format=fmt,
        requantize=args.requantize))

    async def all_at_once(take: int, backend: ChatBackend = batched) -> list[Reply]:
        prompts = requests(args.n, take)
        return list(await asyncio.gather(*(backend.generate(p, settings) for p in prompts)))

    async def one_at_a_time(take: int, backend: ChatBackend = single) -> list[Reply]:
        return [await backend.generate(p, settings) for p in requests(args.n, take)]

    await batched.generate(warm, Settings(temperature=0.0, max_tokens=2))  # load + warm up
    await single.generate(warm, Settings(temperature=0.0, max_tokens=2))
    calls_before = batched.stats.decode_calls
    t_batch, tok_batch = await timed(all_at_once, args.repeats)
    calls = (batched.stats.decode_calls - calls_before) / args.repeats
    t_single, tok_single = await timed(one_at_a_time, args.repeats)
    take = args.repeats + 1
    same = [a.text == b.text for a, b in zip(await all_at_once(take),
                                              await one_at_a_time(take), strict=True)]
    one, many = step_ceiling(batched, args.n)
    await batched.aclose()
    await single.aclose()

    rate_batch, rate_single = tok_batch / t_batch, tok_single / t_single
    weights = f" as {args.requantize}" if args.requantize else ""
    print(f"{args.model}{weights}; machine: {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {args.threads} threads; "
          f"{args.n} requests x {args.max_tokens} new tokens, greedy")
    print(f"llamacpp_batch (all at once): {tok_batch} tokens in {t_batch:.2f} s = "
          f"{rate_batch:.1f} tokens/s ({calls:.0f} llama_decode calls, "
          f"up to {batched.stats.max_sequences_per_call} sequences per call)")
    print(f"llamacpp (one at a time):     {tok_single} tokens in {t_single:.2f} s = "
          f"{rate_single:.1f} tokens/s")
    print(f"ratio: {rate_batch / rate_single:.2f}x (goal >= 2.5x)")
    print(f"identical greedy replies: {sum(same)}/{len(same)}")
    print(f"step ceiling: 1 sequence {one * 1000:.1f} ms/step, {args.n} sequences "
          f"{many * 1000:.1f} ms/step -> {args.n * one / many:.2f}x tokens/s at best")


if __name__ == "__main__":
    asyncio.run(main())
