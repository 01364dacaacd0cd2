"""Collaboration strategies: one thinking pattern per round after round 0.

Notation (MachineSoM's, extended): ``0`` = debate, ``1`` = reflection, one symbol per round, so
``"001"`` is debate, debate, reflection. A round in brackets gives one symbol per agent, in
society order, for MachineSoM's "All→Part" mixing: ``"0[100]1"`` lets the first agent reflect in
round 2 while the others debate. Long names work too: ``"debate,debate,reflection"``, or a YAML
list whose items are a pattern name or a per-agent list of them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from societies.errors import ConfigError

SYMBOLS = {"0": "debate", "1": "reflection"}
NAMES = {"debate": "0", "reflection": "1", "0": "0", "1": "1"}
RoundSpec = str | tuple[str, ...]  # "0"/"1" for every agent, or one symbol per agent


@dataclass(frozen=True)
class Strategy:
    """A validated strategy. ``rounds[i]`` is round ``i + 1``'s spec.

    Example:
        >>> s = parse_strategy("0[10]1", rounds=3, where="strategies[0]")
        >>> s.label, s.pattern(1, 0), s.pattern(1, 1)
        ('0[10]1', 'reflection', 'debate')
    """

    rounds: tuple[RoundSpec, ...]

    @property
    def label(self) -> str:
        """The canonical string form, used in records and reports."""
        body = "".join(r if isinstance(r, str) else "[" + "".join(r) + "]" for r in self.rounds)
        return body or "-"  # zero rounds: answers only

    def prefix(self, n: int) -> str:
        """Label of the first ``n`` rounds: strategies sharing it share those rounds' replies."""
        return Strategy(self.rounds[:n]).label

    def pattern(self, round_index: int, agent_index: int) -> str:
        """Pattern name for the agent at ``agent_index`` in round ``round_index + 1``."""
        spec = self.rounds[round_index]
        symbol = spec if isinstance(spec, str) else spec[agent_index]
        return SYMBOLS[symbol]

    def check_agents(self, n_agents: int, where: str) -> None:
        """Refuse per-agent rounds whose length is not the society's size."""
        for i, spec in enumerate(self.rounds):
            if not isinstance(spec, str) and len(spec) != n_agents:
                raise ConfigError(
                    f"{where}: round {i + 1} names {len(spec)} agents' patterns but the "
                    f"society has {n_agents} agents"
                )


_TOKEN = re.compile(r"\[[01]+\]|[01]")


def _symbol(item: str, where: str) -> str:
    if item not in NAMES:
        raise ConfigError(f"{where}: unknown pattern {item!r}; allowed: debate (0), reflection (1)")
    return NAMES[item]


def parse_strategy(raw: str | Sequence[str | Sequence[str]], rounds: int, where: str) -> Strategy:
    """Parse one strategy from config and check it has one entry per round.

    Raises:
        ConfigError: unknown pattern or a length that does not match ``rounds``.
    """
    specs: list[RoundSpec] = []
    if isinstance(raw, str) and ("," in raw or raw in ("debate", "reflection")):
        specs = [_symbol(part.strip(), where) for part in raw.split(",")]
    elif isinstance(raw, str):
        if _TOKEN.sub("", raw):
            raise ConfigError(f"{where}: cannot read strategy {raw!r}; write e.g. '001', "
                              "'0[100]1' or 'debate,debate,reflection'")
        for token in _TOKEN.findall(raw):
            specs.append(token if len(token) == 1 else tuple(token[1:-1]))
    else:
        for item in raw:
            if isinstance(item, str):
                specs.append(_symbol(item, where))
            else:
                specs.append(tuple(_symbol(x, where) for x in item))
    if len(specs) != rounds:
        raise ConfigError(f"{where}: strategy {raw!r} has {len(specs)} rounds but "
                          f"rounds is {rounds}")
    return Strategy(tuple(specs))


def all_strategies(rounds: int) -> list[Strategy]:
    """Every uniform strategy of ``rounds`` rounds (MachineSoM's 2^R), in binary order.

    Example:
        >>> [s.label for s in all_strategies(2)]
        ['00', '01', '10', '11']
    """
    return [Strategy(tuple(p)) for p in itertools.product("01", repeat=rounds)]


def split_label(label: str) -> list[str]:
    """The per-round symbols of a canonical label: ``"0[10]1"`` → ``["0", "[10]", "1"]``."""
    return [] if label == "-" else _TOKEN.findall(label)
