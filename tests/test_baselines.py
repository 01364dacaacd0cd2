"""Baselines at an equal token budget, on scripted backends (engine logic) and once on SmolLM2."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from societies import plan as plan_module
from societies.backends.base import Message
from societies.backends.model import Model
from societies.backends.scripted import ScriptedBackend
from societies.baselines import (
    BUDGET_FILE,
    REFLECTION,
    SINGLE,
    Budget,
    baseline_agents,
    baseline_societies,
    measure,
    sc_name,
)
from societies.config import AgentConfig, ExperimentConfig, parse_config
from societies.engine import Engine
from societies.errors import ConfigError
from societies.plan import AgentPlan, Plan, build_plan
from societies.records import UnitRecord
from societies.report import format_table
from societies.runner import Run
from societies.storage import RunStore
from tests.helpers import SameModel

QUESTIONS = [{"question": "What is 1 + 1?", "answer": "2", "id": "q1"},
             {"question": "Q2: what is 2 + 2?", "answer": "4", "id": "q2"},
             {"question": "What is 3 + 3?", "answer": "6", "id": "q3"}]


def questions_file(tmp_path: Path) -> str:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return str(path)


def base_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Three neutral agents with one-word names (as long as sc-1), so a society's round-0 call
    and a self-consistency sample cost the same words."""
    cfg: dict[str, Any] = {
        "name": "b",
        "models": {"s": {"backend": "scripted", "replies": ["The answer is 2."]}},
        "defaults": {"model": "s", "sampling": {"temperature": 0.7, "max_tokens": 8},
                     "trait": "neutral"},
        "agents": [{"name": n} for n in ("a1", "a2", "a3")],
        "societies": [{"name": "trio", "agents": ["a1", "a2", "a3"]}],
        "rounds": 2,
        "strategies": ["00"],
        "task": {"name": "jsonl", "path": questions_file(tmp_path)},
        "baselines": {"single": True, "reflection": True, "self_consistency": True},
        "run": {"concurrency": 4, "cache": False},
    }
    cfg.update(overrides)
    return cfg


def make_agent_for(exp: ExperimentConfig, models: dict[str, dict[str, Any]]):  # type: ignore[no-untyped-def]
    """What build_plan's make_agent does (a mapping or AgentConfig → a resolved agent)."""
    def make(raw: Mapping[str, Any] | AgentConfig, where: str) -> AgentPlan:
        cfg = raw if isinstance(raw, AgentConfig) else AgentConfig.model_validate(dict(raw))
        return plan_module._agent(cfg, exp, models, where)
    return make


def baseline_plan(cfg: dict[str, Any]) -> Plan:
    exp = parse_config(cfg)
    plan = build_plan(exp)
    if not plan.extra_agents:  # until build_plan puts the baseline agent in the plan itself
        models = dict(plan.models)
        plan = replace(plan, models=models,
                       extra_agents=baseline_agents(exp, make_agent_for(exp, models)))
    return plan


def speaker(messages: Sequence[Message]) -> str:
    match = re.search(r"You are ([\w-]+),", messages[0].content)
    assert match, messages[0].content
    return match.group(1)


def run_with(tmp_path: Path, cfg: dict[str, Any], backend: ScriptedBackend,
             limit: int | None = None) -> Run:
    pinned = SameModel(backend)
    run = Run(baseline_plan(cfg), RunStore(tmp_path / "run"), limit=limit,
              model_factory=lambda pool, name: Model(pinned, name))
    run.prepare()
    asyncio.run(run.execute(progress=False))
    return run


def by_society(run: Run) -> dict[str, list[UnitRecord]]:
    out: dict[str, list[UnitRecord]] = {}
    for rec in run.store.records():
        out.setdefault(rec.society, []).append(rec)
    return out


def unit_tokens(rec: UnitRecord) -> int:
    return sum(t.prompt_tokens + t.completion_tokens for r in rec.rounds for t in r.turns)


def test_single_and_reflection_make_one_and_r_plus_one_calls(tmp_path: Path) -> None:
    backend = ScriptedBackend(["The answer is 2."])
    run = run_with(tmp_path, base_config(tmp_path, baselines={"single": True,
                                                              "reflection": True}), backend)
    units = by_society(run)
    assert set(units) == {"trio", SINGLE, REFLECTION}
    single, reflection = units[SINGLE], units[REFLECTION]
    assert [r.strategy for r in single] == ["-"] * 3 and all(len(r.rounds) == 1 for r in single)
    assert [r.strategy for r in reflection] == ["11"] * 3
    assert all([rd.turns[0].pattern for rd in r.rounds] == ["answer", "reflection", "reflection"]
               for r in reflection)
    calls = Counter(speaker(m) for m in backend.calls)
    # trio: 3 agents x 3 rounds x 3 questions; the baseline agent: (1 + 3) per question.
    assert calls == {"a1": 9, "a2": 9, "a3": 9, "baseline": 3 * (1 + 3)}
    assert all(r.final is not None and r.final.answer == "2" for r in single + reflection)
    # The reflection baseline's prompts hold only its own history.
    reflecting = [m for m in backend.calls if speaker(m) == "baseline" and len(m) == 4]
    assert reflecting and all("Go back over your previous answer" in m[-1].content
                              for m in reflecting)


def test_self_consistency_k_matches_the_society_tokens(tmp_path: Path) -> None:
    run = run_with(tmp_path, base_config(tmp_path), ScriptedBackend(["The answer is 2."]))
    units = by_society(run)
    society = units["trio"]
    mean_unit = sum(unit_tokens(r) for r in society) / len(society)
    round0 = [t for r in society for t in r.rounds[0].turns]
    mean_call = sum(t.prompt_tokens + t.completion_tokens for t in round0) / len(round0)
    k = round(mean_unit / mean_call)
    assert k > 3  # debate rounds carry longer prompts than round 0
    saved = Budget.model_validate_json((run.store.root / BUDGET_FILE).read_text())
    assert (saved.k, saved.requested, saved.society_units) == (k, "matched", 3)
    assert saved.mean_unit_tokens == pytest.approx(mean_unit)
    sc = units[sc_name(k)]
    assert all(r.agents == [f"sc-{i + 1}" for i in range(k)] and len(r.rounds) == 1 for r in sc)
    # Equal budget: a self-consistency unit is within one call's tokens of a society unit.
    for rec in sc:
        assert abs(unit_tokens(rec) - mean_unit) <= mean_call
    # Each sample has its own seed (names differ, so the per-call seeds do).
    assert len({t.seed for t in sc[0].rounds[0].turns}) == k
    report = format_table(_summary(run))
    row = next(line.split() for line in report.splitlines()
               if line.strip().startswith(sc_name(k)))
    assert abs(float(row[-1]) - 1.0) <= mean_call / mean_unit


def _summary(run: Run):  # type: ignore[no-untyped-def]
    from societies.runner import summarize_run

    return summarize_run(run.plan, run.store)


def long_on_q2(messages: Sequence[Message]) -> str:
    """Long debate replies on the second question only: a k measured on all three questions
    differs from one measured on the first."""
    turn = sum(m.role == "assistant" for m in messages)
    pad = " and so on" * 40 if turn and "Q2" in messages[1].content else ""
    return "The answer is 2" + pad + "."


def test_a_resumed_run_keeps_the_saved_k(tmp_path: Path) -> None:
    first = run_with(tmp_path, base_config(tmp_path), ScriptedBackend(long_on_q2), limit=1)
    saved = (first.store.root / BUDGET_FILE).read_text()
    k = Budget.model_validate_json(saved).k
    later = run_with(tmp_path, base_config(tmp_path), ScriptedBackend(long_on_q2))
    assert (later.store.root / BUDGET_FILE).read_text() == saved
    units = by_society(later)
    assert len(units["trio"]) == 3 and len(units[sc_name(k)]) == 3
    assert [s for s in units if s.startswith("baseline-sc@")] == [sc_name(k)]
    # Measured afresh on all three questions, k would differ: the saved one was kept.
    assert measure(later.store.records()).k != k


def test_self_consistency_final_is_the_majority_of_the_samples(tmp_path: Path) -> None:
    def votes(messages: Sequence[Message]) -> str:
        who = speaker(messages)
        if "3 + 3" in messages[1].content:  # three different answers: no majority
            return {"sc-1": "It is 6.", "sc-2": "It is 7.", "sc-3": "It is 8."}.get(who, "6")
        return "It is 9." if who == "sc-3" else "It is 2." if "1 + 1" in messages[1].content \
            else "It is 4."

    cfg = base_config(tmp_path, baselines={"self_consistency": 3})
    run = run_with(tmp_path, cfg, ScriptedBackend(votes))
    sc = {r.question_id: r for r in by_society(run)[sc_name(3)]}
    assert sc["q1"].final is not None and sc["q1"].final.answer == "2"
    assert sc["q1"].final.method == "majority" and sc["q1"].final.correct
    assert sc["q3"].final is not None and sc["q3"].final.answer is None
    assert not sc["q3"].final.correct
    saved = Budget.model_validate_json((run.store.root / BUDGET_FILE).read_text())
    assert (saved.k, saved.requested) == (3, 3)


def test_baselines_run_machinesom_reflection_without_early_stop(tmp_path: Path) -> None:
    """The baseline engine: a lone reflecting agent would otherwise 'agree with itself' after
    round 0 and stop."""
    cfg = base_config(tmp_path, early_stop={"consensus": True},
                      baselines={"reflection": True})
    plan = baseline_plan(cfg)
    backend = ScriptedBackend(["The answer is 2."])
    pinned = SameModel(backend)
    run = Run(plan, RunStore(tmp_path / "run"),
              model_factory=lambda pool, name: Model(pinned, name))
    [(society, strategy)] = baseline_societies(plan, None)
    engine = Engine.from_plan(plan, run.task, run.models)  # the run's: early stop on
    [rec] = asyncio.run(engine.run_question(society, [strategy], run.questions[0], 0))
    assert rec.stopped_after is None and len(backend.calls) == 3
    assert [rd.turns[0].pattern for rd in rec.rounds] == ["answer", "reflection", "reflection"]


def test_the_runner_runs_baselines_on_the_baseline_engine(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, early_stop={"consensus": True},
                      baselines={"reflection": True})
    run = run_with(tmp_path, cfg, ScriptedBackend(["The answer is 2."]))
    [rec, *_] = by_society(run)[REFLECTION]
    assert rec.stopped_after is None and len(rec.rounds[2].turns[0].reply) > 0


def make(cfg: dict[str, Any]) -> tuple[AgentPlan, ...]:
    exp = parse_config(cfg)
    return baseline_agents(exp, make_agent_for(exp, {k: dict(v) for k, v in exp.models.items()}))


def test_plan_time_refusals(tmp_path: Path) -> None:
    cold = base_config(tmp_path, defaults={"model": "s", "sampling": {"temperature": 0.0}})
    with pytest.raises(ConfigError, match=r"^baselines\.self_consistency: .*temperature 0"):
        make(cold)
    # Without self-consistency, a greedy baseline agent is fine.
    assert make({**cold, "baselines": {"single": True}})[0].settings.temperature == 0
    with pytest.raises(ConfigError, match=r"^baselines\.self_consistency: k must be at least 2"):
        make(base_config(tmp_path, baselines={"self_consistency": 1}))
    named = base_config(tmp_path, societies=[{"name": "baseline-x", "agents": ["a1"]}])
    with pytest.raises(ConfigError, match=r"^societies\[0\]\.name: 'baseline-x'"):
        make(named)
    with pytest.raises(ConfigError, match=r"^baselines\.agent\.trait"):
        make(base_config(tmp_path, baselines={"single": True,
                                              "agent": {"name": "b", "trait": "nope"}}))
    assert make(base_config(tmp_path, baselines={})) == ()


def test_the_default_baseline_agent_is_neutral_with_the_default_model(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, defaults={"model": "s", "trait": "overconfident",
                                          "sampling": {"temperature": 0.5}})
    [agent] = make(cfg)
    assert (agent.name, agent.card.name, agent.model) == ("baseline", "neutral", "s")
    assert agent.settings.temperature == 0.5
    with pytest.raises(ValidationError):
        ExperimentConfig.model_validate({**cfg, "baselines": {"single": "yes please"}})


@pytest.mark.real
def test_baselines_on_the_bundled_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    """SmolLM2 answers as a society of two, then as the three baselines, k matched."""
    cfg = {
        "name": "real-baselines",
        "models": {"m": {"backend": "llamacpp", "path": "bundled:smollm2", "n_threads": 1}},
        "defaults": {"model": "m", "sampling": {"temperature": 0.7, "max_tokens": 16,
                                                "seed": 1}},
        "societies": [{"name": "duo", "overconfident": 1, "easy_going": 1}],
        "rounds": 1,
        "strategies": ["0"],
        "task": {"name": "arithmetic", "n": 1, "expression": "a+b", "high": 9},
        "baselines": {"single": True, "reflection": True, "self_consistency": True},
        "run": {"concurrency": 2, "cache": False},
    }
    run = Run(baseline_plan(cfg), RunStore(tmp_path / "run"))
    run.prepare()
    summary = asyncio.run(run.execute(progress=False))
    budget = Budget.model_validate_json((tmp_path / "run" / BUDGET_FILE).read_text())
    units = by_society(run)
    assert set(units) == {"duo", SINGLE, REFLECTION, sc_name(budget.k)}
    assert all(r.status == "ok" and r.final is not None for rs in units.values() for r in rs)
    assert all(t.reply and t.model == "m" for r in units[sc_name(budget.k)]
               for t in r.rounds[0].turns)
    assert budget.k >= 2 and budget.society_units == 1
    text = format_table(summary)
    assert "societies and baselines" in text and sc_name(budget.k) in text
