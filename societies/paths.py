"""Where the data folders (agents/, prompts/, experiments/) live.

In a wheel they are copied to ``societies/_assets/``; in a source checkout or editable install
they sit at the repository root, next to the package. Both resolve through :func:`asset_dir`.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def asset_dir(name: str) -> Path:
    """Return the folder holding the shipped ``agents``, ``prompts`` or ``experiments`` data.

    Example:
        >>> (asset_dir("prompts") / "debate.j2").exists()
        True
    """
    for candidate in (_PACKAGE / "_assets" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the societies installation has no {name}/ folder")
