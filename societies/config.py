"""Experiment configs: YAML in, validated by pydantic, resolved into frozen plans.

Every error reaches the user as one line naming the field path (``societies[1].graph``) or the
``file:line`` of a YAML syntax error, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from societies.errors import ConfigError

COMPOSITIONS = {  # MachineSoM's societies: (overconfident, easy-going)
    "S1": (3, 0),
    "S2": (2, 1),
    "S3": (1, 2),
    "S4": (0, 3),
}


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingConfig(Strict):
    """Sampling settings of one agent; every backend applies exactly these.

    An agent's ``sampling`` overrides ``defaults.sampling`` field by field: only the keys it
    writes change (see :meth:`over`).
    """

    temperature: float = Field(0.7, ge=0, description="0 = greedy")
    max_tokens: int = Field(128, gt=0)
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus mass; 1 = off")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens; 0 = off")
    min_p: float = Field(0.0, ge=0, le=1, description="drop tokens under min_p × the top one's")
    seed: int = 0
    stop: list[str] = Field([], description="strings that end a reply (not included)")
    logprobs: bool = Field(False, description=(
        "ask for the sampled tokens' log-probabilities, to record each answer's probability "
        "(backends that return none, the in-process llama.cpp ones, record null)"))

    def over(self, base: SamplingConfig) -> SamplingConfig:
        """``base`` with the fields written in this config replaced.

        >>> base = SamplingConfig(temperature=0.2, max_tokens=64)
        >>> SamplingConfig.model_validate({"max_tokens": 32}).over(base).temperature
        0.2
        """
        return base.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


ModelRef = str | dict[str, Any]


class AgentConfig(Strict):
    """One agent: name, trait card, model and sampling."""

    name: str = Field(min_length=1)
    trait: str | None = Field(None, description="card name or path (default: defaults.trait)")
    model: ModelRef | None = None
    sampling: SamplingConfig | None = Field(None, description="overrides defaults.sampling "
                                            "field by field")


class SocietyConfig(Strict):
    """One society: explicit agents, or a composition of easy-going and overconfident agents."""

    name: str | None = None
    agents: list[str | AgentConfig] | None = None
    machinesom: Literal["S1", "S2", "S3", "S4"] | None = None
    easy_going: int | None = Field(None, ge=0)
    overconfident: int | None = Field(None, ge=0)
    model: ModelRef | None = None
    graph: str | list[list[str]] | None = None


class DefaultsConfig(Strict):
    """Defaults for agents that do not set their own."""

    model: ModelRef = "smollm2"
    sampling: SamplingConfig = SamplingConfig()
    trait: str = "neutral"


class PriceConfig(Strict):
    """Price of one model in currency units per million tokens."""

    prompt: float = Field(0.0, ge=0)
    completion: float = Field(0.0, ge=0)


class RetryConfig(Strict):
    """Retries of transient backend errors (429, 5xx, timeouts): exponential backoff, jitter."""

    attempts: int = Field(5, gt=0, description="tries per call, the first included")
    base_delay: float = Field(0.5, ge=0, description="seconds before the first retry")
    max_delay: float = Field(30.0, ge=0, description="cap on one wait (Retry-After wins)")


class RunConfig(Strict):
    """Execution settings: they do not change results, so resume ignores them."""

    concurrency: int = Field(4, gt=0, description="backend calls in flight at once")
    questions: int | None = Field(None, gt=0, description=(
        "questions in progress at once (default: concurrency); fewer questions with more calls "
        "each keeps what a batched local backend must hold in memory small"))
    cache: bool = Field(True, description="use the LLM-call cache")
    prices: dict[str, PriceConfig] = Field({}, description="model name → price, for the ledger")
    retry: RetryConfig = RetryConfig()


class ExperimentConfig(Strict):
    """A whole experiment, as read from YAML."""

    name: str = Field(min_length=1)
    description: str = ""
    models: dict[str, dict[str, Any]] = {}
    defaults: DefaultsConfig = DefaultsConfig()
    agents: list[AgentConfig] = []
    societies: list[SocietyConfig] = Field(min_length=1)
    protocol: Literal["machinesom"] = "machinesom"
    graph: str | list[list[str]] = "complete"
    rounds: int = Field(3, ge=0)
    strategies: str | list[str | list[str | list[str]]] = "all"
    task: dict[str, Any]
    repeats: int = Field(1, gt=0)
    seeding: Literal["paired", "independent"] = Field("paired", description=(
        "paired: an agent's seeds do not depend on its society (common random numbers across "
        "societies); independent: the society is part of every seed"))
    output: str | None = None
    run: RunConfig = RunConfig()

    def result_fields(self) -> dict[str, Any]:
        """The config as JSON without what cannot change replies: output, description, run
        settings, and every model's execution-only options (threads, rate limits, ...)."""
        from societies.backends.registry import strip_execution_options

        data = self.model_dump(mode="json", exclude={"output", "run", "description"})
        data["models"] = {k: strip_execution_options(v) for k, v in data["models"].items()}
        for agent in data["agents"]:
            agent["model"] = strip_execution_options(agent["model"])
        for society in data["societies"]:
            society["model"] = strip_execution_options(society["model"])
            for item in society["agents"] or []:
                if isinstance(item, dict):
                    item["model"] = strip_execution_options(item["model"])
        data["defaults"]["model"] = strip_execution_options(data["defaults"]["model"])
        return data

    def identity(self) -> str:
        """Hash of the config's part that changes results (see :meth:`result_fields`).

        The run's identity adds what the config only names: card and template contents, the
        task's answer form, model identities and the record schema (``societies.provenance``).
        """
        data = self.result_fields()
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """Field names allowed at the parent of ``loc`` (for 'unknown key' messages)."""
    model: Any = ExperimentConfig
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, Strict)):
            continue
        if part not in model.model_fields:
            return []
        model = _inner_model(model.model_fields[part].annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside ``X | None`` / ``list[X]`` / ``dict[str, X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def format_path(loc: tuple[int | str, ...]) -> str:
    """``('societies', 1, 'graph')`` → ``societies[1].graph``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_error(err: ValidationError) -> str:
    # pydantic reports one error per union member; the first non-union error is the useful one.
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and "[" in p))
    path = format_path(loc)
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"{path}: unknown key{hint}"
    if first["type"] == "missing":
        return f"{path}: required"
    return f"{path}: {first['msg']}"


def parse_config(data: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate raw config data (already parsed YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys to values")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_first_error(err)}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML experiment config.

    Raises:
        ConfigError: missing file, YAML syntax error (with ``file:line``), or a field that does
            not validate (with its path).
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}: {problem}") from None
    return parse_config(data, str(file))
