"""The real path: the bundled SmolLM2 through the whole engine, and cache reproduction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from societies.cli import main

pytestmark = pytest.mark.real

CONFIG = {
    "name": "real-smoke",
    "societies": [{"machinesom": "S3"}],
    "defaults": {"model": "smollm2",
                 "sampling": {"temperature": 0.7, "max_tokens": 16, "seed": 3}},
    "rounds": 1,
    "strategies": ["0"],
    "task": {"name": "arithmetic", "n": 1},
}


def transcripts(run_dir: Path) -> list[list[str]]:
    from societies.storage import RunStore

    return [[t.reply for r in rec.rounds for t in r.turns] for rec in RunStore(run_dir).records()]


def test_real_model_end_to_end_and_cache_reproduces_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert main(["run", str(path), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    first = transcripts(tmp_path / "a")
    assert len(first) == 1 and len(first[0]) == 6 and all(first[0])
    report = capsys.readouterr().out
    assert "spent: 6 calls (0 from cache)" in report
    # A second run of the same config elsewhere is answered from the cache, byte for byte.
    assert main(["run", str(path), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert transcripts(tmp_path / "b") == first
    assert "spent: 0 calls (6 from cache)" in capsys.readouterr().out
    # --no-cache calls the model again; the per-call seeds make it reproduce the same text.
    assert main(["run", str(path), "--out", str(tmp_path / "c"), "--quiet", "--no-cache"]) == 0
    assert "spent: 6 calls (0 from cache)" in capsys.readouterr().out
    assert transcripts(tmp_path / "c") == first


def test_quickstart_config_runs_its_first_question_on_the_real_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """What `make run` runs, cut to one question: SmolLM2 converted to F16, batched calls."""
    from societies.paths import asset_dir
    from societies.storage import RunStore

    config = asset_dir("experiments") / "quickstart.yaml"
    assert main(["run", str(config), "--out", str(tmp_path / "q"), "--limit", "1",
                 "--quiet"]) == 0
    records = RunStore(tmp_path / "q").records()
    assert [r.strategy for r in records] == ["00", "11"]
    assert all(r.status == "ok" and len(r.rounds) == 3 for r in records)
    # Round 0 is shared by both strategies: 3 + 2 x 2 x 3 calls.
    assert "spent: 15 calls (0 from cache)" in capsys.readouterr().out
    # Every turn says how it ended and what was read from it.
    turns = [t for r in records for rd in r.rounds for t in rd.turns]
    assert {t.finish_reason for t in turns} <= {"stop", "length"}
    assert all(t.model == "smollm2-f16" and t.seed is not None for t in turns)
    assert all(t.answer is None or t.raw_answer for t in turns)
    assert all(t.reply and not t.error for r in records for rd in r.rounds for t in rd.turns)


@pytest.mark.real
def test_answer_probabilities_from_a_real_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """sampling.logprobs through llama_cpp.server (started with logits_all): answers get their
    probability, and the summary its confidence-weighted majority."""
    from societies.backends.bundled import bundled_path
    from societies.storage import RunStore
    from tests.servers import start_llama_server, stop_process

    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "What is 2 + 3?", "answer": "5"}\n')
    url, proc = start_llama_server(bundled_path("smollm2"), logits_all=True)
    try:
        cfg = {"name": "confidence",
               "models": {"srv": {"backend": "openai", "base_url": f"{url}/v1",
                                  "model": "smollm2"}},
               "defaults": {"model": "srv", "sampling": {"temperature": 0.0, "max_tokens": 32,
                                                         "logprobs": True}},
               "societies": [{"machinesom": "S2"}], "rounds": 0, "strategies": [""],
               "task": {"name": "jsonl", "path": str(questions)},
               "run": {"cache": False}}
        path = tmp_path / "exp.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main(["run", str(path), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    finally:
        stop_process(proc)
    (record,) = RunStore(tmp_path / "r").records()
    turns = record.rounds[0].turns
    answered = [t for t in turns if t.answer is not None]
    assert answered, [t.reply for t in turns]
    assert all(t.answer_prob is not None and 0 < t.answer_prob <= 1 for t in answered)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["groups"][0]["rounds"][0]["weighted_majority_accuracy"] is not None
