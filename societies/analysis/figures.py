"""Figures of a run: per-round curves with bootstrap intervals, behaviours, cost, graphs.

Every function returns a matplotlib ``Figure`` (Agg backend, nothing is shown), so tests can
read the plotted data back; :func:`save` writes it as PNG and SVG. matplotlib and numpy are
imported here only, and this module is only imported by the report, so ``import societies``
stays light.

The 95% intervals are ``societies.analysis.stats.intervals``: percentile bootstraps over
questions (repeats pooled), as in the statistics tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: never open a window, work without a display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from societies.analysis.intervals import intervals
from societies.metrics import BEHAVIOURS, Summary
from societies.records import UnitRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Keep text as <text> in the SVG (searchable, and what tests read), not as glyph paths.
matplotlib.rcParams["svg.fonttype"] = "none"
matplotlib.rcParams["svg.hashsalt"] = "societies"  # stable ids: the same run, the same file

METRICS = {  # name (as in RoundMetrics and societies.analysis.stats) -> axis label
    "mean_accuracy": "mean accuracy (fraction of agents correct)",
    "majority_accuracy": "majority accuracy (fraction of units)",
    "n_clusters": "distinct answers (consensus: lower is closer)",
    "conformity": "conformity (fraction following the previous majority)",
}
N_BOOT = 1000
Row = tuple[str, str, int, str, float, float, float]  # society, strategy, round, metric, m, lo, hi


@dataclass(frozen=True)
class Curve:
    """One group's per-round values of one metric, with 95% bootstrap bounds (NaN: undefined)."""

    label: str
    value: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]


def _intervals(records: Iterable[UnitRecord], metrics: Sequence[str], seed: int) -> list[Row]:
    frame = intervals(records, n_boot=N_BOOT, seed=seed, metrics=list(metrics))
    return [(str(r.society), str(r.strategy), int(r.round), str(r.metric), float(r.mean),
             float(r.lo), float(r.hi)) for r in frame.itertuples()]


def round_curves(records: Iterable[UnitRecord], metrics: Sequence[str] = tuple(METRICS),
                 seed: int = 0, prefix: str = "") -> dict[str, list[Curve]]:
    """Per metric, one curve per (society, strategy) group: value per round, 95% interval.

    The intervals come from ``societies.analysis.stats.intervals`` (questions resampled, repeats
    pooled), so figures and tables show the same bounds.

    Args:
        records: unit records; failed units are left out, as in the metrics.
        metrics: names from ``METRICS``.
        seed: the bootstrap's random seed (the same records give the same bounds).
        prefix: put before each label (the run's name when several runs are drawn).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; one of {', '.join(METRICS)}")
    n_rounds: dict[tuple[str, str], int] = {}

    def scored() -> Iterator[UnitRecord]:  # streams: a large run is never held at once
        for u in records:
            if u.status == "ok":
                key = (u.society, u.strategy)
                n_rounds[key] = max(n_rounds.get(key, 0), len(u.rounds))
                yield u

    rows = _intervals(scored(), metrics, seed)
    nan = float("nan")
    table = {m: {g: [[nan, nan, nan] for _ in range(n)] for g, n in sorted(n_rounds.items())}
             for m in metrics}
    for society, strategy, k, metric, value, lo, hi in rows:
        if (society, strategy) in n_rounds and k < n_rounds[(society, strategy)]:
            table[metric][(society, strategy)][k] = [value, lo, hi]
    return {m: [Curve(f"{prefix}{soc}/{strat or '-'}", *(tuple(p[i] for p in points)
                                                         for i in range(3)))
                for (soc, strat), points in groups.items()]
            for m, groups in table.items()}


def curve_figure(curves: Sequence[Curve], metric: str) -> Figure:
    """One line per group over rounds, a shaded band for its 95% interval."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for c in curves:
        x = np.arange(len(c.value))
        (line,) = ax.plot(x, c.value, marker="o", label=c.label)
        ax.fill_between(x, c.low, c.high, alpha=0.2, color=line.get_color(), linewidth=0)
    ax.set_xlabel("round")
    ax.set_ylabel(METRICS[metric])
    ax.set_title(f"{metric.replace('_', ' ')} per round (95% bootstrap interval)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if curves:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def behaviour_figure(summary: Summary) -> Figure:
    """Stacked bars: each group's units split into the behaviour categories."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    labels = [f"{g.society}/{g.strategy or '-'}" for g in summary.groups]
    bottom = np.zeros(len(labels))
    for b in BEHAVIOURS:
        share = np.array([g.behaviours.get(b, 0.0) for g in summary.groups])
        ax.bar(labels, share, bottom=bottom, label=b.replace("_", " "))
        bottom += share
    ax.set_xlabel("society/strategy")
    ax.set_ylabel("share of units")
    ax.set_title("behaviour of the majority over rounds")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig


def cost_figure(summary: Summary) -> Figure:
    """One point per group: tokens spent per unit against final-round majority accuracy."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for g in summary.groups:
        if not g.rounds or not g.n_units:
            continue
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in g.rounds) / g.n_units
        acc = g.rounds[-1].majority_accuracy
        ax.scatter([tokens], [acc], label=f"{g.society}/{g.strategy or '-'}")
    ax.set_xlabel("tokens per unit (prompt + completion)")
    ax.set_ylabel("majority accuracy, last round")
    ax.set_title("cost against accuracy")
    if summary.groups:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def graph_figure(society: Mapping[str, Any]) -> Figure:
    """A society's communication graph, from ``config.json``'s ``effective.societies[i]``."""
    import networkx as nx

    names = [a["name"] if isinstance(a, Mapping) else str(a) for a in society.get("agents", [])]
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    # Edges name agents (an index is read as a position in the agents list).
    graph.add_edges_from(tuple(names[e] if isinstance(e, int) and e < len(names) else str(e)
                               for e in edge) for edge in society.get("edges", []))
    fig, ax = plt.subplots(figsize=(4.0, 4.0))
    nx.draw_networkx(graph, pos=nx.circular_layout(graph), ax=ax, node_color="#cfe3ff",
                     node_size=1200, font_size=8, arrows=True)
    ax.set_title(f"society {society.get('name', '?')}: who sees whom")
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def heatmap_figure(rows: Sequence[str], cols: Sequence[str], values: Sequence[Sequence[float]],
                   title: str, ylabel: str = "source trait", xlabel: str = "adopter trait"
                   ) -> Figure:
    """A labelled heat map (trait × trait influence), each cell's value written in it."""
    fig, ax = plt.subplots(figsize=(5.0, 4.2))
    image = ax.imshow(np.array(values, float), cmap="viridis")
    ax.set_xticks(range(len(cols)), list(cols), rotation=30)
    ax.set_yticks(range(len(rows)), list(rows))
    for (i, j), v in np.ndenumerate(np.array(values, float)):
        ax.text(j, i, f"{v:g}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def save(fig: Figure, out: Path, name: str) -> tuple[Path, Path]:
    """Write ``name.png`` and ``name.svg`` into ``out``; close the figure."""
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    fig.savefig(png, dpi=100)
    fig.savefig(svg, metadata={"Date": None})
    plt.close(fig)
    return png, svg
