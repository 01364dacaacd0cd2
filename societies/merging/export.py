"""A Hugging Face Llama checkpoint written as a GGUF file that llama.cpp loads.

The checkpoint's weights are new (fine-tuned, merged) but its tokenizer, chat template and
hyper-parameters are those of the GGUF it came from, so every key-value entry of that source
file is copied as it is (only the file type changes) and the tensors are renamed to llama.cpp's
names with the ``gguf`` package's own name map. The hyper-parameters of the checkpoint are
checked against the source's first: a checkpoint of another shape cannot borrow its metadata.

llama.cpp applies rotary embeddings to adjacent pairs of a head's dimensions, Hugging Face's
Llama to its two halves; the transformers GGUF loader undoes llama.cpp's order for q and k when
reading, so writing must redo it (:func:`to_llamacpp_rows`). Norms stay float32 (llama.cpp
wants them so); matrices are written as F16 (half the size) or F32 (bit-exact).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from societies.backends.bundled import resolve_model_path
from societies.errors import UserError
from societies.merging.convert import require

Precision = Literal["f16", "f32"]

# Checkpoint config field -> the source GGUF's key (under ``llama.``) that must agree with it.
_SHAPE_KEYS = {
    "num_hidden_layers": "block_count",
    "hidden_size": "embedding_length",
    "intermediate_size": "feed_forward_length",
    "num_attention_heads": "attention.head_count",
    "num_key_value_heads": "attention.head_count_kv",
}


def to_llamacpp_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder a q or k projection's output rows from halves per head to adjacent pairs.

    Within each head, Hugging Face keeps the rotary pairs as (i, i + d/2); llama.cpp wants
    them side by side as (2i, 2i + 1).

    Example:
        >>> w = np.arange(8).reshape(8, 1)   # one head of 8 rows: halves 0-3 and 4-7
        >>> to_llamacpp_rows(w, heads=1).ravel().tolist()
        [0, 4, 1, 5, 2, 6, 3, 7]
    """
    rows = weight.shape[0]
    half = rows // heads // 2
    split = weight.reshape(heads, 2, half, *weight.shape[1:])
    return np.ascontiguousarray(split.swapaxes(1, 2)).reshape(weight.shape)


def _field_value(field: Any) -> Any:
    return field.contents()


def export_gguf(checkpoint: Path, out: Path, source: str | Path = "bundled:smollm2",
                precision: Precision = "f16") -> Path:
    """Write Llama checkpoint ``checkpoint`` to ``out`` as GGUF, with ``source``'s metadata.

    Args:
        checkpoint: a Hugging Face Llama checkpoint folder (safetensors).
        out: the GGUF file to write (replaced atomically).
        source: the GGUF whose tokenizer, template and hyper-parameters the checkpoint shares.
        precision: ``f16`` or ``f32`` for the matrices.

    Raises:
        UserError: not a Llama checkpoint, or its shape differs from ``source``'s.

    Example:
        >>> export_gguf(Path("runs/merges/linear"), Path("linear.gguf"))  # doctest: +SKIP
        PosixPath('linear.gguf')
    """
    require("gguf", "safetensors", "transformers")
    import gguf
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    src = resolve_model_path(str(source))
    config = AutoConfig.from_pretrained(str(checkpoint))
    if config.model_type != "llama":
        raise UserError(f"{checkpoint}: GGUF export supports Llama checkpoints, "
                        f"not {config.model_type}")
    reader = gguf.GGUFReader(str(src))
    arch = str(_field_value(reader.fields["general.architecture"]))
    for attr, key in _SHAPE_KEYS.items():
        want = _field_value(reader.fields[f"{arch}.{key}"])
        if getattr(config, attr) != want:
            raise UserError(f"{checkpoint}: {attr} is {getattr(config, attr)} but {src.name} "
                            f"has {arch}.{key} = {want}; export needs the checkpoint's source")
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    if config.vocab_size != n_vocab:
        raise UserError(f"{checkpoint}: vocab_size {config.vocab_size} but {src.name} has "
                        f"{n_vocab} tokens")

    tensors: dict[str, np.ndarray] = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")
    writer = gguf.GGUFWriter(str(partial), arch)
    try:
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
                continue
            sub = field.types[1] if len(field.types) > 1 else None
            writer.add_key_value(key, _field_value(field), field.types[0], sub_type=sub)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if precision == "f16"
                             else gguf.LlamaFileType.ALL_F32)
        for name, value in tensors.items():
            if name == "lm_head.weight" and tied:
                continue  # llama.cpp reuses token_embd when output.weight is absent
            new = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if new is None:
                raise UserError(f"{checkpoint}: no llama.cpp name for tensor {name}")
            data = value.astype(np.float32)
            if name.endswith("q_proj.weight"):
                data = to_llamacpp_rows(data, config.num_attention_heads)
            elif name.endswith("k_proj.weight"):
                data = to_llamacpp_rows(data, config.num_key_value_heads)
            if precision == "f16" and data.ndim == 2:
                data = data.astype(np.float16)
            writer.add_tensor(new, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return out
