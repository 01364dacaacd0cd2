"""Resolve a validated config into a plan: societies of agents on graphs, strategies, a task.

Everything here runs before a run directory is created, so bad references (an unknown trait, a
graph naming missing agents, a strategy of the wrong length) fail with nothing written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from societies import graphs
from societies.backends.base import Settings
from societies.backends.registry import (
    BUNDLED_ALIASES,
    check_sampling,
    strip_execution_options,
    validate_spec,
)
from societies.cards import Card, load_card
from societies.config import COMPOSITIONS, AgentConfig, ExperimentConfig, SocietyConfig
from societies.errors import ConfigError
from societies.strategies import Strategy, all_strategies, parse_strategy
from societies.tasks import TaskOptions, validate_task


@dataclass(frozen=True)
class AgentPlan:
    """One agent, resolved: its card, the name of its model in the pool, its sampling."""

    name: str
    card: Card
    model: str
    settings: Settings


@dataclass(frozen=True, eq=False)
class SocietyPlan:
    """A society: agents in order, and who reads whom."""

    name: str
    agents: tuple[AgentPlan, ...]
    graph: nx.DiGraph

    def readers_of(self, agent: str) -> list[str]:
        """Agents that read ``agent`` (its out-neighbours)."""
        return list(self.graph.successors(agent))

    def sources_for(self, agent: str) -> list[str]:
        """Agents whose answers ``agent`` reads in a debate round, in society order."""
        sources = set(self.graph.predecessors(agent))
        return [a.name for a in self.agents if a.name in sources]


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, validated."""

    config: ExperimentConfig
    societies: tuple[SocietyPlan, ...]
    strategies: tuple[Strategy, ...]
    task: TaskOptions
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


def _model_name(ref: str | dict[str, Any], models: dict[str, dict[str, Any]], where: str) -> str:
    """Register an inline model under a content-derived name; check named ones exist."""
    if isinstance(ref, str):
        if ref not in models and ref not in BUNDLED_ALIASES:
            known = sorted({*models, *BUNDLED_ALIASES})
            raise ConfigError(f"{where}: unknown model {ref!r}; known: {', '.join(known)}")
        return ref
    validate_spec(ref, where)
    # Named by what changes replies, so a resume with other thread counts keeps the name.
    pinned = json.dumps(strip_execution_options(ref), sort_keys=True)
    name = "inline-" + hashlib.sha256(pinned.encode()).hexdigest()[:8]
    models[name] = ref
    return name


def _agent(cfg: AgentConfig, exp: ExperimentConfig, models: dict[str, dict[str, Any]],
           where: str, default_model: str | dict[str, Any] | None = None) -> AgentPlan:
    sampling = cfg.sampling.over(exp.defaults.sampling) if cfg.sampling else exp.defaults.sampling
    model_ref = cfg.model or default_model or exp.defaults.model
    trait = cfg.trait or exp.defaults.trait
    model = _model_name(model_ref, models, f"{where}.model")
    settings = Settings(temperature=sampling.temperature, max_tokens=sampling.max_tokens,
                        top_p=sampling.top_p, top_k=sampling.top_k, min_p=sampling.min_p,
                        seed=sampling.seed, stop=tuple(sampling.stop),
                        logprobs=0 if sampling.logprobs else None)
    check_sampling({**BUNDLED_ALIASES, **models}[model], settings, f"{where}.sampling")
    return AgentPlan(name=cfg.name, card=load_card(trait, f"{where}.trait"), model=model,
                     settings=settings)


def _society_agents(soc: SocietyConfig, exp: ExperimentConfig, models: dict[str, dict[str, Any]],
                    where: str) -> list[AgentPlan]:
    named = {a.name: a for a in exp.agents}
    if soc.agents is not None:
        if soc.machinesom or soc.easy_going is not None or soc.overconfident is not None:
            raise ConfigError(f"{where}: give either agents or a composition, not both")
        plans = []
        for i, item in enumerate(soc.agents):
            if isinstance(item, str):
                if item not in named:
                    raise ConfigError(f"{where}.agents[{i}]: unknown agent {item!r}; defined "
                                      f"under agents: {', '.join(named) or 'none'}")
                item = named[item]
            plans.append(_agent(item, exp, models, f"{where}.agents[{i}]", soc.model))
        return plans
    if soc.machinesom:
        n_over, n_easy = COMPOSITIONS[soc.machinesom]
    elif soc.easy_going is not None or soc.overconfident is not None:
        n_over, n_easy = soc.overconfident or 0, soc.easy_going or 0
    else:
        raise ConfigError(f"{where}: give agents, machinesom (S1-S4), or easy_going/overconfident")
    traits = ["overconfident"] * n_over + ["easy-going"] * n_easy
    return [
        _agent(AgentConfig(name=f"agent{i + 1}", trait=t), exp, models, where, soc.model)
        for i, t in enumerate(traits)
    ]


def _strategies(exp: ExperimentConfig) -> list[Strategy]:
    if exp.strategies == "all":
        return all_strategies(exp.rounds)
    raw = [exp.strategies] if isinstance(exp.strategies, str) else exp.strategies
    out = [parse_strategy(s, exp.rounds, f"strategies[{i}]") for i, s in enumerate(raw)]
    labels = [s.label for s in out]
    for i, label in enumerate(labels):
        if labels.index(label) != i:
            raise ConfigError(f"strategies[{i}]: {label!r} is listed twice")
    return out


def build_plan(exp: ExperimentConfig) -> Plan:
    """Resolve and cross-check a config. Raises ConfigError naming the field path."""
    models = {k: dict(v) for k, v in exp.models.items()}
    for name, raw in exp.models.items():
        validate_spec(raw, f"models.{name}")
    strategies = _strategies(exp)
    societies = []
    for i, soc in enumerate(exp.societies):
        where = f"societies[{i}]"
        agents = _society_agents(soc, exp, models, where)
        if len(agents) < 1:
            raise ConfigError(f"{where}: a society needs at least one agent")
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: agent names must be unique, got {', '.join(names)}")
        graph = graphs.build(names, soc.graph or exp.graph, f"{where}.graph")
        for strategy in strategies:
            strategy.check_agents(len(agents), f"strategies ({strategy.label}) for {where}")
        societies.append(SocietyPlan(soc.name or soc.machinesom or f"society{i + 1}",
                                     tuple(agents), graph))
    society_names = [s.name for s in societies]
    for i, name in enumerate(society_names):
        if society_names.index(name) != i:
            raise ConfigError(f"societies[{i}].name: {name!r} is used twice")
    task = validate_task(exp.task, "task")
    return Plan(exp, tuple(societies), tuple(strategies), task, models)
