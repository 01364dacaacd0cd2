"""llama-cpp-python's token sampler, redone in numpy for the batched backend.

``llamacpp_batch`` decodes many sequences in one llama.cpp context, so it cannot use
llama-cpp-python's per-context sampler; this reproduces its chain on one row of logits, with a
numpy generator seeded per call, so that a reply depends on its seed and never on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def sample(logits: np.ndarray, history: Sequence[int], params: dict[str, Any],
           rng: np.random.Generator, last_n: int = 64) -> int:
    """Pick a token as llama-cpp-python's sampler chain does, given ``generate``'s parameters.

    Penalties over the last ``last_n`` generated tokens, then greedy when ``temp`` is 0, else
    top-k, top-p, min-p, temperature and a draw from ``rng``. Penalties use float32 arithmetic as
    the C code does, so greedy picks agree with llama.cpp's on the same logits.
    """
    repeat = np.float32(params.get("repeat_penalty", 1.0))
    freq = np.float32(params.get("frequency_penalty", 0.0))
    present = np.float32(params.get("presence_penalty", 0.0))
    if history and (repeat != 1 or freq != 0 or present != 0):
        ids, counts = np.unique(np.asarray(history[-last_n:]), return_counts=True)
        vals = logits[ids]
        vals = np.where(vals <= 0, vals * repeat, vals / repeat)
        logits[ids] = vals - (counts.astype(np.float32) * freq + present)
    if params.get("temp", 0.0) == 0:
        return int(np.argmax(logits))
    k = int(params.get("top_k", 0))
    idx = np.argpartition(-logits, k - 1)[:k] if 0 < k < logits.size else np.arange(logits.size)
    idx = idx[np.argsort(-logits[idx], kind="stable")]
    z = logits[idx].astype(np.float64)
    if (top_p := float(params.get("top_p", 1.0))) < 1.0:
        probs = np.exp(z - z[0])
        z = z[: int(np.searchsorted(np.cumsum(probs / probs.sum()), top_p)) + 1]
    if (min_p := float(params.get("min_p", 0.0))) > 0:
        z = z[z >= z[0] + np.log(min_p)]
    probs = np.exp((z - z[0]) / float(params["temp"]))
    return int(idx[rng.choice(z.size, p=probs / probs.sum())])
