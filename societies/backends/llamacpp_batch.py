"""In-process llama.cpp with batched decoding: concurrent calls share each forward pass.

The engine issues every agent of a round, for several questions, at once; ``llamacpp`` serves
them one by one. Here they queue, and one worker thread runs a continuous-batching loop on one
llama context with up to ``max_sequences`` sequences: each decode step puts the next token of
every active sequence into one ``llama_batch`` and calls ``llama_decode`` once; prompts of newly
admitted calls are computed in chunks between steps. Weight reads and per-call overheads are
shared; how much that gains depends on the CPU kernels of the weight type (README of
experiments/bench).

Each sequence has its own KV stream (``kv_unified = False``): in a unified cache its cells
interleave with its neighbours', which changes llama.cpp's rounding, and 4-bit activation
quantization amplifies that into logit differences of up to ~1 (measured on SmolLM2), enough
to change greedy replies with batch composition. With one stream each, and prompts computed
apart from decode steps (see :meth:`LlamaCppBatchBackend._step`), SmolLM2's logits are
bit-identical whatever shares the batch. That holds for weight types whose CPU kernels compute
each row alone (such as Q4_1 on x86); repacked GEMM kernels (Q4_0, Q4_K with AVX2, as in
Gemma-3) tile rows and may round differently with the number of sequences. SmolLM2 converted
to F16 or Q8_0 (``requantize``) goes through llamafile's GEMM and gave the same greedy replies
batched and alone in the small comparisons of tests/backends/test_requant.py, but not always at
scale: in a 100-agent round, F16 replies for the same seeded calls differed between two stream
placements (at 20 agents they did not), so F16 replies may depend on what shares the batch.
Finished prompts stay in their streams (and in ``keep_streams`` spare ones) for a later call
extending them.

Prompts and sampling reuse llama-cpp-python's own request preparation (:class:`Capture`) and
its sampler chain, one per sequence with its own seeded generator, and prompts are cut into
calls as ``llamacpp`` cuts them (:func:`~societies.backends.llamacpp.chunk_end`). So where the
kernels compute each row alone, a reply equals ``llamacpp``'s, greedy or sampled (SmolLM2 as
Q4_1 or F16: tests/backends/test_parity.py). With repacked kernels it need not: on Gemma-3,
1 of 6 greedy replies decoded beside five others differed from the reply decoded alone. The
backend therefore keeps an identity of its own (``...:batched``): the call cache never hands
one backend's replies to the other.

This module uses llama-cpp-python's private API (``_internals.LlamaContext``,
``Llama._create_completion``, ``Llama._init_sampler``) and llama.cpp's per-stream KV memory;
:func:`require_llama_cpp` checks for them when a backend is created, naming the versions that
have them (:data:`SUPPORTED`, also the pin in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import inspect
import itertools
import os
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import llama_cpp
from llama_cpp import Llama
from pydantic import BaseModel, ConfigDict, Field

from societies.backends.base import (
    BackendError,
    ChatBackend,
    ContextOverflowError,
    Message,
    Reply,
    Settings,
)
from societies.backends.identity import gguf_identity
from societies.backends.llama_private import Capture, Captured, require_llama_cpp
from societies.backends.llamacpp import (
    ALIGN,
    LOAD_LOCK,
    PLAIN_STOPS,
    chunk_end,
    model_file,
    plain_prompt,
)
from societies.backends.sampling import llama_kwargs

REUSE_MIN = ALIGN  # fewer common tokens are recomputed rather than copying a KV stream

# Options that change how fast replies come, never what they are (a resumed run may change
# them). n_threads: llama.cpp splits each product's rows between threads, each row computed the
# same way. Not max_sequences or keep_streams: they divide n_ctx between the KV streams, so they
# set each call's context (which prompts overflow, where a long reply is cut). Not n_batch: it
# moves the cuts of long prompts (see llamacpp's EXECUTION_OPTIONS).
EXECUTION_OPTIONS: frozenset[str] = frozenset({"n_threads"})


class Options(BaseModel):
    """Config options of the batched in-process llama.cpp backend."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="GGUF file, or bundled:smollm2 / bundled:gemma3")
    n_ctx: int = Field(16384, gt=0, description="KV cells in all, split evenly between streams")
    max_sequences: int = Field(8, ge=1, le=128, description="sequences decoded together")
    keep_streams: int = Field(0, ge=0, le=128, description=(
        "extra KV streams that keep finished prompts, so that a later call extending one (the "
        "same agent's next round) skips recomputing it; each stream takes its share of n_ctx"))
    n_threads: int | None = Field(None, gt=0)
    n_batch: int = Field(512, ge=2 * ALIGN, multiple_of=ALIGN,
                         description="most tokens in one llama_decode call")
    prompt_format: Literal["chat", "plain"] = "chat"
    requantize: Literal["q8_0", "f16"] | None = Field(None, description=(
        "convert the weights to this type once (cached); see the llamacpp backend"))
    flash_attn: bool = Field(False, description="llama.cpp's fused attention kernel")


@dataclass
class BatchStats:
    """Counters of the decode loop, for benchmarks and tests."""

    decode_calls: int = 0
    tokens_decoded: int = 0
    max_sequences_per_call: int = 0
    moves: int = 0  # sequences moved to a lower stream to close a gap
    copies: int = 0  # whole-stream KV copies (moves, reuse, keeping a prompt out of the way)
    reused_tokens: int = 0  # prompt tokens whose KV was kept from an earlier call


@dataclass
class _Request:
    messages: Sequence[Message]
    settings: Settings
    future: asyncio.Future[Reply]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Seq:
    """An admitted request; ``slot`` is its sequence id and KV stream."""

    req: _Request
    slot: int
    prompt: list[int]
    stops: list[str]
    sampler: Any  # llama-cpp-python's sampler chain for this request, with its own generator
    max_new: int
    fed: int = 0  # tokens already in the KV cache
    out: list[int] = field(default_factory=list)
    text: bytes = b""


class LlamaCppBatchBackend(ChatBackend):
    """A GGUF model whose concurrent calls are decoded together in one llama context.

    Each stream owns ``n_ctx // (max_sequences + keep_streams)`` KV cells; a prompt that does
    not fit raises ContextOverflowError for that call only, and a completion stops at the limit
    with finish_reason "length", as ``llamacpp`` does at its ``n_ctx``.

    Attributes:
        stats: decode-loop counters.
    """

    def __init__(self, options: Options) -> None:
        require_llama_cpp()
        self.options = options
        self.path = model_file(options.path, options.requantize)
        # Equal to llamacpp's replies only where kernels compute rows alone (module doc).
        self._identity = (f"{gguf_identity(self.path, options.prompt_format, options.flash_attn)}"
                          ":batched")
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._closing = False
        self._broken: BackendError | None = None  # set once the worker serves no more calls
        self._thread: threading.Thread | None = None
        self._llm: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._share = 0
        self._max = options.max_sequences
        self._active: list[_Seq] = []
        self._free = set(range(options.max_sequences + options.keep_streams))
        self._kept: dict[int, list[int]] = {}  # free stream -> prompt its KV still holds
        self._kept_at: dict[int, int] = {}  # free stream -> when it was last kept or used
        self._tick = itertools.count()

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

    # Everything below runs in the worker thread, the only one touching llama.cpp.

    def _run(self) -> None:
        try:
            self._load()
        except Exception as err:  # e.g. a corrupt file: fail every call, now and later
            self._fail_all(BackendError(f"{self.path.name}: cannot load model: {err}"))
            return
        closing = BackendError(f"{self.path.name}: backend closed")
        try:
            self._serve()
        except Exception as err:  # a bug must not leave callers waiting forever
            closing = BackendError(f"{self.path.name}: decode loop failed: {err!r}")
        self._fail_all(closing)
        self._release()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not (self._pending or self._active or self._closing):
                    self._cond.wait()
                if self._closing:
                    return
                admitted: list[tuple[_Request, int]] = []
                while self._pending and len(self._active) + len(admitted) < self._max:
                    slot = min(self._free)  # lowest first keeps the active streams contiguous
                    self._free.remove(slot)
                    admitted.append((self._pending.popleft(), slot))
            for request, slot in admitted:
                self._admit(request, slot)
            self._compact()
            try:
                self._step()
            except BackendError as err:  # llama_decode failed: fail this batch, go on
                for seq in list(self._active):
                    self._finish(seq, err)

    def _load(self) -> None:
        # The Llama object supplies the weights, tokenizer and chat handler; its own context is
        # kept tiny. Ours copies its settings (attention type, ...) except sizes and streams.
        # Threads as in llamacpp: every step here is a multi-token batch (n_threads_batch).
        threads = self.options.n_threads or os.cpu_count() or 1
        with LOAD_LOCK:
            self._llm = Llama(model_path=str(self.path), n_ctx=256, n_batch=64,
                              n_threads=threads, n_threads_batch=threads,
                              flash_attn=self.options.flash_attn, verbose=False)
            params = type(self._llm.context_params).from_buffer_copy(self._llm.context_params)
            params.n_ctx = self.options.n_ctx
            params.n_batch = params.n_ubatch = self.options.n_batch
            params.n_seq_max = self.options.max_sequences + self.options.keep_streams
            params.kv_unified = False
            context = importlib.import_module("llama_cpp._internals").LlamaContext
            self._ctx = context(model=self._llm._model, params=params, verbose=False)
        self._share = llama_cpp.llama_n_ctx_seq(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(self.options.n_batch, 0, 1)

    def _format(self, request: _Request) -> tuple[list[int], list[str], Any]:
        """The prompt tokens, stop strings and sampler chain ``llamacpp`` would use."""
        settings, capture = request.settings, Capture(self._llm)
        # Exactly the arguments llamacpp passes, hence its prompt, stops and sampler settings.
        common = llama_kwargs(settings)
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
        except Captured as got:
            stops = [capture.stop] if isinstance(capture.stop, str) else list(capture.stop)
            # _create_completion has just set the Llama's seed (Llama.set_seed); the chain is
            # built as Llama.generate builds it, so its draws are llamacpp's draws.
            known = inspect.signature(Llama._init_sampler).parameters
            sampler = self._llm._init_sampler(
                **{k: v for k, v in got.params.items() if k in known})
            return got.tokens, [s for s in stops if s], sampler
        raise BackendError(f"{self.path.name}: llama-cpp-python never reached generate()")

    def _admit(self, request: _Request, slot: int) -> None:
        try:
            prompt, stops, sampler = self._format(request)
            if len(prompt) >= self._share:
                sampler.close()
                raise ContextOverflowError(
                    f"{self.path.name}: prompt of {len(prompt)} tokens does not fit the "
                    f"{self._share} tokens of context per sequence (n_ctx {self.options.n_ctx}"
                    f" / {self.options.max_sequences + self.options.keep_streams} streams)")
        except Exception as err:  # a template rejecting these messages fails this call only
            self._free.add(slot)
            self._resolve(request, err if isinstance(err, BackendError)
                          else BackendError(f"{self.path.name}: {err}"))
            return
        seq = _Seq(request, slot, prompt, stops, sampler,
                   min(request.settings.max_tokens, self._share - len(prompt)))
        seq.fed = self._reuse(slot, prompt)
        self._active.append(seq)

    def _reuse(self, slot: int, prompt: list[int]) -> int:
        """Start ``slot`` from the longest prompt prefix a free stream still holds.

        A debate round's prompt extends the agent's previous prompt, which is often still in
        the KV stream of that agent's last call; only the reply and the new message then need
        computing. Only prompt KV is kept: llama.cpp rounds one-token decode steps differently
        from prompt chunks, so reusing a reply's KV would change later replies.
        """
        best, source = 0, slot
        for free, kept in self._kept.items():
            common = next((i for i, (a, b) in enumerate(zip(kept, prompt, strict=False))
                           if a != b), min(len(kept), len(prompt)))
            if common > best or (common == best and free == slot):
                best, source = common, free
        # Leave a chunk of >= 2 tokens and cut where a fresh computation would (see _step).
        best = min(best, len(prompt) - 2) // ALIGN * ALIGN
        if best < REUSE_MIN:
            best, source = 0, slot
        if source == slot and best:
            del self._kept[slot]  # its prompt becomes this sequence's prefix
        else:
            self._vacate(slot, spare_not=source)
            if source != slot:
                self._copy(source, slot)
                self._kept_at[source] = next(self._tick)
        if not llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot, best, -1):
            llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot, -1, -1)
            best = 0
        self.stats.reused_tokens += best
        return best

    def _copy(self, src: int, dst: int) -> None:
        # Cross-stream copies replace dst cell for cell (llama.cpp does them, in order, before
        # the next decode), so the copied KV keeps its exact numbers.
        llama_cpp.llama_memory_seq_cp(self._ctx.memory, src, dst, -1, -1)
        self.stats.copies += 1

    def _vacate(self, slot: int, spare_not: int = -1) -> None:
        """Before ``slot`` is overwritten, move the prompt it keeps to another free stream.

        The destination is an empty free stream if any, else the one kept longest ago.
        """
        if slot not in self._kept:
            return
        spare = [s for s in self._free if s not in (slot, spare_not)]
        if spare:
            dst = min(spare, key=lambda s: (s in self._kept, self._kept_at.get(s, 0)))
            self._copy(slot, dst)
            self._kept[dst], self._kept_at[dst] = self._kept[slot], self._kept_at[slot]
        del self._kept[slot]

    def _compact(self) -> None:
        # llama.cpp batches several streams in one ubatch only for consecutive sequence ids
        # (split_equal(sequential=true)); a hole left by a finished sequence would split every
        # step. So decoding sequences keep the lowest streams and those still computing their
        # prompt the streams above: a hole is closed, by copy, with the top sequence of its own
        # kind, and prompts are computed lowest stream first (the next to decode is the one
        # just above the decoding block). Closing holes with the top sequence of either kind
        # put prompt-computing sequences between decoding ones: 2.86 ubatches per decode step
        # in a 100-agent round (experiments/bench/README.md, large societies).
        while self._active and self._free:
            low = min(self._free)
            decoding = [s for s in self._active if s.fed >= len(s.prompt)]
            top = max(decoding, key=lambda s: s.slot, default=None)
            if top is None or top.slot < low:
                filling = [s for s in self._active if s.fed < len(s.prompt)]
                top = max(filling, key=lambda s: s.slot, default=None)
            if top is None or top.slot < low:
                break
            self._vacate(low)
            self._copy(top.slot, low)
            llama_cpp.llama_memory_seq_rm(self._ctx.memory, top.slot, -1, -1)
            self._free.remove(low)
            self._free.add(top.slot)
            top.slot = low
            self.stats.moves += 1
        self._active.sort(key=lambda s: s.slot)  # _step fills the first unfilled: the lowest

    def _step(self) -> None:
        for seq in [s for s in self._active if s.req.future.done()]:  # the caller gave up
            self._finish(seq, None)
        # A prompt chunk and the decode tokens go to separate llama_decode calls: llama.cpp's
        # kernels round differently for one token per stream than for several, so a chunk
        # sharing a ubatch with decode tokens (one token each) would change with the company.
        # Prompt chunks are cut by chunk_end (>= 2 tokens, aligned), and KV from prompts
        # (reusable) and from decoding (not reused) never mix.
        filling = next((s for s in self._active if s.fed < len(s.prompt)), None)
        if filling is not None:
            stop = chunk_end(filling.fed, len(filling.prompt), self.options.n_batch)
            self._decode([(filling, filling.prompt[filling.fed:stop])])
        decoding = [s for s in self._active if s.fed >= len(s.prompt)]
        if decoding:  # llama.cpp batches streams only in increasing, consecutive id order
            self._decode([(s, s.out[-1:]) for s in sorted(decoding, key=lambda s: s.slot)])

    def _decode(self, work: list[tuple[_Seq, list[int]]]) -> None:
        batch, n, rows = self._batch, 0, []
        for seq, tokens in work:
            for token in tokens:
                batch.token[n], batch.pos[n] = token, seq.fed
                batch.n_seq_id[n], batch.seq_id[n][0] = 1, seq.slot
                seq.fed += 1
                batch.logits[n] = seq.fed == len(seq.prompt) + len(seq.out)
                if batch.logits[n]:
                    rows.append((seq, n))
                n += 1
        batch.n_tokens = n
        if (code := llama_cpp.llama_decode(self._ctx.ctx, batch)) != 0:
            raise BackendError(f"{self.path.name}: llama_decode failed with code {code}")
        self.stats.decode_calls += 1
        self.stats.tokens_decoded += n
        self.stats.max_sequences_per_call = max(self.stats.max_sequences_per_call, len(work))
        for seq, row in rows:  # the sampler reads the row's logits from the context
            self._advance(seq, seq.sampler.sample(self._ctx, row))

    def _advance(self, seq: _Seq, token: int) -> None:
        if llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, token):
            self._finish(seq, self._reply(seq, seq.text.decode(errors="ignore"), "stop"))
            return
        seq.out.append(token)
        seq.text += self._llm.detokenize([token])
        text = seq.text.decode(errors="ignore")
        if cuts := [text.index(s) for s in seq.stops if s in text]:
            self._finish(seq, self._reply(seq, text[: min(cuts)], "stop"))
        elif len(seq.out) >= seq.max_new:
            self._finish(seq, self._reply(seq, text, "length"))

    @staticmethod
    def _reply(seq: _Seq, text: str, reason: str) -> Reply:
        return Reply(text=text.strip(), prompt_tokens=len(seq.prompt),
                     completion_tokens=len(seq.out), finish_reason=reason)

    def _finish(self, seq: _Seq, result: Reply | BaseException | None) -> None:
        if isinstance(result, Reply):  # keep its prompt's KV for a later prompt extending it
            self._kept[seq.slot], self._kept_at[seq.slot] = seq.prompt, next(self._tick)
        else:
            llama_cpp.llama_memory_seq_rm(self._ctx.memory, seq.slot, -1, -1)
        self._active.remove(seq)
        self._free.add(seq.slot)
        seq.sampler.close()
        if result is not None:
            self._resolve(seq.req, result)

    @staticmethod
    def _resolve(request: _Request, result: Reply | BaseException) -> None:
        def settle() -> None:
            if request.future.done():  # cancelled meanwhile
                return
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # loop closed: nobody waits for this any more
            request.loop.call_soon_threadsafe(settle)

    def _fail_all(self, err: BackendError) -> None:
        with self._cond:
            self._broken = err
            waiting, self._pending = list(self._pending), deque()
        for request in waiting + [s.req for s in self._active]:
            self._resolve(request, err)
        self._active.clear()

    def _release(self) -> None:
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
