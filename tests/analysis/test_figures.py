"""Figures: the plotted data read back from the Figure and from the saved SVG."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from societies.analysis import figures as F
from societies.metrics import summarize
from tests.report_fixtures import AGENTS, EDGES, standard_units


def test_accuracy_curves_one_line_per_strategy_with_intervals(tmp_path: Path) -> None:
    curves = F.round_curves(standard_units())["mean_accuracy"]
    assert [c.label for c in curves] == ["S3/00", "S3/11"]
    # S3/00: 3/9, 5/9, 6/9 of agents right; S3/11: 5/6, 4/6, 3/6.
    assert curves[0].value == pytest.approx((3 / 9, 5 / 9, 6 / 9))
    assert curves[1].value == pytest.approx((5 / 6, 4 / 6, 3 / 6))
    for c in curves:
        for lo, v, hi in zip(c.low, c.value, c.high, strict=True):
            assert lo <= v + 1e-9 and v <= hi + 1e-9
    assert curves[0].low[0] < curves[0].high[0]  # units differ, so the interval is not a point
    fig = F.curve_figure(curves, "mean_accuracy")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["S3/00", "S3/11"]
    assert list(lines[0].get_ydata()) == pytest.approx([3 / 9, 5 / 9, 6 / 9])
    assert ax.get_xlabel() == "round" and "accuracy" in ax.get_ylabel()
    assert len(ax.collections) == 2  # one interval band per line
    _, svg = F.save(fig, tmp_path, "accuracy")
    text = svg.read_text()
    assert len(re.findall(r'<g id="line2d_\d+">\s*<path d="M[^"]*L', text)) >= 2
    for label in ("round", "S3/00", "S3/11", "mean accuracy"):
        assert label in text


def test_consensus_and_conformity_values() -> None:
    units = standard_units()
    clusters = F.round_curves(units)["n_clusters"]
    # S3/00 round 0: q0 {A,B}, q1 {B,A}, q2 {B,C}: 2 each; then 2,1,1 and 1,1,1.
    assert clusters[0].value == pytest.approx((2.0, 4 / 3, 1.0))
    conformity = F.round_curves(units)["conformity"]
    # Round 1 of S3/00 follows round-0 majorities A, B, B: 3 + 1 + 3 of 9 agent-steps.
    assert conformity[0].value[0] != conformity[0].value[0]  # NaN in round 0
    assert conformity[0].value[1] == pytest.approx(7 / 9)
    with pytest.raises(ValueError, match="unknown metric"):
        F.round_curves(units, ["speed"])


def test_behaviour_bars_cost_points_and_graph(tmp_path: Path) -> None:
    summary = summarize(standard_units())
    fig = F.behaviour_figure(summary)
    ax = fig.axes[0]
    # One bar container per behaviour; heights are the groups' shares.
    heights = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    assert heights["stable correct"] == pytest.approx([1 / 3, 1 / 2])
    assert heights["correcting"] == pytest.approx([1 / 3, 0])
    assert heights["degrading"] == pytest.approx([0, 1 / 2])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["S3/00", "S3/11"]
    cost = F.cost_figure(summary).axes[0]
    offsets = [tuple(c.get_offsets()[0]) for c in cost.collections]
    # S3/00 per unit: (100+200+300 prompt) × 3 agents + 10 completion × 9 turns = 1890.
    assert offsets[0] == pytest.approx((1890.0, 2 / 3))
    assert cost.get_xlabel().startswith("tokens per unit")
    graph = F.graph_figure({"name": "S3", "edges": EDGES, "agents": [{"name": a} for a in AGENTS]})
    _, svg = F.save(graph, tmp_path, "graph")
    text = svg.read_text()
    for name in AGENTS:
        assert f">{name}<" in text
    # Four directed edges, each drawn as an arrow patch.
    assert len(re.findall(r'<g id="patch_\d+">', text)) >= 4


def test_round_curves_read_a_stream_once() -> None:
    curves = F.round_curves(iter(standard_units()), ["majority_accuracy"])
    # Majority right: S3/00 rounds 1/3, 2/3, 2/3; S3/11 1, 1/2, 1/2.
    assert curves["majority_accuracy"][0].value == pytest.approx((1 / 3, 2 / 3, 2 / 3))
    assert curves["majority_accuracy"][1].value == pytest.approx((1, 1 / 2, 1 / 2))


def test_heatmap_cells_and_labels(tmp_path: Path) -> None:
    fig = F.heatmap_figure(["calm", "loud"], ["calm", "loud"], [[0, 3], [5, 1]], "adoptions")
    ax = fig.axes[0]
    assert ax.images[0].get_array().tolist() == [[0, 3], [5, 1]]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["calm", "loud"]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "1", "3", "5"]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("source trait", "adopter trait")
