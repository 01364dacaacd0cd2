"""In-process llama.cpp through llama-cpp-python, one model per backend instance.

Chat models use the chat template stored in the GGUF. Base models without one (Gemma-3-270M)
use a plain transcript format: ``prompt_format: plain``.

Replies depend only on the call, never on the calls before it. llama-cpp-python keeps the KV of
the previous prompt *and reply* and reuses any common prefix, wherever it ends. But llama.cpp's
numbers depend on how a prompt is cut into ``llama_decode`` calls: a one-token call takes the
decode-step path (logits off by up to 0.56 on SmolLM2 Q4_1), and kernels that work on groups
of rows (Gemma-3's repacked Q4_K) round a row by its place in the call (off by up to 1.05).
So a follow-up prompt extending an earlier conversation got another reply than the same prompt
computed afresh: 1 of 6 follow-ups on SmolLM2, 3 of 10 on Gemma-3. :class:`_Llama` therefore
reuses only an earlier *prompt*'s KV, cut back to a multiple of :data:`ALIGN` tokens, and cuts
the rest as a fresh computation would (:func:`chunk_end`); ``llamacpp_batch`` does the same.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

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
from societies.backends.identity import file_digest, gguf_identity
from societies.backends.sampling import finish_reason, llama_kwargs

PLAIN_STOPS = ("\nUser:", "\nSystem:", "\n\n\n")

# Llama(verbose=False) silences loading by pointing fds 1 and 2 at /dev/null and back; two
# loads in different threads at once can leave them pointing there for good. Every llama.cpp
# load in this package holds this lock.
LOAD_LOCK = threading.Lock()

# Prompts are cut into llama_decode calls at multiples of ALIGN tokens from position 0, so a
# row always sits at the same place in its group of rows (repacked kernels group 4 or 8), and
# KV is reused only up to such a multiple. n_batch must be a multiple of it, and at least two.
ALIGN = 32


def chunk_end(pos: int, end: int, n_batch: int) -> int:
    """Where the llama_decode call computing prompt positions from ``pos`` stops (exclusive).

    ``pos`` is a multiple of :data:`ALIGN` (or the prompt's start). Calls hold ``n_batch``
    tokens, the last one the rest; a last call of one token (the decode-step path) is avoided
    by stopping the call before it ALIGN tokens early. The cuts depend only on ``pos``'s
    alignment, so a prompt computed from a reused prefix is cut as a fresh one is.

    Example:
        >>> chunk_end(0, 40, 64), chunk_end(0, 65, 64), chunk_end(0, 300, 64)
        (40, 32, 64)
    """
    stop = min(end, pos + n_batch)
    return stop - ALIGN if end - stop == 1 else stop

# Options that change how fast replies come, never what they are (a resumed run may change
# them). n_threads: llama.cpp splits each matrix product's rows between threads and every row
# is computed the same way whatever the split. Not n_batch: it moves the cuts of long prompts;
# aligned cuts gave equal logits in every split we measured, but llama.cpp promises nothing.
# Not n_ctx: it decides which prompts overflow and where a long completion is cut.
EXECUTION_OPTIONS: frozenset[str] = frozenset({"n_threads"})


class Options(BaseModel):
    """Config options of the in-process llama.cpp backend."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="GGUF file, or bundled:smollm2 / bundled:gemma3")
    n_ctx: int = Field(4096, gt=0)
    n_threads: int | None = Field(None, gt=0)
    n_batch: int = Field(512, ge=2 * ALIGN, multiple_of=ALIGN, description=(
        "most prompt tokens in one llama_decode call"))
    prompt_format: Literal["chat", "plain"] = "chat"
    requantize: Literal["q8_0", "f16"] | None = Field(None, description=(
        "convert the weights to this type once (cached); f16 or q8_0 make prompts and batches "
        "of the bundled Q4_1 SmolLM2 faster on x86 CPUs"))
    flash_attn: bool = Field(False, description="llama.cpp's fused attention kernel")


def model_file(path: str, requantize: Literal["q8_0", "f16"] | None) -> Path:
    """The GGUF file a backend loads: ``path`` resolved, or its copy converted to a type."""
    file = resolve_model_path(path)
    if requantize is None:
        return file
    from societies.backends.requant import requantized  # it imports this module

    return requantized(file, requantize)


def file_identity(path: Path) -> str:
    """A content hash of a whole model file (16 hex digits); see :func:`identity.file_digest`."""
    return file_digest(path)[:16]


def plain_prompt(messages: Sequence[Message]) -> str:
    """Render chat messages as a plain transcript for a base model without a chat template."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    body = "\n\n".join(f"{names[m.role]}: {m.content.strip()}" for m in messages)
    return body + "\n\nAssistant:"


@functools.cache
def _llama_class() -> type[Any]:
    """``llama_cpp.Llama`` reusing only prompt KV (see the module doc); imported on first use."""
    from llama_cpp import Llama

    class _Llama(Llama):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._prompt: list[int] = []  # the last prompt, whose KV the context still holds

        def generate(  # type: ignore[override]
                self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:
            tokens = list(tokens)
            keep = next((i for i, (a, b) in enumerate(zip(self._prompt, tokens, strict=False))
                         if a != b), min(len(self._prompt), len(tokens)))
            # Never past what was evaluated (a failed call) nor into the last two tokens, and
            # back to a multiple of ALIGN (module doc).
            keep = max(0, min(keep, self.n_tokens, len(tokens) - 2)) // ALIGN * ALIGN
            # The decoded reply's KV (and every token past `keep`) is dropped; all calls but
            # the last are made here, cut as chunk_end says. Llama.generate then finds all but
            # the last call's tokens in common and computes those in one llama_decode.
            self.n_tokens, self._requires_eval = keep, True
            while (stop := chunk_end(self.n_tokens, len(tokens), self.n_batch)) < len(tokens):
                self.eval(tokens[self.n_tokens:stop])
            self._prompt = tokens
            return super().generate(tokens, *args, **kwargs)  # type: ignore[no-any-return]

    return _Llama


class LlamaCppBackend(ChatBackend):
    """A GGUF model loaded in this process.

    llama.cpp contexts are not thread-safe, so calls run one at a time in a worker thread; the
    event loop stays free for other backends meanwhile.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.path = model_file(options.path, options.requantize)
        self._identity = gguf_identity(self.path, options.prompt_format, options.flash_attn)
        self._llm: Any = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def llm(self) -> Any:
        """The ``llama_cpp.Llama`` object, loaded on first use."""
        if self._llm is None:
            # llama-cpp-python defaults to half the cores; decoding a small model is
            # compute-bound, so use them all unless told otherwise. Prompt batches get the same
            # count: more threads than cores spin against each other on a busy machine.
            threads = self.options.n_threads or os.cpu_count()
            with LOAD_LOCK:
                self._llm = _llama_class()(
                    model_path=str(self.path),
                    n_ctx=self.options.n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_batch=self.options.n_batch,
                    n_ubatch=self.options.n_batch,  # one llama_decode call, one computation
                    flash_attn=self.options.flash_attn,
                    verbose=False,
                )
        return self._llm

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        return await asyncio.to_thread(self._generate, messages, settings)

    def _generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        kwargs = llama_kwargs(settings)
        with self._lock:
            try:
                if self.options.prompt_format == "chat":
                    out = self.llm.create_chat_completion(
                        messages=[{"role": m.role, "content": m.content} for m in messages],
                        stop=list(settings.stop) or None,
                        **kwargs,
                    )
                    choice = out["choices"][0]
                    text = choice["message"]["content"] or ""
                else:
                    out = self.llm.create_completion(
                        plain_prompt(messages), stop=[*PLAIN_STOPS, *settings.stop], **kwargs
                    )
                    choice = out["choices"][0]
                    text = choice["text"]
            except ValueError as err:
                if "context window" in str(err) or "exceed" in str(err):
                    raise ContextOverflowError(f"{self.path.name}: {err}") from None
                raise BackendError(f"{self.path.name}: {err}") from None
        usage = out.get("usage", {})
        return Reply(
            text=text.strip(),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=finish_reason(choice.get("finish_reason")),
        )


def create(options: Options, resolver: Any) -> LlamaCppBackend:
    """Build a llama.cpp backend from config options."""
    return LlamaCppBackend(options)
