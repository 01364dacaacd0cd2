"""One sampling vocabulary for every backend: what each :class:`Settings` field means, and how
it is handed to each library so that nothing else is in effect.

Meaning (llama.cpp's sampler chain, which ``llamacpp``, ``llamacpp_batch``, llama.cpp servers
and the ensembles follow, and ``transformers`` reproduces):

* temperature 0: greedy (the most likely token; ties go to the lowest id);
* otherwise ``top_k`` (0 = off), then ``top_p`` (1 = off), then ``min_p`` (0 = off) filter the
  model's distribution *at temperature 1*; ``temperature`` then reshapes what is left, and a
  generator seeded with ``seed`` draws the token;
* no repetition, frequency or presence penalty, no typical-p, tail-free, mirostat or DRY;
* ``stop`` strings end the reply and are not part of it; ``max_tokens`` caps the completion.

Libraries default several of these to something else (llama-cpp-python: top-k 40, min-p 0.05;
its server also repeat penalty 1.1; transformers: top-k 50), so every backend passes every knob.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from societies.backends.base import Settings

# llama-cpp-python's knobs that Settings has no word for, at the values that switch them off.
# create_completion / create_chat_completion get these explicitly: the library's own defaults
# are not all neutral, and a later version may change them.
LLAMA_OFF: dict[str, Any] = {
    "typical_p": 1.0,
    "repeat_penalty": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
    "tfs_z": 1.0,
    "mirostat_mode": 0,
}

FinishReason = Literal["stop", "length"]


def llama_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of llama-cpp-python's ``create_(chat_)completion`` for ``settings``.

    Every sampling parameter is given (stop strings apart: the caller adds its own), so only
    ``settings`` decide the reply.

    Example:
        >>> kw = llama_kwargs(Settings(temperature=0.5, max_tokens=8, seed=3))
        >>> kw["top_k"], kw["min_p"], kw["repeat_penalty"], kw["seed"]
        (0, 0.0, 1.0, 3)
    """
    return {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,
        "min_p": settings.min_p,
        "seed": settings.seed,
        "max_tokens": settings.max_tokens,
        **LLAMA_OFF,
    }


def finish_reason(raw: object) -> FinishReason:
    """A backend's finish reason as a record holds it: "length" when cut by max_tokens or the
    context, else "stop" (end of text, a stop string, a server's "eos", "tool_calls", ...).

    Example:
        >>> finish_reason("length"), finish_reason("eos"), finish_reason(None)
        ('length', 'stop', 'stop')
    """
    return "length" if raw == "length" else "stop"


def sample(logits: np.ndarray, history: Sequence[int], params: dict[str, Any],
           rng: np.random.Generator, last_n: int = 64) -> int:
    """Pick a token by the chain above, in numpy, given llama-cpp-python-style parameters.

    ``params`` uses llama-cpp-python's names (``temp``, ``top_k``, ``top_p``, ``min_p`` and,
    only if given, ``repeat_penalty``, ``frequency_penalty``, ``presence_penalty`` over the
    last ``last_n`` tokens of ``history``); a missing filter is off. Greedy when ``temp`` is 0,
    else the filters on the untempered logits, the temperature, and a draw from ``rng``.
    The ensembles' decode loop samples with this; the chat backends use llama.cpp's own chain,
    which has the same meaning but its own random generator. Penalties use float32 arithmetic
    as the C code does.

    Example:
        >>> logits = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
        >>> sample(logits.copy(), [], {"temp": 0.0}, np.random.default_rng(0))
        0
        >>> sample(logits.copy(), [], {"temp": 5.0, "top_k": 1}, np.random.default_rng(0))
        0
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
