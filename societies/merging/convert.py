"""A GGUF model as a Hugging Face checkpoint (safetensors + tokenizer), made once and cached.

Fine-tuning and mergekit need a Hugging Face checkpoint, and the bundled SmolLM2 ships only as
a Q4_1 GGUF. transformers reads a GGUF with ``gguf_file=`` and dequantizes every tensor to
float (the same loading path as :mod:`societies.backends.hf`); the loaded model still carries
a GGUF ``quantization_config`` that forbids saving, so its weights are moved into a plain model
built from the same config and saved from there. The dequantized Q4_1 values are exact in
float32, so the checkpoint holds the shipped model, not an approximation of it.

The checkpoint lives in ``$SOCIETIES_CACHE_DIR/models/hf/`` under the source's whole-content
hash, written to a temporary folder and renamed, so an interrupted conversion leaves nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from societies.backends.bundled import resolve_model_path
from societies.backends.cache import default_cache_path
from societies.backends.identity import file_digest
from societies.errors import MissingDependency, UserError


def require(*modules: str, feature: str = "merging") -> None:
    """Fail in one line naming the ``merge`` extra when one of ``modules`` is missing."""
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            raise MissingDependency(feature, "merge", module) from None


def hf_cache_dir() -> Path:
    """Where converted checkpoints live: ``models/hf`` beside the call cache."""
    return default_cache_path().parent / "models" / "hf"


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a Hugging Face model folder (a ``config.json`` and weights)."""
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def gguf_to_hf(source: str | Path, out: Path | None = None) -> Path:
    """The Hugging Face checkpoint of GGUF model ``source`` (``bundled:smollm2`` or a path).

    Args:
        source: a GGUF file or ``bundled:NAME``.
        out: the folder to write; default: the cache folder named by the source's hash,
            reused when it exists.

    Returns:
        The checkpoint folder (``config.json``, ``model.safetensors``, tokenizer files).

    Raises:
        UserError: the source is missing or not GGUF, or transformers cannot read it.

    Example:
        >>> gguf_to_hf("bundled:smollm2")  # doctest: +SKIP
        PosixPath('.../models/hf/SmolLM2-135M-Instruct.Q4_1.dfba28a86cbb89a5')
    """
    gguf = resolve_model_path(str(source))
    require("torch", "transformers", "gguf", "safetensors")
    target = out or hf_cache_dir() / f"{gguf.stem}.{file_digest(gguf)[:16]}"
    if is_checkpoint(target):
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model, tokenizer = _load_dequantized(gguf)
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        if target.exists():  # an explicit ``out`` that holds something else
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _load_dequantized(gguf: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    where, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(where, gguf_file=name)
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot convert {gguf} to a Hugging Face checkpoint: {first}") from None
    # The GGUF marker would make save_pretrained refuse; the weights are plain floats already.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # A tied output matrix appears only under the embedding's name; nothing else may differ.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise UserError(f"cannot convert {gguf}: tensors missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        plain.tie_weights()
    return plain.eval(), tokenizer
