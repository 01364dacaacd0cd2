"""Mixture-of-Agents (Wang et al. 2024): layers of proposers, then one aggregator.

Round r is layer r. The agents of layer 0 answer the question; each agent of layer r reads every
reply of layer r-1 (unnamed: "Answer 1", "Answer 2", ...) with the question and writes its own
improved answer; after the last layer an aggregator role reads that layer's replies and writes
the final answer (``Final.method == "aggregator"``). Mapped onto the engine:

* **Layers.** ``layers: [[names...], ...]`` lists each layer's agents (an agent may sit in
  several layers, as the paper reuses its proposers); ``layer_size: k`` cuts the society in
  order into layers of k (the last may be smaller); with neither, every agent is in every layer
  (the paper's setup). There must be ``rounds + 1`` layers, and every agent in one at least.
* **Agents outside the round's layer make no call.** The protocol does not schedule them; the
  engine carries their last answer (pattern ``idle``, zero tokens; before an agent's first
  layer its carried answer is empty). Per-round accuracy and majority therefore count carried
  answers: the aggregator's final answer is the protocol's result.
* **Calls are stateless**, as in the paper: each proposer call is its system message and the
  current prompt only, not the agent's earlier turns.
* **The graph is ignored**: a layer reads the whole previous layer whatever ``graph`` says.
* **Strategies.** Every round is a layer, so the strategy's symbols are not used; write
  strategies of ``0`` (``["00"]``). :meth:`MoA.check_strategies` refuses the others when the
  plan calls it.

Options: ``layers`` or ``layer_size``, and ``aggregator`` (an agent mapping; default a neutral
card on the society's first agent's model).

Example config::

    protocol: {name: moa, layers: [[a, b], [c, d]], aggregator: {trait: neutral}}
    rounds: 1
    strategies: ["0"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from societies.backends.base import Message
from societies.cards import render
from societies.errors import ConfigError
from societies.plan import SocietyPlan
from societies.protocols.base import Ask, Decision, Protocol, RoundPrompt, View, options
from societies.protocols.mad import RoleAgents, RoleSpec
from societies.strategies import Strategy

if TYPE_CHECKING:
    from societies.protocols import BuildContext

Layers = tuple[tuple[int, ...], ...]


def only_debate(protocol: str, strategies: Sequence[Strategy], where: str = "strategies") -> None:
    """Refuse strategies with a reflection round for a protocol that does not reflect.

    >>> from societies.strategies import parse_strategy
    >>> only_debate("moa", [parse_strategy("00", 2, "s")])  # accepted
    >>> try:
    ...     only_debate("moa", [parse_strategy("0[01]", 2, "s")])
    ... except ConfigError as err:
    ...     print(err)
    strategies[0]: moa does not reflect; '0[01]' has a reflection round (write strategies: ["00"])
    """
    for i, strategy in enumerate(strategies):
        if any("1" in spec for spec in strategy.rounds):
            plain = "0" * len(strategy.rounds)
            raise ConfigError(f"{where}[{i}]: {protocol} does not reflect; {strategy.label!r} "
                              f"has a reflection round (write strategies: [\"{plain}\"])")


def split(n: int, size: int) -> Layers:
    """Positions 0..n-1 in order, in layers of ``size`` (the last may be smaller).

    >>> split(5, 2)
    ((0, 1), (2, 3), (4,))
    """
    return tuple(tuple(range(i, min(i + size, n))) for i in range(0, n, size))


class MoA(Protocol):
    """Layers of proposers, each reading the previous layer; an aggregator at the end."""

    name = "moa"
    templates = ("question", "moa_proposer", "moa_aggregate")

    def __init__(self, aggregator: RoleSpec, rounds: int, layers: list[list[str]] | None = None,
                 layer_size: int | None = None, where: str = "protocol") -> None:
        self.agents = RoleAgents([aggregator])
        self.roles = self.agents.all()
        self.rounds, self.layers, self.layer_size, self.where = rounds, layers, layer_size, where
        self._layers: dict[str, Layers] = {}

    def layers_of(self, society: SocietyPlan, rounds: int, where: str) -> Layers:
        """The society's layers as positions, checked (ConfigError naming the field)."""
        names = [a.name for a in society.agents]
        n = len(names)
        if self.layers is None:
            size = self.layer_size or n
            out = split(n, size) if self.layer_size else (tuple(range(n)),) * (rounds + 1)
            if len(out) != rounds + 1:
                raise ConfigError(f"{self.where}.layer_size: {n} agents of {where} in layers of "
                                  f"{size} make {len(out)} layers, which need rounds: "
                                  f"{len(out) - 1}; got rounds: {rounds}")
            return out
        position = {name: i for i, name in enumerate(names)}
        layers = []
        for j, layer in enumerate(self.layers):
            for k, name in enumerate(layer):
                if name not in position:
                    shown = ", ".join(names[:6]) + (", ..." if n > 6 else "")
                    raise ConfigError(f"{self.where}.layers[{j}][{k}]: {name!r} is not an agent "
                                      f"of {where} ({shown})")
                if layer.index(name) != k:
                    raise ConfigError(f"{self.where}.layers[{j}][{k}]: {name!r} is listed twice")
            layers.append(tuple(sorted(position[name] for name in layer)))
        used = {i for layer in layers for i in layer}
        for i, name in enumerate(names):
            if i not in used:
                raise ConfigError(f"{where}: agent {name!r} is in no layer of {self.where}.layers")
        if len(layers) != rounds + 1:
            raise ConfigError(f"{self.where}.layers: {len(layers)} layers need rounds: "
                              f"{len(layers) - 1}; got rounds: {rounds}")
        return tuple(layers)

    def _of(self, society: SocietyPlan) -> Layers:
        if society.name not in self._layers:
            self._layers[society.name] = self.layers_of(society, self.rounds, society.name)
        return self._layers[society.name]

    def check(self, society: SocietyPlan, rounds: int, where: str) -> None:
        self._layers[society.name] = self.layers_of(society, rounds, where)
        self.agents.resolve(society)
        self.roles = self.agents.all()

    def check_strategies(self, strategies: Sequence[Strategy], where: str = "strategies"
                         ) -> None:
        """Refuse strategies with reflection rounds (a layer has nothing to reflect on)."""
        only_debate(self.name, strategies, where)

    def context(self, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        # Stateless proposers: the system message (if any) and the current prompt only.
        head = messages[:1] if messages and messages[0].role == "system" else ()
        return (*head, messages[-1]) if len(messages) > len(head) else messages

    def schedule(self, society: SocietyPlan, round: int) -> list[tuple[int, ...]]:
        layers = self._of(society)
        return [layers[round]] if round < len(layers) else []

    def _replies(self, view: View, round: int) -> tuple[list[dict[str, str]], tuple[str, ...]]:
        """The replies layer ``round`` gave in that round, labelled anonymously, and whose."""
        layers = self._of(view.society)
        names = [view.society.agents[i].name for i in layers[round]] if round < len(layers) \
            else []
        turns = [(name, view.history[name][round]) for name in names]
        kept = [(name, t.reply) for name, t in turns if t.reply and not t.error]
        labelled = [{"label": f"Answer {j + 1}", "reply": reply}
                    for j, (_, reply) in enumerate(kept)]
        return labelled, tuple(name for name, _ in kept)

    async def prompts(self, view: View, members: Sequence[int], ask: Ask) -> list[RoundPrompt]:
        form = view.task.answer_form
        fresh = render("question", question=view.question.text, answer_form=form)
        if view.round == 0:
            return [RoundPrompt("answer", Message("user", fresh)) for _ in members]
        replies, saw = self._replies(view, view.round - 1)
        if not replies:  # the whole previous layer failed: answer afresh, shown nobody
            return [RoundPrompt("alone", Message("user", fresh)) for _ in members]
        text = render("moa_proposer", question=view.question.text, replies=replies,
                      answer_form=form)
        return [RoundPrompt("debate", Message("user", text), saw) for _ in members]

    async def finish(self, view: View, ask: Ask) -> Decision | None:
        # The last layer that spoke (an early stop leaves later layers silent).
        for r in range(view.round, -1, -1):
            replies, saw = self._replies(view, r)
            if replies:
                break
        else:
            return None  # nobody answered: the run's aggregate rule decides
        aggregator = self.agents.of(view.society)[0]
        text = render("moa_aggregate", question=view.question.text, replies=replies,
                      answer_form=view.task.answer_form)
        messages = [Message("system", aggregator.card.system_prompt(aggregator.name)),
                    Message("user", text)]
        return Decision("aggregator", await ask(aggregator, messages, saw))


def _layers_option(raw: object, where: str) -> list[list[str]]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}.layers: expected a list of layers (lists of agent names)")
    for j, layer in enumerate(raw):
        if not isinstance(layer, list) or not layer \
                or not all(isinstance(x, str) for x in layer):
            raise ConfigError(f"{where}.layers[{j}]: expected a non-empty list of agent names")
    return raw


def build(spec: Mapping[str, Any], ctx: BuildContext, where: str) -> MoA:
    """MoA from ``{name: moa, layers | layer_size, aggregator}``."""
    opts = options(spec, ["layers", "layer_size", "aggregator"], where)
    if "layers" in opts and "layer_size" in opts:
        raise ConfigError(f"{where}: give layers or layer_size, not both")
    layers = _layers_option(opts["layers"], where) if "layers" in opts else None
    size = opts.get("layer_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"{where}.layer_size: expected a positive integer, got {size!r}")
    return MoA(RoleSpec("aggregator", opts.get("aggregator"), ctx, where), ctx.rounds,
               layers, size, where)
