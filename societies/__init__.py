"""societies: societies of collaborating language models.

Agents with trait cards answer a task, then debate or reflect over rounds on a networkx
communication graph; any agent's model may itself be a token-level ensemble.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from societies.analysis.frames import RunFrames

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(run_dir: str | Path) -> RunFrames:
    """A run directory as pandas DataFrames (``turns``, ``units``, ``rounds``).

    ``societies.load("runs/x").turns.groupby("strategy")["correct"].mean()``; see
    ``societies.analysis.frames``. pandas is imported here, not with the package.
    """
    from societies.analysis.frames import load as _load

    return _load(run_dir)
