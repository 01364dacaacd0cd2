"""The token ledger: what a run paid, per agent, per round and in total, from the records.

Records of strategies that share a prefix repeat the shared rounds' turns (each record is
complete on its own), so the ledger counts each turn once: a turn is identified by society,
repeat, question, agent, round and the strategy prefix up to that round. Cached turns cost no
tokens; they are counted apart. Prices are optional, in currency units per million tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

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
    """Spend per agent (``society/agent``), per round, and for the whole run."""

    model_config = ConfigDict(extra="forbid")
    per_agent: dict[str, LedgerLine] = {}
    per_round: dict[int, LedgerLine] = {}
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
    unique: dict[tuple[str, ...], tuple[str, int, Turn]] = {}
    for record in records:
        symbols = split_label(record.strategy)
        for rnd in record.rounds:
            prefix = "".join(symbols[: rnd.index])
            for turn in rnd.turns:
                if turn.error:
                    continue
                key = (record.society, str(record.repeat), record.question_id, turn.agent,
                       str(rnd.index), prefix)
                known = unique.get(key)
                if known is None or (known[2].cached and not turn.cached):
                    unique[key] = (record.society, rnd.index, turn)
    ledger = Ledger()
    for society, index, turn in unique.values():
        who = f"{society}/{turn.agent}"
        model = (agent_models or {}).get(who) or turn.model
        price = (prices or {}).get(model) if model else None
        for line in (ledger.per_agent.setdefault(who, LedgerLine()),
                     ledger.per_round.setdefault(index, LedgerLine()), ledger.total):
            line.add(turn.prompt_tokens, turn.completion_tokens, turn.cached, price)
    return ledger
