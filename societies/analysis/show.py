"""``societies show RUN UNIT_ID``: one unit's transcript as plain text for the terminal.

Replies are untrusted model output: every piece of model text is passed through
:func:`societies.audit.visible`, so escape sequences and bidirectional overrides show as
``\\x1b`` and ``\\u202e`` instead of acting on the terminal. Line breaks in a reply are kept as
separate indented lines (each one escaped).
"""

from __future__ import annotations

from pathlib import Path

from societies.audit import visible
from societies.errors import UserError
from societies.metrics import majority_answer
from societies.records import Turn, UnitRecord
from societies.storage import RunStore

_SHOWN_IDS = 5  # known ids named in the error for an unknown one


def find_unit(run_dir: Path, unit_id: str) -> UnitRecord:
    """The latest record of ``unit_id`` in the run.

    Raises:
        UserError: not a run directory, or no such unit (the message names a few known ids).
    """
    store = RunStore(run_dir)
    if not store.config_path.exists():
        raise UserError(f"{run_dir}: not a run directory (no config.json)")
    records = store.records()
    for record in records:
        if record.unit_id == unit_id:
            return record
    if not records:
        raise UserError(f"{run_dir}: no unit {visible(unit_id)!r}; the run has no records yet")
    known = ", ".join(r.unit_id for r in records[:_SHOWN_IDS])
    more = f" (and {len(records) - _SHOWN_IDS} more)" if len(records) > _SHOWN_IDS else ""
    raise UserError(f"{run_dir}: no unit {visible(unit_id)!r}; known ids: {known}{more}")


def _turn_lines(turn: Turn) -> list[str]:
    saw = ", ".join(turn.saw) if turn.saw else "nothing"
    mark = "correct" if turn.correct else "wrong"
    raw = "–" if turn.raw_answer is None else visible(turn.raw_answer)
    answer = "none" if turn.answer is None else visible(turn.answer)
    lines = [f"  {visible(turn.agent)} · {turn.pattern} · saw {visible(saw)}",
             f"    answer: {raw} -> {answer} ({mark})"
             + ("" if turn.finish_reason == "stop" else f" · finish {turn.finish_reason}")]
    if turn.error:
        lines.append(f"    error: {visible(turn.error)}")
    lines.append("    reply:")
    lines += [f"      | {visible(line)}" for line in turn.reply.split("\n")]
    return lines


def format_unit(unit: UnitRecord) -> str:
    """A unit's transcript: header, then each round's turns and majority."""
    gold = unit.gold if isinstance(unit.gold, str) else " | ".join(unit.gold)
    traits = ", ".join(f"{a} ({t})" for a, t in zip(unit.agents, unit.traits, strict=False))
    lines = [f"unit {visible(unit.unit_id)}",
             f"task {unit.task} · question {visible(unit.question_id)} · society {unit.society}"
             f" · strategy {unit.strategy or '-'} · repeat {unit.repeat}",
             f"gold {visible(gold)} · status {unit.status}"
             + (f" ({visible(unit.error)})" if unit.error else ""),
             f"agents: {visible(traits or ', '.join(unit.agents))}"]
    for rnd in unit.rounds:
        majority = majority_answer([None if t.error else t.answer for t in rnd.turns])
        lines += ["", f"round {rnd.index} · majority "
                      f"{'none' if majority is None else visible(majority)}"]
        for turn in rnd.turns:
            lines += _turn_lines(turn)
    return "\n".join(lines)


def show_unit(run_dir: Path, unit_id: str) -> str:
    """The transcript of unit ``unit_id`` in ``run_dir``, ready to print.

    Raises:
        UserError: not a run directory, or an unknown unit id (one line naming known ids).
    """
    return format_unit(find_unit(Path(run_dir), unit_id))
