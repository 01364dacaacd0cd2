"""Resolve a validated config into a plan: societies of agents on graphs, strategies, a task.

Everything here runs before a run directory is created, so bad references (an unknown trait, a
graph naming missing agents, a strategy of the wrong length) fail with nothing written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import networkx as nx
from pydantic import ValidationError

from societies import graphs
from societies.backends.base import Settings
from societies.backends.registry import (
    BUNDLED_ALIASES,
    check_sampling,
    strip_execution_options,
    validate_spec,
)
from societies.cards import Card, load_card
from societies.composition import compose
from societies.config import COMPOSITIONS, AgentConfig, ExperimentConfig, SocietyConfig
from societies.errors import ConfigError
from societies.strategies import Strategy, all_strategies, parse_strategy
from societies.tasks import TaskOptions, validate_task

if TYPE_CHECKING:
    from societies.protocols import Protocol
    from societies.protocols.aggregate import Aggregator


@dataclass(frozen=True)
class AgentPlan:
    """One agent, resolved: its card, the name of its model in the pool, its sampling."""

    name: str
    card: Card
    model: str
    settings: Settings


@dataclass(frozen=True)
class SocietyRules:
    """A society's own protocol, final rule and early stop, overriding the run's (baselines
    run MachineSoM's prompts with a majority and no early stop whatever the run uses)."""

    protocol: Protocol
    aggregator: Aggregator
    stop_on_consensus: bool = False


@dataclass(frozen=True, eq=False)
class SocietyPlan:
    """A society: agents in order, and who reads whom.

    Attributes:
        name: the society's name in records.
        agents: the members, in society order.
        graph: who reads whom (``u → v``: v reads u).
        schedule: one graph per debate round (round 1 first) when the graph changes by round;
            empty when ``graph`` holds for every round.
        rules: the society's own protocol, aggregator and early stop (None: the run's).
    """

    name: str
    agents: tuple[AgentPlan, ...]
    graph: nx.DiGraph
    schedule: tuple[nx.DiGraph, ...] = ()
    rules: SocietyRules | None = None

    def __post_init__(self) -> None:
        # Positions, so sources are put in society order in O(degree), not O(society size).
        object.__setattr__(self, "_position", {a.name: i for i, a in enumerate(self.agents)})

    def graph_at(self, round: int | None = None) -> nx.DiGraph:
        """The graph of debate round ``round`` (1-based; None: the society's main graph)."""
        if round is None or not self.schedule:
            return self.graph
        return self.schedule[min(round, len(self.schedule)) - 1]

    def readers_of(self, agent: str, round: int | None = None) -> list[str]:
        """Agents that read ``agent`` (its out-neighbours)."""
        return list(self.graph_at(round).successors(agent))

    def sources_for(self, agent: str, round: int | None = None) -> list[str]:
        """Agents whose answers ``agent`` reads in a debate round, in society order."""
        position: dict[str, int] = self._position  # type: ignore[attr-defined]
        return sorted(self.graph_at(round).predecessors(agent), key=position.__getitem__)


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, validated."""

    config: ExperimentConfig
    societies: tuple[SocietyPlan, ...]
    strategies: tuple[Strategy, ...]
    task: TaskOptions
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol: Protocol = field(default_factory=lambda: _default_protocol())
    aggregator: Aggregator = field(default_factory=lambda: _default_aggregator())
    extra_agents: tuple[AgentPlan, ...] = ()

    def model_names(self) -> list[str]:
        """Every model a run calls: members', role agents' (protocol, judge, summariser) and
        baseline agents'."""
        agents = [a for s in self.societies for a in s.agents]
        agents += [*self.protocol.roles, *self.extra_agents]
        if self.aggregator.judge is not None:
            agents.append(self.aggregator.judge)
        return sorted({a.model for a in agents})


def _default_protocol() -> Protocol:
    from societies.protocols.machinesom import MachineSoM

    return MachineSoM()


def _default_aggregator() -> Aggregator:
    from societies.protocols.aggregate import Aggregator

    return Aggregator()


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
    mixed = soc.size is not None or soc.traits is not None or soc.models is not None
    if mixed:
        if soc.agents is not None or soc.machinesom or soc.easy_going is not None \
                or soc.overconfident is not None:
            raise ConfigError(f"{where}: give either size/traits/models (a mixed society) or "
                              "agents or a MachineSoM composition, not both")
        members = compose(soc.size, soc.traits, soc.models, soc.seed, where)
        # One card load per trait and one model check per model, not per agent (1,000 agents).
        made: dict[tuple[str, str], AgentPlan] = {}
        plans = []
        for m in members:
            ref = m.model if m.model is not None else soc.model or exp.defaults.model
            key = (m.trait, json.dumps(ref, sort_keys=True))
            if key not in made:
                made[key] = _agent(AgentConfig(name=m.name, trait=m.trait, model=m.model), exp,
                                   models, where, soc.model)
            plans.append(replace(made[key], name=m.name))
        return plans
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
        spec = soc.graph or exp.graph
        graph_where = f"{where}.graph"  # the society's, even when it inherits `graph:`
        per_round: tuple[nx.DiGraph, ...] = ()
        if isinstance(spec, dict) and "schedule" in spec:
            per_round = graphs.schedule(names, spec, exp.rounds, graph_where)
            graph = nx.DiGraph(per_round[-1]) if per_round else nx.DiGraph()  # the last round's
            graph.add_nodes_from(names)
        else:
            graph = graphs.build(names, spec, graph_where)
        for strategy in strategies:
            strategy.check_agents(len(agents), f"strategies ({strategy.label}) for {where}")
        societies.append(SocietyPlan(soc.name or soc.machinesom or f"society{i + 1}",
                                     tuple(agents), graph, per_round))
    society_names = [s.name for s in societies]
    for i, name in enumerate(society_names):
        if society_names.index(name) != i:
            raise ConfigError(f"societies[{i}].name: {name!r} is used twice")
    task = validate_task(exp.task, "task")
    make_agent = _role_maker(exp, models)
    protocol, aggregator = _protocol(exp, make_agent)
    protocol.check_strategies(strategies, "strategies")
    from societies.baselines import baseline_agents

    extra = baseline_agents(exp, make_agent)
    for i, society in enumerate(societies):
        protocol.check(society, exp.rounds, f"societies[{i}]")
    return Plan(exp, tuple(societies), tuple(strategies), task, models, protocol, aggregator,
                extra)


def _role_maker(exp: ExperimentConfig, models: dict[str, dict[str, Any]]
                ) -> Callable[[Mapping[str, Any] | AgentConfig, str], AgentPlan]:
    """Turns an agent mapping at a field path into an agent outside the societies (a role, a
    judge, a baseline agent); its model joins ``models``."""

    def make_agent(raw: Mapping[str, Any] | AgentConfig, where: str) -> AgentPlan:
        if not isinstance(raw, AgentConfig):
            try:
                raw = AgentConfig.model_validate(dict(raw))
            except ValidationError as err:
                first = err.errors()[0]
                path = ".".join(str(p) for p in first["loc"])
                raise ConfigError(f"{where}.{path}: {first['msg']}") from None
        return _agent(raw, exp, models, where)

    return make_agent


def _protocol(exp: ExperimentConfig,
              make_agent: Callable[[Mapping[str, Any] | AgentConfig, str], AgentPlan]
              ) -> tuple[Protocol, Aggregator]:
    """The protocol, its debate policy and the final aggregator, role agents resolved."""
    from societies.protocols import BuildContext, build_protocol
    from societies.protocols.aggregate import Aggregator
    from societies.protocols.policies import DebatePolicy

    d = exp.debate
    if d.show == "sample" and d.k is None:
        raise ConfigError("debate.k: required with show: sample")
    summarizer = make_agent(d.summarizer, "debate.summarizer") if d.summarizer else None
    policy = DebatePolicy(show=d.show, k=d.k, seed=d.seed, last_rounds=d.last_rounds,
                          summarizer=summarizer, max_chars=d.max_chars,
                          keep_rounds=d.keep_rounds)
    raw = exp.protocol if isinstance(exp.protocol, str) else exp.protocol.model_dump()
    protocol = build_protocol(raw, BuildContext(policy, exp.rounds, make_agent))
    a = exp.aggregate
    if a.method == "judge" and a.judge is None:
        raise ConfigError("aggregate.judge: required with method: judge")
    judge = make_agent(a.judge, "aggregate.judge") if a.judge else None
    return protocol, Aggregator(a.method, judge)
