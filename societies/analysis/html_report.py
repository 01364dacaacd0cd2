"""The report folder of one or more runs: Markdown and CSV tables, figures, a static HTML page.

:func:`write_report` writes ``report.md``, ``rounds.csv``, each figure as PNG and SVG, and
``report.html``: one self-contained file (no network resources; figures inlined as data URLs)
with the tables, figures, communication graphs, a side-by-side comparison when several runs are
given, and a transcript browser. Model replies are untrusted: the page carries them as JSON in a
``<script type="application/json">`` block and its script writes them with ``textContent`` only.
"""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

from societies.analysis.report_tables import (
    PAIRED_HEADERS,
    compare,
    group_tables,
    markdown,
    paired_tests,
    rounds_csv,
)
from societies.compact import answers, majority_answer, project
from societies.errors import MissingDependency, UserError
from societies.metrics import Summary, summarize
from societies.records import UnitRecord
from societies.storage import RunStore, write_atomic

MAX_UNITS = 2000  # transcripts embedded per run; the page says how many it left out
_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class RunData:
    """One run directory: its name, summary, saved effective settings and the first
    ``max_units`` transcripts. Other record passes stream from the file (bounded memory)."""

    name: str
    path: Path
    summary: Summary
    effective: dict[str, Any]
    n_units: int
    transcripts: list[dict[str, Any]]
    warnings: list[str]

    def records(self) -> Iterator[UnitRecord]:
        """The run's records, read one at a time (a new pass over the file on each call)."""
        return RunStore(self.path).iter_records()


def load_run(run_dir: Path, index: int = 0, max_units: int = MAX_UNITS) -> RunData:
    """Check a run directory, summarise its records and keep the first transcripts.

    Args:
        run_dir: the run directory.
        index: the run's position in the report (stored in each transcript).
        max_units: transcripts kept for the page.

    Raises:
        UserError: not a run directory, no records, an unreadable file or a bad record line.
    """
    store = RunStore(run_dir)
    warnings = store.check_readable()
    try:
        saved = json.loads(store.config_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{store.config_path}: not readable as JSON ({err})") from None
    summary = summarize(store.iter_records())
    transcripts = [transcript(u, index) for u in islice(store.iter_records(), max_units)]
    effective = saved.get("effective") if isinstance(saved, dict) else None
    n_units = sum(g.n_units + g.failed_units for g in summary.groups)
    return RunData(Path(run_dir).resolve().name or str(run_dir), Path(run_dir), summary,
                   effective if isinstance(effective, dict) else {}, n_units, transcripts,
                   warnings)


def majorities(unit: UnitRecord) -> list[str | None]:
    """The unit's majority answer per round (MachineSoM's rule; errors count as no answer)."""
    return [majority_answer(answers(row)) for row in project(unit).grid]


def flipped(unit: UnitRecord) -> bool:
    """Whether the unit's majority answer changed between two rounds (no majority counts too)."""
    return _changes(majorities(unit))


def _changes(values: list[str | None]) -> bool:
    return any(a != b for a, b in pairwise(values))


def transcript(unit: UnitRecord, run: int) -> dict[str, Any]:
    """One unit as plain JSON data for the page's transcript browser."""
    majority = majorities(unit)
    return {
        "run": run, "id": unit.unit_id, "society": unit.society,
        "strategy": unit.strategy or "-", "question": unit.question_id, "repeat": unit.repeat,
        "gold": unit.gold if isinstance(unit.gold, str) else " | ".join(unit.gold),
        "agents": unit.agents, "traits": unit.traits, "status": unit.status,
        "error": unit.error, "flipped": _changes(majority), "majority": majority,
        "rounds": [[{"agent": t.agent, "pattern": t.pattern, "reply": t.reply,
                     "raw": t.raw_answer, "answer": t.answer, "correct": t.correct,
                     "saw": t.saw, "finish": t.finish_reason, "error": t.error}
                    for t in r.turns] for r in unit.rounds],
    }


def _data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_figures(runs: Sequence[RunData], out: Path) -> list[dict[str, str]]:
    """Draw every figure into ``out`` (PNG and SVG); return title and SVG data URL of each."""
    from societies.analysis import figures as F

    made: list[tuple[str, str, Any]] = []
    many = len(runs) > 1
    per_run = [F.round_curves(run.records(), prefix=f"{run.name}:" if many else "")
               for run in runs]
    for metric in F.METRICS:
        curves = [c for drawn in per_run for c in drawn[metric]]
        made.append((metric, f"{metric.replace('_', ' ')} per round",
                     F.curve_figure(curves, metric)))
    if any(run.n_units for run in runs):
        summary = Summary(groups=[  # several runs: each group's label names its run
            g.model_copy(update={"society": f"{run.name}:{g.society}"}) if many else g
            for run in runs for g in run.summary.groups])
        made.append(("behaviours", "behaviour categories", F.behaviour_figure(summary)))
        made.append(("cost", "cost against accuracy", F.cost_figure(summary)))
    for i, run in enumerate(runs):
        for society in run.effective.get("societies", []):
            name = f"graph-{i}-{society.get('name', '?')}" if many else \
                f"graph-{society.get('name', '?')}"
            made.append((name, f"communication graph of {society.get('name', '?')}"
                         + (f" ({run.name})" if many else ""), F.graph_figure(society)))
    made += _influence_figures(runs)
    shown = []
    for name, title, fig in made:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        _, svg = F.save(fig, out, safe)
        shown.append({"name": safe, "title": title, "src": _data_url(svg, "image/svg+xml")})
    return shown


def _influence_figures(runs: Sequence[RunData]) -> list[tuple[str, str, Any]]:
    """Per run, adoptions source trait → adopter trait summed over its groups.

    Adoptions are debate turns that took up an answer they were shown
    (``societies.analysis.social.trait_influence_matrix``).
    """
    from societies.analysis import figures as F
    from societies.analysis.social import trait_influence_matrix
    from societies.compact import CompactUnit, project

    made = []
    for i, run in enumerate(runs):
        groups: dict[tuple[str, str], list[CompactUnit]] = {}
        for u in run.records():  # compact projections: no reply texts held
            groups.setdefault((u.society, u.strategy), []).append(project(u))
        total: dict[str, dict[str, int]] = {}
        for units in groups.values():  # traits are positions within one society: per group
            for source, row in trait_influence_matrix(units).items():
                for adopter, count in row.items():
                    cell = total.setdefault(source, {})
                    cell[adopter] = cell.get(adopter, 0) + count
        if not total or not any(v for row in total.values() for v in row.values()):
            continue
        traits = sorted(set(total) | {a for row in total.values() for a in row})
        values = [[total.get(s, {}).get(a, 0) for a in traits] for s in traits]
        name = f"influence-{i}" if len(runs) > 1 else "influence"
        made.append((name, "trait influence: adoptions" + (f" ({run.name})" if len(runs) > 1
                                                             else ""),
                     F.heatmap_figure(traits, traits, values,
                                      "adoptions: source trait → adopter trait")))
    return made


def page_data(runs: Sequence[RunData]) -> dict[str, Any]:
    """The JSON the transcript browser reads: run names and each run's unit transcripts."""
    return {"runs": [r.name for r in runs],
            "units": [t for r in runs for t in r.transcripts],
            "left_out": sum(r.n_units - len(r.transcripts) for r in runs)}


def script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>`` or ``<!--`` can appear."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")


def write_report(run_dirs: Sequence[Path], out: Path, max_units: int = MAX_UNITS) -> Path:
    """Write the report of one or more runs into ``out``; return the path of ``report.html``.

    Args:
        run_dirs: run directories; two or more add a side-by-side comparison.
        out: the folder to write (created if missing), e.g. ``RUN/report``.
        max_units: transcripts embedded in the page per run (the first ones in the file).

    Raises:
        UserError: no run given, or one is not a readable run directory.
    """
    import jinja2

    if not run_dirs:
        raise UserError("report: give at least one run directory")
    for module in ("matplotlib", "pandas", "scipy"):  # the figures and the statistics
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingDependency("the report folder", "report", module) from None
    # Every input error surfaces before anything is written.
    runs = [load_run(Path(d), i, max_units) for i, d in enumerate(run_dirs)]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.md", markdown(runs))
    write_atomic(out / "rounds.csv", rounds_csv(runs))
    shown = write_figures(runs, out)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    html = env.get_template("report.html.j2").render(
        runs=[{"name": r.name, "path": str(r.path), "n_units": r.n_units,
               "warnings": r.warnings, "tables": group_tables(r.summary)} for r in runs],
        figures=shown, comparison=compare(runs), names=[r.name for r in runs],
        paired=paired_tests(runs), paired_headers=PAIRED_HEADERS,
        data_json=script_json(page_data(runs)), max_units=max_units)
    path = out / "report.html"
    write_atomic(path, html)
    return path
