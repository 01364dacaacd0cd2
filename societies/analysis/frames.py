"""A run as pandas DataFrames: one row per turn, per unit and per summary round.

``societies.load("runs/x")`` returns :class:`RunFrames`; analysis is then ordinary pandas::

    frames = societies.load("runs/x")
    frames.turns.groupby(["strategy", "round"])["correct"].mean()

The frames are built from the records alone (``records.jsonl``), like every other number.
Strategies that share a prefix share those rounds' replies (they are generated once), but each
unit's record holds its own copy, so a shared turn appears once *per unit* in ``turns``: a
round-0 turn shared by eight strategies is eight rows, one under each strategy. The ``prefix``
column (the strategy's symbols up to that round) identifies them: drop duplicates on
``society, repeat, question_id, prefix, round, agent_index`` to count generated replies once.

pandas is imported only when a frame is built (extra ``report``), so ``import societies`` stays
light.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from societies.compact import majority_answer, majority_correct, project
from societies.errors import MissingDependency, UserError
from societies.metrics import behaviour, summarize
from societies.records import UnitRecord
from societies.storage import RunStore

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RunFrames", "Source", "frames", "load", "pandas",
           "run_records", "strategy_symbols"]

_SYMBOL = re.compile(r"\[[^\]]*\]|.")  # one round: "0", "1" or a bracketed per-agent group


def pandas() -> Any:
    """The pandas module, or one line naming the extra to install."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - the dev venv has the extra
        raise MissingDependency("run frames and statistics", "report", "pandas") from None
    return pd


def strategy_symbols(strategy: str) -> list[str]:
    """One symbol per round after round 0: ``"0[100]1"`` -> ``["0", "[100]", "1"]``."""
    return _SYMBOL.findall(strategy)


def _gold(gold: str | list[str]) -> str:
    return gold if isinstance(gold, str) else "|".join(gold)


def _turn_rows(unit: UnitRecord) -> Iterable[dict[str, Any]]:
    symbols = strategy_symbols(unit.strategy)
    for rnd in unit.rounds:
        for i, t in enumerate(rnd.turns):
            yield {
                "unit_id": unit.unit_id, "society": unit.society, "strategy": unit.strategy,
                "prefix": "".join(symbols[:rnd.index]), "repeat": unit.repeat,
                "question_id": unit.question_id, "round": rnd.index, "agent": t.agent,
                "agent_index": i, "trait": unit.traits[i] if i < len(unit.traits) else None,
                "pattern": t.pattern, "answer": t.answer, "raw_answer": t.raw_answer,
                "answer_prob": t.answer_prob, "correct": t.correct,
                "finish_reason": t.finish_reason, "saw": "|".join(t.saw),
                "model": t.model, "seed": t.seed, "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.completion_tokens,
                "tokens": t.prompt_tokens + t.completion_tokens, "latency": t.latency_s,
                "retries": t.retries, "cached": t.cached, "error": t.error,
                "status": unit.status, "reply": t.reply,
            }


def _unit_row(unit: UnitRecord) -> dict[str, Any]:
    grid = project(unit).grid
    turns = [t for r in unit.rounds for t in r.turns]
    row: dict[str, Any] = {
        "unit_id": unit.unit_id, "task": unit.task, "society": unit.society,
        "strategy": unit.strategy, "repeat": unit.repeat, "question_id": unit.question_id,
        "status": unit.status, "error": unit.error, "gold": _gold(unit.gold),
        "agents": "|".join(unit.agents), "traits": "|".join(unit.traits),
        "n_rounds": len(unit.rounds),
        "tokens": sum(t.prompt_tokens + t.completion_tokens for t in turns),
        "latency": sum(t.latency_s for t in turns),
    }
    maj = [majority_correct(r) for r in grid]
    row["behaviour"] = behaviour(maj) if unit.status == "ok" and maj else None
    for k, r in enumerate(grid):
        row[f"majority_r{k}"] = majority_answer([c.answer for c in r])
        row[f"majority_correct_r{k}"] = maj[k]
        row[f"accuracy_r{k}"] = sum(c.correct for c in r) / len(r) if r else None
    row["majority_correct_final"] = maj[-1] if maj else None
    return row


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    # accuracy_per_agent -> accuracy_per_agent.a0, tokens_per_agent.a0.prompt, ...
    if isinstance(value, dict):
        for key, sub in value.items():
            _flat(f"{prefix}.{key}", sub, out)
    else:
        out[prefix] = value


def _round_rows(records: Sequence[UnitRecord]) -> list[dict[str, Any]]:
    rows = []
    for group in summarize(records).groups:
        for rm in group.rounds:
            row: dict[str, Any] = {"society": group.society, "strategy": group.strategy,
                                   "round": rm.index, "failed_units": group.failed_units}
            for name, value in rm.model_dump().items():
                if name != "index":
                    _flat(name, value, row)
            social = group.social.rounds if group.social is not None else []
            for sr in social[rm.index:rm.index + 1]:
                for name, value in sr.model_dump(exclude={"index"}).items():
                    _flat(f"social.{name}", value, row)
            rows.append(row)
    return rows


TURN_COLUMNS = ("unit_id", "society", "strategy", "prefix", "repeat", "question_id", "round",
                "agent", "agent_index", "trait", "pattern", "answer", "raw_answer",
                "answer_prob", "correct",
                "finish_reason", "saw", "model", "seed", "prompt_tokens", "completion_tokens",
                "tokens", "latency", "retries", "cached", "error", "status", "reply")


@dataclass(frozen=True)
class RunFrames:
    """The DataFrames of one run.

    Attributes:
        turns: one row per recorded turn (failed units' turns included; ``status`` says which).
            ``saw`` is the "|"-joined names the turn's prompt showed ("" when none);
            ``tokens`` = prompt + completion tokens; ``latency`` in seconds.
        units: one row per unit: status, error, gold ("|"-joined when several are accepted),
            behaviour, tokens, latency and per round k ``majority_r{k}`` (None when no
            majority), ``majority_correct_r{k}`` and ``accuracy_r{k}`` (mean agent accuracy);
            ``majority_correct_final`` for the last round.
        rounds: the summary, one row per society x strategy x round with every RoundMetrics
            field, then the round's social measures (SocialRound) prefixed ``social.``; dict
            fields are flattened (``accuracy_per_agent.a0``, ``social.exposed.rate``).
    """

    turns: pd.DataFrame
    units: pd.DataFrame
    rounds: pd.DataFrame

    def export(self, folder: str | Path, format: Literal["csv", "parquet"] = "csv") -> list[Path]:
        """Write ``turns``, ``units`` and ``rounds`` into ``folder``; returns the paths written.

        Raises:
            UserError: an unknown format, or parquet without pyarrow installed.
        """
        if format not in ("csv", "parquet"):
            raise UserError(f"export format: {format!r} is not csv or parquet")
        if format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise UserError("export format parquet needs pyarrow: pip install pyarrow "
                                "(or export csv)") from None
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in ("turns", "units", "rounds"):
            frame = getattr(self, name)
            path = out / f"{name}.{format}"
            if format == "csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
            paths.append(path)
        return paths


def frames(records: Iterable[UnitRecord]) -> RunFrames:
    """The frames of the given records (any order; one record per unit)."""
    pd = pandas()
    recs = list(records)
    turns = pd.DataFrame([row for u in recs for row in _turn_rows(u)],
                         columns=list(TURN_COLUMNS))
    units = pd.DataFrame([_unit_row(u) for u in recs])
    return RunFrames(turns=turns, units=units, rounds=pd.DataFrame(_round_rows(recs)))


def run_records(run_dir: str | Path) -> Iterator[UnitRecord]:
    """The latest record of every unit of a run directory, streamed one at a time.

    The directory is checked first (``RunStore.check_readable``); its warnings (a torn last
    line, a run still being written, older records) are issued as ``UserWarning``.

    Raises:
        UserError: not a run directory, no records yet, or a line that is not a record.
    """
    store = RunStore(run_dir)
    if not store.root.is_dir():
        raise UserError(f"{store.root}: no such run directory")
    for line in store.check_readable():
        warnings.warn(line, UserWarning, stacklevel=2)
    return store.iter_records()


def load(run_dir: str | Path) -> RunFrames:
    """The frames of a run directory: ``societies.load("runs/x").turns``."""
    return frames(run_records(run_dir))


Source = str | Path | Iterable[UnitRecord]  # a run directory, or the records themselves


def scored_records(source: Source) -> Iterator[UnitRecord]:
    """The records of ``source`` with status ok, in one pass (a directory is streamed)."""
    recs = run_records(source) if isinstance(source, str | Path) else source
    return (r for r in recs if r.status == "ok")
