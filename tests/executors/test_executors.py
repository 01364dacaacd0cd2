"""Choosing an executor: the registry, the CLI flag, and Ray asked for without its extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from societies.cli import main
from societies.errors import ConfigError
from societies.executors import check_executor
from tests.helpers import config

NO_RAY = ("societies: error: the ray executor needs the optional dependency 'ray': "
          "pip install 'societies[ray]'\n")


def write(tmp_path: Path, executor: str) -> Path:
    cfg = config(run={"concurrency": 2, "cache": False, "executor": executor})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("flag", [[], ["--executor", "ray"]])
def test_ray_without_its_extra_is_one_line_exit_2_and_nothing_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        flag: list[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    path = write(tmp_path, "ray" if not flag else "local")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", *flag]) == 2
    assert capsys.readouterr().err == NO_RAY
    assert not out.exists()


def test_the_flag_overrides_the_config_and_the_run_is_the_same_experiment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    path = write(tmp_path, "ray")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--executor", "local"]) == 0
    ids = [json.loads(line)["unit_id"] for line in (out / "records.jsonl").read_text()
           .splitlines()]
    assert len(ids) == len(set(ids)) == 4  # S2 x 2 questions x 2 strategies


def test_an_unknown_executor_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^run.executor: unknown executor 'dask'"):
        check_executor("dask")
