"""Baselines in the same run as the societies, at an equal token budget.

Three baselines, each run as a society of its own (named ``baseline-...``) on the same
questions and repeats, after the societies (``baselines:`` in the config):

- ``baseline-single``: one agent answers once (round 0 only; strategy ``-``).
- ``baseline-reflection``: one agent answers, then reflects in every round (strategy ``1…1``).
- ``baseline-sc@k``: self-consistency, k agents (``sc-1`` … ``sc-k``, so their seeds differ)
  answer independently (no edges, round 0 only); the final answer is the majority of the k
  answers (MachineSoM's rule: a strict plurality held by two or more).

``self_consistency: true`` chooses k so the tokens match the societies': k = round(mean tokens
of a society unit / mean tokens of a society's round-0 call), measured on the society records
already in the run (every call a unit made, role calls and cached calls included). The k and
the numbers it came from are written once to ``RUN/baselines.json``, so a resumed run (even one
first run with ``--limit``) keeps the same k. The match is on the societies' round-0 calls: a
baseline agent with a shorter trait card than the members spends a little less per call; the
report prints the ratio that came out.

Baselines always run MachineSoM's prompts with a majority final answer and no early stop,
whatever the societies' protocol, so they are the same yardstick in every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict

from societies.config import AgentConfig, ExperimentConfig
from societies.errors import ConfigError, UserError
from societies.plan import AgentPlan, Plan, SocietyPlan, SocietyRules
from societies.records import UnitRecord
from societies.storage import write_atomic
from societies.strategies import Strategy

if TYPE_CHECKING:
    from societies.runner import Job, Run

__all__ = ["BASELINE_PREFIX", "DEFAULT_AGENT", "REFLECTION", "SINGLE", "Budget",
           "baseline_agents", "baseline_jobs", "baseline_rules", "baseline_societies",
           "is_baseline", "measure", "sc_name", "self_consistency_k"]

BASELINE_PREFIX = "baseline-"
SINGLE = "baseline-single"
REFLECTION = "baseline-reflection"
DEFAULT_AGENT = AgentConfig(name="baseline", trait="neutral")
BUDGET_FILE = "baselines.json"

MakeAgent = Callable[[Mapping[str, Any] | AgentConfig, str], AgentPlan]


def sc_name(k: int) -> str:
    """The self-consistency baseline's society name.

    >>> sc_name(5)
    'baseline-sc@5'
    """
    return f"{BASELINE_PREFIX}sc@{k}"


def is_baseline(society: str) -> bool:
    """Whether a society name is a baseline's.

    >>> is_baseline("baseline-single"), is_baseline("S2")
    (True, False)
    """
    return society.startswith(BASELINE_PREFIX)


def baseline_agents(exp: ExperimentConfig, make_agent: MakeAgent) -> tuple[AgentPlan, ...]:
    """The baseline agent, resolved at plan time so its model is loaded with the others
    (``Plan.extra_agents``); () when no baseline is asked for.

    Raises:
        ConfigError: a society named ``baseline-...``, a self-consistency k under 2, or
            self-consistency with a baseline agent sampling at temperature 0 (its k samples
            would be identical).
    """
    b = exp.baselines
    sc = b.self_consistency
    if not isinstance(sc, bool) and sc < 2:
        raise ConfigError("baselines.self_consistency: k must be at least 2 (true: chosen so "
                          "tokens match the societies')")
    if not b.enabled:
        return ()
    for i, soc in enumerate(exp.societies):
        if soc.name is not None and is_baseline(soc.name):
            raise ConfigError(f"societies[{i}].name: {soc.name!r}: names starting with "
                              f"{BASELINE_PREFIX!r} are kept for the baselines")
    agent = make_agent(b.agent or DEFAULT_AGENT, "baselines.agent")
    if sc is not False and agent.settings.temperature == 0:
        raise ConfigError("baselines.self_consistency: the baseline agent samples at "
                          "temperature 0, so its k samples would be identical; set "
                          "baselines.agent.sampling.temperature above 0")
    return (agent,)


def _baseline_agent(plan: Plan) -> AgentPlan:
    name = (plan.config.baselines.agent or DEFAULT_AGENT).name
    for agent in plan.extra_agents:
        if agent.name == name:
            return agent
    raise RuntimeError("the plan holds no baseline agent: build_plan must put "
                       "baseline_agents(...) in Plan.extra_agents")


def _society(name: str, agents: list[AgentPlan], rules: SocietyRules) -> SocietyPlan:
    graph = nx.DiGraph()
    graph.add_nodes_from(a.name for a in agents)  # no edges: nobody reads anybody
    return SocietyPlan(name, tuple(agents), graph, rules=rules)


def baseline_rules(keep_rounds: int | None = None) -> SocietyRules:
    """What baselines run, whatever the run's protocol, aggregator and ``early_stop`` say:
    MachineSoM's prompts (``keep_rounds``: the run's history rule), a majority final answer and
    no early stop (a lone agent always "agrees with itself", so a consensus stop would end the
    reflection baseline after round 0)."""
    from societies.protocols.aggregate import Aggregator
    from societies.protocols.machinesom import MachineSoM
    from societies.protocols.policies import DebatePolicy

    return SocietyRules(MachineSoM(DebatePolicy(keep_rounds=keep_rounds)),
                        Aggregator("majority"), stop_on_consensus=False)


def baseline_societies(plan: Plan, k: int | None) -> list[tuple[SocietyPlan, Strategy]]:
    """Each baseline asked for, as a society with its one strategy (self-consistency only
    when ``k`` is given)."""
    b = plan.config.baselines
    if not b.enabled:
        return []
    agent = _baseline_agent(plan)
    rules = baseline_rules(plan.config.debate.keep_rounds)
    out: list[tuple[SocietyPlan, Strategy]] = []
    if b.single:
        out.append((_society(SINGLE, [agent], rules), Strategy(())))
    if b.reflection:
        out.append((_society(REFLECTION, [agent], rules),
                    Strategy(("1",) * plan.config.rounds)))
    if k is not None:
        samplers = [replace(agent, name=f"sc-{i + 1}") for i in range(k)]
        out.append((_society(sc_name(k), samplers, rules), Strategy(())))
    return out


class Budget(BaseModel):
    """How self-consistency's k was chosen (saved as ``RUN/baselines.json``).

    ``requested`` is the config's value (``matched`` for true). The measured numbers are over
    the scored society units in the run when k was chosen: ``society_units`` units spending
    ``mean_unit_tokens`` each on average, and ``round0_calls`` round-0 calls of
    ``mean_call_tokens`` each. Tokens are prompt + completion.
    """

    model_config = ConfigDict(extra="forbid")
    k: int
    requested: int | Literal["matched"]
    society_units: int = 0
    mean_unit_tokens: float | None = None
    round0_calls: int = 0
    mean_call_tokens: float | None = None


def measure(records: Iterable[UnitRecord]) -> Budget:
    """k matched to the societies' tokens, from their records (baselines' own are skipped).

    Raises:
        UserError: no scored society unit, or no round-0 call with tokens, to match.
    """
    units = calls = unit_tokens = call_tokens = 0
    for rec in records:
        if rec.status != "ok" or is_baseline(rec.society):
            continue
        units += 1
        for rnd in rec.rounds:
            turns = [*rnd.turns, *rnd.asides]
            unit_tokens += sum(t.prompt_tokens + t.completion_tokens for t in turns)
        if rec.final is not None and rec.final.turn is not None:
            unit_tokens += rec.final.turn.prompt_tokens + rec.final.turn.completion_tokens
        for t in rec.rounds[0].turns if rec.rounds else []:
            if t.pattern == "answer" and t.error is None:
                calls += 1
                call_tokens += t.prompt_tokens + t.completion_tokens
    if not units or not call_tokens:
        raise UserError("baselines.self_consistency: no finished society unit to match tokens "
                        "against; run again once the societies' units have finished")
    mean_unit, mean_call = unit_tokens / units, call_tokens / calls
    return Budget(k=max(1, round(mean_unit / mean_call)), requested="matched",
                  society_units=units, mean_unit_tokens=mean_unit, round0_calls=calls,
                  mean_call_tokens=mean_call)


def self_consistency_k(run: Run) -> int | None:
    """Self-consistency's k for this run (None when not asked for): the saved one if the run
    directory holds ``baselines.json``, else the config's, or measured (``true``) and saved."""
    sc = run.plan.config.baselines.self_consistency
    if sc is False:
        return None
    path = run.store.root / BUDGET_FILE
    if path.exists():
        return Budget.model_validate_json(path.read_text()).k
    budget = measure(run.store.iter_records()) if sc is True else Budget(k=sc, requested=sc)
    write_atomic(path, budget.model_dump_json(indent=2) + "\n")
    return budget.k


def baseline_jobs(run: Run, done: set[str], start: int) -> list[Job]:
    """The baselines' unfinished (society, repeat, question) jobs, indexed from ``start``.

    Called by the runner once the society jobs are finished (self-consistency's k is measured
    on their records).
    """
    k = self_consistency_k(run)
    groups = [(society, (strategy,)) for society, strategy in baseline_societies(run.plan, k)]
    return run.jobs(done, groups, start)
