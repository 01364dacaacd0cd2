"""``societies finetune CONFIG``: a fully fine-tuned variant of a small model, on CPU, seeded.

A config (YAML)::

    name: sums
    base: bundled:smollm2            # GGUF (converted once) or a checkpoint folder
    data:
      task: {name: arithmetic, expression: a+b, high: 9, n: 400, seed: 1000}
      drop_eval: true                # else an overlap with eval is refused
    eval: {name: arithmetic, expression: a+b, high: 9, n: 30, seed: 0}
    train: {steps: 120, batch_size: 8, lr: 3.0e-5, warmup: 10, seed: 0, threads: 2}
    gguf: {source: bundled:smollm2, precision: f16}   # optional: also OUTPUT/model-f16.gguf
    output: runs/merging/variants/sums

The loss counts only the reply's tokens (the prompt is context, not a target). Given the same
config, library versions and thread count, the weights written are the same bit for bit:
torch's RNG is seeded, examples are shuffled by a seeded ``random.Random``, and dropout is off.
``OUTPUT/finetune.json`` records the data (source, n, dropped, seed, digest), the settings, the
loss of every step, the versions and the wall time. An output folder holding a run of another
config is refused; the same config again is answered from it.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
from societies.merging.data import Example, build_training_data
from societies.tasks import TaskOptions, validate_task


class DataSpec(BaseModel):
    """Where training questions come from and what to do with evaluation questions among them."""

    model_config = ConfigDict(extra="forbid")
    task: dict[str, Any]
    drop_eval: bool = False


class TrainSpec(BaseModel):
    """Optimiser settings (AdamW, linear warm-up then constant)."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-5, gt=0)
    warmup: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    threads: int = Field(1, ge=1)


class FinetuneConfig(BaseModel):
    """A fine-tune config file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    base: str = "bundled:smollm2"
    data: DataSpec
    eval: dict[str, Any]
    train: TrainSpec = TrainSpec()
    gguf: GgufSpec | None = None
    output: str

    @field_validator("eval")
    @classmethod
    def _eval_task(cls, value: dict[str, Any]) -> dict[str, Any]:
        validate_task(value, "eval")
        return value


def _tasks(config: FinetuneConfig) -> tuple[TaskOptions, TaskOptions]:
    return validate_task(config.data.task, "data.task"), validate_task(config.eval, "eval")


def finetune(config: FinetuneConfig, out: Path | None = None, log: bool = True) -> Path:
    """Fine-tune ``config.base`` and write the checkpoint and ``finetune.json``; return the folder.

    Every input is checked (tasks, overlap, base model) before training starts.

    Raises:
        ConfigError: bad task sections, training data overlapping the evaluation questions,
            a base that is not a model, or an output folder holding another run.
    """
    require("torch", "transformers", "safetensors", feature="societies finetune")
    target = Path(out or config.output)
    train_task, eval_task = _tasks(config)
    data = build_training_data(train_task, eval_task, config.data.drop_eval)
    identity = canonical_digest(config.model_dump(exclude={"output", "gguf"}))
    record = target / "finetune.json"
    if record.is_file():
        if json.loads(record.read_text()).get("config_digest") == identity:
            write_gguf(target, config.gguf)
            return target
        raise ConfigError(f"output: {target} holds a fine-tune of another config; "
                          "choose another output")
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"output: {target} exists and is not a fine-tune output")
    base = resolve_checkpoint(config.base, "base")
    start = time.perf_counter()
    model, tokenizer, losses = _train(base, data.examples, config.train, log)
    partial = target.with_name(f"{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    info = {
        "name": config.name, "config_digest": identity, "config": config.model_dump(),
        "base": str(base),
        "data": {"source": train_task.model_dump(mode="json"), "n": len(data.examples),
                 "dropped_eval_questions": data.dropped, "seed": train_task.seed,
                 "digest": data.digest(), "eval": eval_task.model_dump(mode="json")},
        "train": config.train.model_dump(), "losses": losses, "versions": versions(),
        "wall_s": round(time.perf_counter() - start, 2),
    }
    (partial / "finetune.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    write_gguf(target, config.gguf)
    return target


def _encode(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    """Token ids of prompt + reply and their labels (-100 over the prompt: not a target)."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": example.user}],
                                           add_generation_prompt=True, tokenize=False)
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    end = tokenizer.eos_token or ""
    reply_ids = list(tokenizer(example.assistant + end, add_special_tokens=False)["input_ids"])
    return prompt_ids + reply_ids, [-100] * len(prompt_ids) + reply_ids


def _train(base: Path, examples: tuple[Example, ...], spec: TrainSpec,
           log: bool) -> tuple[Any, Any, list[float]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model.train()
    model.config.use_cache = False
    encoded = [_encode(tokenizer, e) for e in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr,
                                  weight_decay=spec.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (spec.warmup + 1)))
    order: list[int] = []
    rng = random.Random(spec.seed)
    losses: list[float] = []
    for step in range(spec.steps):
        batch: list[int] = []
        while len(batch) < spec.batch_size:  # epochs follow each other, each newly shuffled
            if not order:
                order = list(range(len(encoded)))
                rng.shuffle(order)
            batch.append(order.pop())
        width = max(len(encoded[i][0]) for i in batch)
        ids = torch.tensor([encoded[i][0] + [pad] * (width - len(encoded[i][0])) for i in batch])
        labels = torch.tensor([encoded[i][1] + [-100] * (width - len(encoded[i][1]))
                               for i in batch])
        mask = torch.tensor([[1] * len(encoded[i][0]) + [0] * (width - len(encoded[i][0]))
                             for i in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.detach().item(), 5))
        if log and (step % 10 == 0 or step == spec.steps - 1):
            print(f"step {step + 1}/{spec.steps} loss {losses[-1]:.4f}", flush=True)
    model.eval()
    return model, tokenizer, losses


def finetune_file(path: str | Path, out: Path | None = None, log: bool = True) -> Path:
    """Read a fine-tune config file and run it (the ``societies finetune`` command)."""
    return finetune(read_config(path, FinetuneConfig), out=out, log=log)
