"""Refusals before any work: overlap with the evaluation set, unmergeable checkpoints, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from societies.cli import main
from societies.errors import ConfigError
from societies.merging.data import build_training_data, worked_solution
from societies.merging.merge import MergeSpec, check_compatible, merge
from societies.tasks import load_task, validate_task
from tests.merging.conftest import tiny_checkpoint

SUMS = {"name": "arithmetic", "expression": "a+b", "high": 9}


def _write(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_training_data_overlapping_the_eval_set_is_refused_in_one_line() -> None:
    train = validate_task({**SUMS, "n": 200, "seed": 7})
    held = validate_task({**SUMS, "n": 30, "seed": 0})
    with pytest.raises(ConfigError) as err:
        build_training_data(train, held, drop_eval=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("data: ") and "evaluation questions" in message
    assert "drop_eval" in message


def test_drop_eval_leaves_no_evaluation_question_in_training() -> None:
    train = validate_task({**SUMS, "n": 200, "seed": 7})
    held = validate_task({**SUMS, "n": 30, "seed": 0})
    data = build_training_data(train, held, drop_eval=True)
    eval_questions = {q.text for q in load_task(held).questions()}
    assert data.dropped > 0 and len(data.examples) == 200 - data.dropped
    assert not any(e.user.splitlines()[0] in eval_questions for e in data.examples)
    # the reply ends with the result alone, as the task's instruction asks
    assert all(e.assistant.splitlines()[-1].lstrip("-").isdigit() for e in data.examples)


def test_worked_solution_is_right_for_the_six_number_expression() -> None:
    assert worked_solution([7, 3, 4, 2, 5, 6]).splitlines()[-1] == str(7 + 3 * 4 + 2 - 5 * 6)


def test_finetune_cli_refuses_overlap_with_exit_2_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "variant"
    config = _write(tmp_path / "ft.yaml", {
        "name": "v", "data": {"task": {**SUMS, "n": 100, "seed": 3}},
        "eval": {**SUMS, "n": 30, "seed": 0}, "output": str(out)})
    assert main(["finetune", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "evaluation questions" in err
    assert not out.exists()


def test_finetune_config_errors_name_the_field(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path / "ft.yaml", {
        "name": "v", "data": {"task": {"name": "mmlu", "n": 5}},
        "eval": {**SUMS, "n": 30}, "output": str(tmp_path / "o")})
    assert main(["finetune", str(config)]) == 2
    assert "data.task.name: worked solutions exist for arithmetic" in capsys.readouterr().err
    config = _write(tmp_path / "ft2.yaml", {
        "name": "v", "data": {"task": {**SUMS, "n": 5}}, "eval": {**SUMS, "n": 30},
        "train": {"steps": 0}, "output": str(tmp_path / "o")})
    assert main(["finetune", str(config)]) == 2
    assert "train.steps" in capsys.readouterr().err


@pytest.mark.parametrize(("changes", "field"), [
    ({"method": "ties", "base": None}, "base: method ties"),
    ({"method": "slerp", "parameters": {}}, "parameters.t"),
    ({"method": "slerp", "parameters": {"t": 0.5}, "extra": True}, "models: slerp"),
    ({"method": "linear", "no_weight": True}, "models[1].weight"),
])
def test_merge_spec_errors_are_one_line(changes: dict[str, object], field: str,
                                        tmp_path: Path) -> None:
    models = [{"model": "a", "weight": 1.0}, {"model": "b", "weight": 1.0}]
    if changes.pop("extra", False):
        models.append({"model": "c", "weight": 1.0})
    if changes.pop("no_weight", False):
        models[1] = {"model": "b"}
    spec = MergeSpec.model_validate({"name": "m", "base": "x", "models": models,
                                     "output": str(tmp_path / "o"), **changes})
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        merge(spec)
    assert not (tmp_path / "o").exists()


def test_different_architectures_are_refused_with_the_ensemble_pointer(tmp_path: Path) -> None:
    a = tiny_checkpoint(tmp_path / "a", hidden=16)
    b = tiny_checkpoint(tmp_path / "b", hidden=32)
    with pytest.raises(ConfigError) as err:
        check_compatible({"models[0].model": a, "models[1].model": b})
    message = str(err.value)
    assert message.startswith("models[1].model: hidden_size is 32 but 16 in models[0].model")
    assert "token-level ensemble" in message and "\n" not in message


def test_different_vocabularies_are_refused(tmp_path: Path) -> None:
    a = tiny_checkpoint(tmp_path / "a", words=("a", "b", "c"))
    b = tiny_checkpoint(tmp_path / "b", words=("a", "b", "d"))
    with pytest.raises(ConfigError, match=r"models\[1\]\.model: its tokenizer's vocabulary"):
        check_compatible({"models[0].model": a, "models[1].model": b})
    check_compatible({"models[0].model": a, "models[1].model": tiny_checkpoint(
        tmp_path / "a2", seed=1)})  # other weights, same shape and vocabulary: fine


def test_merge_cli_refuses_unmergeable_models_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tiny_checkpoint(tmp_path / "a", hidden=16)
    b = tiny_checkpoint(tmp_path / "b", hidden=32)
    out = tmp_path / "merged"
    config = _write(tmp_path / "m.yaml", {
        "name": "m", "method": "linear", "output": str(out),
        "models": [{"model": str(a), "weight": 0.5}, {"model": str(b), "weight": 0.5}]})
    capsys.readouterr()  # progress bars of the checkpoints' writing
    assert main(["merge", str(config)]) == 2
    err = capsys.readouterr().err
    assert "ensemble" in err and err.strip().count("\n") == 0
    assert not out.exists()
    missing = _write(tmp_path / "m2.yaml", {
        "name": "m", "method": "linear", "output": str(out),
        "models": [{"model": str(a), "weight": 0.5}, {"model": "nope/dir", "weight": 0.5}]})
    assert main(["merge", str(missing)]) == 2
    assert "models[1].model: model not found: nope/dir" in capsys.readouterr().err
