"""Communication graphs: the edges each named graph promises (u → v: v reads u), bad edge lists."""

from __future__ import annotations

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
