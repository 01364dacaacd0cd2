"""Communication graphs. An edge ``u → v`` means *v reads u's latest answer* in a debate round.

Plain functions in the networkx style: agent names first, a DiGraph out. So an agent's readings
are its predecessors (``graph.predecessors(v)``), and whom it is read by, its successors.

A config's ``graph`` is a name (:data:`GRAPH_NAMES`), an edge list, or a mapping: a seeded
networkx generator (:mod:`societies.graph_generators`), a file (:mod:`societies.graph_files`)
or a per-round ``schedule`` of any of these (:func:`schedule`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx

from societies.errors import ConfigError
from societies.graph_files import read_graph_file
from societies.graph_generators import (
    GENERATORS,
    GRAPH_NAMES,
    chain,
    complete,
    generate,
    ring,
    star,
)

__all__ = ["GENERATORS", "GRAPH_NAMES", "build", "chain", "complete", "from_edges", "generate",
           "graph_digest", "read_graph_file", "require_connected", "ring", "schedule", "star"]

MAPPING_KINDS = ("generator", "file", "schedule")

Spec = str | Sequence[Sequence[str]] | Mapping[str, Any]
"""What :func:`build` takes: the config's ``GraphSpec`` (see :mod:`societies.config`)."""


def from_edges(agents: Sequence[str], edges: Sequence[Sequence[str]], where: str) -> nx.DiGraph:
    """A graph from an explicit edge list ``[[u, v], ...]`` (v reads u).

    Every agent is a node, even one no edge names (it then reads nobody).

    Examples:
        >>> G = from_edges(["a", "b", "c"], [["a", "b"], ["c", "b"]], "graph")
        >>> sorted(G.predecessors("b")), list(G.predecessors("c"))
        (['a', 'c'], [])
        >>> from_edges(["a", "b"], [["a", "a"]], "societies[0].graph")
        Traceback (most recent call last):
        ...
        societies.errors.ConfigError: societies[0].graph[0]: edge ['a', 'a'] is a self-loop; ...

    Raises:
        ConfigError: an edge is not a pair, names an agent not in the society, is a self-loop,
            or is listed twice; the message names the edge's field path (``where[i]``).
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(agents)
    for i, edge in enumerate(edges):
        if isinstance(edge, str) or not isinstance(edge, Sequence) or len(edge) != 2:
            shown = list(edge) if isinstance(edge, Sequence) and not isinstance(edge, str) else edge
            raise ConfigError(f"{where}[{i}]: an edge is a pair [from, to], got {shown!r}")
        for name in edge:
            if name not in graph:
                raise ConfigError(
                    f"{where}[{i}]: agent {name!r} is not in the society; "
                    f"agents: {', '.join(agents)}"
                )
        u, v = edge
        if u == v:
            # The engine would show the agent its own latest answer as a neighbour's.
            raise ConfigError(f"{where}[{i}]: edge {[u, v]} is a self-loop; an agent does not "
                              "read itself (its own history is in its prompt)")
        if graph.has_edge(u, v):
            first = next(j for j, e in enumerate(edges) if list(e) == [u, v])
            raise ConfigError(f"{where}[{i}]: edge {[u, v]} is listed twice "
                              f"(first at {where}[{first}])")
        graph.add_edge(u, v)
    return graph


def build(agents: Sequence[str], spec: Spec, where: str) -> nx.DiGraph:
    """Build one graph from a config value: a name, an edge list, a generator or a file.

    Args:
        agents: the society's agent names, in society order (``star``'s hub is the first).
        spec: a name in :data:`GRAPH_NAMES`, an edge list ``[[from, to], ...]`` (to reads
            from), ``{generator: ..., <parameters>}`` (:func:`generate`) or ``{file: ...}``
            (:func:`societies.graph_files.read_graph_file`).
        where: the config field path, for error messages (``societies[0].graph``).

    Examples:
        >>> sorted(build(["a", "b", "c"], "star", "graph").edges)
        [('a', 'b'), ('a', 'c'), ('b', 'a'), ('c', 'a')]
        >>> list(build(["a", "b"], [["b", "a"]], "graph").edges)
        [('b', 'a')]
        >>> sorted(build(["a", "b", "c"], {"generator": "path", "directed": True}, "graph").edges)
        [('a', 'b'), ('b', 'c')]
        >>> build(["a"], "hypercube", "societies[1].graph")
        Traceback (most recent call last):
        ...
        societies.errors.ConfigError: societies[1].graph: unknown graph 'hypercube'; ...

    Raises:
        ConfigError: an unknown graph name, a bad edge list (see :func:`from_edges`), generator
            (:func:`generate`) or file, or a ``schedule`` (one graph per round: :func:`schedule`).
    """
    if isinstance(spec, str):
        builders = {"complete": complete, "ring": ring, "star": star, "chain": chain}
        if spec not in builders:
            raise ConfigError(f"{where}: unknown graph {spec!r}; allowed: "
                              f"{', '.join(GRAPH_NAMES)}, an edge list or a mapping with "
                              f"one of {', '.join(MAPPING_KINDS)}")
        return builders[spec](agents)
    if isinstance(spec, Mapping):
        kinds = [key for key in MAPPING_KINDS if key in spec]
        if len(kinds) != 1:
            raise ConfigError(f"{where}: a graph mapping has exactly one of "
                              f"{', '.join(MAPPING_KINDS)}; got keys {', '.join(map(str, spec))}")
        if kinds[0] == "generator":
            return generate(agents, spec, where)
        if kinds[0] == "file":
            return read_graph_file(agents, spec, where)
        raise ConfigError(f"{where}.schedule: a per-round schedule is not allowed here "
                          "(it is a graph per round, not one graph)")
    return from_edges(agents, spec, where)


def schedule(agents: Sequence[str], spec: Spec, rounds: int,
             where: str) -> tuple[nx.DiGraph, ...]:
    """The graph of each debate round ``1..rounds``: item ``r - 1`` is round r's graph.

    A spec other than ``{schedule: [...]}`` gives the same graph every round. A schedule is a
    list of entries ``{rounds: [r, ...], graph: <spec>}``; ``{until: r, graph: <spec>}`` is a
    shorthand for the rounds after the latest one covered so far, through r. Every round is covered
    by exactly one entry; schedules do not nest. The graphs are frozen (read-only), since
    rounds may share one.

    Examples:
        >>> spec = {"schedule": [{"until": 2, "graph": "chain"},
        ...                      {"rounds": [3], "graph": "complete"}]}
        >>> [g.number_of_edges() for g in schedule(["a", "b", "c"], spec, 3, "graph")]
        [2, 2, 6]
        >>> schedule(["a", "b"], {"schedule": [{"rounds": [1], "graph": "ring"}]}, 2, "graph")
        Traceback (most recent call last):
        ...
        societies.errors.ConfigError: graph.schedule: round 2 is not covered; ...

    Raises:
        ConfigError: a bad entry, a round out of range or covered twice (naming
            ``where.schedule[i].rounds`` or ``.until``), a round left out, or a bad graph.
    """
    if not (isinstance(spec, Mapping) and "schedule" in spec):
        return (nx.freeze(build(agents, spec, where)),) * rounds
    if len(spec) != 1:
        raise ConfigError(f"{where}: a schedule mapping has only the key schedule; "
                          f"got keys {', '.join(map(str, spec))}")
    entries = spec["schedule"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}.schedule: a non-empty list of {{rounds, graph}} entries")
    owner: dict[int, int] = {}
    per_round: dict[int, nx.DiGraph] = {}
    last = 0
    for i, entry in enumerate(entries):
        here = f"{where}.schedule[{i}]"
        key, numbers = _entry_rounds(entry, last, here)
        for r in numbers:
            if not 1 <= r <= rounds:
                raise ConfigError(f"{here}.{key}: round {r} is out of range; the debate rounds "
                                  f"are 1..{rounds}")
            if r in owner:
                raise ConfigError(f"{here}.{key}: round {r} is already covered by "
                                  f"{where}.schedule[{owner[r]}]")
            owner[r] = i
        sub = entry["graph"]
        if isinstance(sub, Mapping) and "schedule" in sub:
            raise ConfigError(f"{here}.graph: a schedule does not nest")
        graph = nx.freeze(build(agents, sub, f"{here}.graph"))
        per_round.update(dict.fromkeys(numbers, graph))
        last = max(last, *numbers)
    missing = [str(r) for r in range(1, rounds + 1) if r not in owner]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise ConfigError(f"{where}.schedule: round{plural} {', '.join(missing)} "
                          f"{'are' if plural else 'is'} not covered; every debate round "
                          f"1..{rounds} needs exactly one graph")
    return tuple(per_round[r] for r in range(1, rounds + 1))


def _entry_rounds(entry: Any, last: int, here: str) -> tuple[str, list[int]]:
    """``("rounds" | "until", the rounds)`` of one schedule entry, checked for shape only."""
    if not isinstance(entry, Mapping) or "graph" not in entry:
        raise ConfigError(f"{here}: an entry is {{rounds: [...], graph: ...}} or "
                          f"{{until: r, graph: ...}}, got {entry!r}")
    keys = [k for k in ("rounds", "until") if k in entry]
    extra = [str(k) for k in entry if k not in ("rounds", "until", "graph")]
    if len(keys) != 1 or extra:
        raise ConfigError(f"{here}: an entry has graph and one of rounds or until; "
                          f"got keys {', '.join(map(str, entry))}")
    value = entry[keys[0]]
    if keys[0] == "until":
        if not _is_int(value) or value <= last:
            raise ConfigError(f"{here}.until: a round after {last} (the latest covered so "
                              f"far), got {value!r}")
        return "until", list(range(last + 1, value + 1))
    if not isinstance(value, list) or not value or not all(_is_int(r) for r in value):
        raise ConfigError(f"{here}.rounds: a non-empty list of round numbers, got {value!r}")
    return "rounds", list(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def require_connected(graph: nx.Graph, where: str, protocol: str, *,
                      strongly: bool = False) -> None:
    """Refuse a graph in which some agent cannot be reached; protocols that need it call this.

    Connected means weakly connected (ignoring directions); ``strongly=True`` asks that every
    agent reach every other along the edges' directions.

    Examples:
        >>> require_connected(chain(["a", "b", "c"]), "graph", "gossip")
        >>> require_connected(chain(["a", "b", "c"]), "graph", "gossip", strongly=True)
        Traceback (most recent call last):
        ...
        societies.errors.ConfigError: graph: the graph is not strongly connected (3 strong ...
        >>> require_connected(from_edges("abcd", [["a", "b"]], "graph"), "graph", "mad")
        Traceback (most recent call last):
        ...
        societies.errors.ConfigError: graph: the graph is disconnected (3 components: {a, b}, \
{c}, {d}); protocol mad needs every agent reachable
    """
    if graph.number_of_nodes() == 0:
        return
    if not graph.is_directed():
        parts = list(nx.connected_components(graph))
    elif strongly:
        parts = list(nx.strongly_connected_components(graph))
    else:
        parts = list(nx.weakly_connected_components(graph))
    if len(parts) == 1:
        return
    order = {node: i for i, node in enumerate(graph.nodes)}
    parts.sort(key=lambda part: min(order[n] for n in part))
    shown = ", ".join(_show_part(sorted(p, key=order.__getitem__)) for p in parts[:3])
    more = ", …" if len(parts) > 3 else ""
    if strongly:
        raise ConfigError(f"{where}: the graph is not strongly connected ({len(parts)} strong "
                          f"components: {shown}{more}); protocol {protocol} needs every agent "
                          "to reach every other along the edges")
    raise ConfigError(f"{where}: the graph is disconnected ({len(parts)} components: "
                      f"{shown}{more}); protocol {protocol} needs every agent reachable")


def _show_part(nodes: list[Any]) -> str:
    return "{" + ", ".join(map(str, nodes[:4])) + (", …" if len(nodes) > 4 else "") + "}"


def graph_digest(graph: nx.Graph) -> str:
    """sha256 (hex) of the sorted edge list: equal exactly when two graphs have the same edges.

    For a run's identity: a changed graph file (or generator parameter) makes a new run.

    Examples:
        >>> graph_digest(ring(["a", "b", "c"])) == graph_digest(complete(["a", "b", "c"]))
        True
        >>> graph_digest(chain(["a", "b"])) == graph_digest(chain(["b", "a"]))
        False
    """
    edges = sorted([str(u), str(v)] for u, v in graph.edges)
    return hashlib.sha256(json.dumps(edges).encode()).hexdigest()
