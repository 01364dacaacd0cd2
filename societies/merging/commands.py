"""The ``finetune`` and ``merge`` subcommands of ``societies`` (added to its parser)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _finetune(args: argparse.Namespace) -> int:
    from societies.merging.finetune import finetune_file

    out = finetune_file(args.config, out=args.out)
    print(f"fine-tuned checkpoint: {out} (see {out / 'finetune.json'})")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from societies.merging.merge import merge_file

    out = merge_file(args.config, out=args.out)
    print(f"merged checkpoint: {out} (see {out / 'merge.json'})")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``finetune CONFIG`` and ``merge CONFIG`` to the subparsers ``sub``."""
    tune = sub.add_parser("finetune", help="fine-tune a variant of a model on training data")
    tune.add_argument("config", type=Path)
    tune.add_argument("--out", type=Path, help="checkpoint folder (default: config output)")
    tune.set_defaults(func=_finetune)
    merge = sub.add_parser("merge", help="merge checkpoints with mergekit")
    merge.add_argument("config", type=Path)
    merge.add_argument("--out", type=Path, help="checkpoint folder (default: config output)")
    merge.set_defaults(func=_merge)
