"""Run frames: a scripted run loaded as DataFrames, exported, and bad run directories."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import societies
from societies.analysis.frames import RunFrames, frames, strategy_symbols
from societies.backends.scripted import ScriptedBackend
from societies.errors import UserError
from societies.records import Round, Turn, UnitRecord
from tests.helpers import config, make_run

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """S2 (three agents), two questions, strategies 00 and 01: 2 x 2 units of 3 rounds."""
    path = tmp_path_factory.mktemp("run")
    backend = ScriptedBackend(["The answer is 1.", "The answer is 2.", "The answer is 2."])
    asyncio.run(make_run(path, config(), backend).execute(progress=False))
    return path


@pytest.fixture(scope="module")
def loaded(run_dir: Path) -> RunFrames:
    return societies.load(run_dir)


def test_turns_one_row_per_recorded_turn(loaded: RunFrames) -> None:
    turns = loaded.turns
    assert len(turns) == 2 * 2 * 3 * 3  # strategies x questions x rounds x agents
    assert set(turns.strategy) == {"00", "01"} and set(turns["round"]) == {0, 1, 2}
    assert turns.trait.notna().all() and (turns.tokens == turns.prompt_tokens
                                          + turns.completion_tokens).all()
    assert (turns[turns["round"] == 0].saw == "").all()
    debate = turns[turns.pattern == "debate"]
    assert len(debate) and debate.saw.str.len().gt(0).all()  # S2 is fully connected
    assert debate.saw.iloc[0].count("|") == 1  # the two other agents, "|"-joined
    # Shared turns appear once per unit; the prefix key counts the replies generated once:
    # round 0 and round 1 ("0") are shared by 00 and 01, round 2 is not.
    key = ["society", "repeat", "question_id", "prefix", "round", "agent_index"]
    assert len(turns.drop_duplicates(key)) == 2 * 3 * (1 + 1 + 2)
    assert set(turns[turns["round"] == 2].prefix) == {"00", "01"}


def test_units_and_rounds(run_dir: Path, loaded: RunFrames) -> None:
    units = loaded.units.set_index("unit_id")
    assert len(units) == 4 and (units.status == "ok").all()
    assert {"majority_r0", "majority_correct_r2", "accuracy_r1", "behaviour",
            "majority_correct_final"} <= set(units.columns)
    assert (units.majority_r0 == "1").all()  # the script's first reply, three times
    rounds = loaded.rounds.set_index(["society", "strategy", "round"])
    assert len(rounds) == 2 * 3
    saved = json.loads((run_dir / "summary.json").read_text())
    for group in saved["groups"]:
        for rm in group["rounds"]:
            row = rounds.loc[(group["society"], group["strategy"], rm["index"])]
            for field in ("mean_accuracy", "majority_accuracy", "plurality_share"):
                assert row[field] == pytest.approx(rm[field])
            for agent, acc in rm["accuracy_per_agent"].items():
                assert row[f"accuracy_per_agent.{agent}"] == pytest.approx(acc)
    assert "social.entropy_bits" in rounds.columns


def test_export_csv_round_trip(loaded: RunFrames, tmp_path: Path) -> None:
    paths = loaded.export(tmp_path / "out")
    assert [p.name for p in paths] == ["turns.csv", "units.csv", "rounds.csv"]
    back = pd.read_csv(tmp_path / "out" / "turns.csv")
    assert list(back.columns) == list(loaded.turns.columns) and len(back) == len(loaded.turns)
    assert list(back.reply) == list(loaded.turns.reply)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow installed")
def test_parquet_without_pyarrow_is_one_line(loaded: RunFrames, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="pyarrow") as err:
        loaded.export(tmp_path, format="parquet")
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())
    with pytest.raises(UserError, match="xlsx"):
        loaded.export(tmp_path, format="xlsx")  # type: ignore[arg-type]


def test_bad_run_directories(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such run directory"):
        societies.load(tmp_path / "missing")
    with pytest.raises(UserError, match="not a run directory"):
        societies.load(tmp_path)


def test_import_stays_light() -> None:
    code = "import sys, societies; print('pandas' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


def test_hand_built_units_frame() -> None:
    def turn(answer: str | None, gold: list[str], error: str | None = None) -> Turn:
        return Turn(agent="x", pattern="answer", reply="r", answer=answer,
                    correct=answer in gold, error=error)
    gold = ["A", "a"]
    rec = UnitRecord(
        unit_id="S/1/0/q", task="t", question_id="q", society="S", strategy="1", repeat=0,
        gold=gold, agents=["x", "y", "z"], traits=["t1", "t1", "t2"],
        rounds=[Round(index=0, turns=[turn("A", gold), turn("B", gold), turn("B", gold)]),
                Round(index=1, turns=[turn("A", gold), turn("A", gold), turn("A", gold, "e")])])
    row = frames([rec]).units.iloc[0]
    assert row.gold == "A|a" and row.traits == "t1|t1|t2"
    assert (row.majority_r0, row.majority_correct_r0) == ("B", False)
    # the errored turn counts as no answer: A twice is still the majority
    assert (row.majority_r1, row.majority_correct_r1, row.accuracy_r1) == ("A", True, 2 / 3)
    assert row.behaviour == "correcting" and row.majority_correct_final


def test_strategy_symbols() -> None:
    assert strategy_symbols("0[100]1") == ["0", "[100]", "1"]
    assert strategy_symbols("") == []


def test_statistics_read_a_run_directory(run_dir: Path) -> None:
    from societies.analysis.stats import compare, compare_runs, intervals

    got = intervals(str(run_dir), n_boot=100, metrics=["majority_accuracy"])
    assert len(got) == 2 * 3 and (got.n_questions == 2).all()
    same = compare_runs(run_dir, run_dir)
    assert len(same) == 2 and (same.mcnemar_p == 1).all() and (same.wilcoxon_p == 1).all()
    assert list(compare(run_dir).kind) == ["strategy"]
