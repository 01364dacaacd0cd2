"""Social-influence measures: exposed conformity, influence, stubbornness, opinion dynamics.

Definitions are in ``societies.summary.SocialMetrics``; everything is a pure function of the
records of one (society, strategy) group. Each public function accepts unit records or their
compact projections (``societies.compact.project``); failed units are left out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import fmean

from societies.compact import Cell, CompactUnit, agent_keys, answers, majority_answer, project
from societies.records import UnitRecord
from societies.summary import (
    SPLIT_KEYS,
    Conformity,
    Reaching,
    Share,
    SocialMetrics,
    SocialRound,
)

__all__ = ["DEFAULT_QUORUM", "answer_entropy", "first_consensus_round", "influence_matrix",
           "polarization", "social_metrics", "trait_influence_matrix"]

DEFAULT_QUORUM = 2 / 3
_TF = {True: "t", False: "f"}
Units = Iterable[UnitRecord | CompactUnit]


def _compact(units: Units) -> list[CompactUnit]:
    out = [u if isinstance(u, CompactUnit) else project(u) for u in units]
    return [u for u in out if u.status == "ok"]


def answer_entropy(answers: Sequence[str | None]) -> float:
    """Shannon entropy in bits of the answers' distribution (None is one more value); 0 if empty.

    Examples:
        >>> answer_entropy(["A", "A", "B", "B"])
        1.0
    """
    n = len(answers)
    return -sum(c / n * math.log2(c / n) for c in Counter(answers).values()) if n else 0.0


def polarization(answers: Sequence[str | None]) -> float:
    """Share of agents in the two largest answer clusters (None is a cluster); 0 if empty."""
    top = Counter(answers).most_common(2)
    return sum(c for _, c in top) / len(answers) if answers else 0.0


def first_consensus_round(rounds: Sequence[Sequence[str | None]], q: float = 1.0
                          ) -> int | None:
    """The first round in which at least ``q`` of the agents give one answer (not None).

    ``q=1`` asks for unanimity. None when no round reaches it.
    """
    for k, row in enumerate(rounds):
        counts = Counter(a for a in row if a is not None)
        # A small tolerance: 2 of 3 agents must reach q = 2/3 despite float rounding.
        if counts and row and counts.most_common(1)[0][1] >= q * len(row) - 1e-9:
            return k
    return None


@dataclass
class _Conf:
    """Counters behind one Conformity."""

    turns: int = 0
    steps: int = 0
    conforming: int = 0
    strict_steps: int = 0
    strict_conforming: int = 0
    split: Counter[str] = field(default_factory=Counter)
    strict_split: Counter[str] = field(default_factory=Counter)

    def add(self, before: Cell, after: Cell, majority: str | None) -> None:
        self.turns += 1
        if majority is None:
            return
        self.steps += 1
        follows = after.answer == majority
        key = _TF[before.correct] + _TF[after.correct]
        self.conforming += follows
        if follows:
            self.split[key] += 1
        if before.answer != majority:
            self.strict_steps += 1
            self.strict_conforming += follows
            if follows:
                self.strict_split[key] += 1

    def merge(self, other: _Conf) -> None:
        for name in ("turns", "steps", "conforming", "strict_steps", "strict_conforming"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.split.update(other.split)
        self.strict_split.update(other.strict_split)

    def model(self) -> Conformity:
        def frac(counts: Counter[str], base: int) -> dict[str, float]:
            return {s: counts[s] / base for s in SPLIT_KEYS} if base else {}

        return Conformity(
            turns=self.turns, steps=self.steps, conforming=self.conforming,
            rate=self.conforming / self.steps if self.steps else None,
            split=frac(self.split, self.steps), strict_steps=self.strict_steps,
            strict_conforming=self.strict_conforming,
            strict_rate=self.strict_conforming / self.strict_steps if self.strict_steps else None,
            strict_split=frac(self.strict_split, self.strict_steps))


def _share(count: int, steps: int) -> Share:
    return Share(steps=steps, count=count, rate=count / steps if steps else None)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _reaching(firsts: Sequence[int | None]) -> Reaching:
    hit = [k for k in firsts if k is not None]
    return Reaching(units=len(firsts), reached=len(hit), mean_round=fmean(hit) if hit else None,
                    by_round={str(k): c for k, c in sorted(Counter(hit).items())})


def _traits(unit: CompactUnit) -> list[str]:
    n = len(unit.agents)
    return list(unit.traits) if len(unit.traits) == n else ["?"] * n


def _pairs(units: list[CompactUnit]) -> tuple[Counter[tuple[int, int]], Counter[tuple[int, int]]]:
    """(adoptions, exposures) per (source position, adopter position); see SocialMetrics."""
    adopted: Counter[tuple[int, int]] = Counter()
    exposed: Counter[tuple[int, int]] = Counter()
    for unit in units:
        for prev, cur in zip(unit.grid, unit.grid[1:], strict=False):
            for i, cell in enumerate(cur):
                if cell.pattern != "debate" or cell.errored:
                    continue
                for s in cell.saw:
                    held = prev[s].answer
                    if held is None or held == prev[i].answer:
                        continue
                    exposed[(s, i)] += 1
                    adopted[(s, i)] += cell.answer == held
    return adopted, exposed


def _by_key(counts: Counter[tuple[int, int]], keys: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {a: {b: 0 for b in keys} for a in dict.fromkeys(keys)}
    for (s, i), c in counts.items():
        out[keys[s]][keys[i]] += c
    return out


def _sparse(counts: Counter[tuple[int, int]], keys: Sequence[str],
            support: Iterable[tuple[int, int]]) -> dict[str, dict[str, int]]:
    """Counts source → adopter for the pairs in ``support`` only (those with an exposure), so a
    1,000-agent society on a sparse graph stores its edges, not 10^6 zeros."""
    out: dict[str, dict[str, int]] = {}
    for s, i in sorted(support):
        out.setdefault(keys[s], {})[keys[i]] = counts.get((s, i), 0)
    return out


def influence_matrix(units: Units) -> dict[str, dict[str, int]]:
    """Adoptions source → adopter (agent keys) over one group's units, for every pair with an
    exposure (see SocialMetrics)."""
    group = _compact(units)
    if not group:
        return {}
    adopted, seen = _pairs(group)
    return _sparse(adopted, agent_keys(group[0].agents), seen)


def trait_influence_matrix(units: Units) -> dict[str, dict[str, int]]:
    """Adoptions source trait → adopter trait over one group's units; see SocialMetrics."""
    group = _compact(units)
    if not group:
        return {}
    return _by_key(_pairs(group)[0], _traits(group[0]))


def _round(k: int, grids: list[tuple[tuple[Cell, ...], ...]]) -> tuple[SocialRound, _Conf, _Conf,
                                                                       Counter[str]]:
    """One round's measures, plus its conformity counters and flip counts for pooling."""
    exposed, control, flips = _Conf(), _Conf(), Counter[str]()
    rows = [g[k] for g in grids]
    if k >= 1:
        for g in grids:
            prev, cur = g[k - 1], g[k]
            for i, cell in enumerate(cur):
                if cell.errored or cell.pattern not in ("debate", "reflection"):
                    continue
                flips[f"{cell.pattern}_turns"] += 1
                flips[cell.pattern] += cell.answer != prev[i].answer
                if cell.pattern == "debate" and cell.saw:
                    exposed.add(prev[i], cell, majority_answer([prev[s].answer for s in cell.saw]))
                elif cell.pattern == "reflection":
                    others = [c.answer for j, c in enumerate(prev) if j != i]
                    control.add(prev[i], cell, majority_answer(others))
    social = SocialRound(
        index=k,
        exposed=exposed.model() if k else None,
        control=control.model() if k else None,
        entropy_bits=fmean(answer_entropy(answers(r)) for r in rows),
        polarization=fmean(polarization(answers(r)) for r in rows),
        flip_debate=_rate(flips["debate"], flips["debate_turns"]) if k else None,
        flip_reflection=_rate(flips["reflection"], flips["reflection_turns"]) if k else None)
    return social, exposed, control, flips


def _stubbornness(units: list[CompactUnit], traits: Sequence[str]) -> dict[str, Share]:
    steps: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    for unit in units:
        for prev, cur in zip(unit.grid, unit.grid[1:], strict=False):
            for i, cell in enumerate(cur):
                if cell.pattern != "debate" or cell.errored or not cell.saw:
                    continue
                held = prev[i].answer
                seen = majority_answer([prev[s].answer for s in cell.saw])
                if held is None or seen is None or seen == held:
                    continue
                steps[traits[i]] += 1
                kept[traits[i]] += cell.answer == held
    return {t: _share(kept[t], steps[t]) for t in dict.fromkeys(traits)}


def social_metrics(units: Units, quorum: float = DEFAULT_QUORUM) -> SocialMetrics:
    """The social measures of one group's units (all of one society and strategy).

    Raises:
        ValueError: if no unit is scored (status "ok").
    """
    group = _compact(units)
    if not group:
        raise ValueError("social measures need at least one scored unit")
    keys, traits = agent_keys(group[0].agents), _traits(group[0])
    grids = [u.grid for u in group]
    exposed, control, flips = _Conf(), _Conf(), Counter[str]()
    rounds = []
    for k in range(max(len(g) for g in grids)):
        social, e, c, f = _round(k, [g for g in grids if len(g) > k])
        rounds.append(social)
        exposed.merge(e)
        control.merge(c)
        flips.update(f)
    adopted, seen = _pairs(group)
    t_adopted, t_seen = _by_key(adopted, traits), _by_key(seen, traits)
    trait_names = list(dict.fromkeys(traits))
    return SocialMetrics(
        rounds=rounds, exposed=exposed.model(), control=control.model(),
        agents=keys, traits=traits,
        influence=_sparse(adopted, keys, seen), influence_exposures=_sparse(seen, keys, seen),
        trait_influence=t_adopted, trait_influence_exposures=t_seen,
        trait_influence_rate={a: {b: _rate(t_adopted[a][b], t_seen[a][b]) for b in trait_names}
                              for a in trait_names},
        stubbornness=_stubbornness(group, traits),
        persuasion={t: _share(sum(t_adopted[t].values()), sum(t_seen[t].values()))
                    for t in trait_names},
        unanimity=_reaching([first_consensus_round([answers(r) for r in g]) for g in grids]),
        quorum=_reaching([first_consensus_round([answers(r) for r in g], quorum)
                          for g in grids]),
        quorum_q=quorum,
        flip_debate=_rate(flips["debate"], flips["debate_turns"]),
        flip_reflection=_rate(flips["reflection"], flips["reflection_turns"]))
