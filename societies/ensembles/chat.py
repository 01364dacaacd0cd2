"""Backend ``ensemble``: several models generate one reply together, token by token.

Config: ``{ensemble: unite, members: [smollm2, gemma3], main: smollm2}`` (or the long form
``{backend: ensemble, method: ..., ...}``). Members are model names resolved through the pool;
each gets its own token-level copy of the model. ``contrastive`` takes ``[expert, amateur]``
and ``proxy_tuning`` ``[base, expert, anti_expert]``, in that order.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import threading
from collections.abc import Sequence
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from societies.backends.base import ChatBackend, Message, Reply, Settings
from societies.backends.registry import ModelSpec
from societies.ensembles.base import Method, TokenBackend, blame
from societies.ensembles.decode import decode_chat
from societies.errors import ConfigError

MethodName = Literal["average", "logit_average", "unite", "gac", "contrastive", "proxy_tuning",
                     "deepen"]
METHODS: tuple[str, ...] = get_args(MethodName)
SAME_VOCAB = ("average", "logit_average", "contrastive", "proxy_tuning")
MEMBER_COUNT = {"contrastive": 2, "proxy_tuning": 3}
_ROLES = {"contrastive": "expert, amateur", "proxy_tuning": "base, expert, anti_expert"}


def _error(message: str) -> PydanticCustomError:
    # A custom error reads as the bare message (a ValueError would get "Value error, ").
    return PydanticCustomError("ensemble_options", message)


class Options(BaseModel):
    """Config options of an ensemble of models."""

    model_config = ConfigDict(extra="forbid")
    method: MethodName
    members: list[str] = Field(min_length=2, description="model names, main first by default")
    main: str | None = Field(None, description="member whose tokens are emitted; default first")
    weights: list[float] | None = Field(None, description="one per member, >= 0, not all 0")
    top_k: int = Field(10, ge=1, description="unite: top-k tokens per member")
    gate_threshold: float | None = Field(None, gt=0, le=1, description="gac: gate on main's p")
    alpha: float = Field(0.1, gt=0, le=1, description="contrastive: plausibility cutoff")
    deepen: dict[str, Any] = Field(default_factory=dict, description="options of DeePEn")
    n_ctx: int = Field(2048, gt=0, description="context length of every member")

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, method: Any) -> Any:
        if method not in METHODS:
            raise _error(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        return method

    @field_validator("members")
    @classmethod
    def _count(cls, members: list[str], info: ValidationInfo) -> list[str]:
        method = info.data.get("method")
        if method in MEMBER_COUNT and len(members) != MEMBER_COUNT[method]:
            raise _error(f"{method} needs exactly {MEMBER_COUNT[method]} members "
                         f"({_ROLES[method]}), got {len(members)}")
        return members

    @field_validator("main")
    @classmethod
    def _main(cls, main: str | None, info: ValidationInfo) -> str | None:
        members, method = info.data.get("members"), info.data.get("method")
        if main is not None and members is not None and main not in members:
            raise _error(f"{main!r} is not among members {members}")
        if main is not None and members and method in MEMBER_COUNT and main != members[0]:
            raise _error(f"{method}: main must be the first member ({_ROLES[method]})")
        return main

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: list[float] | None, info: ValidationInfo) -> list[float] | None:
        members = info.data.get("members")
        if weights is not None and members is not None and (
                len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0):
            raise _error(f"need {len(members)} weights (one per member), >= 0 and not all 0; "
                         f"got {weights}")
        return weights

    @property
    def main_index(self) -> int:
        """Index of the main member."""
        return self.members.index(self.main) if self.main is not None else 0


def build_method(options: Options) -> Method:
    """The :class:`Method` named by ``options.method``."""
    from societies.ensembles import methods as m

    main, weights = options.main_index, options.weights
    if options.method == "average":
        return m.ProbAverage(weights, main)
    if options.method == "logit_average":
        return m.LogitAverage(weights, main)
    if options.method == "unite":
        return m.UniTE(options.top_k, weights, main)
    if options.method == "gac":
        return m.GaC(weights, main, options.gate_threshold)
    if options.method == "contrastive":
        return m.Contrastive(options.alpha)
    if options.method == "proxy_tuning":
        return m.ProxyTuning()
    if options.method == "deepen":
        from societies.ensembles.deepen import DeePEn  # written apart; heavy: import on use

        # The ensemble-level main and weights apply unless the deepen options set their own.
        return DeePEn(**{"main": main, "weights": weights, **options.deepen})  # type: ignore[no-any-return]
    raise ConfigError(f"unknown ensemble method {options.method!r}")


def member_backend(spec: ModelSpec, n_ctx: int) -> TokenBackend:
    """A fresh token-level backend for one member."""
    if spec.backend == "llamacpp":
        from societies.ensembles.llama_tokens import from_spec

        return from_spec(spec, n_ctx)
    if spec.backend == "transformers":
        from societies.ensembles.hf_tokens import from_spec as hf_from_spec

        return hf_from_spec(spec, n_ctx)
    raise ConfigError(f"ensemble members must be llamacpp or transformers models, "
                      f"not {spec.backend!r}")


def member_identity(name: str, spec: ModelSpec, resolver: Any) -> str:
    """What pins one member's replies.

    A llama.cpp member's is the identity of the file it actually loads (after ``requantize``),
    from the one function every llama.cpp backend uses; it equals the ``llamacpp`` chat
    backend's for the same spec. Other members take their chat backend's identity (the
    transformers token backend loads through that backend and shares it).
    """
    if spec.backend == "llamacpp":
        from societies.ensembles.llama_tokens import spec_identity

        return spec_identity(spec)
    return str(resolver.chat(name).identity)


def check_same_vocabulary(method: str, names: Sequence[str], specs: Sequence[ModelSpec]) -> None:
    """Refuse llama.cpp members whose vocabularies differ, without loading their weights.

    Sizes come from the file headers; equal sizes are then compared as the map token id ->
    bytes (a vocabulary-only load, hashed). Members of other backends are checked when they
    load (``prepare`` of the method compares the same hash).
    """
    from societies.ensembles.gguf_file import gguf_vocab_size, gguf_vocabulary_digest
    from societies.ensembles.llama_tokens import spec_file

    files = [(n, spec_file(s)) for n, s in zip(names, specs, strict=True)
             if s.backend == "llamacpp"]
    if len(files) < 2:
        return
    sizes = [(n, gguf_vocab_size(f)) for n, f in files]
    if len({v for _, v in sizes}) > 1:
        (n0, v0), (n1, v1) = sizes[0], next(x for x in sizes if x[1] != sizes[0][1])
        raise ConfigError(f"{method} needs members with the same vocabulary; "
                          f"{n0} has {v0} tokens, {n1} {v1}")
    digests = [(n, gguf_vocabulary_digest(f)) for n, f in files]
    if len({d for _, d in digests}) > 1:
        (n0, d0), (n1, d1) = digests[0], next(x for x in digests if x[1] != digests[0][1])
        raise ConfigError(f"{method} needs members with the same vocabulary; {n0} and {n1} "
                          f"both have {sizes[0][1]} tokens but spell them differently "
                          f"(vocabulary hashes {d0[:12]}, {d1[:12]})")


class EnsembleBackend(ChatBackend):
    """A chat backend whose replies come from a token-level method over several models.

    Members load on the first call; calls run one at a time in a worker thread.
    """

    def __init__(self, options: Options, specs: Sequence[ModelSpec], identity: str) -> None:
        self.options = options
        self.specs = list(specs)
        self._identity = identity
        self._members: list[TokenBackend] | None = None
        self._method: Method | None = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self._identity

    def members(self) -> list[TokenBackend]:
        """The members' token backends (loaded, and the method prepared, on first use).

        Raises:
            MemberError: a member could not load (the error names it).
        """
        if self._members is None:
            members: list[TokenBackend] = []
            try:
                for name, spec in zip(self.options.members, self.specs, strict=True):
                    with blame(name):
                        members.append(member_backend(spec, self.options.n_ctx))
                method = build_method(self.options)
                method.prepare(members)
            except BaseException:
                _close(members)  # the ones that did load: the next call starts over
                raise
            self._members, self._method = members, method
        return self._members

    def _loaded(self) -> tuple[list[TokenBackend], Method]:
        members = self.members()
        assert self._method is not None
        return members, self._method

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        return await asyncio.to_thread(self._generate, messages, settings)

    def _generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        names = self.options.members
        with self._lock:
            # Whatever breaks inside a call fails this call (the engine fails the unit and a
            # re-run redoes it), never the run: every error leaves as a BackendError.
            result = decode_chat(self._loaded, messages, settings, names,
                                 f"ensemble {self.options.method} of {', '.join(names)}")
        return Reply(text=result.text.strip(),
                     prompt_tokens=result.prompt_tokens[self.options.main_index],
                     completion_tokens=len(result.pieces), finish_reason=result.finish_reason,
                     extra=result.info)

    async def aclose(self) -> None:
        _close(self._members or [])
        self._members = self._method = None


def _close(members: Sequence[TokenBackend]) -> None:
    for member in members:
        close = getattr(member, "close", None)
        if close is not None:
            close()


def create(options: Options, resolver: Any) -> EnsembleBackend:
    """Build an ensemble backend; checks members and vocabularies without loading models."""
    deepen = "societies.ensembles.deepen"
    if options.method == "deepen" and importlib.util.find_spec(deepen) is None:
        raise ConfigError("ensemble method deepen is not available in this installation")
    specs = [resolver.spec(name) for name in options.members]
    for name, spec in zip(options.members, specs, strict=True):
        if spec.backend not in ("llamacpp", "transformers"):
            raise ConfigError(f"ensemble member {name!r}: backend {spec.backend!r} has no "
                              "token-level access; use a llamacpp or transformers model")
    if options.method in SAME_VOCAB:
        check_same_vocabulary(options.method, options.members, specs)
    # The members' own identities: what they load, not what a chat backend of the same name
    # would (the two agree by construction: one identity function, one file rule).
    pinned = [member_identity(n, s, resolver) for n, s in zip(options.members, specs,
                                                                strict=True)]
    settings = options.model_dump(mode="json", exclude={"members", "n_ctx"})
    digest = hashlib.sha256(json.dumps([settings, pinned], sort_keys=True).encode()).hexdigest()
    return EnsembleBackend(options, specs, f"ensemble:{options.method}:{digest[:16]}")
