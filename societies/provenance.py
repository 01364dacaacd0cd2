"""A run's identity and the effective settings saved beside its records.

A run directory may only resume the same experiment, so its identity covers everything that
changes replies: the config (less execution settings), the *contents* of every trait card and
prompt template used, the task's answer-form instruction, each model's identity (its weights'
hash, or server and model name) and the record schema. ``config.json`` keeps each part's hash,
so a refused resume says which part changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from societies.cards import template_source
from societies.plan import Plan
from societies.records import SCHEMA_VERSION
from societies.tasks import Task


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Provenance:
    """What pins a run's results.

    Attributes:
        identity: one hash over ``parts``; a run directory refuses any other.
        parts: part name → hash (config, cards, templates, answer_form, graphs, models,
            schema).
        effective: the values in effect, for people: each agent's card, model and sampling,
            the graphs, template hashes, the answer form, seeding and schema version.
    """

    identity: str
    parts: dict[str, str]
    effective: dict[str, Any]


def provenance(plan: Plan, task: Task, model_identities: Mapping[str, str]) -> Provenance:
    """The identity and effective settings of a run of ``plan``.

    Args:
        plan: the validated plan.
        task: the loaded task (its answer form is part of the prompts).
        model_identities: model name → backend identity, for every model the agents use.
    """
    names = [*plan.protocol.templates, *plan.aggregator.templates]
    if plan.config.baselines.enabled:  # baselines always run MachineSoM's prompts
        names += [n for n in ("question", "debate", "reflection") if n not in names]
    templates = {name: template_source(name) for name in names}
    agents = [a for s in plan.societies for a in s.agents]
    agents += [*plan.protocol.roles, *plan.extra_agents]
    agents += [plan.aggregator.judge] if plan.aggregator.judge else []
    cards = {a.card.name: a.card.prompt for a in agents}
    graphs = {s.name: [sorted(g.edges) for g in (s.graph, *s.schedule)] for s in plan.societies}
    parts = {
        "config": plan.config.identity(),
        "cards": _digest(cards),
        "templates": _digest(templates),
        "answer_form": _digest(task.answer_form),
        "graphs": _digest(graphs),
        "models": _digest(dict(model_identities)),
        "schema": str(SCHEMA_VERSION),
    }
    effective = {
        "schema_version": SCHEMA_VERSION,
        "seeding": plan.config.seeding,
        "answer_form": task.answer_form,
        "templates": {name: _digest(text) for name, text in templates.items()},
        "cards": {name: _digest(text) for name, text in cards.items()},
        "models": dict(model_identities),
        "societies": [
            {"name": s.name,
             "edges": [list(e) for e in s.graph.edges],
             "agents": [{"name": a.name, "card": a.card.name, "model": a.model,
                         "sampling": {**asdict(a.settings), "stop": list(a.settings.stop)}}
                        for a in s.agents]}
            for s in plan.societies],
    }
    return Provenance(_digest(parts), parts, effective)
