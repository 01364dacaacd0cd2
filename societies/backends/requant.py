"""Convert a GGUF model's weights to another type once, and reuse the converted file.

Why: the bundled SmolLM2 ships as Q4_1, for which llama.cpp's x86 CPU backend has no
matrix-matrix kernel, so a prompt costs almost as much per token as decoding does, and batching
sequences gains little. The same weights stored as F16 or Q8_0 go through llamafile's GEMM
kernels: on this 2-core machine a prompt ran about 2x faster (figures in
``experiments/bench/README.md``). F16 holds each dequantized Q4_1 weight to fp16 precision, so
the model is the one shipped; Q8_0 (half the size) holds it to 1/254 of its block's range.

The converted file lives beside the call cache (``$SOCIETIES_CACHE_DIR/models``), named after
the source file's whole-content hash, and is written under a temporary name then renamed, so an
interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Literal

from societies.backends.cache import default_cache_path
from societies.backends.identity import file_digest
from societies.backends.llamacpp import LOAD_LOCK
from societies.errors import UserError

WeightType = Literal["q8_0", "f16"]


def requantized(source: Path, kind: WeightType, cache_dir: Path | None = None) -> Path:
    """Path of ``source`` converted to weight type ``kind``; converts on first use.

    Args:
        source: a GGUF file.
        kind: target weight type.
        cache_dir: where converted models live (default: ``models/`` next to the call cache).

    Raises:
        UserError: llama.cpp could not convert the file (the message names it).

    Example:
        >>> requantized(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), "f16")  # doctest: +SKIP
        PosixPath('.../models/SmolLM2-135M-Instruct.Q4_1.dfba28a86cbb89a5.f16.gguf')
    """
    import llama_cpp

    folder = cache_dir or default_cache_path().parent / "models"
    # Named by the source's whole-content hash (its identity's digest): an edited source gets
    # a new conversion, and a converted file's own identity hashes the converted weights.
    target = folder / f"{source.stem}.{file_digest(source)[:16]}.{kind}.gguf"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
                    "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16}[kind]
    params.allow_requantize = True  # the source is quantized already
    params.nthread = os.cpu_count() or 1
    # llama.cpp logs a line per tensor; its Python logger decides what reaches stderr.
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with LOAD_LOCK:
            code = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(),
                                                  ctypes.byref(params))
        if code != 0:
            raise UserError(f"cannot convert {source} to {kind}: llama.cpp returned {code}")
        partial.replace(target)
    finally:
        log.setLevel(level)
        partial.unlink(missing_ok=True)
    return target
