"""In-process llama.cpp through llama-cpp-python, one model per backend instance.

Chat models use the chat template stored in the GGUF. Base models without one (Gemma-3-270M)
use a plain transcript format: ``prompt_format: plain``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
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
from societies.backends.identity import file_digest

PLAIN_STOPS = ("\nUser:", "\nSystem:", "\n\n\n")

# Llama(verbose=False) silences loading by pointing fds 1 and 2 at /dev/null and back; two
# loads in different threads at once can leave them pointing there for good. Every llama.cpp
# load in this package holds this lock.
LOAD_LOCK = threading.Lock()


class Options(BaseModel):
    """Config options of the in-process llama.cpp backend."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="GGUF file, or bundled:smollm2 / bundled:gemma3")
    n_ctx: int = Field(4096, gt=0)
    n_threads: int | None = Field(None, gt=0)
    n_batch: int = Field(512, gt=0)
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


class LlamaCppBackend(ChatBackend):
    """A GGUF model loaded in this process.

    llama.cpp contexts are not thread-safe, so calls run one at a time in a worker thread; the
    event loop stays free for other backends meanwhile.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.path = model_file(options.path, options.requantize)
        digest = file_identity(self.path)
        # Flash attention rounds differently, so its replies are cached apart.
        fa = ":fa" if options.flash_attn else ""
        self._identity = f"llamacpp:{self.path.name}:{digest}:{options.prompt_format}{fa}"
        self._llm: Any = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def llm(self) -> Any:
        """The ``llama_cpp.Llama`` object, loaded on first use."""
        if self._llm is None:
            from llama_cpp import Llama

            # llama-cpp-python defaults to half the cores; decoding a small model is
            # compute-bound, so use them all unless told otherwise. Prompt batches get the same
            # count: more threads than cores spin against each other on a busy machine.
            threads = self.options.n_threads or os.cpu_count()
            with LOAD_LOCK:
                self._llm = Llama(
                    model_path=str(self.path),
                    n_ctx=self.options.n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_batch=self.options.n_batch,
                    flash_attn=self.options.flash_attn,
                    verbose=False,
                )
        return self._llm

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        return await asyncio.to_thread(self._generate, messages, settings)

    def _generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        kwargs: dict[str, Any] = {
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "top_p": settings.top_p,
            "seed": settings.seed,
        }
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
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )


def create(options: Options, resolver: Any) -> LlamaCppBackend:
    """Build a llama.cpp backend from config options."""
    return LlamaCppBackend(options)
