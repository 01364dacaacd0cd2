"""A :class:`TokenBackend` over llama-cpp-python: one GGUF model, one sequence, its own KV cache.

Only the last position's logits are kept (``logits_all=False``). Appended tokens are evaluated
when ``next_logprobs`` is next asked for, so a truncate-then-append hand-off costs one batch,
and after a bare ``truncate`` only the new last token is re-evaluated.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from societies.backends.base import ContextOverflowError, Message
from societies.backends.bundled import resolve_model_path
from societies.backends.llamacpp import LOAD_LOCK, PLAIN_STOPS, file_identity, plain_prompt
from societies.ensembles.base import TokenBackend
from societies.errors import ConfigError

PromptFormat = Literal["chat", "plain"]

# GGUF value types -> struct format of one scalar (8 = string and 9 = array are handled apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED = 3, 4


@dataclass
class GGUFHeader:
    """What the GGUF header says, read without loading weights or decoding the vocabulary.

    Attributes:
        values: scalar and string metadata by key.
        array_lengths: element count of every array-valued key (``tokenizer.ggml.tokens``...).
        token_types: ``tokenizer.ggml.token_type`` as an int array, if present.
        tensors: name -> (shape as ``ne0, ne1, ...``, ggml type, offset from ``data_offset``).
        data_offset: file offset where tensor data starts.
    """

    values: dict[str, Any] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    token_types: np.ndarray | None = None
    tensors: dict[str, tuple[tuple[int, ...], int, int]] = field(default_factory=dict)
    data_offset: int = 0

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary."""
        return self.array_lengths.get("tokenizer.ggml.tokens", 0)


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Parse a GGUF header in a fraction of a second (``gguf.GGUFReader`` takes ~30 s on a
    262k vocabulary because it builds an object per token string)."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ConfigError(f"not a GGUF file: {path}")
        pos = 8
        n_tensors, n_kv = struct.unpack_from("<QQ", buf, pos)
        pos += 16
        header = GGUFHeader()

        def string(at: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", buf, at)
            return buf[at + 8:at + 8 + n].decode("utf-8", "replace"), at + 8 + n

        for _ in range(n_kv):
            key, pos = string(pos)
            (vtype,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if vtype == 8:
                header.values[key], pos = string(pos)
            elif vtype == 9:
                etype, count = struct.unpack_from("<IQ", buf, pos)
                pos += 12
                header.array_lengths[key] = count
                if etype == 8:  # skip strings one by one: their lengths vary
                    for _ in range(count):
                        (n,) = struct.unpack_from("<Q", buf, pos)
                        pos += 8 + n
                else:
                    size = struct.calcsize(_SCALARS[etype])
                    if key == "tokenizer.ggml.token_type":
                        header.token_types = np.frombuffer(
                            buf[pos:pos + size * count], dtype=f"<{_SCALARS[etype]}").copy()
                    pos += size * count
            else:
                fmt = "<" + _SCALARS[vtype]
                (header.values[key],) = struct.unpack_from(fmt, buf, pos)
                pos += struct.calcsize(fmt)
        for _ in range(n_tensors):
            name, pos = string(pos)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            ttype, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            header.tensors[name] = (tuple(int(d) for d in dims), int(ttype), int(offset))
        align = int(header.values.get("general.alignment", 32))
        header.data_offset = (pos + align - 1) // align * align
    return header


def gguf_vocab_size(path: str | Path) -> int:
    """Vocabulary size of a GGUF model (from the header only)."""
    return read_gguf_header(path).vocab_size


def gguf_embeddings(path: str | Path) -> np.ndarray:
    """``token_embd.weight`` of a GGUF model, dequantized to float32 ``[vocab, dim]``."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    header = read_gguf_header(path)
    if "token_embd.weight" not in header.tensors:
        raise ConfigError(f"{Path(path).name} has no token_embd.weight tensor")
    (dim, vocab), ttype, offset = header.tensors["token_embd.weight"]
    qtype = GGMLQuantizationType(ttype)
    block, type_size = GGML_QUANT_SIZES[qtype]
    row_bytes = dim // block * type_size
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=header.data_offset + offset,
                    shape=(vocab, row_bytes))
    return np.ascontiguousarray(dequantize(np.asarray(raw), qtype), dtype=np.float32)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Float32 log-softmax of a 1-D logit vector (a new array)."""
    shifted = logits.astype(np.float32) - np.float32(logits.max())
    return shifted - np.float32(np.log(np.exp(shifted).sum(dtype=np.float64)))


class LlamaTokenBackend(TokenBackend):
    """One GGUF model stepped token by token through llama-cpp-python.

    Args:
        path: GGUF file or ``bundled:NAME``.
        n_ctx: context length of the KV cache.
        n_threads: CPU threads for single tokens and batches (half the cores when None).
        prompt_format: ``chat`` renders the GGUF's chat template, ``plain`` a transcript.
        n_batch: prompt evaluation batch size.

    Not thread-safe: one caller at a time (the ensemble chat backend holds a lock).
    """

    def __init__(self, path: str | Path, n_ctx: int = 2048, n_threads: int | None = None,
                 prompt_format: PromptFormat = "chat", n_batch: int = 512) -> None:
        if n_ctx < 1 or n_batch < 1:
            raise ValueError(f"n_ctx and n_batch must be >= 1, got {n_ctx}, {n_batch}")
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
                                   n_threads_batch=threads, n_batch=n_batch, logits_all=False,
                                   verbose=False)
        self._vocab = self._llm._model.vocab
        self._n_vocab = int(self._llm.n_vocab())
        self._identity = f"llamacpp:{self.path.name}:{file_identity(self.path)}:{prompt_format}"
        self._tokens: list[int] = []  # the sequence; the first _n_eval are in the KV cache
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
            import llama_cpp

            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
            if n < 0:  # the piece is longer than the buffer: llama.cpp says how long
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            piece = self._pieces[token] = buf.raw[:n]
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
            candidates = (np.flatnonzero((types == _TOKEN_TYPE_CONTROL)
                                         | (types == _TOKEN_TYPE_USER_DEFINED))
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
        common = 0
        for old, new in zip(self._tokens, tokens, strict=False):
            if old != new:
                break
            common += 1
        self.truncate(common)
        self.append(tokens[common:])

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
        self._logprobs = None
        if length < self._n_eval:
            self._llm._ctx.kv_cache_seq_rm(-1, length, -1)
            self._n_eval = length
            self._logits = None

    def _evaluate(self) -> np.ndarray:
        """Evaluate pending tokens; return the last position's logits."""
        if self._n_eval == len(self._tokens) and self._logits is None:
            if not self._tokens:
                raise RuntimeError("next_logprobs on an empty sequence: reset() first")
            # Truncated back into evaluated tokens: only the last one needs re-evaluating.
            self._n_eval -= 1
            self._llm._ctx.kv_cache_seq_rm(-1, self._n_eval, -1)
        if self._n_eval < len(self._tokens):
            self._llm.n_tokens = self._n_eval
            self._llm.eval(self._tokens[self._n_eval:])  # batches; drops KV beyond n_tokens
            self._n_eval = len(self._tokens)
            ptr = self._llm._ctx.get_logits_ith(-1)
            self._logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()
        assert self._logits is not None
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


def from_spec(spec: Any, n_ctx: int | None = None) -> LlamaTokenBackend:
    """Build a token backend from a registry ``ModelSpec`` of backend ``llamacpp``.

    Args:
        spec: the member's validated spec.
        n_ctx: overrides the spec's context length when given.
    """
    if spec.backend != "llamacpp":
        raise ConfigError(f"token-level methods need llamacpp members here, got {spec.backend!r}")
    opts = spec.options
    return LlamaTokenBackend(opts.path, n_ctx=n_ctx or opts.n_ctx,
                             n_threads=opts.n_threads, prompt_format=opts.prompt_format,
                             n_batch=opts.n_batch)
