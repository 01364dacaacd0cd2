"""Model identities: what pins a model's replies, for the call cache and the run identity.

A GGUF model's identity is the SHA-256 of the *whole* file. Hashing 270 MB takes about a
second, so digests are remembered in ``$SOCIETIES_CACHE_DIR/digests.json`` keyed by the file's
resolved path, size and modification time: a file is hashed once until it changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

_LOCK = threading.Lock()
_MEMO: dict[str, str] = {}


def _digest_cache() -> Path:
    from societies.backends.cache import default_cache_path  # the same directory as the calls

    return default_cache_path().with_name("digests.json")


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's whole content (hex), hashed once per (path, size, mtime).

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(delete=False) as fh:
        ...     _ = fh.write(b"abc")
        >>> file_digest(fh.name)[:12]
        'ba7816bf8f01'
    """
    file = Path(path).resolve()
    st = file.stat()
    key = f"{file}|{st.st_size}|{st.st_mtime_ns}"
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
        store = _digest_cache()
        try:
            known: dict[str, str] = json.loads(store.read_text())
        except (OSError, ValueError):
            known = {}
        if key not in known:
            digest = hashlib.sha256()
            with file.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            known[key] = digest.hexdigest()
            try:
                store.parent.mkdir(parents=True, exist_ok=True)
                tmp = store.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(known))
                os.replace(tmp, store)
            except OSError:
                pass  # a read-only cache directory only costs re-hashing next time
        _MEMO[key] = known[key]
        return known[key]


def gguf_identity(path: Path, prompt_format: str = "chat", flash_attn: bool = False) -> str:
    """The identity of a GGUF model as loaded: file name, whole-file hash, prompt format, kernel.

    ``path`` is the file actually loaded (after any ``requantize`` conversion), so a converted
    model has its own identity. Flash attention rounds differently, so it is part of it too.
    Every llama.cpp backend (chat, batched, ensemble member, Co-LLM base) uses this function.
    """
    fa = ":fa" if flash_attn else ""
    return f"llamacpp:{path.name}:{file_digest(path)[:16]}:{prompt_format}{fa}"
