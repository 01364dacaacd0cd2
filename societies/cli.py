"""The `societies` command: run, list, schema; report, show, stats, export (cli_analysis);
finetune, merge (societies.merging.commands).

Bad input ends with one line on stderr naming what and where, and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from societies.errors import UserError

if TYPE_CHECKING:
    from societies.metrics import Summary


def _run(args: argparse.Namespace) -> int:
    from societies.config import load_config
    from societies.plan import build_plan
    from societies.report import format_table
    from societies.runner import Run
    from societies.storage import RunStore

    config = load_config(args.config)
    if args.no_cache:
        config = config.model_copy(update={"run": config.run.model_copy(update={"cache": False})})
    if args.executor:  # an execution setting: resuming on the other executor is the same run
        config = config.model_copy(update={"run": config.run.model_copy(
            update={"executor": args.executor})})
    plan = build_plan(config)
    out = args.out or config.output or f"runs/{config.name}"
    store = RunStore(out)
    run = Run(plan, store, limit=args.limit)  # loads task and models: may still refuse input
    fresh = not store.config_path.exists()

    done: list[Summary] = []

    async def checked_run() -> None:
        await run.check()  # an unreachable server stops here, before anything is written
        run.prepare()
        # Kept out of the coroutine's result: asyncio.run's clean-up may repr the main task
        # with its result (seconds for a 1,000-agent summary).
        done.append(await run.execute(progress=not args.quiet))

    try:
        asyncio.run(checked_run())
    except UserError:
        # e.g. a wrong model name, known only from the first reply: leave no directory behind
        # that would later refuse the corrected config.
        if fresh and not (store.records_path.exists() and store.records_path.stat().st_size):
            shutil.rmtree(store.root, ignore_errors=True)
        raise
    print(format_table(done[0]))
    print(f"\nrun directory: {store.root}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from societies.backends.registry import BACKENDS, BUNDLED_ALIASES
    from societies.cards import available_cards, load_card
    from societies.tasks import TASKS

    print("trait and role cards:")
    for name in available_cards():
        card = load_card(name)
        print(f"  {name:18} {card.kind:6} {card.description}")
    print("tasks:      " + ", ".join(sorted(TASKS)))
    print("backends:   " + ", ".join(sorted(BACKENDS)))
    print("models:     " + ", ".join(sorted(BUNDLED_ALIASES)) + " (bundled)")
    print("strategies: one symbol per round, 0 = debate, 1 = reflection (e.g. 001); "
          "[..] gives one symbol per agent (e.g. 0[100]1); 'all' = every 0/1 combination")
    from societies.graph_generators import GENERATORS
    from societies.protocols import PROTOCOLS

    print("graphs:     complete, ring, star, chain, an edge list [[from, to], ...], "
          "{generator: NAME, ...}, {file: PATH} or {schedule: [...]}")
    print("generators: " + ", ".join(sorted(GENERATORS)))
    print("protocols:  " + ", ".join(sorted(PROTOCOLS)))
    return 0


def _schema(args: argparse.Namespace) -> int:
    from societies.records import UnitRecord

    print(json.dumps(UnitRecord.model_json_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="societies", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment config (resumes if interrupted)")
    run.add_argument("config", type=Path)
    run.add_argument("--out", type=Path, help="run directory (default: config output)")
    run.add_argument("--limit", type=int, help="only the first N questions")
    run.add_argument("--no-cache", action="store_true", help="bypass the LLM-call cache")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--executor", choices=("local", "ray"),
                     help="where questions run (default: the config's run.executor)")
    run.set_defaults(func=_run)
    from societies.cli_analysis import add_commands

    add_commands(sub)
    from societies.merging.commands import add_commands as add_merging_commands

    add_merging_commands(sub)
    sub.add_parser("list", help="list cards, tasks, backends, strategies").set_defaults(func=_list)
    sub.add_parser("schema", help="print the record JSON Schema").set_defaults(func=_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `societies` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "limit", None) is not None and args.limit < 1:
        print("societies: error: --limit must be a positive number of questions", file=sys.stderr)
        return 2
    try:
        code: int = args.func(args)
        return code
    except UserError as err:
        print(f"societies: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        # The runner has flushed every finished unit; the same command resumes from there.
        print("societies: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
