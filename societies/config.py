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


GraphSpec = str | list[list[str]] | dict[str, Any]
"""A graph name, an edge list, or a mapping (generator, file or per-round schedule); see
:mod:`societies.graphs`."""


class SocietyConfig(Strict):
    """One society: explicit agents, MachineSoM's composition, or a large mixed one.

    A mixed society gives ``size`` and ``traits`` (counts, or proportions summing to 1), and
    optionally ``models`` (a list, one per agent, or a mapping of model to count/proportion);
    ``seed`` decides who gets which trait and model (see :mod:`societies.composition`).
    """

    name: str | None = None
    agents: list[str | AgentConfig] | None = None
    machinesom: Literal["S1", "S2", "S3", "S4"] | None = None
    easy_going: int | None = Field(None, ge=0)
    overconfident: int | None = Field(None, ge=0)
    size: int | None = Field(None, ge=1, le=1000, description="agents in a mixed society")
    traits: dict[str, float] | None = Field(None, description=(
        "trait card → count or proportion (proportions sum to 1)"))
    models: list[ModelRef] | dict[str, float] | None = Field(None, description=(
        "a model per agent (list) or model name → count or proportion"))
    seed: int = Field(0, description="who gets which trait and model in a mixed society")
    model: ModelRef | None = None
    graph: GraphSpec | None = None


class DefaultsConfig(Strict):
    """Defaults for agents that do not set their own."""

    model: ModelRef = "smollm2"
    sampling: SamplingConfig = SamplingConfig()
    trait: str = "neutral"


class DebateConfig(Strict):
    """What a debate prompt shows an agent of its in-neighbours (see
    :mod:`societies.protocols.policies`)."""

    show: Literal["all", "sample"] = Field("all", description=(
        "all: every in-neighbour's latest reply (MachineSoM); sample: at most k of them"))
    k: int | None = Field(None, gt=0, description="with show: sample, how many replies")
    seed: int = Field(0, description="with show: sample, which ones (per agent and round)")
    last_rounds: int = Field(1, gt=0, description="show each neighbour's last r replies")
    summarizer: AgentConfig | None = Field(None, description=(
        "an agent that condenses the shown replies into one summary first"))
    max_chars: int | None = Field(None, gt=0, description=(
        "cut each shown reply to this many characters (head kept, marked)"))
    keep_rounds: int | None = Field(None, gt=0, description=(
        "send an agent only its opening and its last n rounds of history (older rounds are "
        "dropped), so long debates fit the model's context"))


class EarlyStopConfig(Strict):
    """When a unit ends before its last round."""

    consensus: bool = Field(False, description=(
        "stop once every answering agent gives the same answer; later rounds carry it"))


class AggregateConfig(Strict):
    """How a unit's final answer is chosen from the last round."""

    method: Literal["majority", "confidence", "judge"] = Field("majority", description=(
        "majority (MachineSoM's rule), confidence-weighted majority, or a judge agent"))
    judge: AgentConfig | None = Field(None, description="the judge, with method: judge")


class ProtocolConfig(Strict):
    """A protocol by name with its own options (roles, orders, layers)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "machinesom"


class BaselinesConfig(Strict):
    """Baselines run beside the societies, at an equal token budget (see
    :mod:`societies.baselines`)."""

    single: bool = Field(False, description="one agent answering once")
    reflection: bool = Field(False, description="one agent reflecting for every round")
    self_consistency: bool | int = Field(False, description=(
        "majority of k samples; true: k chosen so tokens match the societies'"))
    agent: AgentConfig | None = Field(None, description="the baseline agent (default: neutral)")

    @property
    def enabled(self) -> bool:
        """True if any baseline is asked for."""
        return bool(self.single or self.reflection or self.self_consistency)


class PriceConfig(Strict):
    """Price of one model in currency units per million tokens."""

    prompt: float = Field(0.0, ge=0)
    completion: float = Field(0.0, ge=0)


class RetryConfig(Strict):
    """Retries of transient backend errors (429, 5xx, timeouts): exponential backoff, jitter."""

    attempts: int = Field(5, gt=0, description="tries per call, the first included")
    base_delay: float = Field(0.5, ge=0, description="seconds before the first retry")
    max_delay: float = Field(30.0, ge=0, description="cap on one wait (Retry-After wins)")


class RayConfig(Strict):
    """Where and how wide a Ray executor runs (see :mod:`societies.executors.ray`)."""

    address: str | None = Field(None, description=(
        "a Ray cluster's address (default: RAY_ADDRESS, else a local Ray instance)"))
    in_flight: int = Field(8, gt=0, description="Ray tasks submitted and not yet collected")
    num_cpus: float = Field(1.0, gt=0, description="CPUs each Ray task asks for")
    max_retries: int = Field(3, ge=0, description=(
        "times Ray reruns a question whose worker died (killed, out of memory, node lost)"))


class RunConfig(Strict):
    """Execution settings: they do not change results, so resume ignores them."""

    concurrency: int = Field(4, gt=0, description="backend calls in flight at once")
    questions: int | None = Field(None, gt=0, description=(
        "questions in progress at once (default: concurrency); fewer questions with more calls "
        "each keeps what a batched local backend must hold in memory small"))
    cache: bool = Field(True, description="use the LLM-call cache")
    prices: dict[str, PriceConfig] = Field({}, description="model name → price, for the ledger")
    retry: RetryConfig = RetryConfig()
    executor: Literal["local", "ray"] = Field("local", description=(
        "local: this process; ray: questions run as Ray tasks (pip install 'societies[ray]')"))
    ray: RayConfig = Field(default_factory=lambda: RayConfig())


class ExperimentConfig(Strict):
    """A whole experiment, as read from YAML."""

    name: str = Field(min_length=1)
    description: str = ""
    models: dict[str, dict[str, Any]] = {}
    defaults: DefaultsConfig = DefaultsConfig()
    agents: list[AgentConfig] = []
    societies: list[SocietyConfig] = Field(min_length=1)
    protocol: str | ProtocolConfig = Field("machinesom", description=(
        "a protocol name, or a mapping with name and the protocol's options"))
    graph: GraphSpec = "complete"
    debate: DebateConfig = DebateConfig()
    early_stop: EarlyStopConfig = EarlyStopConfig()
    aggregate: AggregateConfig = AggregateConfig()
    baselines: BaselinesConfig = BaselinesConfig()
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
        _strip_inline_models(data, strip_execution_options)
        return data

    def identity(self) -> str:
        """Hash of the config's part that changes results (see :meth:`result_fields`).

        The run's identity adds what the config only names: card and template contents, the
        task's answer form, model identities and the record schema (``societies.provenance``).
        """
        data = self.result_fields()
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _strip_inline_models(node: Any, strip: Any) -> None:
    """Strip execution-only options from every inline model (``model: {...}``) anywhere in the
    config: agents, societies, defaults, role agents of protocols, judges, baselines."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "model" and isinstance(value, dict):
                node[key] = strip(value)
            elif key != "models":
                _strip_inline_models(value, strip)
    elif isinstance(node, list):
        for item in node:
            _strip_inline_models(item, strip)


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


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML of file ``path``.

    Raises:
        ConfigError: a missing file, or a YAML syntax error (with ``file:line``).
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}: {problem}") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML experiment config.

    Raises:
        ConfigError: missing file, YAML syntax error (with ``file:line``), or a field that does
            not validate (with its path).
    """
    return parse_config(read_yaml(path), str(path))
