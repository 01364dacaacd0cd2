"""What the fine-tune and merge configs share: reading YAML, resolving a base model, versions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from societies.config import read_yaml
from societies.errors import ConfigError
from societies.merging.convert import gguf_to_hf, is_checkpoint

M = TypeVar("M", bound=BaseModel)


def read_config(path: str | Path, model: type[M]) -> M:
    """Read YAML file ``path`` and validate it as ``model``; bad input is one ConfigError line.

    Example:
        >>> read_config("missing.yaml", BaseModel)
        Traceback (most recent call last):
        ...
        societies.errors.ConfigError: config file not found: missing.yaml
    """
    file = Path(path)
    data = read_yaml(file)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the config must be a mapping of keys to values")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError.from_validation(err, str(file)) from None


def resolve_checkpoint(spec: str, where: str) -> Path:
    """A Hugging Face checkpoint folder for ``spec``: such a folder, or a GGUF converted once.

    Raises:
        ConfigError: ``spec`` is neither a checkpoint folder nor a GGUF file (names ``where``).
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if not is_checkpoint(path):
            raise ConfigError(f"{where}: {path} is not a Hugging Face checkpoint "
                              "(no config.json and *.safetensors)")
        return path
    if spec.startswith("bundled:") or path.is_file():
        return gguf_to_hf(spec)
    raise ConfigError(f"{where}: model not found: {spec}")


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the weights written (for the provenance files)."""
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "mergekit", "gguf", "safetensors"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def canonical_digest(data: Any) -> str:
    """SHA-256 of ``data`` as sorted JSON (a config's identity)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class GgufSpec(BaseModel):
    """Also write the checkpoint as ``OUTPUT/model-<precision>.gguf`` for llama.cpp."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field("bundled:smollm2", description="the GGUF the checkpoint descends from")
    precision: Literal["f16", "f32"] = "f16"


def write_gguf(checkpoint: Path, spec: GgufSpec | None) -> Path | None:
    """Export ``checkpoint`` next to its weights when ``spec`` asks for it (once)."""
    if spec is None:
        return None
    from societies.merging.export import export_gguf

    target = checkpoint / f"model-{spec.precision}.gguf"
    if target.is_file():
        return target
    return export_gguf(checkpoint, target, spec.source, spec.precision)
