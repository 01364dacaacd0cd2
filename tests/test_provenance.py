"""A run's identity covers what changes replies: card and template contents, the answer form."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import societies.cards as cards
from societies.cli import main
from societies.config import parse_config
from societies.paths import asset_dir
from societies.plan import build_plan
from societies.provenance import provenance
from societies.records import SCHEMA_VERSION
from societies.tasks import load_task
from tests.helpers import config


def run_cli(tmp_path: Path, cfg: dict[str, object], capsys: pytest.CaptureFixture[str],
            ) -> tuple[int, str]:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    return code, capsys.readouterr().err


def test_editing_a_prompt_template_makes_a_new_experiment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(asset_dir("prompts"), prompts)
    monkeypatch.setattr(cards, "asset_dir",
                        lambda name: prompts if name == "prompts" else asset_dir(name))
    cards._environment.cache_clear()
    try:
        cfg = config(task={"name": "arithmetic", "n": 1})
        assert run_cli(tmp_path, cfg, capsys)[0] == 0
        assert run_cli(tmp_path, cfg, capsys)[0] == 0  # unchanged: resumes (nothing to do)
        debate = prompts / "debate.j2"
        debate.write_text(debate.read_text().replace("Compare their answers", "Weigh them"))
        cards._environment.cache_clear()
        code, err = run_cli(tmp_path, cfg, capsys)
        assert code == 2 and "(templates changed)" in err
    finally:
        cards._environment.cache_clear()


def test_editing_a_trait_card_makes_a_new_experiment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    card = tmp_path / "stubborn.yaml"
    card.write_text("name: stubborn\nprompt: You are {{ name }}. Never change your answer.\n")
    cfg = config(task={"name": "arithmetic", "n": 1},
                 societies=[{"agents": [{"name": "a", "trait": str(card)}, {"name": "b"}]}])
    assert run_cli(tmp_path, cfg, capsys)[0] == 0
    card.write_text("name: stubborn\nprompt: You are {{ name }}. Always change your answer.\n")
    cards.load_card.cache_clear()  # a new process would read the file afresh
    code, err = run_cli(tmp_path, cfg, capsys)
    assert code == 2 and "(cards changed)" in err


def test_identity_parts_cover_answer_form_models_and_schema() -> None:
    plan = build_plan(parse_config(config(task={"name": "arithmetic", "n": 1})))
    task = load_task(plan.task)
    base = provenance(plan, task, {"s": "scripted:abc"})
    assert base.parts["schema"] == str(SCHEMA_VERSION)
    assert base.effective["answer_form"] == task.answer_form
    assert base.effective["societies"][0]["agents"][0]["sampling"]["max_tokens"] == 8
    task.answer_form = "End with the result in words."  # what another task version would say
    changed = provenance(plan, task, {"s": "scripted:abc"})
    assert changed.identity != base.identity and changed.parts["answer_form"] != \
        base.parts["answer_form"]
    other_model = provenance(plan, load_task(plan.task), {"s": "scripted:def"})
    assert other_model.identity != base.identity
