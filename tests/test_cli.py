"""The command line: report, list, schema, --limit, and the shipped assets."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from societies.cli import main
from tests.helpers import config, interrupt_cli_run


def test_run_limit_then_resume_and_report(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config(task={"name": "arithmetic", "n": 3})))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--limit", "1", "--quiet"]) == 0
    assert len((out / "records.jsonl").read_text().splitlines()) == 2
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert len((out / "records.jsonl").read_text().splitlines()) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert [g["strategy"] for g in summary["groups"]] == ["00", "01"]
    assert summary["ledger"]["total"]["calls"] == 3 * 3 * 4  # prefix shared: 4 nodes, 3 agents
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    report = capsys.readouterr().out
    assert "society S2 · strategy 00 · 3 units (0 failed)" in report
    assert "spent: 36 calls" in report
    # The parse audit follows the table: per-agent parse failures and a sample of replies.
    assert "parse audit: 36 replies" in report and "reply tail" in report
    assert main(["report", str(out), "--sample", "0"]) == 0
    assert "parse audit" not in capsys.readouterr().out


def test_report_on_a_non_run_is_one_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_list_and_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for word in ("easy-going", "overconfident", "mmlu", "chess", "llamacpp", "openai"):
        assert word in listing
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "rounds" in schema["properties"] and "Turn" in schema["$defs"]


def test_non_positive_limit_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "x.yaml", "--limit", "0"]) == 2


def test_wheel_ships_agents_prompts_experiments(tmp_path: Path) -> None:
    build = pytest.importorskip("hatchling.builders.wheel")
    root = Path(__file__).resolve().parents[1]
    builder = build.WheelBuilder(str(root))
    wheel = next(iter(builder.build(directory=str(tmp_path), versions=["standard"])))
    names = zipfile.ZipFile(wheel).namelist()
    for asset in ("societies/_assets/agents/easy-going.yaml",
                  "societies/_assets/prompts/debate.j2",
                  "societies/_assets/experiments/quickstart.yaml"):
        assert asset in names


def test_sigint_mid_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    import subprocess

    # 16 questions of 0.45 s on 2 workers: the run lasts ~3.6 s, ample time to interrupt it.
    cfg = config(task={"name": "arithmetic", "n": 16}, run={"concurrency": 2, "cache": False})
    cfg["models"]["s"]["delay"] = 0.15
    cmd, code, err, records = interrupt_cli_run(cfg, tmp_path)
    assert code == 130, err
    assert "run the same command again to resume" in err
    partial = len(records.read_text().splitlines())
    assert 0 < partial < 32
    assert subprocess.run(cmd, check=False).returncode == 0
    lines = records.read_text().splitlines()
    ids = [json.loads(line)["unit_id"] for line in lines]
    assert len(ids) == len(set(ids)) == 32


def test_report_html_show_stats_and_export_on_one_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config(task={"name": "arithmetic", "n": 3})))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--html", "--sample", "0"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report' / 'report.html'}" in printed
    assert {"report.md", "rounds.csv", "report.html"} <= {p.name for p in (out / "report")
                                                           .iterdir()}
    unit = json.loads((out / "records.jsonl").read_text().splitlines()[0])["unit_id"]
    assert main(["show", str(out), unit]) == 0
    assert "agent1" in capsys.readouterr().out
    assert main(["stats", str(out)]) == 0
    assert "paired comparisons" in capsys.readouterr().out
    assert main(["export", str(out), str(tmp_path / "tables")]) == 0
    assert {p.name for p in (tmp_path / "tables").iterdir()} >= {"turns.csv", "units.csv",
                                                                  "rounds.csv"}
    # Two runs side by side: both tables, one report.
    assert main(["report", str(out), str(out), "--sample", "0",
                 "--out", str(tmp_path / "both")]) == 0
    assert capsys.readouterr().out.count("== ") == 2


def test_report_on_a_torn_run_warns_and_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config(task={"name": "arithmetic", "n": 1})))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    with (out / "records.jsonl").open("a") as fh:
        fh.write('{"schema_version": 2, "unit_id": "S2/00/0/x", "ta')  # a write cut short
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "last line is incomplete" in captured.err
    assert "society S2 · strategy 00 · 1 unit (0 failed)" in captured.out
