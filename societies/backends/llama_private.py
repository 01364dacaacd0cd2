"""What ``llamacpp_batch`` takes from llama-cpp-python's private API, in one place.

The batched backend drives llama.cpp below llama-cpp-python's public surface: the version check
names the releases that have every private name it uses, and :class:`Capture` reuses
llama-cpp-python's own request preparation (chat template, stops, tokenization, seed) so that
prompts and sampling stay identical to the ``llamacpp`` backend's.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Sequence
from typing import Any

from llama_cpp import Llama

from societies.errors import ConfigError

# The llama-cpp-python releases with every private name used here (llama_n_ctx_seq, the newest,
# came in 0.3.17); tested with 0.3.36. The same range is pinned in pyproject.toml.
SUPPORTED = ">=0.3.17,<0.4"
_REQUIRED = (
    "llama_cpp.llama_n_ctx_seq", "llama_cpp.llama_batch_init", "llama_cpp.llama_batch_free",
    "llama_cpp.llama_decode", "llama_cpp.llama_get_logits_ith", "llama_cpp.llama_vocab_is_eog",
    "llama_cpp.llama_memory_seq_rm", "llama_cpp.llama_memory_seq_cp",
    "llama_cpp.llama_context_params.kv_unified", "llama_cpp.llama_context_params.n_seq_max",
    "llama_cpp._internals.LlamaContext", "llama_cpp.Llama._create_completion",
    "llama_cpp.Llama._init_sampler", "llama_cpp.Llama.set_seed",
)

def _has(dotted: str) -> bool:
    module, *names = dotted.split(".")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError:
        return False
    for i, name in enumerate(names):
        if isinstance(obj, type) and name in dict(getattr(obj, "_fields_", ())):
            continue  # a ctypes struct field
        if not hasattr(obj, name):
            try:  # a submodule not imported yet (llama_cpp._internals)
                obj = importlib.import_module(".".join([module, *names[: i + 1]]))
            except ImportError:
                return False
            continue
        obj = getattr(obj, name)
    return True


def require_llama_cpp() -> None:
    """Raise ConfigError in one line if the installed llama-cpp-python lacks what we use."""
    missing = [name for name in _REQUIRED if not _has(name)]
    if missing:
        try:
            found = importlib.metadata.version("llama-cpp-python")
        except importlib.metadata.PackageNotFoundError:
            found = "unknown"
        raise ConfigError(
            f"llamacpp_batch needs llama-cpp-python {SUPPORTED} (found {found}, which has no "
            f"{missing[0]}): pip install 'llama-cpp-python{SUPPORTED}'")


class Captured(Exception):
    """Raised where decoding would start, carrying the prompt tokens and sampling params."""

    def __init__(self, tokens: list[int], params: dict[str, Any]) -> None:
        self.tokens, self.params = tokens, params


class Capture:
    """Stands in for ``Llama``: runs its request preparation, and stops where decoding starts.

    The chat handler renders the template and adds its stops, ``_create_completion`` tokenizes
    and sets the seed; ``generate`` is where we take over. Reusing that code rather than copying
    it keeps prompts and sampling identical to ``llamacpp`` for every chat format.
    """

    def __init__(self, llm: Llama) -> None:
        self._llm = llm
        self._n_ctx = 1 << 30  # Llama's length check would use its own tiny context
        self.stop: str | list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def create_completion(self, *args: Any, **kwargs: Any) -> Any:
        return Llama.create_completion(self, *args, **kwargs)  # type: ignore[arg-type]

    def _create_completion(self, **kwargs: Any) -> Any:
        self.stop = kwargs.get("stop") or []
        return Llama._create_completion(self, **kwargs)  # type: ignore[arg-type]

    def generate(self, tokens: Sequence[int], **params: Any) -> Any:
        raise Captured(list(tokens), params)
