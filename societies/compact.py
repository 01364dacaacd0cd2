"""The compact projection of a unit record that every metric is computed from.

A record holds every reply text; the metrics need only each turn's answer, correctness, what it
saw, how it ended and its token counts. ``project`` keeps just that, so a summary over many
records holds one small projection per unit instead of the full records (``summarize`` reads its
records as a stream). Errors become answer None here, once, for every metric.

Turns that made no call (pattern ``stopped``: the unit ended early; ``idle``: the protocol did not
schedule the agent) carry the agent's last answer: they hold that answer in the round's state
(accuracy, majority) but are never a parse failure, an answer change or a conformity step, and
cost nothing. Role calls (``Round.asides``) and the final decider's call are kept as token sums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from societies.records import Turn, UnitRecord

__all__ = ["CARRIED", "MISSING", "Cell", "CompactUnit", "Grid", "agent_keys", "answers",
           "called", "is_step", "majority_answer", "majority_correct", "project"]


class Cell(NamedTuple):
    """One agent in one round of one unit, normalised (errors become answer None).

    ``pattern`` is None for a missing turn (an agent whose branch ended). ``saw`` holds the
    society positions of the agents whose previous replies the turn's prompt showed. A named
    tuple rather than a frozen dataclass: a run has one per turn, and tuples are built faster
    and held smaller.
    """

    answer: str | None
    correct: bool
    parse_failed: bool
    errored: bool
    truncated: bool = False  # cut at max_tokens (never set together with errored)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    pattern: str | None = None
    saw: tuple[int, ...] = ()
    prob: float | None = None  # the answer's probability, when log-probabilities were recorded


CARRIED = frozenset({"stopped", "idle"})  # patterns of turns that made no call


# An agent with no turn in a round: its branch ended, which is an error, not a parse failure.
MISSING = Cell(answer=None, correct=False, parse_failed=False, errored=True)

Grid = tuple[tuple[Cell, ...], ...]  # [round][agent]


@dataclass(frozen=True, slots=True)
class CompactUnit:
    """What the metrics need of one unit record (no reply texts)."""

    society: str
    strategy: str
    status: str
    schema_version: int
    agents: tuple[str, ...]
    traits: tuple[str, ...]
    retries: int
    grid: Grid
    final_method: str | None = None  # None: no final recorded (schema < 3, or a failed unit)
    final_correct: bool = False
    stopped_after: int | None = None
    role_tokens: tuple[tuple[int, int], ...] = ()  # per round: (prompt, completion) of asides
    final_tokens: tuple[int, int] = (0, 0)  # the final decider's call, when a model decided

    @property
    def rounds_used(self) -> int:
        """Rounds after round 0 that ran (an early stop after round r used r)."""
        return self.stopped_after if self.stopped_after is not None else len(self.grid) - 1

    @property
    def tokens(self) -> int:
        """Every token of the unit: members' turns, role calls and the final decider's call."""
        members = sum(c.prompt_tokens + c.completion_tokens for row in self.grid for c in row)
        return members + sum(p + c for p, c in self.role_tokens) + sum(self.final_tokens)


def _positions(saw: Sequence[str], where: Mapping[str, tuple[int, ...]],
               me: int) -> tuple[int, ...]:
    # Names are unique within a society in practice; should two agents share a name, a seen
    # name stands for every other agent of that name. O(degree), not O(society size).
    return tuple(sorted(j for name in set(saw) for j in where.get(name, ()) if j != me))


def _where(agents: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Each agent name's positions in the society."""
    where: dict[str, tuple[int, ...]] = {}
    for j, name in enumerate(agents):
        where[name] = (*where.get(name, ()), j)
    return where


def _cell(turn: Turn | None, where: Mapping[str, tuple[int, ...]], me: int) -> Cell:
    if turn is None:
        return MISSING
    errored = turn.error is not None
    answer = None if errored else turn.answer
    return Cell(
        answer=answer,
        correct=turn.correct and not errored,
        # A carried turn read no reply: its missing answer is not a parse failure of its own.
        parse_failed=answer is None and not errored and turn.pattern not in CARRIED,
        errored=errored,
        truncated=turn.finish_reason == "length" and not errored,
        prompt_tokens=turn.prompt_tokens,
        completion_tokens=turn.completion_tokens,
        pattern=turn.pattern,
        saw=_positions(turn.saw, where, me) if turn.saw else (),
        prob=None if errored else turn.answer_prob,
    )


def project(unit: UnitRecord) -> CompactUnit:
    """The compact projection of one record; see the module docstring."""
    # Turns are in society order, so position i is agent i (names may repeat across traits).
    n = len(unit.agents)
    where = _where(unit.agents)
    grid = tuple(
        tuple(_cell(rnd.turns[i] if i < len(rnd.turns) else None, where, i)
              for i in range(n))
        for rnd in unit.rounds
    )
    final = unit.final
    final_turn = final.turn if final is not None else None
    return CompactUnit(
        society=unit.society,
        strategy=unit.strategy,
        status=unit.status,
        schema_version=unit.schema_version,
        agents=tuple(unit.agents),
        traits=tuple(unit.traits),
        retries=sum(t.retries for r in unit.rounds for t in (*r.turns, *r.asides))
        + (final_turn.retries if final_turn is not None else 0),
        grid=grid,
        final_method=final.method if final is not None else None,
        final_correct=final is not None and final.correct,
        stopped_after=unit.stopped_after,
        role_tokens=tuple((sum(t.prompt_tokens for t in r.asides),
                           sum(t.completion_tokens for t in r.asides)) for r in unit.rounds),
        final_tokens=((final_turn.prompt_tokens, final_turn.completion_tokens)
                      if final_turn is not None else (0, 0)),
    )


def is_step(before: Cell, after: Cell) -> bool:
    """Whether an agent's move between two rounds counts in answer changes and conformity.

    Not when the later turn made no call (stopped, idle: the answer is only carried), nor when
    the earlier turn is an empty idle one (the agent had not spoken yet, e.g. a later
    Mixture-of-Agents layer). A missing turn (an ended branch) still counts, as answer None.

    >>> a = Cell("4", True, False, False, pattern="answer")
    >>> is_step(a, a._replace(pattern="debate")), is_step(a, a._replace(pattern="stopped"))
    (True, False)
    >>> is_step(Cell(None, False, False, False, pattern="idle"), a._replace(pattern="debate"))
    False
    """
    if after.pattern in CARRIED:
        return False
    return not (before.pattern == "idle" and before.answer is None)


def called(cell: Cell) -> bool:
    """Whether the cell's turn made a call (a missing turn did not; nor a carried one).

    >>> called(Cell("4", True, False, False, pattern="debate")), called(MISSING)
    (True, False)
    >>> called(Cell("4", True, False, False, pattern="stopped"))
    False
    """
    return cell.pattern is not None and cell.pattern not in CARRIED


def answers(row: Sequence[Cell]) -> list[str | None]:
    """The answers of one round's cells, in society order."""
    return [c.answer for c in row]


def majority_correct(row: Sequence[Cell]) -> bool:
    """Whether the round's majority exists and is correct.

    Scored as: some agent whose answer equals the majority answer has correct=True, so scoring
    stays in the task (gold may be a list, answers are canonicalised by the task's answer kind).
    A lone agent (a single-agent baseline) is its own majority, as in its final answer.

    >>> lone = Cell("4", True, False, False)
    >>> majority_correct([lone]), majority_correct([lone, lone._replace(answer="5")])
    (True, False)
    """
    if len(row) == 1:
        return row[0].answer is not None and row[0].correct
    maj = majority_answer(answers(row))
    return maj is not None and any(c.answer == maj and c.correct for c in row)


def agent_keys(agents: Sequence[str]) -> list[str]:
    """Each agent's key in the metrics: its name, or ``name#position`` when names repeat."""
    if len(set(agents)) == len(agents):
        return list(agents)
    return [f"{name}#{i}" for i, name in enumerate(agents)]


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The majority answer of one round (MachineSoM's rule).

    The answer held by a strict plurality of agents and by at least two of them. A tie for the
    top count, or no answer repeated, gives None. None answers never form the majority (they are
    not counted, so they cannot tie with or beat a real answer).
    """
    # Counted by hand: this runs for every agent of every round, and Counter costs more.
    counts: dict[str, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    if not counts:
        return None
    top = max(counts.values())
    if top < 2:
        return None
    leaders = [a for a, c in counts.items() if c == top]
    return leaders[0] if len(leaders) == 1 else None
