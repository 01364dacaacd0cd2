"""Backend ``co_llm``: a base model that defers some tokens to an assistant (Co-LLM).

Config: ``{co_llm: {base: smollm2, assistant: gemma3, head: heads/smollm2-gemma3.pt,
threshold: 0.5}}``. The head comes from ``python -m societies.ensembles.train_co_llm``; a head
trained for another base model is refused in one line.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from societies.backends.base import ChatBackend, Message, Reply, Settings
from societies.backends.llamacpp import ALIGN, chunk_end
from societies.backends.registry import ModelSpec
from societies.ensembles.base import Method, TokenBackend, reusable_prefix
from societies.errors import ConfigError, MissingDependency


class Options(BaseModel):
    """Config options of a Co-LLM pair."""

    model_config = ConfigDict(extra="forbid")
    base: str = Field(description="model name of the base (its head decides who writes)")
    assistant: str = Field(description="model name of the assistant")
    head: str = Field(description="deferral head file written by train_co_llm")
    threshold: float = Field(0.5, ge=0, le=1, description="defer where π > threshold")
    n_ctx: int = Field(2048, gt=0, description="context length of both models")


class LlamaHiddenStates:
    """The base model in llama.cpp embedding mode: last-layer hidden states and logits.

    In this mode (pooling ``none``) llama.cpp returns, per evaluated position, the final
    normalised hidden state (the input of the output layer) as well as the logits. It keeps its
    own KV cache and re-evaluates only what changed since the last call. States from a batch
    and from token-by-token evaluation differ by 2-3% (relative L2; quantised kernels), with
    the same argmax: heads trained on batches work on single tokens.

    Args:
        path: the base model's GGUF file, the one its token backend loads
            (:func:`~societies.ensembles.llama_tokens.spec_file`).
        n_ctx: context length.
        n_threads: CPU threads (half the cores when None).
        hidden: False gives logits only (hidden states come back empty), for teacher forcing.
        flash_attn: as the base model's spec says.
    """

    def __init__(self, path: str | Path, n_ctx: int = 2048, n_threads: int | None = None,
                 hidden: bool = True, flash_attn: bool = False) -> None:
        import llama_cpp

        from societies.backends.bundled import resolve_model_path
        from societies.backends.llamacpp import LOAD_LOCK

        # As LlamaTokenBackend: half the cores for batches too (all of them spin at barriers).
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        with LOAD_LOCK:
            self.llm: Any = llama_cpp.Llama(
                model_path=str(resolve_model_path(str(path))), n_ctx=n_ctx, n_batch=512,
                n_threads=threads, n_threads_batch=threads, embedding=hidden,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE, flash_attn=flash_attn,
                verbose=False)
        self.dim, self.n_vocab = int(self.llm.n_embd()), int(self.llm.n_vocab())
        self.hidden = hidden
        self._tokens: list[int] = []  # what the KV cache holds
        self._prompt: list[int] = []  # the prompt of the current call (see start)
        self._limit: int | None = None  # reuse cap for the first evaluation of a call

    def _eval(self, tokens: Sequence[int], start: int, keep_from: int = 0,
              ) -> tuple[np.ndarray, np.ndarray]:
        """Evaluate ``tokens`` at positions ``start...``; hidden states and logits of the
        positions from ``keep_from`` (an index into ``tokens``) on."""
        import llama_cpp

        ctx = self.llm._ctx
        ctx.kv_cache_seq_rm(-1, start, -1)
        hidden, logits = [], []
        # Cut as the chat backend cuts a prompt (no call of one token after others; calls from
        # a multiple of ALIGN when ``start`` is one), so a prompt computed from a reused prefix
        # gets the numbers of a fresh computation.
        starts = [0]
        while (end := chunk_end(start + starts[-1], start + len(tokens),
                                self.llm.n_batch) - start) < len(tokens):
            starts.append(end)
        for i, end in zip(starts, [*starts[1:], len(tokens)], strict=True):
            chunk = list(tokens[i:end])
            first = max(0, keep_from - i)
            # Embedding mode outputs every position anyway; otherwise only the kept ones pay
            # for the output layer (262k rows for Gemma).
            self.llm._batch.set_batch(batch=chunk, n_past=start + i, logits_all=self.hidden)
            for j in range(first, len(chunk)):
                self.llm._batch.batch.logits[j] = True
            ctx.decode(self.llm._batch)
            for j in range(first, len(chunk)):
                z = llama_cpp.llama_get_logits_ith(ctx.ctx, j)
                logits.append(np.ctypeslib.as_array(z, shape=(self.n_vocab,)).copy())
                if self.hidden:
                    h = llama_cpp.llama_get_embeddings_ith(ctx.ctx, j)
                    hidden.append(np.ctypeslib.as_array(h, shape=(self.dim,)).copy())
        return (np.stack(hidden) if hidden else np.zeros((len(logits), 0), np.float32),
                np.stack(logits))

    def _common(self, tokens: Sequence[int], limit: int) -> int:
        """Length of the cached prefix of ``tokens`` worth keeping (at most ``limit``)."""
        common = 0
        for old, new in zip(self._tokens, tokens, strict=False):
            if old != new or common >= limit:
                break
            common += 1
        return common

    def all_positions(self, tokens: Sequence[int], keep_from: int = 0,
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Hidden states ``[n, dim]`` and logits ``[n, vocab]`` after each of
        ``tokens[keep_from:]`` (a cached prefix before ``keep_from`` is reused)."""
        common = self._common(tokens, keep_from)
        hidden, logits = self._eval(tokens[common:], common, keep_from - common)
        self._tokens = list(tokens)
        return hidden, logits

    def start(self, prompt: Sequence[int]) -> None:
        """A call begins with ``prompt``: its first evaluation reuses only the KV of the
        previous prompt's prefix, never of tokens generated after it (those were computed one
        per step, which rounds differently: a reply would depend on the call before)."""
        # Only up to a multiple of ALIGN: Gemma-3's Q4_K kernels round a row by its place in
        # its llama_decode call (the hidden state of a follow-up moved by up to 1.03 otherwise).
        self._limit = reusable_prefix(self._prompt, prompt, len(self._tokens)) // ALIGN * ALIGN
        self._prompt = list(prompt)

    def last(self, tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Hidden state and next-token log-probabilities after ``tokens`` (prefix reused)."""
        limit = len(tokens) - 1  # the last position is evaluated anew
        first, self._limit = self._limit, None
        common = self._common(tokens, limit if first is None else min(limit, first))
        if first is not None:
            common = common // ALIGN * ALIGN  # a call's prompt starts aligned (see start)
        hidden, logits = self._eval(tokens[common:], common, len(tokens) - common - 1)
        self._tokens = list(tokens)
        z = logits[-1].astype(np.float64)
        z -= z.max()
        return hidden[-1], (z - np.log(np.exp(z).sum())).astype(np.float32)

    def __call__(self, base: TokenBackend) -> tuple[np.ndarray, np.ndarray]:
        """The :data:`~societies.ensembles.co_llm.BaseState` of the base member."""
        return self.last(base.tokens)

    def close(self) -> None:
        """Free the model."""
        self.llm.close()


def build(base: ModelSpec, assistant: ModelSpec, head_path: str, threshold: float,
          n_ctx: int = 2048, base_identity: str | None = None,
          names: tuple[str, str] = ("co_llm.base", "co_llm.assistant"),
          ) -> tuple[list[TokenBackend], Method, LlamaHiddenStates | None]:
    """Load the two token backends, the head and the :class:`CoLLM` method.

    A model that cannot load raises a :class:`~societies.ensembles.base.MemberError` with
    its name from ``names``.

    Returns:
        The members ``[base, assistant]`` (the method already prepared for them), the method,
        and the hidden-state reader (None for a ``logprobs`` head).
    """
    try:
        from societies.ensembles.co_llm import CoLLM, load_head
    except ImportError:
        raise MissingDependency("co_llm", "ensembles", "torch") from None
    from societies.ensembles.base import blame
    from societies.ensembles.llama_tokens import from_spec, spec_file

    head, meta = load_head(head_path, base=base_identity)
    members: list[TokenBackend] = []
    reader = None
    try:
        for name, spec in zip(names, (base, assistant), strict=True):
            with blame(name):
                members.append(from_spec(spec, n_ctx))
        if meta["features"] == "hidden":
            opts: Any = base.options
            with blame(names[0]):  # the same file and kernel as the base member
                reader = LlamaHiddenStates(spec_file(base), n_ctx, opts.n_threads,
                                           flash_attn=opts.flash_attn)
            if reader.dim != meta["dim"]:
                raise ConfigError(f"co_llm head {head_path} expects hidden size {meta['dim']}, "
                                  f"the base model has {reader.dim}")
        method = CoLLM(head, threshold, meta["features"], reader)
        method.prepare(members)
    except BaseException:
        for loaded in [*members, reader]:
            if (close := getattr(loaded, "close", None)) is not None:
                close()
        raise
    return members, method, reader


class CoLLMBackend(ChatBackend):
    """Chat replies decoded by Co-LLM; models load on the first call, calls run one at a time
    in a worker thread. ``Reply.extra["deferred"]`` counts the steps the assistant wrote."""

    def __init__(self, options: Options, specs: tuple[ModelSpec, ModelSpec], base_identity: str,
                 identity: str) -> None:
        self.options, self.specs = options, specs
        self._base_identity, self._identity = base_identity, identity
        self._state: tuple[list[TokenBackend], Method, LlamaHiddenStates | None] | None = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self._identity

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        return await asyncio.to_thread(self._generate, messages, settings)

    def _generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        from societies.ensembles.decode import decode_chat

        o = self.options
        names = (f"co_llm.base ({o.base})", f"co_llm.assistant ({o.assistant})")

        def load() -> tuple[Sequence[TokenBackend], Method]:
            if self._state is None:
                self._state = build(*self.specs, o.head, o.threshold, o.n_ctx,
                                    self._base_identity, names)
            members, method, _ = self._state
            return members, method

        with self._lock:  # any failure fails this call (the engine fails the unit), not the run
            result = decode_chat(load, messages, settings, names,
                                 f"co_llm of {o.base} and {o.assistant}")
        info = dict(result.info)
        # Per decision, the final stop included ("steps" counts them, pieces do not).
        info["deferral_rate"] = info.get("deferred", 0.0) / max(1.0, info.get("steps", 0.0))
        info["mean_pi"] = info.pop("pi", 0.0) / max(1.0, info.get("steps", 0.0))
        return Reply(text=result.text.strip(), prompt_tokens=result.prompt_tokens[0],
                     completion_tokens=len(result.pieces), finish_reason=result.finish_reason,
                     extra=info)

    async def aclose(self) -> None:
        if self._state is not None:
            members, _, reader = self._state
            for closable in [*members, reader]:
                close = getattr(closable, "close", None)
                if close is not None:
                    close()
        self._state = None


def create(options: Options, resolver: Any) -> CoLLMBackend:
    """Build a Co-LLM backend; checks the models and the head without loading the models."""
    specs = (resolver.spec(options.base), resolver.spec(options.assistant))
    for role, name, spec in zip(("base", "assistant"), (options.base, options.assistant), specs,
                                strict=True):
        if spec.backend != "llamacpp":
            raise ConfigError(f"co_llm.{role}: {name!r} must be a llamacpp model, "
                              f"not {spec.backend!r}")
    from societies.ensembles.llama_tokens import spec_identity

    # The identities of the files the members load (after requantize): the one function
    # every llama.cpp backend uses, so a head trained on a converted base says so.
    base_identity, assistant_identity = spec_identity(specs[0]), spec_identity(specs[1])
    meta_path = Path(f"{options.head}.json")
    if not meta_path.is_file():
        raise ConfigError(f"co_llm.head: {options.head} has no metadata file {meta_path.name}; "
                          "train one with python -m societies.ensembles.train_co_llm")
    try:
        from societies.ensembles.co_llm import TOP_LOGPROBS, load_head
    except ImportError:
        raise MissingDependency("co_llm", "ensembles", "torch") from None
    _, meta = load_head(options.head, base=base_identity)  # another base's head fails here
    if meta["features"] == "logprobs" and meta["dim"] != TOP_LOGPROBS + 1:
        raise ConfigError(f"co_llm.head: {options.head} is a logprobs head of size "
                          f"{meta['dim']}; logprobs heads take {TOP_LOGPROBS + 1} features")
    pinned = [base_identity, assistant_identity,
              hashlib.sha256(Path(options.head).read_bytes()).hexdigest()[:16],
              f"{options.threshold:g}"]
    digest = hashlib.sha256("|".join(pinned).encode()).hexdigest()[:16]
    return CoLLMBackend(options, specs, base_identity, f"co_llm:{digest}")
