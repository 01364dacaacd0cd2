"""Communication graphs. An edge ``u → v`` means *v reads u's latest answer* in a debate round.

Plain functions in the networkx style: agent names first, a DiGraph out. So an agent's readings
are its predecessors (``graph.predecessors(v)``), and whom it is read by, its successors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import networkx as nx

from societies.errors import ConfigError

GRAPH_NAMES = ("complete", "ring", "star", "chain")


def complete(agents: Sequence[str]) -> nx.DiGraph:
    """Everyone reads everyone else (MachineSoM's and Du et al.'s setting).

    Examples:
        >>> G = complete(["a", "b", "c"])
        >>> sorted(G.predecessors("a"))
        ['b', 'c']
        >>> G.number_of_edges()
        6
    """
    graph = _nodes(agents)
    graph.add_edges_from((u, v) for u in agents for v in agents if u != v)
    return graph


def ring(agents: Sequence[str]) -> nx.DiGraph:
    """Agents sit on a cycle in list order and each reads both its neighbours.

    The ring has no direction: ``u → v`` and ``v → u`` for every pair of neighbours (the first
    and the last agent are neighbours). Two agents read each other; one agent reads nobody.

    Examples:
        >>> G = ring(["a", "b", "c", "d"])
        >>> sorted(G.predecessors("a"))
        ['b', 'd']
        >>> sorted(G.edges)
        [('a', 'b'), ('a', 'd'), ('b', 'a'), ('b', 'c'),
         ('c', 'b'), ('c', 'd'), ('d', 'a'), ('d', 'c')]
        >>> sorted(ring(["a", "b"]).edges)
        [('a', 'b'), ('b', 'a')]
    """
    graph = _nodes(agents)
    n = len(agents)
    for i, u in enumerate(agents):
        for v in (agents[(i - 1) % n], agents[(i + 1) % n]):
            if u != v:
                graph.add_edge(u, v)
    return graph


def star(agents: Sequence[str]) -> nx.DiGraph:
    """The first agent is the hub: it reads everyone, and everyone reads it (and only it).

    Examples:
        >>> G = star(["hub", "x", "y"])
        >>> sorted(G.predecessors("hub")), sorted(G.predecessors("x"))
        (['x', 'y'], ['hub'])
        >>> G.has_edge("x", "y")
        False
    """
    graph = _nodes(agents)
    if not agents:
        return graph
    hub, *leaves = agents
    for leaf in leaves:
        graph.add_edge(hub, leaf)
        graph.add_edge(leaf, hub)
    return graph


def chain(agents: Sequence[str]) -> nx.DiGraph:
    """Answers flow one way along the list: agent i reads agent i−1; the first reads nobody.

    Examples:
        >>> G = chain(["a", "b", "c"])
        >>> list(G.edges)
        [('a', 'b'), ('b', 'c')]
        >>> list(G.predecessors("a"))
        []
    """
    graph = _nodes(agents)
    graph.add_edges_from(itertools.pairwise(agents))
    return graph


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
    graph = _nodes(agents)
    for i, edge in enumerate(edges):
        if isinstance(edge, str) or len(edge) != 2:
            shown = edge if isinstance(edge, str) else list(edge)
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


def build(agents: Sequence[str], spec: str | Sequence[Sequence[str]], where: str) -> nx.DiGraph:
    """Build a graph from a config value: a name in :data:`GRAPH_NAMES` or an edge list.

    Args:
        agents: the society's agent names, in society order (``star``'s hub is the first).
        spec: a graph name or an edge list ``[[from, to], ...]`` (to reads from).
        where: the config field path, for error messages (``societies[0].graph``).

    Examples:
        >>> sorted(build(["a", "b", "c"], "star", "graph").edges)
        [('a', 'b'), ('a', 'c'), ('b', 'a'), ('c', 'a')]
        >>> list(build(["a", "b"], [["b", "a"]], "graph").edges)
        [('b', 'a')]
        >>> build(["a"], "hypercube", "societies[1].graph")
        Traceback (most recent call last):
        ...
        societies.errors.ConfigError: societies[1].graph: unknown graph 'hypercube'; ...

    Raises:
        ConfigError: an unknown graph name, or a bad edge list (see :func:`from_edges`).
    """
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
