"""Communication graphs. An edge ``u → v`` means *v reads u's latest answer* in a debate round.

Plain functions in the networkx style: agent names first, a DiGraph out.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import networkx as nx

from societies.errors import ConfigError

GRAPH_NAMES = ("complete", "ring", "star", "chain")


def complete(agents: Sequence[str]) -> nx.DiGraph:
    """Everyone reads everyone else (MachineSoM's and Du et al.'s setting).

    Example:
        >>> sorted(complete(["a", "b"]).edges)
        [('a', 'b'), ('b', 'a')]
    """
    graph = _nodes(agents)
    graph.add_edges_from((u, v) for u in agents for v in agents if u != v)
    return graph


def ring(agents: Sequence[str]) -> nx.DiGraph:
    """Each agent reads its two neighbours on a cycle (one, if there are only two agents).

    Example:
        >>> sorted(ring(["a", "b", "c", "d"]).predecessors("a"))
        ['b', 'd']
    """
    graph = _nodes(agents)
    n = len(agents)
    for i, u in enumerate(agents):
        for v in (agents[(i - 1) % n], agents[(i + 1) % n]):
            if u != v:
                graph.add_edge(u, v)
    return graph


def star(agents: Sequence[str]) -> nx.DiGraph:
    """The first agent is the hub: it reads everyone, and everyone reads it.

    Example:
        >>> sorted(star(["hub", "x", "y"]).predecessors("x"))
        ['hub']
    """
    graph = _nodes(agents)
    hub, *leaves = agents
    for leaf in leaves:
        graph.add_edge(hub, leaf)
        graph.add_edge(leaf, hub)
    return graph


def chain(agents: Sequence[str]) -> nx.DiGraph:
    """Answers flow one way along the list: agent i reads agent i−1.

    Example:
        >>> list(chain(["a", "b", "c"]).edges)
        [('a', 'b'), ('b', 'c')]
    """
    graph = _nodes(agents)
    graph.add_edges_from(itertools.pairwise(agents))
    return graph


def from_edges(agents: Sequence[str], edges: Sequence[Sequence[str]], where: str) -> nx.DiGraph:
    """A graph from an explicit edge list ``[[u, v], ...]`` (v reads u).

    Raises:
        ConfigError: an edge names an agent not in the society, or is not a pair.
    """
    graph = _nodes(agents)
    for i, edge in enumerate(edges):
        if len(edge) != 2:
            raise ConfigError(f"{where}[{i}]: an edge is a pair [from, to], got {list(edge)}")
        for name in edge:
            if name not in graph:
                raise ConfigError(
                    f"{where}[{i}]: agent {name!r} is not in the society; "
                    f"agents: {', '.join(agents)}"
                )
        graph.add_edge(edge[0], edge[1])
    return graph


def build(agents: Sequence[str], spec: str | Sequence[Sequence[str]], where: str) -> nx.DiGraph:
    """Build a graph from a config value: a name in :data:`GRAPH_NAMES` or an edge list."""
    if isinstance(spec, str):
        builders = {"complete": complete, "ring": ring, "star": star, "chain": chain}
        if spec not in builders:
            raise ConfigError(f"{where}: unknown graph {spec!r}; allowed: "
                              f"{', '.join(GRAPH_NAMES)} or an edge list")
        return builders[spec](agents)
    return from_edges(agents, spec, where)


def _nodes(agents: Sequence[str]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(agents)
    return graph
