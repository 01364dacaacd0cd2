"""Communication graphs (u → v: v reads u): named graphs, edge lists, generators, files,
per-round schedules, connectivity; every bad spec is one line naming its field."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

from societies import graphs
from societies.config import parse_config
from societies.errors import ConfigError
from societies.plan import build_plan
from tests.helpers import config

AGENTS = ["a", "b", "c", "d"]


def edges(spec: str | list[list[str]], agents: list[str] = AGENTS) -> set[tuple[str, str]]:
    graph = graphs.build(agents, spec, "graph")
    assert list(graph.nodes) == agents  # every agent is a node, in society order
    return set(graph.edges)


def test_complete_every_ordered_pair_but_no_self_loops() -> None:
    assert edges("complete") == {(u, v) for u in AGENTS for v in AGENTS if u != v}


def test_ring_each_agent_reads_both_neighbours_wrapping_around() -> None:
    neighbours = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")]
    assert edges("ring") == {*neighbours, *((v, u) for u, v in neighbours)}
    # Not a chord: a and c are not neighbours on a 4-cycle.
    assert ("a", "c") not in edges("ring")


def test_ring_of_two_and_of_one() -> None:
    assert edges("ring", ["a", "b"]) == {("a", "b"), ("b", "a")}
    assert edges("ring", ["a"]) == set()


def test_star_first_agent_is_the_hub() -> None:
    assert edges("star") == {("a", "b"), ("a", "c"), ("a", "d"),
                             ("b", "a"), ("c", "a"), ("d", "a")}
    # The hub is the first agent of the list, whatever its name.
    assert edges("star", ["z", "y"]) == {("z", "y"), ("y", "z")}


def test_star_and_others_of_one_agent_have_no_edges() -> None:
    for name in graphs.GRAPH_NAMES:
        assert edges(name, ["solo"]) == set(), name


def test_chain_one_way_along_the_list() -> None:
    graph = graphs.build(AGENTS, "chain", "graph")
    assert set(graph.edges) == {("a", "b"), ("b", "c"), ("c", "d")}
    assert list(graph.predecessors("c")) == ["b"]  # c reads b, b does not read c
    assert list(graph.predecessors("a")) == []


def test_edge_list_means_to_reads_from() -> None:
    graph = graphs.build(AGENTS, [["c", "a"], ["d", "a"]], "graph")
    assert sorted(graph.predecessors("a")) == ["c", "d"]
    assert list(graph.predecessors("c")) == []
    assert set(graph.nodes) == set(AGENTS)  # b is in no edge but still in the society


@pytest.mark.parametrize(("spec", "message"), [
    ([["b", "b"]], "societies[2].graph[0]: edge ['b', 'b'] is a self-loop"),
    ([["a", "b"], ["c", "c"]], "societies[2].graph[1]: edge ['c', 'c'] is a self-loop"),
    ([["a", "b"], ["b", "a"], ["a", "b"]],
     "societies[2].graph[2]: edge ['a', 'b'] is listed twice (first at societies[2].graph[0])"),
    ([["a", "x"]], "societies[2].graph[0]: agent 'x' is not in the society; agents: a, b, c, d"),
    ([["a", "b", "c"]], "societies[2].graph[0]: an edge is a pair [from, to], got ['a', 'b', 'c']"),
    ([["a"]], "societies[2].graph[0]: an edge is a pair [from, to]"),
    (["ab"], "societies[2].graph[0]: an edge is a pair [from, to], got 'ab'"),
    ("wheel", "societies[2].graph: unknown graph 'wheel'; allowed: complete, ring, star, chain"),
])
def test_bad_graph_is_one_config_error_line_naming_the_field(
        spec: str | list[list[str]], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        graphs.build(AGENTS, spec, "societies[2].graph")
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_reversed_pair_is_not_a_duplicate() -> None:
    assert edges([["a", "b"], ["b", "a"]]) == {("a", "b"), ("b", "a")}


def test_config_with_a_self_loop_is_refused_naming_the_society_field() -> None:
    cfg = config(societies=[{"machinesom": "S2"},
                            {"name": "loop", "machinesom": "S4", "graph": [["agent2", "agent2"]]}])
    with pytest.raises(ConfigError, match=r"^societies\[1\]\.graph\[0\]: edge \['agent2', "
                                          r"'agent2'\] is a self-loop"):
        build_plan(parse_config(cfg))


# --- Generators --------------------------------------------------------------------------------

SIX = [f"x{i}" for i in range(6)]
TWELVE = [f"x{i}" for i in range(12)]


def gen(agents: list[str], **spec: object) -> nx.DiGraph:
    graph = graphs.build(agents, dict(spec), "graph")
    assert list(graph.nodes) == agents  # nodes are the agents, in society order
    return graph


def symmetric(graph: nx.DiGraph) -> bool:
    return all(graph.has_edge(v, u) for u, v in graph.edges)


@pytest.mark.parametrize(("generator", "named", "directed"), [
    ("complete", "complete", False), ("cycle", "ring", False),
    ("star", "star", False), ("path", "chain", True),
])
def test_deterministic_generators_match_the_named_graphs(
        generator: str, named: str, directed: bool) -> None:
    for agents in (AGENTS, ["p", "q"], SIX):
        spec = {"directed": True} if directed else {}
        assert set(gen(agents, generator=generator, **spec).edges) == edges(named, agents)


def test_undirected_path_and_directed_cycle_and_star() -> None:
    assert edges([["a", "b"], ["b", "a"], ["b", "c"], ["c", "b"]], ["a", "b", "c"]) == set(
        gen(["a", "b", "c"], generator="path").edges)
    assert set(gen(AGENTS, generator="cycle", directed=True).edges) == {
        ("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")}
    # Directed star: the leaves read the hub (the first agent), the hub reads nobody.
    hub = gen(AGENTS, generator="star", directed=True)
    assert list(hub.predecessors("a")) == [] and list(hub.predecessors("c")) == ["a"]


def test_watts_strogatz_without_rewiring_is_the_ring_lattice() -> None:
    graph = gen(SIX, generator="watts_strogatz", k=4, p=0.0)
    # Each agent reads its two nearest neighbours on each side around the society's order.
    assert sorted(graph.predecessors("x0")) == ["x1", "x2", "x4", "x5"]
    assert graph.number_of_edges() == 6 * 4 and symmetric(graph)


def test_random_generators_repeat_with_a_seed_and_vary_without_the_same_one() -> None:
    specs: list[dict[str, object]] = [
        {"generator": "watts_strogatz", "k": 4, "p": 0.5},
        {"generator": "connected_watts_strogatz", "k": 2, "p": 0.5},
        {"generator": "barabasi_albert", "m": 2},
        {"generator": "erdos_renyi", "p": 0.3},
        {"generator": "erdos_renyi", "p": 0.3, "directed": True},
        {"generator": "random_regular", "d": 3},
    ]
    for spec in specs:
        default = set(gen(TWELVE, **spec).edges)
        assert default == set(gen(TWELVE, **spec, seed=0).edges), spec  # default seed is 0
        again = set(gen(TWELVE, **spec, seed=5).edges)
        assert again == set(gen(TWELVE, **spec, seed=5).edges), spec
        assert len({frozenset(gen(TWELVE, **spec, seed=s).edges) for s in range(5)}) > 1, spec


def test_barabasi_albert_edge_count_and_degrees() -> None:
    graph = gen(TWELVE, generator="barabasi_albert", m=2, seed=1)
    # networkx starts from a star of m + 1 nodes, then each new node brings m edges.
    assert graph.number_of_edges() == 2 * 2 * (12 - 2) and symmetric(graph)
    assert min(d for _, d in graph.in_degree()) >= 2


def test_erdos_renyi_directed_only_when_asked() -> None:
    assert symmetric(gen(TWELVE, generator="erdos_renyi", p=0.5, seed=2))
    directed = gen(TWELVE, generator="erdos_renyi", p=0.5, directed=True, seed=2)
    assert not symmetric(directed)
    assert gen(SIX, generator="erdos_renyi", p=0.0).number_of_edges() == 0
    assert set(gen(SIX, generator="erdos_renyi", p=1.0, directed=True).edges) == edges(
        "complete", SIX)


def test_random_regular_every_agent_reads_and_is_read_by_d() -> None:
    graph = gen(TWELVE, generator="random_regular", d=3, seed=4)
    assert {d for _, d in graph.in_degree()} == {3} == {d for _, d in graph.out_degree()}
    assert graph.number_of_edges() == 12 * 3


def test_connected_watts_strogatz_is_connected() -> None:
    for seed in range(5):
        graph = gen(TWELVE, generator="connected_watts_strogatz", k=2, p=0.9, seed=seed)
        graphs.require_connected(graph, "graph", "test")


def test_grid_maps_nodes_row_by_row() -> None:
    graph = gen(TWELVE, generator="grid", rows=3, cols=4)
    assert graph.number_of_edges() == 2 * (3 * 3 + 2 * 4)
    # Agent 5 is (row 1, col 1): it reads the agents above, below, left and right of it.
    assert sorted(graph.predecessors("x5")) == ["x1", "x4", "x6", "x9"]
    torus = gen(TWELVE, generator="grid", rows=3, cols=4, periodic=True)
    assert {d for _, d in torus.in_degree()} == {4}
    assert gen(SIX, generator="grid", rows=2, cols=3, n=6).number_of_edges() == 14


@pytest.mark.parametrize(("spec", "agents", "message"), [
    ({"generator": "wheel"}, SIX,
     "g.generator: unknown generator 'wheel'; allowed: complete, cycle, star, path, grid, "
     "watts_strogatz, connected_watts_strogatz, barabasi_albert, erdos_renyi, random_regular"),
    ({"generator": "watts_strogatz", "k": 2, "q": 0.1}, SIX,
     "g.q: not a parameter of watts_strogatz; its parameters: k, p, seed=0"),
    ({"generator": "watts_strogatz", "k": 2}, SIX,
     "g.p: watts_strogatz needs p; its parameters: k, p, seed=0"),
    ({"generator": "barabasi_albert", "m": "2"}, SIX, "g.m: barabasi_albert takes int m, got '2'"),
    ({"generator": "barabasi_albert", "m": 2.5}, SIX, "g.m: barabasi_albert takes int m"),
    ({"generator": "erdos_renyi", "p": True}, SIX, "g.p: erdos_renyi takes float p, got True"),
    ({"generator": "complete", "seed": 1}, SIX,
     "g.seed: not a parameter of complete; its parameters: none"),
    ({"generator": "complete", "n": 5}, SIX, "g.n: the society has 6 agents; n is the society's"),
    ({"generator": "random_regular", "d": 2, "directed": True}, SIX,
     "g.directed: random_regular has no directed form; generators with one: cycle, star, path, "
     "erdos_renyi"),
    ({"generator": "watts_strogatz", "k": 3, "p": 0.1}, SIX,
     "g.k: must be even, at least 2 and below the society's size 6, got 3"),
    ({"generator": "watts_strogatz", "k": 6, "p": 0.1}, SIX, "g.k: must be even, at least 2"),
    ({"generator": "watts_strogatz", "k": 2, "p": 1.5}, SIX, "g.p: a probability in [0, 1]"),
    ({"generator": "barabasi_albert", "m": 6}, SIX, "g.m: must be at least 1 and below the"),
    ({"generator": "random_regular", "d": 3}, SIX[:5],
     "g.d: size × d must be even (each edge has two ends), got 5 × 3"),
    ({"generator": "random_regular", "d": 5}, SIX[:5], "g.d: must be at least 0 and below"),
    ({"generator": "grid", "rows": 2, "cols": 2}, SIX,
     "g.rows: rows × cols must be the society's size 6, got 2 × 2"),
    ({"generator": "cycle"}, ["solo"],
     "g: cycle makes the self-loop ['solo', 'solo'] for 1 agent(s); an agent does not read"),
    ({"generator": "grid", "rows": 0, "cols": 6}, SIX, "g.rows: rows × cols must be"),
    ({"generator": "complete", "file": "g.edges"}, SIX,
     "g: a graph mapping has exactly one of generator, file, schedule; got keys generator, file"),
    ({"shape": "ring"}, SIX, "g: a graph mapping has exactly one of generator, file, schedule"),
])
def test_bad_generator_is_one_line_naming_the_field(
        spec: dict[str, object], agents: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        graphs.build(agents, spec, "g")
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_generator_in_a_config_goes_through_the_plan() -> None:
    cfg = config(societies=[{"machinesom": "S2"}],
                 graph={"generator": "watts_strogatz", "k": 2, "p": 0.0})
    plan = build_plan(parse_config(cfg))
    assert plan.societies[0].graph.number_of_edges() == 3 * 2  # a ring of three
    bad = config(societies=[{"machinesom": "S2"},
                            {"machinesom": "S4", "graph": {"generator": "barabasi_albert"}}])
    with pytest.raises(ConfigError, match=r"^societies\[1\]\.graph\.m: barabasi_albert needs m"):
        build_plan(parse_config(bad))


# --- Files -------------------------------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "graphs"


def from_file(agents: list[str], path: Path | str, **spec: object) -> set[tuple[str, str]]:
    graph = graphs.build(agents, {"file": str(path), **spec}, "g")
    assert list(graph.nodes) == agents
    return set(graph.edges)


def test_fixture_files_by_index_and_by_name() -> None:
    assert from_file(AGENTS, FIXTURES / "line4.edges") == {("a", "b"), ("b", "c"), ("c", "d")}
    assert from_file(["ada", "bo", "cy"], FIXTURES / "hub3.graphml") == edges(
        "star", ["ada", "bo", "cy"])


@pytest.mark.parametrize("name", ["g.graphml", "g.gml", "g.edges", "g.edgelist", "g.txt"])
def test_written_by_networkx_read_back(tmp_path: Path, name: str) -> None:
    written = nx.DiGraph([("a", "b"), ("c", "b"), ("d", "a")])
    path = tmp_path / name
    {".graphml": nx.write_graphml, ".gml": nx.write_gml}.get(path.suffix, nx.write_edgelist)(
        written, path)
    assert from_file(AGENTS, path) == set(written.edges)


def test_undirected_files_give_both_directions(tmp_path: Path) -> None:
    undirected = nx.path_graph(4)  # integer nodes: agents by index
    nx.write_graphml(undirected, tmp_path / "p.graphml")
    nx.write_gml(undirected, tmp_path / "p.gml")
    nx.write_edgelist(undirected, tmp_path / "p.edges", data=False)
    both = {("a", "b"), ("b", "a"), ("b", "c"), ("c", "b"), ("c", "d"), ("d", "c")}
    assert from_file(AGENTS, tmp_path / "p.graphml") == both
    assert from_file(AGENTS, tmp_path / "p.gml") == both
    assert from_file(AGENTS, tmp_path / "p.edges") == {("a", "b"), ("b", "c"), ("c", "d")}
    assert from_file(AGENTS, tmp_path / "p.edges", directed=False) == both


def test_explicit_format_and_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "net.dat").write_text("b a 0.5\n")  # an extra column (a weight) is ignored
    monkeypatch.chdir(tmp_path)
    assert from_file(AGENTS, "net.dat", format="edgelist") == {("b", "a")}


def test_agents_the_file_leaves_out_read_nobody(tmp_path: Path) -> None:
    (tmp_path / "g.edges").write_text("a b\n")
    graph = graphs.build(AGENTS, {"file": str(tmp_path / "g.edges")}, "g")
    assert list(graph.predecessors("c")) == [] and list(graph.successors("d")) == []


@pytest.mark.parametrize(("name", "text", "spec", "message"), [
    ("g.edges", "a b\nb b\n", {}, "g.file: {path}:2: edge ['b', 'b'] is a self-loop"),
    ("g.graphml", None, {}, "g.file: {path}: edge ['c', 'c'] is a self-loop"),
    ("g.edges", "a z\n", {}, "g.file: {path}: node 'z' is not an agent of the society "
                             "(a, b, c, d); a file's node ids are all agent names or all "
                             "indices 0..3"),
    ("g.edges", "0 4\n", {}, "g.file: {path}: node '4' is neither an agent of the society "
                             "(a, b, c, d) nor an index 0..3"),
    ("g.edges", "1 a\n", {}, "g.file: {path}: node '1' is not an agent of the society"),
    ("g.edges", "0 x\n", {}, "g.file: {path}: node 'x' is neither an agent"),
    ("missing.edges", "", {}, "g.file: cannot read '{path}': No such file or directory"),
    ("g.graphml", "<graphml><graph", {}, "g.file: '{path}' is not a readable graphml file ("),
    ("g.gml", "graph [ node [", {}, "g.file: '{path}' is not a readable gml file ("),
    ("g.csv", "a b\n", {}, "g.format: suffix '.csv' is not a graph format; allowed: edgelist, "
                           "gml, graphml"),
    ("g.edges", "a b\n", {"format": "dot"}, "g.format: format 'dot' is not a graph format"),
    ("g.graphml", None, {"directed": True}, "g.directed: only an edge list takes directed"),
    ("g.edges", "a b\n", {"directed": "yes"}, "g.directed: true or false, got 'yes'"),
    ("g.edges", "a b\n", {"weights": True}, "g.weights: unknown key of a graph file; allowed: "
                                            "file, format, directed"),
])
def test_bad_file_is_one_line_naming_the_path(
        tmp_path: Path, name: str, text: str | None, spec: dict[str, object],
        message: str) -> None:
    path = tmp_path / name
    if text is None:
        nx.write_graphml(nx.DiGraph([("a", "b"), ("c", "c")]), path)
    elif name != "missing.edges":
        path.write_text(text)
    with pytest.raises(ConfigError) as err:
        graphs.build(AGENTS, {"file": str(path), **spec}, "g")
    text_ = str(err.value)
    assert text_.startswith(message.format(path=path)), text_
    assert "\n" not in text_


def test_digest_follows_the_edges_not_their_order(tmp_path: Path) -> None:
    one = graphs.from_edges(AGENTS, [["a", "b"], ["c", "d"]], "g")
    two = graphs.from_edges(AGENTS, [["c", "d"], ["a", "b"]], "g")
    assert graphs.graph_digest(one) == graphs.graph_digest(two)
    assert len(graphs.graph_digest(one)) == 64
    path = tmp_path / "g.edges"
    path.write_text("a b\n")
    before = graphs.graph_digest(graphs.build(AGENTS, {"file": str(path)}, "g"))
    path.write_text("a b\nb c\n")  # a changed file is a changed graph
    assert graphs.graph_digest(graphs.build(AGENTS, {"file": str(path)}, "g")) != before


# --- Schedules ---------------------------------------------------------------------------------

def test_a_plain_spec_is_the_same_graph_every_round() -> None:
    rounds = graphs.schedule(AGENTS, "ring", 3, "graph")
    assert len(rounds) == 3 and all(set(g.edges) == edges("ring") for g in rounds)
    assert graphs.schedule(AGENTS, "ring", 0, "graph") == ()
    with pytest.raises(nx.NetworkXError):  # frozen: rounds share it, nobody may change it
        rounds[0].add_edge("a", "c")


def test_schedule_gives_each_round_its_graph() -> None:
    spec = {"schedule": [
        {"rounds": [1, 3], "graph": "chain"},
        {"rounds": [2], "graph": {"generator": "cycle", "directed": True}},
        {"until": 5, "graph": [["a", "d"]]},
    ]}
    rounds = graphs.schedule(AGENTS, spec, 5, "graph")
    assert [g.number_of_edges() for g in rounds] == [3, 4, 3, 1, 1]
    assert set(rounds[1].edges) == {("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")}
    assert set(rounds[4].edges) == {("a", "d")}


@pytest.mark.parametrize(("entries", "message"), [
    ([{"rounds": [1, 2], "graph": "ring"}, {"rounds": [2, 3], "graph": "star"}],
     "s.schedule[1].rounds: round 2 is already covered by s.schedule[0]"),
    ([{"rounds": [0, 1, 2, 3], "graph": "ring"}],
     "s.schedule[0].rounds: round 0 is out of range; the debate rounds are 1..3"),
    ([{"rounds": [1, 2, 3], "graph": "ring"}, {"rounds": [4], "graph": "ring"}],
     "s.schedule[1].rounds: round 4 is out of range"),
    ([{"until": 4, "graph": "ring"}], "s.schedule[0].until: round 4 is out of range"),
    ([{"rounds": [1], "graph": "ring"}],
     "s.schedule: rounds 2, 3 are not covered; every debate round 1..3 needs exactly one graph"),
    ([{"until": 2, "graph": "ring"}, {"until": 2, "graph": "star"}],
     "s.schedule[1].until: a round after 2 (the latest covered so far), got 2"),
    ([{"rounds": [], "graph": "ring"}], "s.schedule[0].rounds: a non-empty list of round numbers"),
    ([{"rounds": [1, 2, 3]}], "s.schedule[0]: an entry is {rounds: [...], graph: ...}"),
    ([{"rounds": [1], "until": 3, "graph": "ring"}],
     "s.schedule[0]: an entry has graph and one of rounds or until; got keys rounds, until, graph"),
    ([{"until": 3, "graph": {"schedule": []}}], "s.schedule[0].graph: a schedule does not nest"),
    ([{"until": 3, "graph": {"generator": "wheel"}}],
     "s.schedule[0].graph.generator: unknown generator 'wheel'"),
    ([{"until": 3, "graph": [["a", "a"]]}], "s.schedule[0].graph[0]: edge ['a', 'a'] is a "
                                            "self-loop"),
    ([], "s.schedule: a non-empty list of {rounds, graph} entries"),
])
def test_bad_schedule_is_one_line_naming_the_entry(
        entries: list[object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        graphs.schedule(AGENTS, {"schedule": entries}, 3, "s")
    text = str(err.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_schedule_in_a_config_goes_through_the_plan() -> None:
    spec = {"schedule": [{"rounds": [1], "graph": "chain"}, {"until": 2, "graph": "complete"}]}
    plan = build_plan(parse_config(config(societies=[{"machinesom": "S2", "graph": spec}])))
    assert [g.number_of_edges() for g in plan.societies[0].schedule] == [2, 6]
    short = {"schedule": [{"rounds": [1], "graph": "chain"}]}
    with pytest.raises(ConfigError, match=r"^societies\[0\]\.graph\.schedule: round 2 is not "):
        build_plan(parse_config(config(societies=[{"machinesom": "S2", "graph": short}])))


def test_build_refuses_a_schedule_where_one_graph_is_meant() -> None:
    with pytest.raises(ConfigError, match=r"^g\.schedule: a per-round schedule is not allowed"):
        graphs.build(AGENTS, {"schedule": [{"until": 1, "graph": "ring"}]}, "g")


# --- Connectivity ------------------------------------------------------------------------------

def test_require_connected_passes_connected_graphs() -> None:
    for name in ("complete", "ring", "star", "chain"):
        graphs.require_connected(graphs.build(AGENTS, name, "g"), "g", "p")
    graphs.require_connected(graphs.build(AGENTS, "ring", "g"), "g", "p", strongly=True)
    graphs.require_connected(graphs.build(["solo"], "ring", "g"), "g", "p", strongly=True)


def test_require_connected_names_the_components_and_the_protocol() -> None:
    agents = [f"a{i}" for i in range(10)]
    split = graphs.from_edges(agents, [["a0", "a1"], ["a2", "a3"], ["a3", "a4"]], "g")
    with pytest.raises(ConfigError) as err:
        graphs.require_connected(split, "societies[0].graph", "mad")
    assert str(err.value) == ("societies[0].graph: the graph is disconnected (7 components: "
                              "{a0, a1}, {a2, a3, a4}, {a5}, …); protocol mad needs every agent "
                              "reachable")
    with pytest.raises(ConfigError, match=r"^g: the graph is not strongly connected \(4 strong "
                                          r"components: \{a\}, \{b\}, \{c\}, …\); protocol p"):
        graphs.require_connected(graphs.build(AGENTS, "chain", "g"), "g", "p", strongly=True)
