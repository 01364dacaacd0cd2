"""Communication graphs read from a file networkx reads: GraphML, GML or an edge list.

The config value is ``{file: path, format: ..., directed: ...}``; :func:`societies.graphs.build`
hands it here. Node ids are the society's agent names, or the integers ``0..n-1`` standing for
the agents in society order (GraphML and edge lists store ids as text, so ``"3"`` counts as 3).
An agent the file does not mention reads nobody and is read by nobody. Edge attributes (weights)
are ignored, and parallel edges count once.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from societies.errors import ConfigError

FORMATS = {".graphml": "graphml", ".gml": "gml",
           ".edges": "edgelist", ".edgelist": "edgelist", ".txt": "edgelist"}
"""File suffix → format, used when the spec gives no ``format``."""

FILE_KEYS = ("file", "format", "directed")


def read_graph_file(agents: Sequence[str], spec: Mapping[str, Any], where: str) -> nx.DiGraph:
    """Read ``spec["file"]`` into a DiGraph over ``agents`` (an edge u → v: v reads u).

    A GraphML or GML file says itself whether it is directed; an undirected one gives both
    directions. An edge list (``u v`` per line, ``#`` starts a comment, further columns are
    ignored) is directed unless the spec says ``directed: false``. Relative paths are relative to
    the current directory.

    Examples:
        >>> import os, tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = os.path.join(tmp.name, "g.edges")
        >>> _ = open(path, "w").write("a b  # b reads a\\nc b\\n")
        >>> sorted(read_graph_file(["a", "b", "c"], {"file": path}, "graph").edges)
        [('a', 'b'), ('c', 'b')]
        >>> _ = open(path, "w").write("0 1\\n2 1\\n")  # the same graph by index
        >>> sorted(read_graph_file(["a", "b", "c"], {"file": path}, "graph").edges)
        [('a', 'b'), ('c', 'b')]
        >>> tmp.cleanup()

    Raises:
        ConfigError: an unknown key or format, a file that is missing or does not parse, a node
            that is neither an agent nor an index, or a self-loop (named with ``file:line`` in
            an edge list); one line naming ``where.file`` and the path.
    """
    for key in spec:
        if key not in FILE_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key of a graph file; "
                              f"allowed: {', '.join(FILE_KEYS)}")
    name = spec["file"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.file: a path to a graph file, got {name!r}")
    path = Path(name)
    fmt = spec.get("format") or FORMATS.get(path.suffix.lower())
    if not isinstance(fmt, str) or fmt not in FORMATS.values():
        allowed = ", ".join(sorted(set(FORMATS.values())))
        got = f"format {fmt!r}" if "format" in spec else f"suffix {path.suffix!r}"
        raise ConfigError(f"{where}.format: {got} is not a graph format; allowed: {allowed} "
                          f"(suffixes: {', '.join(FORMATS)})")
    directed = spec.get("directed")
    if directed is not None and fmt != "edgelist":
        raise ConfigError(f"{where}.directed: only an edge list takes directed; "
                          f"a {fmt} file says itself whether it is directed")
    if directed is not None and not isinstance(directed, bool):
        raise ConfigError(f"{where}.directed: true or false, got {directed!r}")
    raw = _read(path, fmt, directed is not False, f"{where}.file")
    source = f"{where}.file: {name}"
    for u, v in nx.selfloop_edges(raw):
        line = _line_of(path, u) if fmt == "edgelist" else None
        at = f"{source}:{line}" if line else source
        raise ConfigError(f"{at}: edge {[u, v]} is a self-loop; an agent does not read itself")
    agent_of = _agent_map(list(raw.nodes), agents, source)
    graph = nx.DiGraph()
    graph.add_nodes_from(agents)
    for u, v in raw.edges():
        graph.add_edge(agent_of[u], agent_of[v])
        if not raw.is_directed():
            graph.add_edge(agent_of[v], agent_of[u])
    return graph


def _read(path: Path, fmt: str, directed: bool, where: str) -> nx.Graph:
    try:
        if fmt == "graphml":
            return nx.read_graphml(path)
        if fmt == "gml":
            return _read_gml(path)
        kind = nx.DiGraph if directed else nx.Graph
        return nx.read_edgelist(path, create_using=kind, nodetype=str, data=False)
    except OSError as err:
        raise ConfigError(f"{where}: cannot read {str(path)!r}: {err.strerror or err}") from None
    except (nx.NetworkXError, ET.ParseError, ValueError, TypeError, KeyError) as err:
        # networkx reports malformed files through several exception types; the first line of
        # its message is what a user can act on.
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{where}: {str(path)!r} is not a readable {fmt} file "
                          f"({first})") from None


def _read_gml(path: Path) -> nx.Graph:
    """GML nodes by their ``label`` (what ``nx.write_gml`` writes), else by their ``id``."""
    try:
        return nx.read_gml(path)
    except nx.NetworkXError as err:
        if "has no 'label' attribute" not in str(err):
            raise
        return nx.read_gml(path, label=None)


def _agent_map(nodes: list[Hashable], agents: Sequence[str], source: str) -> dict[Hashable, str]:
    """Node id → agent: ids that are agent names, else ids that are indices into ``agents``."""
    names = set(agents)
    shown = ", ".join(agents[:5]) + (", …" if len(agents) > 5 else "")
    if any(node in names for node in nodes):
        for node in nodes:
            if node not in names:
                raise ConfigError(f"{source}: node {node!r} is not an agent of the society "
                                  f"({shown}); a file's node ids are all agent names or all "
                                  f"indices 0..{len(agents) - 1}")
        return {node: str(node) for node in nodes}
    mapping: dict[Hashable, str] = {}
    for node in nodes:
        index = _as_index(node)
        if index is None or not 0 <= index < len(agents):
            raise ConfigError(f"{source}: node {node!r} is neither an agent of the society "
                              f"({shown}) nor an index 0..{len(agents) - 1}")
        mapping[node] = agents[index]
    return mapping


def _as_index(node: Hashable) -> int | None:
    if isinstance(node, int) and not isinstance(node, bool):
        return node
    if isinstance(node, str) and node.isdigit() and str(int(node)) == node:
        return int(node)
    return None


def _line_of(path: Path, node: Hashable) -> int | None:
    """The 1-based line of the edge list where ``node node`` first appears."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.split("#", 1)[0].split()
            if fields[:2] == [node, node]:
                return number
    return None
