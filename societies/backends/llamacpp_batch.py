"""In-process llama.cpp with batched decoding: many concurrent calls share each forward pass.

The engine issues every agent of a round, for several questions, at once. ``llamacpp`` serialises
those calls; this backend queues them, and one worker thread runs a continuous-batching loop on
one llama context with ``n_seq_max = max_sequences`` and a unified KV cache: every step puts the
next token of each active sequence, plus prompt chunks of newly admitted ones, into one
``llama_batch`` and calls ``llama_decode`` once. Small models on CPU are bound by reading the
weights, so a step for 8 sequences costs little more than a step for one.

Prompts and sampling mirror ``llamacpp``: the handler llama-cpp-python would use formats the
prompt and supplies its stop strings and sampling defaults (repeat penalty, top-k, min-p), and
the same chain is applied in numpy, so greedy replies match ``llamacpp`` (up to rounding noise,
see experiments/bench/README.md). Sampled replies come from a numpy generator seeded per request,
so they do not depend on which requests share a batch; they differ from ``llamacpp``'s, hence
the separate identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from societies.backends.base import (
    BackendError,
    ChatBackend,
    ContextOverflowError,
    Message,
    Reply,
    Settings,
)
from societies.backends.bundled import resolve_model_path
from societies.backends.llamacpp import PLAIN_STOPS, file_identity, plain_prompt


class Options(BaseModel):
    """Config options of the batched in-process llama.cpp backend."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="GGUF file, or bundled:smollm2 / bundled:gemma3")
    n_ctx: int = Field(16384, gt=0, description="KV cells, split evenly between sequences")
    max_sequences: int = Field(8, ge=1, le=256, description="sequences decoded together")
    n_threads: int | None = Field(None, gt=0)
    n_batch: int = Field(512, gt=0, description="most tokens in one llama_decode call")
    prompt_format: Literal["chat", "plain"] = "chat"


@dataclass
class BatchStats:
    """Counters of the decode loop (benchmarks and tests read them)."""

    decode_calls: int = 0
    tokens_decoded: int = 0
    max_sequences_per_call: int = 0


class _Captured(Exception):
    def __init__(self, tokens: list[int], params: dict[str, Any]) -> None:
        self.tokens, self.params = tokens, params


class _Capture:
    """Prepares a request exactly as ``Llama`` would for ``llamacpp``, then stops before decoding.

    It stands in for the ``Llama`` object: the chat handler renders the template and adds its
    stop strings, ``_create_completion`` tokenizes and fills in the sampling defaults, and the
    call to ``generate`` is where we take over. Reusing that code (rather than copying it) keeps
    prompts and sampling identical to ``llamacpp`` whatever the chat format.
    """

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self._n_ctx = 1 << 30  # llama-cpp's own length check would use its small context
        self.stop: str | list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def create_completion(self, *args: Any, **kwargs: Any) -> Any:
        from llama_cpp import Llama

        return Llama.create_completion(self, *args, **kwargs)  # type: ignore[arg-type]

    def _create_completion(self, **kwargs: Any) -> Any:
        from llama_cpp import Llama

        self.stop = kwargs.get("stop") or []
        return Llama._create_completion(self, **kwargs)  # type: ignore[arg-type]

    def generate(self, tokens: Sequence[int], **params: Any) -> Any:
        raise _Captured(list(tokens), params)


@dataclass
class _Request:
    messages: Sequence[Message]
    settings: Settings
    future: asyncio.Future[Reply]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Seq:
    """A request holding a sequence slot (KV sequence id)."""

    req: _Request
    slot: int
    prompt: list[int]
    stops: list[str]
    params: dict[str, Any]
    max_new: int
    rng: np.random.Generator
    fed: int = 0  # tokens already in the KV cache
    out: list[int] = field(default_factory=list)
    text: bytes = b""


def sample(logits: np.ndarray, history: Sequence[int], params: dict[str, Any],
           rng: np.random.Generator, last_n: int) -> int:
    """Pick a token as llama-cpp-python's sampler chain does, given ``generate``'s parameters.

    Order: penalties over the last ``last_n`` generated tokens, then greedy when ``temp`` is 0,
    else top-k, top-p, min-p, temperature and a draw. The penalty arithmetic stays in float32
    as in C, so greedy picks agree with llama.cpp on the same logits.
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
    top_p = float(params.get("top_p", 1.0))
    if top_p < 1.0:
        probs = np.exp(z - z[0])
        z = z[: int(np.searchsorted(np.cumsum(probs / probs.sum()), top_p)) + 1]
    min_p = float(params.get("min_p", 0.0))
    if min_p > 0:
        z = z[z >= z[0] + np.log(min_p)]
    probs = np.exp((z - z[0]) / float(params["temp"]))
    return int(idx[rng.choice(z.size, p=probs / probs.sum())])


class LlamaCppBatchBackend(ChatBackend):
    """A GGUF model whose concurrent calls are decoded together in one llama context.

    Each sequence gets ``n_ctx // max_sequences`` KV cells, so admitted requests can never run
    the shared cache dry; a prompt that does not fit its share raises ContextOverflowError.

    Attributes:
        stats: decode-loop counters.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.path = resolve_model_path(options.path)
        self._identity = (f"llamacpp_batch:{self.path.name}:{file_identity(self.path)}:"
                          f"{options.prompt_format}")
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._closing = False
        self._broken: BackendError | None = None  # set once the worker can serve no more calls
        self._thread: threading.Thread | None = None
        self._llm: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._active: list[_Seq] = []
        self._free: list[int] = list(range(options.max_sequences))[::-1]

    @property
    def identity(self) -> str:
        return self._identity

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        loop = asyncio.get_running_loop()
        request = _Request(messages, settings, loop.create_future(), loop)
        with self._cond:
            if self._broken or self._closing:
                raise self._broken or BackendError(f"{self.path.name}: backend is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llamacpp-batch",
                                                daemon=True)
                self._thread.start()
            self._pending.append(request)
            self._cond.notify()
        return await request.future

    async def aclose(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # --- everything below runs in the worker thread -------------------------------------------

    def _run(self) -> None:
        try:
            self._load()
        except Exception as err:  # a broken file: fail every call, now and later
            self._fail_all(BackendError(f"{self.path.name}: cannot load model: {err}"))
            return
        while True:
            with self._cond:
                while not (self._pending or self._active or self._closing):
                    self._cond.wait()
                if self._closing:
                    break
                admitted = []
                while self._pending and self._free:
                    admitted.append((self._pending.popleft(), self._free.pop()))
            for request, slot in admitted:
                self._admit(request, slot)
            try:
                self._step()
            except BackendError as err:
                for seq in list(self._active):
                    self._finish(seq, err)
        self._fail_all(BackendError(f"{self.path.name}: backend closed"))
        self._release()

    def _load(self) -> None:
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp._internals import LlamaContext

        self._llm = Llama(model_path=str(self.path), n_ctx=256, n_batch=64,
                          n_threads=self.options.n_threads, verbose=False)
        # Same settings as llamacpp's own context (threads, attention) except the sizes.
        params = type(self._llm.context_params).from_buffer_copy(self._llm.context_params)
        params.n_ctx = self.options.n_ctx
        params.n_batch = params.n_ubatch = self.options.n_batch
        params.n_seq_max = self.options.max_sequences
        params.kv_unified = True
        if self.options.n_threads:
            params.n_threads_batch = self.options.n_threads
        self._ctx = LlamaContext(model=self._llm._model, params=params, verbose=False)
        self._share = self._ctx.n_ctx() // self.options.max_sequences
        self._batch = llama_cpp.llama_batch_init(self.options.n_batch, 0, 1)
        self._n_vocab = self._llm.n_vocab()

    def _format(self, request: _Request) -> tuple[list[int], list[str], dict[str, Any]]:
        from llama_cpp import Llama

        settings, capture = request.settings, _Capture(self._llm)
        # The same arguments llamacpp passes, so the same prompt, stops and sampling result.
        common: dict[str, Any] = {"temperature": settings.temperature, "top_p": settings.top_p,
                                  "max_tokens": settings.max_tokens, "seed": settings.seed}
        try:
            if self.options.prompt_format == "chat":
                Llama.create_chat_completion(
                    capture,  # type: ignore[arg-type]
                    messages=[{"role": m.role, "content": m.content}  # type: ignore[misc]
                              for m in request.messages],
                    stop=list(settings.stop) or None, **common)
            else:
                capture.create_completion(plain_prompt(request.messages),
                                          stop=[*PLAIN_STOPS, *settings.stop], **common)
        except _Captured as got:
            stops = [capture.stop] if isinstance(capture.stop, str) else list(capture.stop)
            return got.tokens, stops, got.params
        raise BackendError(f"{self.path.name}: llama-cpp-python never reached generate()")

    def _admit(self, request: _Request, slot: int) -> None:
        try:
            prompt, stops, params = self._format(request)
        except Exception as err:  # a template raising on these messages fails this call only
            self._free.append(slot)
            self._resolve(request, BackendError(f"{self.path.name}: {err}"))
            return
        if len(prompt) >= self._share:
            self._free.append(slot)
            self._resolve(request, ContextOverflowError(
                f"{self.path.name}: prompt of {len(prompt)} tokens exceeds the context share of "
                f"{self._share} tokens (n_ctx {self._ctx.n_ctx()} / "
                f"max_sequences {self.options.max_sequences})"))
            return
        self._active.append(_Seq(
            request, slot, prompt, [s for s in stops if s], params,
            min(request.settings.max_tokens, self._share - len(prompt)),
            np.random.default_rng(request.settings.seed)))

    def _step(self) -> None:
        import llama_cpp

        for seq in [s for s in self._active if s.req.future.done()]:  # cancelled by the caller
            self._finish(seq, None)
        batch, n, rows = self._batch, 0, []
        # Decoding sequences first, so that long prompts never stall them; prompts fill the rest.
        for seq in sorted(self._active, key=lambda s: s.fed < len(s.prompt)):
            todo = (seq.prompt + seq.out)[seq.fed:]
            take = todo[: self.options.n_batch - n]
            for j, token in enumerate(take):
                batch.token[n], batch.pos[n] = token, seq.fed + j
                batch.n_seq_id[n], batch.seq_id[n][0] = 1, seq.slot
                last = j == len(todo) - 1
                batch.logits[n] = last
                if last:
                    rows.append((seq, n))
                n += 1
            seq.fed += len(take)
        if n == 0:
            return
        batch.n_tokens = n
        code = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if code != 0:
            raise BackendError(f"{self.path.name}: llama_decode failed with code {code}")
        self.stats.decode_calls += 1
        self.stats.tokens_decoded += n
        self.stats.max_sequences_per_call = max(self.stats.max_sequences_per_call,
                                                len({batch.seq_id[i][0] for i in range(n)}))
        for seq, row in rows:
            ptr = llama_cpp.llama_get_logits_ith(self._ctx.ctx, row)
            logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()
            self._advance(seq, sample(logits, seq.out, seq.params, seq.rng,
                                      self._llm.last_n_tokens_size))

    def _advance(self, seq: _Seq, token: int) -> None:
        import llama_cpp

        if llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, token):
            self._finish(seq, self._reply(seq, seq.text.decode(errors="ignore"), "stop"))
            return
        seq.out.append(token)
        seq.text += self._llm.detokenize([token])
        text = seq.text.decode(errors="ignore")
        cuts = [text.index(s) for s in seq.stops if s in text]
        if cuts:
            self._finish(seq, self._reply(seq, text[: min(cuts)], "stop"))
        elif len(seq.out) >= seq.max_new:
            self._finish(seq, self._reply(seq, text, "length"))

    def _reply(self, seq: _Seq, text: str, reason: str) -> Reply:
        return Reply(text=text.strip(), prompt_tokens=len(seq.prompt),
                     completion_tokens=len(seq.out), finish_reason=reason)

    def _finish(self, seq: _Seq, result: Reply | BaseException | None) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._ctx.memory, seq.slot, -1, -1)
        self._active.remove(seq)
        self._free.append(seq.slot)
        if result is not None:
            self._resolve(seq.req, result)

    @staticmethod
    def _resolve(request: _Request, result: Reply | BaseException) -> None:
        def settle() -> None:
            if request.future.done():  # the caller gave up (cancelled)
                return
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)

        # A closed event loop raises: nobody is waiting for that reply any more.
        with contextlib.suppress(RuntimeError):
            request.loop.call_soon_threadsafe(settle)

    def _fail_all(self, err: BackendError) -> None:
        with self._cond:
            self._broken = err
            waiting, self._pending = list(self._pending), deque()
        for request in waiting + [s.req for s in self._active]:
            self._resolve(request, err)
        self._active.clear()

    def _release(self) -> None:
        import llama_cpp

        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._ctx.close()
        if self._llm is not None:
            self._llm.close()


def create(options: Options, resolver: Any) -> LlamaCppBatchBackend:
    """Build a batched llama.cpp backend from config options."""
    return LlamaCppBatchBackend(options)
