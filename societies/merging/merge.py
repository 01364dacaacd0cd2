"""``societies merge CONFIG``: checkpoints merged in parameter space by mergekit.

The merge itself is mergekit's (``run_merge``); this module resolves the models, checks that they
can be merged at all, builds mergekit's configuration, and records what was done. A config::

    name: ties
    method: ties                     # linear | task_arithmetic | ties | dare_ties |
                                     # dare_linear | slerp
    base: bundled:smollm2            # what task vectors are taken against (not for linear)
    models:
      - {model: runs/merging/variants/sums, weight: 0.5, density: 0.6}
      - {model: runs/merging/variants/steps, weight: 0.5, density: 0.6}
    parameters: {}                   # method-wide: slerp's t, normalize, ...
    gguf: {source: bundled:smollm2}  # optional: also OUTPUT/model-f16.gguf for llama.cpp
    output: runs/merging/merges/ties

SLERP interpolates exactly two models (``parameters: {t: 0.5}``), from the first towards the
second. Models of different architectures or vocabularies cannot share a parameter space; such
a config is refused with a pointer to the token-level ensembles, which combine them instead.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from societies.errors import ConfigError
from societies.merging.common import (
    GgufSpec,
    canonical_digest,
    read_config,
    resolve_checkpoint,
    versions,
    write_gguf,
)
from societies.merging.convert import require

Method = Literal["linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "slerp"]
NEEDS_BASE = frozenset({"task_arithmetic", "ties", "dare_ties", "dare_linear"})
# Config fields whose equality makes two checkpoints one parameter space.
SHAPE = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
         "num_attention_heads", "num_key_value_heads", "vocab_size", "tie_word_embeddings")
ENSEMBLE_HINT = ("merging needs one architecture and one vocabulary; to combine different "
                 "models use a token-level ensemble (model: {ensemble: average, members: [...]})")


class MergeInput(BaseModel):
    """One model of a merge and its per-model mergekit parameters."""

    model_config = ConfigDict(extra="forbid")
    model: str
    weight: float | None = None
    density: float | None = Field(None, gt=0, le=1)


class MergeSpec(BaseModel):
    """A merge config file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    method: Method
    base: str | None = None
    models: list[MergeInput] = Field(min_length=2)
    parameters: dict[str, Any] = {}
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    seed: int = 0  # DARE drops parameters at random
    threads: int = Field(1, ge=1)
    gguf: GgufSpec | None = None
    output: str


def _shape(path: Path) -> dict[str, Any]:
    config = json.loads((path / "config.json").read_text())
    return {key: config.get(key) for key in SHAPE}


def _vocab_digest(path: Path) -> str:
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(str(path)).get_vocab()
    return canonical_digest(sorted(vocab.items()))


def check_compatible(paths: dict[str, Path]) -> None:
    """Refuse checkpoints that do not share an architecture and a vocabulary.

    Args:
        paths: config field path (``models[1].model``) -> checkpoint folder; the first is the
            reference.

    Raises:
        ConfigError: one line naming the field, what differs, and the token-level ensembles.
    """
    (first_where, first), *rest = paths.items()
    shape, vocab = _shape(first), _vocab_digest(first)
    for where, path in rest:
        other = _shape(path)
        diff = [k for k in SHAPE if other[k] != shape[k]]
        if diff:
            k = diff[0]
            raise ConfigError(f"{where}: {k} is {other[k]} but {shape[k]} in {first_where}; "
                              f"{ENSEMBLE_HINT}")
        if _vocab_digest(path) != vocab:
            raise ConfigError(f"{where}: its tokenizer's vocabulary differs from "
                              f"{first_where}'s; {ENSEMBLE_HINT}")


def mergekit_config(spec: MergeSpec, models: list[Path], base: Path | None) -> dict[str, Any]:
    """The mergekit configuration (as its YAML would hold it) for resolved checkpoint paths.

    Example:
        >>> spec = MergeSpec(name="m", method="linear", output="o",
        ...                  models=[{"model": "a", "weight": 1}, {"model": "b", "weight": 1}])
        >>> mergekit_config(spec, [Path("a"), Path("b")], None)["models"][1]
        {'model': 'b', 'parameters': {'weight': 1.0}}
    """
    entries = []
    for item, path in zip(spec.models, models, strict=True):
        params = {k: v for k, v in (("weight", item.weight), ("density", item.density))
                  if v is not None}
        entries.append({"model": str(path), "parameters": params})
    config: dict[str, Any] = {"merge_method": spec.method, "models": entries,
                              "dtype": spec.dtype}
    if spec.method == "slerp":
        config["base_model"] = str(models[0])  # slerp goes from its base towards the other
    elif spec.method in NEEDS_BASE and base is not None:
        config["base_model"] = str(base)
    if spec.parameters:
        config["parameters"] = dict(spec.parameters)
    return config


def _validate(spec: MergeSpec) -> None:
    if spec.method in NEEDS_BASE and spec.base is None:
        raise ConfigError(f"base: method {spec.method} takes task vectors against a base model; "
                          "name it")
    if spec.method == "slerp":
        if len(spec.models) != 2:
            raise ConfigError(f"models: slerp interpolates exactly 2 models, not "
                              f"{len(spec.models)}")
        if "t" not in spec.parameters:
            raise ConfigError("parameters.t: slerp needs t (0 = the first model, 1 = the second)")
    if spec.method in ("linear", "task_arithmetic", "ties", "dare_ties", "dare_linear"):
        for i, item in enumerate(spec.models):
            if item.weight is None:
                raise ConfigError(f"models[{i}].weight: {spec.method} needs a weight per model")


def merge(spec: MergeSpec, out: Path | None = None) -> Path:
    """Run the merge ``spec`` describes with mergekit; return the merged checkpoint folder.

    Raises:
        ConfigError: missing parameters, models that are not checkpoints, checkpoints of
            different architectures or vocabularies, or an output holding another merge.
    """
    _validate(spec)
    require("mergekit", "torch", "transformers", feature="societies merge")
    target = Path(out or spec.output)
    identity = canonical_digest(spec.model_dump(exclude={"output", "gguf", "threads"}))
    record = target / "merge.json"
    if record.is_file():
        if json.loads(record.read_text()).get("config_digest") == identity:
            write_gguf(target, spec.gguf)
            return target
        raise ConfigError(f"output: {target} holds a merge of another config")
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"output: {target} exists and is not a merge output")
    models = [resolve_checkpoint(m.model, f"models[{i}].model")
              for i, m in enumerate(spec.models)]
    base = resolve_checkpoint(spec.base, "base") if spec.base else None
    named = {f"models[{i}].model": p for i, p in enumerate(models)}
    check_compatible({**({"base": base} if base else {}), **named})

    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    raw = mergekit_config(spec, models, base)
    start = time.perf_counter()
    partial = target.with_name(f"{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    run_merge(MergeConfiguration.model_validate(raw), str(partial),
              MergeOptions(copy_tokenizer=True, random_seed=spec.seed, quiet=True,
                           write_model_card=False, num_threads=spec.threads))
    info = {"name": spec.name, "config_digest": identity, "config": spec.model_dump(),
            "mergekit_config": raw, "versions": versions(),
            "wall_s": round(time.perf_counter() - start, 2)}
    (partial / "merge.json").write_text(json.dumps(info, indent=2) + "\n")
    partial.rename(target)
    write_gguf(target, spec.gguf)
    return target


def merge_file(path: str | Path, out: Path | None = None) -> Path:
    """Read a merge config file and run it (the ``societies merge`` command)."""
    return merge(read_config(path, MergeSpec), out=out)
