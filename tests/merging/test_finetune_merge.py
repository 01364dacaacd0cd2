"""The real path: tiny fine-tunes of SmolLM2, merged by mergekit, served in a society."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from societies.cli import main
from societies.errors import ConfigError
from societies.merging.finetune import FinetuneConfig, finetune

pytestmark = [pytest.mark.real, pytest.mark.slow]
SUMS = {"name": "arithmetic", "expression": "a+b", "high": 9}


def _tiny(base: Path, seed: int, out: Path, gguf: bool = False) -> FinetuneConfig:
    raw: dict[str, Any] = {
        "name": f"tiny{seed}", "base": str(base),
        "data": {"task": {**SUMS, "n": 12, "seed": 100 + seed}, "drop_eval": True},
        "eval": {**SUMS, "n": 10, "seed": 0},
        "train": {"steps": 2, "batch_size": 1, "lr": 1e-4, "seed": seed, "threads": 1},
        "output": str(out)}
    if gguf:
        raw["gguf"] = {"source": "bundled:smollm2", "precision": "f16"}
    return FinetuneConfig.model_validate(raw)


def _tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def variants(smollm2_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    pytest.importorskip("mergekit")
    root = tmp_path_factory.mktemp("variants")
    return [finetune(_tiny(smollm2_hf, seed, root / f"v{seed}", gguf=True), log=False)
            for seed in (0, 1)]


def test_finetune_is_seeded_and_recorded(variants: list[Path], smollm2_hf: Path,
                                         tmp_path: Path) -> None:
    import torch

    again = finetune(_tiny(smollm2_hf, 0, tmp_path / "again"), log=False)
    first, second, other = _tensors(variants[0]), _tensors(again), _tensors(variants[1])
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # same seed, same weights
    assert any(not torch.equal(first[k], other[k]) for k in first)
    base = _tensors(smollm2_hf)
    assert any(not torch.equal(first[k], base[k]) for k in first)  # training moved them
    info = json.loads((variants[0] / "finetune.json").read_text())
    assert info["data"]["n"] + info["data"]["dropped_eval_questions"] == 12
    assert len(info["data"]["digest"]) == 64 and info["data"]["seed"] == 100
    assert len(info["losses"]) == 2 and all(loss > 0 for loss in info["losses"])
    assert info["train"]["seed"] == 0 and "torch" in info["versions"]
    # the same config again is answered from the folder; another config is refused
    assert finetune(_tiny(smollm2_hf, 0, tmp_path / "again"), log=False) == again
    with pytest.raises(ConfigError, match="holds a fine-tune of another config"):
        finetune(_tiny(smollm2_hf, 1, tmp_path / "again"), log=False)


def test_linear_merge_by_mergekit_is_the_weighted_mean(variants: list[Path],
                                                       tmp_path: Path) -> None:
    import torch

    config = tmp_path / "linear.yaml"
    config.write_text(yaml.safe_dump({
        "name": "lin", "method": "linear", "output": str(tmp_path / "lin"),
        "models": [{"model": str(variants[0]), "weight": 0.5},
                   {"model": str(variants[1]), "weight": 0.5}]}))
    assert main(["merge", str(config)]) == 0
    merged, a, b = (_tensors(p) for p in (tmp_path / "lin", *variants))
    assert set(merged) == set(a)
    for key in merged:
        assert torch.allclose(merged[key], (a[key] + b[key]) / 2, atol=1e-6), key
    info = json.loads((tmp_path / "lin" / "merge.json").read_text())
    assert info["mergekit_config"]["merge_method"] == "linear" and "mergekit" in info["versions"]


def test_ties_merge_serves_through_transformers_llamacpp_and_an_ensemble(
        variants: list[Path], smollm2_hf: Path, tmp_path: Path) -> None:
    from societies.merging.merge import MergeSpec, merge
    from societies.storage import RunStore

    merged = merge(MergeSpec.model_validate({
        "name": "ties", "method": "ties", "base": str(smollm2_hf),
        "models": [{"model": str(v), "weight": 0.5, "density": 0.5} for v in variants],
        "gguf": {"source": "bundled:smollm2"}, "output": str(tmp_path / "ties")}))
    assert (merged / "model-f16.gguf").is_file()
    cfg = {
        "name": "merged-members",
        "models": {
            "hf": {"backend": "transformers", "model": str(merged)},
            "gguf": {"backend": "llamacpp", "path": str(merged / "model-f16.gguf"),
                     "n_threads": 1},
            "v0": {"backend": "llamacpp", "path": str(variants[0] / "model-f16.gguf"),
                   "n_threads": 1},
            "v1": {"backend": "llamacpp", "path": str(variants[1] / "model-f16.gguf"),
                   "n_threads": 1},
            "avg": {"ensemble": "average", "members": ["gguf", "v1"]},
        },
        "defaults": {"sampling": {"temperature": 0.0, "max_tokens": 12}},
        "agents": [{"name": "a", "model": "hf"}, {"name": "b", "model": "gguf"},
                   {"name": "c", "model": "avg"}],
        "societies": [{"name": "mix", "agents": ["a", "b", "c"]}],
        "rounds": 0, "strategies": [""],
        "task": {**SUMS, "n": 1, "seed": 0}, "run": {"cache": False}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    (record,) = RunStore(tmp_path / "run").records()
    turns = record.rounds[0].turns
    assert [t.model for t in turns] == ["hf", "gguf", "avg"]
    assert all(t.reply and not t.error for t in turns), [t.error for t in turns]
