"""Hand-built run directories for the report, figure and show tests (values known by design)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from societies.records import Round, Turn, UnitRecord
from societies.storage import RunStore

AGENTS = ["a0", "a1", "a2"]
XSS = "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\"> the answer is B"
EDGES = [["a0", "a1"], ["a1", "a0"], ["a1", "a2"], ["a2", "a1"]]


def unit(answers: Sequence[Sequence[str | None]], *, qid: str, strategy: str = "00",
         society: str = "S3", gold: str = "A", replies: dict[tuple[int, int], str] | None = None
         ) -> UnitRecord:
    """A unit whose agent i answers ``answers[k][i]`` in round k (correct iff it equals gold)."""
    rounds = []
    for k, row in enumerate(answers):
        turns = []
        for i, ans in enumerate(row):
            reply = (replies or {}).get((k, i), f"I think the answer is {ans}.")
            turns.append(Turn(
                agent=AGENTS[i], pattern="answer" if k == 0 else "debate", reply=reply,
                answer=ans, raw_answer=None if ans is None else f"({ans})",
                correct=ans == gold, saw=[] if k == 0 else [a for a in AGENTS if a != AGENTS[i]],
                prompt_tokens=100 * (k + 1), completion_tokens=10))
        rounds.append(Round(index=k, turns=turns))
    return UnitRecord(unit_id=f"{society}/{strategy}/0/{qid}", task="test", question_id=qid,
                      society=society, strategy=strategy, repeat=0, gold=gold,
                      agents=list(AGENTS), traits=["easy-going", "overconfident", "easy-going"],
                      rounds=rounds)


def standard_units() -> list[UnitRecord]:
    """Strategy 00: q0 stays right, q1 flips its majority wrong→right (with an XSS reply),
    q2 stays wrong. Strategy 11: q0 right throughout, q1 flips right→wrong."""
    return [
        unit([["A", "A", "B"], ["A", "A", "A"], ["A", "A", "A"]], qid="q0"),
        unit([["B", "B", "A"], ["A", "B", "A"], ["A", "A", "A"]], qid="q1",
             replies={(1, 1): XSS}),
        unit([["B", "B", "C"], ["B", "B", "B"], ["B", "B", "B"]], qid="q2"),
        unit([["A", "A", "A"], ["A", "A", "A"], ["A", "A", "A"]], qid="q0", strategy="11"),
        unit([["A", "A", "B"], ["B", "B", "A"], ["B", "B", "B"]], qid="q1", strategy="11"),
    ]


def make_run_dir(path: Path, units: Sequence[UnitRecord] | None = None) -> Path:
    """A run directory with ``config.json`` (graph edges included) and the units' records."""
    store = RunStore(path)
    effective = {"societies": [{"name": "S3", "edges": EDGES,
                                "agents": [{"name": a} for a in AGENTS]}]}
    store.prepare({"name": "hand-built"}, identity="test", effective=effective)
    store.append(standard_units() if units is None else units)
    return path
