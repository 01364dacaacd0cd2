"""Bad input: one line naming the field path and what is allowed, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from societies.cli import main
from societies.config import parse_config
from societies.plan import build_plan
from societies.strategies import parse_strategy
from tests.helpers import config


def run_cli(tmp_path: Path, cfg: dict[str, Any] | str, capsys: pytest.CaptureFixture[str],
            ) -> tuple[int, str, Path]:
    path = tmp_path / "exp.yaml"
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    out = tmp_path / "run"
    code = main(["run", str(path), "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err, out


@pytest.mark.parametrize(("change", "expected"), [
    ({"societies": [{"agents": [{"name": "a", "trait": "grumpy"}]}]},
     "societies[0].agents[0].trait: unknown trait card 'grumpy'; available: devils-advocate"),
    ({"task": {"name": "riddles"}}, "task.name: unknown task 'riddles'; known: arithmetic"),
    ({"graph": [["agent1", "agent9"]]},
     "societies[0].graph[0]: agent 'agent9' is not in the society"),
    ({"strategies": ["001"]}, "strategies[0]: strategy '001' has 3 rounds but rounds is 2"),
    ({"strategies": ["0[10]"]}, "round 2 names 2 agents' patterns but the society has 3"),
    ({"strategies": ["0x"]}, "strategies[0]: cannot read strategy '0x'"),
    ({"repeats": 0}, "repeats: Input should be greater than 0"),
    ({"task": {"name": "arithmetic", "n": -1}}, "task.n: Input should be greater than 0"),
    ({"colour": "blue"}, "colour: unknown key; allowed: name, description, models"),
    ({"societies": [{"machinesom": "S2", "sise": 3}]},
     "societies[0].sise: unknown key; allowed: name, agents, machinesom"),
    ({"defaults": {"sampling": {"temprature": 1}}},
     "defaults.sampling.temprature: unknown key; allowed: temperature, max_tokens"),
    ({"graph": "hypercube"}, "societies[0].graph: unknown graph 'hypercube'; allowed: complete"),
    ({"defaults": {"model": "gpt-7"}}, "unknown model 'gpt-7'; known: gemma3, s, smollm2"),
    ({"models": {"x": {"backend": "llamacpp", "path": "a.gguf", "n_ctx": 0}}},
     "models.x.n_ctx: Input should be greater than 0"),
    ({"models": {"x": {"backend": "warp"}}}, "models.x.backend: unknown backend 'warp'"),
])
def test_bad_config_one_line_exit_2_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], expected: str,
) -> None:
    code, err, out = run_cli(tmp_path, config(**change), capsys)
    assert code == 2
    assert expected in err, err
    assert err.count("\n") == 1 and err.startswith("societies: error: ")
    assert not out.exists()


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, err, out = run_cli(tmp_path, "name: x\nsocieties: [\n  - a: b\n rounds: 3\n", capsys)
    assert code == 2 and "exp.yaml:" in err and err.count("\n") == 1
    assert not out.exists()


def test_jsonl_task_error_names_file_line_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "qs.jsonl"
    data.write_text('{"question": "2+2?", "answer": "4"}\n{"question": "oops"\n')
    code, err, out = run_cli(tmp_path, config(task={"name": "jsonl", "path": str(data)}), capsys)
    assert code == 2 and f"{data}:2" in err
    assert not out.exists()


def test_missing_model_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(models={"m": {"backend": "llamacpp", "path": str(tmp_path / "no.gguf")}},
                 defaults={"model": "m"})
    code, err, out = run_cli(tmp_path, cfg, capsys)
    assert code == 2 and "model file not found" in err and not out.exists()
    bad = tmp_path / "fake.gguf"
    bad.write_bytes(b"NOPE" * 10)
    cfg["models"]["m"]["path"] = str(bad)
    code, err, _ = run_cli(tmp_path, cfg, capsys)
    assert code == 2 and f"not a GGUF file: {bad}" in err


def test_changed_config_in_existing_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, out = run_cli(tmp_path, config(), capsys)
    assert code == 0
    before = (out / "records.jsonl").read_text()
    code, err, _ = run_cli(tmp_path, config(rounds=1, strategies=["0"]), capsys)
    assert code == 2 and "holds a run of a different experiment (config changed)" in err
    assert (out / "records.jsonl").read_text() == before
    # Execution settings are not part of the identity: changing them resumes.
    code, _, _ = run_cli(tmp_path, config(run={"concurrency": 1, "cache": False}), capsys)
    assert code == 0 and (out / "records.jsonl").read_text() == before


def test_composition_shorthand_and_all_strategies() -> None:
    plan = build_plan(parse_config(config(societies=[{"machinesom": "S1"},
                                                     {"easy_going": 1, "overconfident": 1}],
                                          strategies="all")))
    traits = [[a.card.name for a in s.agents] for s in plan.societies]
    assert traits == [["overconfident"] * 3, ["overconfident", "easy-going"]]
    assert [s.label for s in plan.strategies] == ["00", "01", "10", "11"]


def test_strategy_notations_agree() -> None:
    a = parse_strategy("debate,debate,reflection", 3, "s")
    b = parse_strategy("001", 3, "s")
    c = parse_strategy(["debate", "0", "reflection"], 3, "s")
    assert a == b == c and a.label == "001"
    mixed = parse_strategy(["debate", ["reflection", "debate"]], 2, "s")
    assert mixed.label == "0[10]" and mixed.prefix(1) == "0"


def test_defaults_trait_applies_to_agents_that_name_none() -> None:
    cfg = config(defaults={"model": "s", "trait": "devils-advocate"},
                 agents=[{"name": "a"}, {"name": "b", "trait": "easy-going"}],
                 societies=[{"agents": ["a", "b"]}])
    plan = build_plan(parse_config(cfg))
    assert [a.card.name for a in plan.societies[0].agents] == ["devils-advocate", "easy-going"]


def test_agent_sampling_overrides_defaults_field_by_field() -> None:
    cfg = config(defaults={"model": "s", "sampling": {"temperature": 0.2, "max_tokens": 64,
                                                      "top_k": 20, "stop": ["###"]}},
                 agents=[{"name": "a", "sampling": {"max_tokens": 16}}, {"name": "b"}],
                 societies=[{"agents": ["a", "b"]}])
    a, b = build_plan(parse_config(cfg)).societies[0].agents
    assert (a.settings.temperature, a.settings.max_tokens, a.settings.top_k) == (0.2, 16, 20)
    assert a.settings.stop == ("###",) and a.settings.min_p == 0.0
    assert (b.settings.max_tokens, b.settings.top_p) == (64, 1.0)


def test_sampling_vocabulary_is_validated_with_its_field_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, out = run_cli(tmp_path, config(defaults={"model": "s",
                                                        "sampling": {"min_p": 2}}), capsys)
    assert code == 2 and "defaults.sampling.min_p: Input should be less than or equal to 1" in err
    assert not out.exists()


def test_sampling_an_endpoint_cannot_apply_is_refused_before_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(models={"api": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                                 "model": "m", "sampling_params": "openai"}},
                 defaults={"model": "api", "sampling": {"top_k": 5}})
    code, err, out = run_cli(tmp_path, cfg, capsys)
    assert code == 2 and "societies[0].sampling: openai" in err and "top_k=5" in err
    assert not out.exists()


@pytest.mark.parametrize(("answer", "expected"), [
    ({"extract": [{"regex": "ANS=\\w+"}]}, "task.answer.extract[0].regex: "),
    ({"extract": [{"regex": "ANS=(\\w+"}]}, "task.answer.extract[0].regex: "),
    ({"kind": "colour"}, "task.answer.kind: "),
])
def test_bad_answer_settings_are_one_line_and_write_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], answer: dict[str, object],
        expected: str) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "What is 8 + 8?", "answer": "16"}\n')
    cfg = config(task={"name": "jsonl", "path": str(questions), "answer": answer})
    code, err, out = run_cli(tmp_path, cfg, capsys)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_list_answer_in_a_file_whose_kind_is_not_set_names_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "2 + 2?", "answer": "4"}\n'
                         '{"question": "A prime under 4?", "answer": ["2", "3"]}\n')
    cfg = config(task={"name": "jsonl", "path": str(questions), "answer": {"kind": "number"}})
    code, err, out = run_cli(tmp_path, cfg, capsys)
    assert code == 2 and f"{questions}:2:" in err and not out.exists()


def test_execution_only_model_options_leave_the_identity_alone() -> None:
    def identity(**options: object) -> str:
        model = {"backend": "llamacpp", "path": "bundled:smollm2", **options}
        return parse_config(config(models={"m": model}, defaults={"model": "m"})).identity()

    assert identity(n_threads=2) == identity(n_threads=8) == identity()
    assert identity(n_ctx=2048) != identity(n_ctx=4096)  # decides which calls overflow
