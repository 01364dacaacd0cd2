"""Hugging Face transformers models in this process, with concurrent calls batched.

``model`` is a hub id (with ``revision``), a local model directory, or a GGUF file
(``bundled:smollm2`` too), which transformers dequantizes to float when loading.

Batching and seeds. Concurrent calls queue for up to ``batch_wait_ms`` and run as one
left-padded ``model.generate``. Greedy calls (temperature 0) always batch together, whatever
their seeds, top_p, max_tokens and stop strings: padding does not change a greedy reply, so it
equals the reply of the same call alone. A sampled call with a seed runs alone (seeding torch's
RNG with it), so its reply depends only on its messages, settings and seed, never on the calls
around it. With ``batch_sampled: true``, sampled calls that share temperature, top_p, top_k
and min_p batch together, seeded once per batch from the sorted seeds of its calls: faster, but
a reply then depends on which calls happened to share its batch, so reruns are not exact. Sampled
calls without a seed make no reproducibility promise and always batch. Seeding sets torch's
global RNG, so other code sampling with torch in other threads of this process can disturb it.

Sampling means what it means on every backend (:mod:`societies.backends.sampling`): top-k,
top-p and min-p filter the distribution at temperature 1, then the temperature applies, as in
llama.cpp (transformers' own warpers would apply the temperature first). The checkpoint's
generation config is replaced at load by an empty one, so none of its defaults (repetition
penalty, top-k, ...) is merged into a call's config, and transformers' global default top-k 50
is switched off explicitly. Log-probabilities (``Settings.logprobs``) are not reported.

Identity. A GGUF file and a local directory are pinned by the SHA-256 of their files' whole
content; a hub id by its commit: ``revision`` if it is one, else the commit the local Hugging
Face cache holds for that branch or tag (``main`` by default), else (online, not cached) the
hub's current one. The model is then loaded at that commit, so identity and weights agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from societies.backends.base import (
    BackendError,
    ChatBackend,
    ContextOverflowError,
    Message,
    Reply,
    Settings,
)
from societies.backends.batcher import Batcher
from societies.backends.bundled import resolve_model_path
from societies.backends.identity import file_digest
from societies.backends.llamacpp import PLAIN_STOPS, plain_prompt
from societies.errors import MissingDependency, UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")

# Options that change how fast replies come, never what they are (a resumed run may change
# them): a greedy or seeded reply does not depend on its batch (module doc). With
# batch_sampled a sampled reply does, but then it already depends on timing.
EXECUTION_OPTIONS: frozenset[str] = frozenset({"max_batch_size", "batch_wait_ms"})


class Options(BaseModel):
    """Config options of the transformers backend."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="hub id, local model directory, GGUF file or bundled:NAME")
    revision: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: int = Field(8, ge=1)
    batch_wait_ms: float = Field(5.0, ge=0)
    batch_sampled: bool = False
    prompt_format: Literal["chat", "plain"] = "chat"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class _Request:
    ids: list[int]
    settings: Settings
    stops: tuple[str, ...]


def _import_stack(gguf: bool) -> None:
    """Fail in one line, naming the extra to install, if a needed package is missing."""
    feature = "the transformers backend"
    for module in ("torch", "transformers", *(("gguf", "accelerate") if gguf else ())):
        try:
            __import__(module)
        except ImportError:
            raise MissingDependency(feature, "transformers", module) from None


def _dir_identity(path: Path) -> str:
    """Names and whole-content hashes of a model directory's files.

    Hidden files and GGUF files are left out: a checkpoint folder may also hold its own GGUF
    export (``societies merge`` writes ``model-f16.gguf`` beside the safetensors), which this
    backend never reads, so exporting it must not change the checkpoint's identity.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix != ".gguf"):
        digest.update(f"{file.name}:{file_digest(file)}\n".encode())
    return digest.hexdigest()[:16]


def hub_commit(repo_id: str, revision: str | None) -> str:
    """The commit a hub model's ``revision`` (branch, tag or commit; default main) names.

    Looked up in the local Hugging Face cache first (what ``HF_HUB_OFFLINE`` runs load), then,
    if the hub may be reached, asked of the hub.

    Raises:
        UserError: it cannot be resolved (offline and not cached, unknown repo or revision).
    """
    rev = revision or "main"
    if COMMIT.match(rev):
        return rev
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json", revision=rev)
    if isinstance(cached, str):
        return Path(cached).parent.name  # .../snapshots/<commit>/config.json
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"transformers model {repo_id}@{rev} is not in the local Hugging Face "
                        "cache and the hub is offline (HF_HUB_OFFLINE); download it or give "
                        "revision: <commit>")
    from huggingface_hub import HfApi

    try:
        sha = HfApi().model_info(repo_id, revision=rev).sha
    except Exception as err:  # not found, no network, ...: one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot resolve transformers model {repo_id}@{rev}: {first}") from None
    if not sha:
        raise UserError(f"cannot resolve transformers model {repo_id}@{rev}: no commit")
    return str(sha)


class _Chain:
    """The sampler chain's filters and temperature as a transformers logits processor.

    top-k, top-p and min-p see the untempered scores (llama.cpp's order; transformers' warpers
    apply the temperature first), then the kept scores are divided by the temperature.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        s, cut = self.settings, -math.inf
        scores = scores.float()
        if 0 < s.top_k < scores.shape[-1]:
            kth = torch.topk(scores, s.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, cut)
        if s.top_p < 1.0:  # keep the best tokens until their mass reaches top_p, that one too
            ordered, order = torch.sort(scores, dim=-1, descending=True)
            probs = ordered.softmax(-1)
            late = probs.cumsum(-1) - probs >= s.top_p  # the mass before it already suffices
            scores = scores.masked_fill(torch.zeros_like(late).scatter(-1, order, late), cut)
        if s.min_p > 0:
            best = scores.max(-1, keepdim=True).values
            scores = scores.masked_fill(scores < best + math.log(s.min_p), cut)
        return scores / s.temperature


class _RowStops:
    """Per-row stopping: each row has its own max_tokens and stop strings.

    transformers ends a row when a criterion returns True for it and pads it from then on, so a
    batch mixing short and long requests costs no more than its longest one.
    """

    def __init__(self, tokenizer: Any, prompt_len: int, requests: Sequence[_Request]) -> None:
        self.tokenizer, self.prompt_len, self.requests = tokenizer, prompt_len, requests
        self.done_at: list[int | None] = [None] * len(requests)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        n = input_ids.shape[1] - self.prompt_len
        for row, req in enumerate(self.requests):
            if self.done_at[row] is None and (n >= req.settings.max_tokens or (
                req.stops and any(s in self.tokenizer.decode(
                    input_ids[row, self.prompt_len:]) for s in req.stops))):
                self.done_at[row] = n
        return input_ids.new_tensor([d is not None for d in self.done_at]).bool()


class TransformersBackend(ChatBackend):
    """A transformers causal LM loaded in this process on first use.

    Attributes:
        batch_sizes: the size of every ``model.generate`` batch run so far.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self.gguf: Path | None = None
        spec = options.model
        local = Path(spec).expanduser()
        self.revision = options.revision  # a hub model's commit, once resolved
        if spec.startswith("bundled:") or local.is_file() or spec.endswith(".gguf"):
            self.gguf = resolve_model_path(spec)  # one-line UserError if missing or not GGUF
            pin = f"{self.gguf.name}:{file_digest(self.gguf)[:16]}"
        elif local.is_dir():
            pin = f"{local.name}:{_dir_identity(local)}"
        elif HUB_ID.match(spec):
            self.revision = hub_commit(spec, options.revision)
            pin = f"{spec}@{self.revision}"
        else:
            raise UserError(f"model directory not found: {local}")
        _import_stack(gguf=self.gguf is not None)
        self._identity = f"transformers:{pin}:{options.prompt_format}:{options.dtype}"
        self._model: Any = None
        self._tokenizer: Any = None
        self._max_positions: int | None = None
        self._eos: set[int] = set()
        self._load_lock = threading.Lock()
        self._loading: asyncio.Task[None] | None = None
        self._lone = itertools.count()
        self._batcher: Batcher[_Request, Reply] = Batcher(
            self._run, max_batch_size=options.max_batch_size, wait_s=options.batch_wait_ms / 1000
        )

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def batch_sizes(self) -> list[int]:
        """Sizes of the batches run so far, oldest first."""
        return self._batcher.batch_sizes

    def _load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

            opts = self.options
            device = opts.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            # float32 on CPU: bfloat16 matmuls there are slow and half precision is inexact.
            dtype: Any = getattr(torch, opts.dtype) if opts.dtype != "auto" else (
                torch.float32 if device == "cpu" else "auto")
            where = str(self.gguf.parent) if self.gguf else opts.model
            kwargs: dict[str, Any] = {"revision": self.revision,
                                      "trust_remote_code": opts.trust_remote_code}
            if self.gguf:
                kwargs["gguf_file"] = self.gguf.name
            try:
                tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
                model: Any = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
            except (OSError, ValueError) as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise UserError(f"cannot load transformers model {opts.model}: {first}") from None
            if opts.prompt_format == "chat" and not tokenizer.chat_template:
                raise UserError(f"{opts.model} has no chat template; use prompt_format: plain")
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._max_positions = getattr(model.config, "max_position_embeddings", None)
            eos = model.generation_config.eos_token_id
            self._eos = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id}
            self._eos.discard(None)
            # transformers fills every unset field of a call's config from this one (the
            # checkpoint's repetition penalty, top-k, ...): empty it, so only Settings count.
            model.generation_config = GenerationConfig()
            self._tokenizer, self._model = tokenizer, model.to(device).eval()

    async def _load_once(self) -> None:
        # One shared task, not a to_thread per caller: all callers waiting for the load then
        # resume in the same loop turn and queue together, instead of one by one as each
        # finishes waiting on the lock, which could scatter a burst over several batches.
        loop = asyncio.get_running_loop()
        task = self._loading
        # Only called while no model is loaded: a finished task failed or aclose() undid it.
        if task is None or task.get_loop() is not loop or task.done():
            task = self._loading = loop.create_task(asyncio.to_thread(self._load))
        await asyncio.shield(task)

    def _encode(self, messages: Sequence[Message]) -> list[int]:
        tok = self._tokenizer
        if self.options.prompt_format == "plain":
            return list(tok(plain_prompt(messages))["input_ids"])
        chat = [{"role": m.role, "content": m.content} for m in messages]
        text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        # The template already holds the BOS token where the model wants one.
        return list(tok(text, add_special_tokens=False)["input_ids"])

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        if self._model is None:
            await self._load_once()
        try:
            ids = self._encode(messages)
        except Exception as err:  # a chat template refusing these messages (jinja2 errors)
            raise BackendError(f"{self.options.model}: cannot build the prompt: {err}") from err
        limit = self._max_positions
        if limit is not None and len(ids) + settings.max_tokens > limit:
            raise ContextOverflowError(
                f"{self.options.model}: {len(ids)} prompt tokens + max_tokens "
                f"{settings.max_tokens} exceed the model's {limit} positions")
        key: tuple[Any, ...] = ("greedy",)
        if settings.temperature > 0:  # a batch shares one sampler chain
            key = ("sample", settings.temperature, settings.top_p, settings.top_k, settings.min_p)
            if settings.seed is not None and not self.options.batch_sampled:
                key += (next(self._lone),)  # a key of its own: this call runs alone
        plain = PLAIN_STOPS if self.options.prompt_format == "plain" else ()
        return await self._batcher.submit(_Request(ids, settings, (*plain, *settings.stop)), key)

    async def _run(self, requests: list[_Request]) -> list[Reply]:
        try:
            return await asyncio.to_thread(self._generate_batch, requests)
        except (RuntimeError, ValueError) as err:  # e.g. out of memory: fail these calls only
            raise BackendError(f"{self.options.model}: {err}") from err

    def _generate_batch(self, requests: list[_Request]) -> list[Reply]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        tok, model = self._tokenizer, self._model
        width = max(len(r.ids) for r in requests)
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in requests])
        mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in requests])
        eos_ids = self._eos
        first = requests[0].settings
        # transformers' own warpers off (its global default top-k is 50): _Chain does it all.
        config = GenerationConfig(
            max_new_tokens=max(r.settings.max_tokens for r in requests),
            do_sample=first.temperature > 0, pad_token_id=pad, eos_token_id=sorted(eos_ids),
            temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0,
            repetition_penalty=1.0, no_repeat_ngram_size=0)
        chain = LogitsProcessorList([_Chain(first)] if first.temperature > 0 else [])
        seeds = sorted(r.settings.seed for r in requests if r.settings.seed is not None)
        if first.temperature > 0 and seeds:
            blob = ",".join(map(str, seeds)).encode()
            torch.manual_seed(int.from_bytes(hashlib.sha256(blob).digest()[:8], "little"))
        stops = _RowStops(tok, width, requests)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                generation_config=config, logits_processor=chain,
                stopping_criteria=StoppingCriteriaList([stops]))
        return [self._reply(req, out[row, width:].tolist(), stops.done_at[row], eos_ids)
                for row, req in enumerate(requests)]

    def _reply(self, req: _Request, gen: list[int], done_at: int | None, eos: set[int]) -> Reply:
        end = min(len(gen), req.settings.max_tokens, done_at or len(gen))
        finish = "stop" if done_at is not None and done_at < req.settings.max_tokens else "length"
        for i, token in enumerate(gen[:end]):
            if token in eos:
                end, finish = i + 1, "stop"
                break
        text = self._tokenizer.decode(gen[:end], skip_special_tokens=True)
        for stop in req.stops:
            if stop in text:
                text, finish = text[: text.index(stop)], "stop"
        return Reply(text=text.strip(), prompt_tokens=len(req.ids), completion_tokens=end,
                     finish_reason=finish)

    async def aclose(self) -> None:
        await self._batcher.aclose()
        self._model = self._tokenizer = self._loading = None


def create(options: Options, resolver: Any) -> TransformersBackend:
    """Build a transformers backend from config options."""
    return TransformersBackend(options)
