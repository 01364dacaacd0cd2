"""What converting SmolLM2's Q4_1 weights (``requantize``) buys, and what it changes.

For the shipped Q4_1 file and its F16 and Q8_0 conversions, in one run on the same machine:

* prompt throughput: a 400-token prompt in one ``llama_decode`` (best of 3), all cores;
* decode step: one token of 1 sequence vs one token each of 12 sequences in separate KV streams
  (median of 8 steps after 64 tokens of context), as ``llamacpp_batch`` runs them;
* fidelity: next-token distributions over an 86-token arithmetic exchange against the Q4_1
  model (top-1 agreement and mean KL). Q4_1's kernels round activations to 8 bits as well, so
  even an exact copy of the weights does not give identical logits.

Ratios are against Q4_1 measured in the same run; this machine's speed drifts with other
tenants, so absolute figures move between runs and ratios much less.

Run: ``python experiments/bench/bench_requant.py``
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import llama_cpp
import numpy as np
from bench_llamacpp_batch import step_medians  # this folder is on sys.path when run
from llama_cpp import Llama
from llama_cpp._internals import LlamaContext

from societies.backends.bundled import bundled_path
from societies.backends.requant import requantized

EXCHANGE = (b"<|im_start|>user\nWhat is the result of 27+12*24+28-13*1? Think it through "
            b"briefly.<|im_end|>\n<|im_start|>assistant\nThe result is 27 + 12 * 24 = 27 + 288 "
            b"= 315, then 315 + 28 = 343, minus 13 gives")


def load(path: Path, **kwargs: object) -> Llama:
    threads = os.cpu_count() or 1
    return Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads,
                 verbose=False, **kwargs)  # type: ignore[arg-type]


def prompt_rate(llm: Llama, n: int = 400, chunk: int | None = None) -> float:
    """Prompt tokens per second for ``n`` tokens (in ``chunk``-token calls if given), best of 3."""
    tokens = llm.tokenize(b"What is 3+4*5+6-7*8? Think it through. " * 40)[:n]
    step = chunk or n
    best = float("inf")
    for _ in range(3):
        llm.reset()  # eval() drops the KV past n_tokens, so this starts from empty
        start = time.perf_counter()
        for at in range(0, n, step):
            llm.eval(tokens[at:at + step])
        best = min(best, time.perf_counter() - start)
    return n / best


def step_times(llm: Llama, seqs: int = 12) -> tuple[float, float]:
    """Median seconds of a decode step for 1 sequence and for ``seqs``, own KV stream each."""
    params = type(llm.context_params).from_buffer_copy(llm.context_params)
    params.n_ctx, params.n_seq_max, params.kv_unified = 512 * seqs, seqs, False
    params.n_batch = params.n_ubatch = 512
    ctx = LlamaContext(model=llm._model, params=params, verbose=False)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    try:
        return step_medians(ctx, batch, seqs, context=64)
    finally:
        llama_cpp.llama_batch_free(batch)
        ctx.close()


def next_token_logits(llm: Llama) -> np.ndarray:
    tokens = llm.tokenize(EXCHANGE, special=True)
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)])


def compare(ref: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Top-1 agreement and mean KL(ref || other) of next-token distributions."""
    def logp(x: np.ndarray) -> np.ndarray:
        z = x - x.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    p, q = logp(ref), logp(other)
    kl = float((np.exp(p) * (p - q)).sum(1).mean())
    return float((ref.argmax(1) == other.argmax(1)).mean()), kl


def main() -> None:
    source = bundled_path("smollm2")
    files = {"Q4_1 (shipped)": source, "F16": requantized(source, "f16"),
             "Q8_0": requantized(source, "q8_0")}
    rows, ref = [], None
    for label, path in files.items():
        llm = load(path, n_ctx=1024, n_batch=512, logits_all=True)
        rate, (one, many) = prompt_rate(llm), step_times(llm)
        logits = next_token_logits(llm)
        llm.close()
        ref = logits if ref is None else ref
        rows.append((label, rate, one, many, *compare(ref, logits)))
    print(f"SmolLM2-135M; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    base_rate, base_many = rows[0][1], rows[0][3]
    for label, rate, one, many, top1, kl in rows:
        print(f"{label:15} prompt {rate:6.0f} tok/s ({rate / base_rate:.2f}x) | step: 1 seq "
              f"{one * 1e3:5.1f} ms, 12 seqs {many * 1e3:6.1f} ms ({12 * one / many:.2f}x "
              f"batching, {base_many / many:.2f}x vs Q4_1) | vs Q4_1: top-1 {top1:.3f}, "
              f"KL {kl:.4f}")


if __name__ == "__main__":
    main()
