"""A :class:`TokenBackend` over llama-cpp-python: one GGUF model, one sequence, its own KV cache.

Only the last position's logits are kept (``logits_all=False``). Appended tokens are evaluated
when ``next_logprobs`` is next asked for, so a truncate-then-append hand-off costs one batch,
and after a bare ``truncate`` past the prompt only the new last token is re-evaluated.

A reply never depends on the calls before it. llama.cpp's logits depend on how a prompt is cut
into ``llama_decode`` calls (see :mod:`societies.backends.llamacpp`): on Gemma-3's Q4_K weights,
reusing the previous prompt's KV wherever the shared prefix ended moved a follow-up prompt's
next-token log-probabilities by up to 0.80 against computing it afresh. So, like the ``llamacpp``
chat backend, a new prompt keeps only the KV of what it shares with the previous *prompt*
(:func:`~societies.ensembles.base.reusable_prefix`) cut back to a multiple of
:data:`~societies.backends.llamacpp.ALIGN`, and the prompt's remaining tokens are cut where a
fresh computation cuts them (:func:`~societies.backends.llamacpp.chunk_end`), in calls of their
own: tokens appended after the prompt never share a call with it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from societies.backends.base import ContextOverflowError, Message
from societies.backends.bundled import resolve_model_path
from societies.backends.identity import gguf_identity
from societies.backends.llamacpp import (
    ALIGN,
    LOAD_LOCK,
    PLAIN_STOPS,
    chunk_end,
    model_file,
    plain_prompt,
)
from societies.ensembles.base import TokenBackend, reusable_prefix
from societies.ensembles.gguf_file import (
    TOKEN_TYPE_CONTROL,
    TOKEN_TYPE_USER_DEFINED,
    gguf_embeddings,
    read_gguf_header,
    token_piece,
)
from societies.errors import ConfigError

PromptFormat = Literal["chat", "plain"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Float32 log-softmax of a 1-D logit vector (a new array)."""
    shifted = logits.astype(np.float32) - np.float32(logits.max())
    return shifted - np.float32(np.log(np.exp(shifted).sum(dtype=np.float64)))


class LlamaTokenBackend(TokenBackend):
    """One GGUF model stepped token by token through llama-cpp-python.

    Args:
        path: GGUF file or ``bundled:NAME`` (loaded as is: :func:`from_spec` applies a spec's
            ``requantize`` by passing the converted file).
        n_ctx: context length of the KV cache.
        n_threads: CPU threads for single tokens and batches (half the cores when None).
        prompt_format: ``chat`` renders the GGUF's chat template, ``plain`` a transcript.
        n_batch: most tokens in one ``llama_decode`` call; a multiple of ``ALIGN``, at least
            two (the ``llamacpp`` chat backend's rule: it places the cuts of long prompts).
        flash_attn: llama.cpp's fused attention kernel (it rounds differently, so it is part
            of the identity).

    Not thread-safe: one caller at a time (the ensemble chat backend holds a lock).
    """

    def __init__(self, path: str | Path, n_ctx: int = 2048, n_threads: int | None = None,
                 prompt_format: PromptFormat = "chat", n_batch: int = 512,
                 flash_attn: bool = False) -> None:
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {n_ctx}")
        if n_batch < 2 * ALIGN or n_batch % ALIGN:
            raise ValueError(f"n_batch must be a multiple of {ALIGN} and >= {2 * ALIGN}, "
                             f"got {n_batch}")
        if prompt_format not in ("chat", "plain"):
            raise ValueError(f"prompt_format must be 'chat' or 'plain', got {prompt_format!r}")
        from llama_cpp import Llama

        self.path = resolve_model_path(str(path))
        self.prompt_format = prompt_format
        self.n_ctx = n_ctx
        self._header = read_gguf_header(self.path)
        # Batches get the same threads as single tokens: llama.cpp's default (every core) spins
        # at barriers, and on a busy machine a 10-token prompt then took 6-9 s instead of 0.2 s.
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        with LOAD_LOCK:
            self._llm: Any = Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, n_batch=n_batch,
                                   # One llama_decode call, one computation (as the chat
                                   # backend): llama.cpp would split a call into n_ubatch parts.
                                   n_ubatch=n_batch, logits_all=False,
                                   flash_attn=flash_attn, verbose=False)
        self._vocab = self._llm._model.vocab
        self._n_vocab = int(self._llm.n_vocab())
        # The one identity function every llama.cpp backend uses, on the file loaded here.
        self._identity = gguf_identity(self.path, prompt_format, flash_attn)
        self._tokens: list[int] = []  # the sequence; the first _n_eval are in the KV cache
        self._prompt: list[int] = []  # the tokens of the last reset
        self._n_prompt = 0  # how many leading tokens of _tokens are still that prompt
        self._n_eval = 0
        self._logits: np.ndarray | None = None  # logits at position _n_eval - 1, None if stale
        self._logprobs: np.ndarray | None = None
        self._pieces: list[bytes | None] = [None] * self._n_vocab
        self._eos: frozenset[int] | None = None
        self._embeddings: np.ndarray | None = None
        self._vocabulary: list[bytes] | None = None
        template = self._llm.metadata.get("tokenizer.chat_template")
        if prompt_format == "chat" and not template:
            raise ConfigError(f"{self.path.name} has no chat template; use prompt_format: plain")
        self._template: str | None = template

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Strings that end a turn in this model's prompt format."""
        return PLAIN_STOPS if self.prompt_format == "plain" else ()

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces[token]
        if piece is None:
            piece = self._pieces[token] = token_piece(self._vocab, token)
        return piece

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        # Prompts (add_special) may hold template markers such as <|im_start|>; generated text
        # is always plain text, so its markers must not turn into control tokens.
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_special,
                                       special=add_special))

    def format_prompt(self, messages: Sequence[Message]) -> str:
        if self.prompt_format == "plain" or self._template is None:
            return plain_prompt(messages)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        bos = self._llm._model.token_get_text(self._llm.token_bos())
        eos = self._llm._model.token_get_text(self._llm.token_eos())
        prompt: str = Jinja2ChatFormatter(template=self._template, eos_token=eos, bos_token=bos)(
            messages=[{"role": m.role, "content": m.content} for m in messages],  # type: ignore[misc]
        ).prompt
        # tokenize(add_special=True) adds BOS itself where the model wants one.
        if bos and prompt.startswith(bos) and self._llm._model.add_bos_token():
            prompt = prompt[len(bos):]
        return prompt

    @property
    def eos_tokens(self) -> frozenset[int]:
        if self._eos is None:
            import llama_cpp

            ids = {int(llama_cpp.llama_vocab_eos(self._vocab)),
                   int(llama_cpp.llama_vocab_eot(self._vocab))}
            types = self._header.token_types
            # Only control / user-defined tokens can end generation (<|im_end|>, <end_of_turn>).
            candidates = (np.flatnonzero((types == TOKEN_TYPE_CONTROL)
                                         | (types == TOKEN_TYPE_USER_DEFINED))
                          if types is not None else range(self._n_vocab))
            ids.update(int(t) for t in candidates if llama_cpp.llama_vocab_is_eog(self._vocab, t))
            self._eos = frozenset(t for t in ids if 0 <= t < self._n_vocab)
        return self._eos

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    def vocabulary(self) -> list[bytes]:
        if self._vocabulary is None:
            self._vocabulary = [self.token_bytes(t) for t in range(self._n_vocab)]
        return self._vocabulary

    def reset(self, tokens: Sequence[int]) -> None:
        # Only an aligned part of the previous prompt's KV is kept (module doc), and none past
        # a truncation into it (what was appended there was not computed as a prompt is);
        # _evaluate computes the rest from there in a fresh computation's calls.
        keep = reusable_prefix(self._prompt[:self._n_prompt], tokens, self._n_eval)
        keep = keep // ALIGN * ALIGN
        self.truncate(keep)
        self.append(tokens[keep:])
        self._prompt = list(tokens)
        self._n_prompt = len(tokens)

    def append(self, tokens: Sequence[int]) -> None:
        # Evaluation waits for next_logprobs: a member nobody reads this step (a gated
        # method) then evaluates several tokens in one batch, which costs little more than one.
        if len(self._tokens) + len(tokens) > self.n_ctx:
            raise ContextOverflowError(
                f"{self.path.name}: {len(self._tokens) + len(tokens)} tokens exceed the context"
                f" of {self.n_ctx}")
        if tokens:
            self._tokens.extend(int(t) for t in tokens)
            self._logprobs = None

    def truncate(self, length: int) -> None:
        if not 0 <= length <= len(self._tokens):
            raise ValueError(f"truncate: length {length} not in [0, {len(self._tokens)}]")
        if length == len(self._tokens):
            return
        del self._tokens[length:]
        self._n_prompt = min(self._n_prompt, length)
        self._logprobs = None
        if length < self._n_eval:
            self._llm._ctx.kv_cache_seq_rm(-1, length, -1)
            self._n_eval = length
            self._logits = None

    def _evaluate(self) -> np.ndarray:
        """Evaluate pending tokens; return the last position's logits."""
        if self._n_eval == len(self._tokens) and self._logits is not None:
            return self._logits
        if not self._tokens:
            raise RuntimeError("next_logprobs on an empty sequence: reset() first")
        # Truncated back into evaluated tokens: the new last one needs re-evaluating.
        start = min(self._n_eval, len(self._tokens) - 1)
        if start < self._n_prompt:
            # Prompt tokens are computed as a fresh computation computes them: from a multiple
            # of ALIGN, and never the last one alone (chunk_end cuts no one-token call).
            start = start // ALIGN * ALIGN
            if self._n_prompt - start == 1:
                start = max(0, start - ALIGN)
        self._llm.n_tokens = start  # eval() drops the KV from here on
        for end in (self._n_prompt, len(self._tokens)):
            while self._llm.n_tokens < end:
                # Prompt: the fresh cuts. After it: one call per n_batch, none of one token
                # after others (generated tokens come one per call or as one hand-off).
                stop = chunk_end(self._llm.n_tokens, end, self._llm.n_batch)
                self._llm.eval(self._tokens[self._llm.n_tokens:stop])
        self._n_eval = len(self._tokens)
        ptr = self._llm._ctx.get_logits_ith(-1)
        self._logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()
        return self._logits

    def next_logprobs(self) -> np.ndarray:
        if self._logprobs is None:
            self._logprobs = log_softmax(self._evaluate())
            self._logprobs.flags.writeable = False  # shared with callers: nobody may edit it
        return self._logprobs

    def input_embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            self._embeddings = gguf_embeddings(self.path)
        return self._embeddings

    def close(self) -> None:
        """Free the model and its context."""
        self._llm.close()


def spec_file(spec: Any) -> Path:
    """The GGUF file a ``llamacpp`` spec loads: its path, or the copy its ``requantize``
    converts (the chat backend's rule: :func:`societies.backends.llamacpp.model_file`)."""
    return model_file(spec.options.path, spec.options.requantize)


def spec_identity(spec: Any) -> str:
    """The identity of a ``llamacpp`` spec's model as loaded: equal to the ``llamacpp`` chat
    backend's for the same spec, and to the identity of the member :func:`from_spec` builds."""
    opts = spec.options
    return gguf_identity(spec_file(spec), opts.prompt_format, opts.flash_attn)


def from_spec(spec: Any, n_ctx: int | None = None) -> LlamaTokenBackend:
    """Build a token backend from a registry ``ModelSpec`` of backend ``llamacpp``.

    The spec means what it means to the ``llamacpp`` chat backend: ``requantize`` loads the
    converted file, ``flash_attn`` the fused kernel.

    Args:
        spec: the member's validated spec.
        n_ctx: overrides the spec's context length when given.
    """
    if spec.backend != "llamacpp":
        raise ConfigError(f"token-level methods need llamacpp members here, got {spec.backend!r}")
    opts = spec.options
    return LlamaTokenBackend(spec_file(spec), n_ctx=n_ctx or opts.n_ctx,
                             n_threads=opts.n_threads, prompt_format=opts.prompt_format,
                             n_batch=opts.n_batch, flash_attn=opts.flash_attn)
