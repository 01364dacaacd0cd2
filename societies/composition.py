"""Large mixed societies: ``size`` agents drawn from trait and model shares, placed by a seed.

A mixed society is written as counts or proportions::

    societies:
      - name: mixed100
        size: 100
        traits: {overconfident: 0.3, easy-going: 0.7}
        models: {smollm2: 0.5, gemma3: 0.5}
        seed: 3

The rules, all deterministic:

* **Counts or proportions.** A mapping's values are either all counts (whole numbers >= 0 that
  sum to ``size``) or all proportions (numbers in [0, 1] that sum to 1 within 1e-6).
* **Proportions to counts** by largest remainder: each entry gets ``floor(p * size)``, and the
  agents left over go one each to the entries with the largest fractional parts, ties going to
  the entry listed first. So 30 % of 10 is exactly 3, and the counts always sum to ``size``.
* **Positions.** The trait slots (in listing order, each repeated by its count) are shuffled by
  ``random.Random(f"{seed}:traits")``; the result is the society order, which is also the node
  order on generated graphs, so each trait spreads over the graph instead of filling one end.
* **Models.** A mapping's slots are shuffled the same way by ``random.Random(f"{seed}:models")``
  and agent *i* (society order) gets slot *i*; a list gives agent *i* ``models[i]`` unshuffled.
  Either way, who gets which model depends on ``models``, ``size`` and ``seed`` only, never on
  how ``traits`` are written. With no ``models`` each member's model is None (the society's
  ``model``, else ``defaults.model``).
* **Names** are ``<trait>-<k>``, *k* counting from 1 within the trait in society order; a trait
  given as a path to a card file is named by the file's stem.

Same seed, same society; another seed, another arrangement of the same counts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from societies.config import ModelRef
from societies.errors import ConfigError

MIN_SIZE, MAX_SIZE = 2, 1000
TOLERANCE = 1e-6  # how far proportions may sum from 1 (YAML decimals are not exact)


@dataclass(frozen=True)
class Member:
    """One agent of a mixed society: its readable name, trait card and model (None: default)."""

    name: str
    trait: str
    model: ModelRef | None


def compose(size: int | None, traits: Mapping[str, float] | None,
            models: Sequence[ModelRef] | Mapping[str, float] | None, seed: int,
            where: str) -> list[Member]:
    """The members of a mixed society, in society order (see the module docstring for the rules).

    ``where`` is the society's field path (``societies[2]``); errors name ``where.size``,
    ``where.traits`` or ``where.models``.

    Examples:
        >>> team = compose(10, {"overconfident": 0.3, "easy-going": 0.7}, None, 1, "societies[0]")
        >>> sum(m.trait == "overconfident" for m in team)
        3
        >>> sorted(m.name for m in team if m.trait == "overconfident")
        ['overconfident-1', 'overconfident-2', 'overconfident-3']
        >>> team == compose(10, {"overconfident": 0.3, "easy-going": 0.7}, None, 1, "s")
        True
        >>> compose(4, {"a": 3}, None, 0, "societies[2]")
        Traceback (most recent call last):
        ...
        societies.errors.ConfigError: societies[2].traits: counts sum to 3, not size 4 ...
    """
    size = _check_size(size, f"{where}.size")
    if not traits:
        raise ConfigError(f"{where}.traits: a mixed society needs traits, e.g. "
                          "{overconfident: 0.5, easy-going: 0.5}")
    labels = _labels(list(traits), f"{where}.traits")
    slots = _slots(apportion(traits, size, f"{where}.traits"))
    random.Random(f"{seed}:traits").shuffle(slots)
    assigned = _models(models, size, seed, f"{where}.models")
    seen: dict[str, int] = {}
    members = []
    for trait, model in zip(slots, assigned, strict=True):
        seen[trait] = seen.get(trait, 0) + 1
        members.append(Member(f"{labels[trait]}-{seen[trait]}", trait, model))
    return members


def apportion(shares: Mapping[str, float], size: int, where: str) -> dict[str, int]:
    """Counts summing to ``size`` from counts or proportions (largest remainder, ties by order).

    Examples:
        >>> apportion({"a": 0.3, "b": 0.7}, 10, "traits")
        {'a': 3, 'b': 7}
        >>> apportion({"a": 1/3, "b": 1/3, "c": 1/3}, 10, "traits")  # the spare one goes to a
        {'a': 4, 'b': 3, 'c': 3}
        >>> apportion({"a": 4, "b": 6}, 10, "traits")
        {'a': 4, 'b': 6}
    """
    values = list(shares.values())
    for key, value in shares.items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}: {key} is {value}; give counts >= 0 or proportions "
                              "in [0, 1]")
    total = math.fsum(values)
    shown = f"{total:.10g}"
    if all(float(v).is_integer() for v in values) and total == size:
        return {key: int(value) for key, value in shares.items()}
    if any(v > 1 for v in values) and not all(float(v).is_integer() for v in values):
        raise ConfigError(f"{where}: mixes counts and proportions (sum {shown}); give whole "
                          f"counts summing to size {size} or proportions summing to 1")
    if abs(total - 1) > TOLERANCE:
        if all(float(v).is_integer() for v in values):
            raise ConfigError(f"{where}: counts sum to {shown}, not size {size} (or give "
                              "proportions summing to 1)")
        raise ConfigError(f"{where}: proportions sum to {shown}, not 1 (or give whole counts "
                          f"summing to size {size})")
    # Exact arithmetic on the decimals as written (repr gives back "0.29" for 0.29), so float
    # noise (0.69 * 5 = 3.4499999999999997) cannot break a tie or move an agent.
    exact = {key: Fraction(repr(float(value))) for key, value in shares.items()}
    whole = sum(exact.values())
    quotas = {key: value / whole * size for key, value in exact.items()}
    counts = {key: math.floor(q) for key, q in quotas.items()}
    order = list(shares)
    spare = size - sum(counts.values())
    by_remainder = sorted(order, key=lambda k: (counts[k] - quotas[k], order.index(k)))
    for key in by_remainder[:spare]:
        counts[key] += 1
    return counts


def _check_size(size: int | None, where: str) -> int:
    if size is None:
        raise ConfigError(f"{where}: a mixed society needs size ({MIN_SIZE}..{MAX_SIZE})")
    if size == 1:
        raise ConfigError(f"{where}: 1 agent is not a mixed society; for a single agent list "
                          "it under agents: instead")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"{where}: size must be {MIN_SIZE}..{MAX_SIZE}, got {size}")
    return size


def _labels(refs: list[str], where: str) -> dict[str, str]:
    """Trait ref → the readable part of its members' names (a card path's file stem)."""
    labels: dict[str, str] = {}
    for ref in refs:
        # Same test as cards.load_card for "is this a path or a shipped name".
        label = Path(ref).stem if ref.endswith((".yaml", ".yml")) or "/" in ref else ref
        clash = [other for other, seen in labels.items() if seen == label]
        if clash:
            raise ConfigError(f"{where}: {clash[0]!r} and {ref!r} would both name agents "
                              f"{label!r}-k; rename one card file")
        labels[ref] = label
    return labels


def _slots(counts: Mapping[str, int]) -> list[str]:
    return [key for key, count in counts.items() for _ in range(count)]


def _models(models: Sequence[ModelRef] | Mapping[str, float] | None, size: int, seed: int,
            where: str) -> list[ModelRef | None]:
    if models is None:
        return [None] * size
    if isinstance(models, Mapping):
        if not models:
            raise ConfigError(f"{where}: an empty mapping; give model → count or proportion, "
                              "or leave models out")
        slots: list[ModelRef | None] = list(_slots(apportion(models, size, where)))
        random.Random(f"{seed}:models").shuffle(slots)
        return slots
    if len(models) != size:
        raise ConfigError(f"{where}: a list gives one model per agent: {len(models)} models "
                          f"for size {size}")
    return list(models)
