"""Where communication graphs come from: named graphs over the agent list (``graph: ring``)
and seeded networkx generators (``graph: {generator: name, <parameters>}``).

Each generator below is a plain function ``(n, *, parameters) -> nx.Graph`` over a thin
networkx call; its keyword parameters are exactly the config keys it takes (read from its
signature), so the error for an unknown or missing key lists them. ``n`` is always the
society's size; an explicit ``n`` must equal it. Random generators take ``seed`` (default 0):
the same seed gives the same graph.

Nodes become agents in sorted node order: node ``i`` is the i-th agent of the society, and for
``grid`` the ``(row, col)`` nodes go row by row. An undirected graph gives both directions
(u → v and v → u); ``directed: true`` exists only where a generator has a directed form.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_type_hints

import networkx as nx

from societies.errors import ConfigError

GRAPH_NAMES = ("complete", "ring", "star", "chain")
"""The graphs a config names by a plain string; each is a function of the agent list."""


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




def _nodes(agents: Sequence[str]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(agents)
    return graph


class _BadValue(ValueError):
    """A parameter value the generator cannot use; ``param`` names the config key."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _need(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise _BadValue(param, message)


def _kind(directed: bool) -> type[nx.Graph]:
    return nx.DiGraph if directed else nx.Graph


def _complete(n: int) -> nx.Graph:
    return nx.complete_graph(n)


def _cycle(n: int, *, directed: bool = False) -> nx.Graph:
    # One agent on a cycle would read itself (networkx makes a self-loop); refused later.
    return nx.cycle_graph(n, create_using=_kind(directed))


def _star(n: int, *, directed: bool = False) -> nx.Graph:
    # nx.star_graph(k) has k leaves around hub 0; directed: the leaves read the hub only.
    return nx.star_graph(n - 1, create_using=_kind(directed))


def _path(n: int, *, directed: bool = False) -> nx.Graph:
    return nx.path_graph(n, create_using=_kind(directed))


def _grid(n: int, *, rows: int, cols: int, periodic: bool = False) -> nx.Graph:
    _need(rows >= 1 and cols >= 1 and rows * cols == n, "rows",
          f"rows × cols must be the society's size {n}, got {rows} × {cols}")
    return nx.grid_2d_graph(rows, cols, periodic=periodic)


def _watts_strogatz(n: int, *, k: int, p: float, seed: int = 0) -> nx.Graph:
    _check_ring(n, k, p)
    # Plain Watts–Strogatz: rewiring may disconnect the graph (see connected_watts_strogatz).
    return nx.watts_strogatz_graph(n, k, p, seed=seed)


def _connected_watts_strogatz(n: int, *, k: int, p: float, tries: int = 100,
                              seed: int = 0) -> nx.Graph:
    _check_ring(n, k, p)
    _need(tries >= 1, "tries", f"must be at least 1, got {tries}")
    try:
        return nx.connected_watts_strogatz_graph(n, k, p, tries=tries, seed=seed)
    except nx.NetworkXError:
        raise _BadValue("tries", f"no connected graph in {tries} tries; lower p or raise "
                        "k or tries") from None


def _check_ring(n: int, k: int, p: float) -> None:
    # networkx silently rounds an odd k down (k // 2 neighbours a side); refuse it instead.
    _need(k >= 2 and k % 2 == 0 and k < n, "k",
          f"must be even, at least 2 and below the society's size {n}, got {k}")
    _need(0 <= p <= 1, "p", f"a probability in [0, 1], got {p}")


def _barabasi_albert(n: int, *, m: int, seed: int = 0) -> nx.Graph:
    _need(1 <= m < n, "m", f"must be at least 1 and below the society's size {n}, got {m}")
    return nx.barabasi_albert_graph(n, m, seed=seed)


def _erdos_renyi(n: int, *, p: float, directed: bool = False, seed: int = 0) -> nx.Graph:
    _need(0 <= p <= 1, "p", f"a probability in [0, 1], got {p}")
    return nx.gnp_random_graph(n, p, seed=seed, directed=directed)


def _random_regular(n: int, *, d: int, seed: int = 0) -> nx.Graph:
    _need(0 <= d < n, "d", f"must be at least 0 and below the society's size {n}, got {d}")
    _need(n * d % 2 == 0, "d", f"size × d must be even (each edge has two ends), got {n} × {d}")
    return nx.random_regular_graph(d, n, seed=seed)


GENERATORS: dict[str, Callable[..., nx.Graph]] = {
    "complete": _complete, "cycle": _cycle, "star": _star, "path": _path, "grid": _grid,
    "watts_strogatz": _watts_strogatz, "connected_watts_strogatz": _connected_watts_strogatz,
    "barabasi_albert": _barabasi_albert, "erdos_renyi": _erdos_renyi,
    "random_regular": _random_regular,
}
"""Generator name → function ``(n, *, parameters) -> nx.Graph``."""


def parameters(name: str) -> dict[str, tuple[type, Any]]:
    """A generator's config keys: key → (type, default or ``inspect.Parameter.empty``).

    Examples:
        >>> params = parameters("watts_strogatz")
        >>> list(params), params["seed"]
        (['k', 'p', 'seed'], (<class 'int'>, 0))
    """
    fn = GENERATORS[name]
    hints = get_type_hints(fn)
    return {p.name: (hints[p.name], p.default)
            for p in inspect.signature(fn).parameters.values() if p.name != "n"}


def generate(agents: Sequence[str], spec: Mapping[str, Any], where: str) -> nx.DiGraph:
    """The DiGraph over ``agents`` that ``spec["generator"]`` makes with the spec's parameters.

    Examples:
        >>> agents = ["a", "b", "c", "d", "e", "f"]
        >>> G = generate(agents, {"generator": "random_regular", "d": 3, "seed": 1}, "graph")
        >>> sorted(d for _, d in G.in_degree()), G.number_of_edges()
        ([3, 3, 3, 3, 3, 3], 18)
        >>> spec = {"generator": "erdos_renyi", "p": 0.5, "directed": True, "seed": 3}
        >>> sorted(generate(agents, spec, "g").edges) == sorted(generate(agents, spec, "g").edges)
        True
        >>> generate(agents, {"generator": "barabasi_albert", "k": 2}, "societies[0].graph")
        Traceback (most recent call last):
        ...
        societies.errors.ConfigError: societies[0].graph.k: not a parameter of barabasi_albert; \
its parameters: m, seed=0

    Raises:
        ConfigError: an unknown generator (listing them), an unknown, missing or mistyped
            parameter (naming ``where.<param>`` and listing the generator's), an ``n`` other
            than the society's size, a bad value, or a self-loop; always one line.
    """
    name = spec.get("generator")
    if not isinstance(name, str) or name not in GENERATORS:
        raise ConfigError(f"{where}.generator: unknown generator {name!r}; allowed: "
                          f"{', '.join(GENERATORS)}")
    args = {str(k): v for k, v in spec.items() if k != "generator"}
    params = parameters(name)
    listed = ", ".join(k if d is inspect.Parameter.empty else f"{k}={d}"
                       for k, (_, d) in params.items()) or "none"
    n = len(agents)
    if "n" in args and args.pop("n") != n:
        raise ConfigError(f"{where}.n: the society has {n} agents; n is the society's size "
                          "(leave it out)")
    # directed: false is what every generator without a directed form makes anyway.
    if "directed" not in params and args.pop("directed", False) is not False:
        directed = ", ".join(g for g in GENERATORS if "directed" in parameters(g))
        raise ConfigError(f"{where}.directed: {name} has no directed form; "
                          f"generators with one: {directed}")
    for key, value in args.items():
        if key not in params:
            raise ConfigError(f"{where}.{key}: not a parameter of {name}; its parameters: "
                              f"{listed}")
        if not _fits(value, params[key][0]):
            raise ConfigError(f"{where}.{key}: {name} takes {params[key][0].__name__} "
                              f"{key}, got {value!r}")
    for key, (_, default) in params.items():
        if default is inspect.Parameter.empty and key not in args:
            raise ConfigError(f"{where}.{key}: {name} needs {key}; its parameters: {listed}")
    try:
        raw = GENERATORS[name](n, **args)
    except _BadValue as err:
        raise ConfigError(f"{where}.{err.param}: {err}") from None
    except nx.NetworkXException as err:  # a case the checks above did not foresee
        raise ConfigError(f"{where}: {name}: {str(err).splitlines()[0]}") from None
    agent_of = dict(zip(sorted(raw.nodes), agents, strict=True))
    for u, v in nx.selfloop_edges(raw):
        raise ConfigError(f"{where}: {name} makes the self-loop {[agent_of[u], agent_of[v]]} "
                          f"for {n} agent(s); an agent does not read itself")
    graph = _nodes(agents)
    for u, v in raw.edges:
        graph.add_edge(agent_of[u], agent_of[v])
        if not raw.is_directed():
            graph.add_edge(agent_of[v], agent_of[u])
    return graph


def _fits(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)
