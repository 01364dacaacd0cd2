"""A GGUF file read without loading the model: header, vocabulary and input embeddings.

Ensembles check their members' vocabularies when they are built, before any weights load;
DeePEn needs input embeddings, which llama-cpp-python does not expose.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from societies.backends.identity import file_digest
from societies.backends.llamacpp import LOAD_LOCK
from societies.ensembles.base import vocabulary_digest
from societies.errors import ConfigError

# GGUF value types -> struct format of one scalar (8 = string and 9 = array are handled apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values


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


def token_piece(vocab: Any, token: int) -> bytes:
    """The bytes of one token as llama.cpp renders it alone (control tokens give b"")."""
    import llama_cpp

    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, 64, 0, False)
    if n < 0:  # the piece is longer than the buffer: llama.cpp says how long
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, -n, 0, False)
    return buf.raw[:n]


def gguf_vocabulary(path: str | Path) -> list[bytes]:
    """Every token's bytes (id order) of a GGUF model, from a vocabulary-only load.

    This is what :meth:`LlamaTokenBackend.vocabulary` gives once the model is loaded, without
    reading the weights: 0.2 s for SmolLM2's 49k tokens, 1 s for Gemma-3's 262k.
    """
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with LOAD_LOCK:
        model = LlamaModel(path_model=str(path), params=params, verbose=False)
    try:
        n = int(llama_cpp.llama_vocab_n_tokens(model.vocab))
        return [token_piece(model.vocab, t) for t in range(n)]
    finally:
        model.close()


_VOCAB_DIGESTS: dict[str, str] = {}


def gguf_vocabulary_digest(path: str | Path) -> str:
    """:func:`~societies.ensembles.base.vocabulary_digest` of a GGUF's vocabulary, computed
    once per file content."""
    key = file_digest(path)
    if key not in _VOCAB_DIGESTS:
        _VOCAB_DIGESTS[key] = vocabulary_digest(gguf_vocabulary(path))
    return _VOCAB_DIGESTS[key]


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
