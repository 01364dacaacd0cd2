"""The token ledger: what a run paid, per agent, per round and in total, from the records.

Records of strategies that share a prefix repeat the shared rounds' turns (each record is
complete on its own), so the ledger counts each turn once: a turn is identified by society,
repeat, question, agent, round and the strategy prefix up to that round. Cached turns cost no
tokens; they are counted apart. Prices are optional, in currency units per million tokens.

Role calls are calls too: a round's asides (summaries, verdicts) are shared by the strategies
sharing that round's prefix, like member turns, and identified by their place in the round; a
unit's final decider (a judge) is its own. Both appear per role agent (``society/role``), in
``roles`` and in the total; asides also in their round, final calls in ``final``. Turns that made
no call (stopped, idle) are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from societies.compact import CARRIED
from societies.config import PriceConfig as Price
from societies.records import Turn, UnitRecord
from societies.strategies import split_label


class LedgerLine(BaseModel):
    """Calls and tokens actually spent (cache hits apart), and their cost if priced.

    ``cost`` stays None until a turn of a priced model is counted; a priced model's cache hits
    make it 0.0 (priced, nothing paid), an unpriced model's turns leave it as it was.
    """

    model_config = ConfigDict(extra="forbid")
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None

    def add(self, prompt: int, completion: int, cached: bool, price: Price | None) -> None:
        """Count one turn.

        Examples:
            >>> line = LedgerLine()
            >>> line.add(1_000_000, 500_000, cached=False, price=Price(prompt=1, completion=2))
            >>> line.calls, line.cost
            (1, 2.0)
            >>> line.add(10, 10, cached=True, price=None)
            >>> line.cached_calls, line.prompt_tokens
            (1, 1000000)
        """
        if price is not None and self.cost is None:
            self.cost = 0.0
        if cached:
            self.cached_calls += 1
            return
        self.calls += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        if price is not None:
            self.cost = (self.cost or 0.0) + (prompt * price.prompt
                                              + completion * price.completion) / 1e6


class Ledger(BaseModel):
    """Spend per agent (``society/agent``, role agents too), per round, and for the whole run.

    ``per_round`` holds the members' turns and the role calls of each round; ``final`` the
    final deciders' calls (they belong to no round); ``roles`` every role call (asides and
    final calls), so ``total`` minus ``roles`` is what the society members spent.
    """

    model_config = ConfigDict(extra="forbid")
    per_agent: dict[str, LedgerLine] = {}
    per_round: dict[int, LedgerLine] = {}
    roles: LedgerLine = LedgerLine()
    final: LedgerLine = LedgerLine()
    total: LedgerLine = LedgerLine()


def build_ledger(records: Iterable[UnitRecord], agent_models: Mapping[str, str] | None = None,
                 prices: Mapping[str, Price] | None = None) -> Ledger:
    """Total the unique turns of ``records``.

    A turn with an error (a context overflow, or a dead branch after one) is not counted. When
    one record holds a shared turn as paid and another as a cache hit (a unit re-run after a
    failure reads the shared rounds from the cache), the turn counts as paid, whatever the order
    of the records.

    Args:
        records: the run's records.
        agent_models: ``society/agent`` → model name, to look prices up; a turn's own ``model``
            is used for agents not in it.
        prices: model name → price; models without one have no cost.
    """
    # key -> (society, round index or None for a final call, is a role call, turn)
    unique: dict[tuple[str, ...], tuple[str, int | None, bool, Turn]] = {}

    def keep(key: tuple[str, ...], society: str, index: int | None, role: bool,
             turn: Turn) -> None:
        if turn.error or turn.pattern in CARRIED:
            return
        known = unique.get(key)
        if known is None or (known[3].cached and not turn.cached):
            unique[key] = (society, index, role, turn)

    for record in records:
        symbols = split_label(record.strategy)
        unit = (record.society, str(record.repeat), record.question_id)
        for rnd in record.rounds:
            prefix = "".join(symbols[: rnd.index])
            for turn in rnd.turns:
                keep((*unit, turn.agent, str(rnd.index), prefix), record.society, rnd.index,
                     False, turn)
            for slot, turn in enumerate(rnd.asides):
                keep((*unit, "aside", str(slot), turn.agent, str(rnd.index), prefix),
                     record.society, rnd.index, True, turn)
        if record.final is not None and record.final.turn is not None:
            keep((*unit, "final", record.final.turn.agent, record.strategy), record.society,
                 None, True, record.final.turn)
    ledger = Ledger()
    for society, index, role, turn in unique.values():
        who = f"{society}/{turn.agent}"
        model = (agent_models or {}).get(who) or turn.model
        price = (prices or {}).get(model) if model else None
        lines = [ledger.per_agent.setdefault(who, LedgerLine()), ledger.total]
        lines.append(ledger.final if index is None
                     else ledger.per_round.setdefault(index, LedgerLine()))
        if role:
            lines.append(ledger.roles)
        for line in lines:
            line.add(turn.prompt_tokens, turn.completion_tokens, turn.cached, price)
    return ledger
