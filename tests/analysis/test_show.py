"""`societies show RUN UNIT_ID`: one unit's transcript as terminal text."""

from __future__ import annotations

from pathlib import Path

import pytest

from societies.analysis.show import show_unit
from societies.errors import UserError
from tests.report_fixtures import make_run_dir, standard_units, unit


def test_transcript_lists_rounds_agents_saw_and_answers(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    text = show_unit(run, "S3/00/0/q1")
    lines = text.splitlines()
    assert lines[0] == "unit S3/00/0/q1"
    assert "gold A · status ok" in text
    assert "agents: a0 (easy-going), a1 (overconfident), a2 (easy-going)" in text
    assert [ln for ln in lines if ln.startswith("round ")] == [
        "round 0 · majority B", "round 1 · majority A", "round 2 · majority A"]
    r1 = lines.index("round 1 · majority A")
    assert lines[r1 + 1] == "  a0 · debate · saw a1, a2"
    assert lines[r1 + 2] == "    answer: (A) -> A (correct)"
    assert "    answer: (B) -> B (wrong)" in lines
    assert "      | <script>window.pwned=1</script>" in text  # shown as text, whole


def test_control_characters_are_escaped(tmp_path: Path) -> None:
    nasty = "\x1b[2J wiped\u202e evil\nsecond line\r"
    units = [unit([["A", "B", "A"]], qid="q9", replies={(0, 1): nasty})]
    run = make_run_dir(tmp_path / "run", units)
    text = show_unit(run, "S3/00/0/q9")
    assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    assert "      | \\x1b[2J wiped\\u202e evil" in text
    assert "      | second line\\r" in text  # a line break starts a new quoted line


def test_unknown_unit_names_known_ids(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", standard_units() * 2)
    with pytest.raises(UserError) as err:
        show_unit(run, "S3/00/0/nope")
    message = str(err.value)
    assert "\n" not in message
    assert "no unit 'S3/00/0/nope'; known ids: S3/00/0/q0, S3/00/0/q1" in message
    assert "(and 0 more)" not in message
    with pytest.raises(UserError, match="not a run directory"):
        show_unit(tmp_path / "missing", "x")


def test_unknown_unit_in_a_bigger_run_says_how_many_more(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", [unit([["A", "A", "A"]], qid=f"q{i}") for i in range(8)])
    with pytest.raises(UserError, match=r"known ids: S3/00/0/q0, .*, S3/00/0/q4 \(and 3 more\)$"):
        show_unit(run, "S3/00/0/q99")
