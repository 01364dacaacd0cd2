"""Backend ``ensemble``: config errors in one line, a real reply, and a society whose agent
is a UniTE ensemble of SmolLM2 and Gemma-3, run end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from societies.backends.base import Message, Settings
from societies.backends.registry import BackendPool
from societies.ensembles.chat import EnsembleBackend
from societies.errors import ConfigError

SCRIPTED = {"backend": "scripted", "replies": ["4"]}


def build(raw: dict[str, Any], **models: dict[str, Any]) -> Any:
    pool = BackendPool(models)
    pool.register("team", raw)
    return pool.chat("team")


@pytest.mark.parametrize(("raw", "message"), [
    ({"ensemble": "average", "members": ["smollm2", "gemma3"]},
     "average needs members with the same vocabulary; smollm2 has 49152 tokens, gemma3 262144"),
    ({"ensemble": "unite", "members": ["smollm2", "gemma3"], "weights": [1.0]},
     "models.team.weights: need 2 weights (one per member), >= 0 and not all 0; got [1.0]"),
    ({"ensemble": "unite", "members": ["smollm2", "gemma3"], "weights": [0.0, 0.0]},
     "models.team.weights: need 2 weights"),
    ({"ensemble": "gac", "members": ["smollm2", "gemma3"], "main": "llama"},
     "models.team.main: 'llama' is not among members ['smollm2', 'gemma3']"),
    ({"ensemble": "bagging", "members": ["smollm2", "gemma3"]},
     "models.team.method: unknown method 'bagging'; known: average, logit_average, unite, gac"),
    ({"ensemble": "unite", "members": ["smollm2"]}, "models.team.members: "),
    ({"ensemble": "proxy_tuning", "members": ["smollm2", "smollm2"]},
     "models.team.members: proxy_tuning needs exactly 3 members (base, expert, anti_expert)"),
    ({"ensemble": "contrastive", "members": ["smollm2", "gemma3"], "main": "gemma3"},
     "models.team.main: contrastive: main must be the first member"),
    ({"ensemble": "gac", "members": ["smollm2", "gemma3"], "gate_threshold": 1.5},
     "models.team.gate_threshold: "),
    ({"ensemble": "unite", "members": ["smollm2", "gemma3"], "topk": 5},
     "models.team.topk: "),
    ({"ensemble": "unite", "members": ["smollm2", "robot"]},
     "ensemble member 'robot': backend 'scripted' has no token-level access"),
    ({"ensemble": "unite", "members": ["smollm2", "nobody"]}, "unknown model 'nobody'"),
])
def test_bad_input_is_one_line(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(raw, robot=SCRIPTED)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_identity_pins_method_options_and_members() -> None:
    base = {"ensemble": "unite", "members": ["smollm2", "gemma3"]}
    a, b = build(base), build(base)
    assert isinstance(a, EnsembleBackend) and a.identity == b.identity
    assert a.identity.startswith("ensemble:unite:")
    assert build({**base, "top_k": 3}).identity != a.identity
    assert build({**base, "main": "gemma3"}).identity != a.identity
    assert build({**base, "n_ctx": 1024}).identity == a.identity  # no effect on replies
    assert a._members is None  # nothing loaded until the first call


@pytest.mark.real
async def test_generate_a_reply() -> None:
    backend = build({"ensemble": "unite", "members": ["smollm2", "gemma3"], "main": "smollm2",
                     "n_ctx": 512})
    messages = [Message("user", "What is 3 + 4? Reply with the number.")]
    try:
        reply = await backend.generate(messages, Settings(temperature=0, max_tokens=6))
        again = await backend.generate(messages, Settings(temperature=0, max_tokens=6))
        sampled = await backend.generate(messages, Settings(temperature=0.8, max_tokens=6,
                                                            seed=3))
    finally:
        await backend.aclose()
    assert reply.text and reply.text == again.text
    assert 1 <= reply.completion_tokens <= 6 and sampled.completion_tokens <= 6
    assert reply.finish_reason in ("stop", "length")
    smol = backend.members() if backend._members else None
    assert smol is None  # aclose released the members
    assert reply.prompt_tokens > 10 and reply.extra["union"] >= reply.completion_tokens


@pytest.mark.real
async def test_a_society_with_an_ensemble_agent_runs(tmp_path: Path) -> None:
    from societies.config import parse_config
    from societies.plan import build_plan
    from societies.runner import Run
    from societies.storage import RunStore

    config = parse_config({
        "name": "ensemble-society",
        "societies": [{"agents": [
            {"name": "duo", "model": {"ensemble": "unite", "members": ["smollm2", "gemma3"],
                                      "main": "smollm2", "n_ctx": 1024}},
            {"name": "solo", "model": "robot"}]}],
        "models": {"robot": SCRIPTED},
        "defaults": {"sampling": {"temperature": 0, "max_tokens": 16}},
        "rounds": 1, "strategies": ["0"],
        "task": {"name": "arithmetic", "n": 1, "seed": 0},
        "run": {"cache": False, "concurrency": 2}})
    plan = build_plan(config)
    store = RunStore(tmp_path / "run")
    run = Run(plan, store)
    run.prepare()
    try:
        summary = await run.execute(progress=False)
    finally:
        await run.pool.aclose()
    records = [json.loads(line) for line in store.records_path.read_text().splitlines()]
    assert len(records) == 1 and summary is not None
    record = records[0]
    assert record["status"] == "ok" and record["error"] is None
    assert record["agents"] == ["duo", "solo"] and len(record["rounds"]) == 2
    for round_ in record["rounds"]:
        assert len(round_["turns"]) == 2
        for turn in round_["turns"]:
            assert turn["error"] is None and turn["reply"].strip()
            assert turn["completion_tokens"] >= 1
