"""The LLM-call cache: content-addressed replies in SQLite, so re-runs are free and exact.

The key is a SHA-256 over the backend's identity (file hash, or model id + revision), the
messages and every sampling setting, seed included. The engine derives each call's seed from
the question, agent and strategy prefix, so a re-run of a finished config hits the cache for
every call and reproduces every transcript byte for byte.

The database lives in the user cache directory (``$SOCIETIES_CACHE_DIR`` overrides it). Only
replies are stored: no API keys, no headers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from societies.backends.base import Message, Reply, Settings, TokenLogprob


def default_cache_path() -> Path:
    """``$SOCIETIES_CACHE_DIR/calls.sqlite``, else the platform's user cache directory."""
    root = os.environ.get("SOCIETIES_CACHE_DIR")
    if root:
        return Path(root) / "calls.sqlite"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("societies")) / "calls.sqlite"


def cache_key(identity: str, messages: Sequence[Message], settings: Settings) -> str:
    """The content address of one call."""
    payload = {
        "identity": identity,
        "messages": [[m.role, m.content] for m in messages],
        "settings": dataclasses.asdict(settings),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _encode(reply: Reply) -> str:
    data = dataclasses.asdict(reply)
    data.pop("retries")
    data.pop("cached")
    data.pop("latency_s")  # a property of that call, not of the reply
    return json.dumps(data)


def _decode(text: str) -> Reply:
    data = json.loads(text)
    if data.get("logprobs") is not None:
        data["logprobs"] = tuple(
            TokenLogprob(t["token"], t["logprob"], tuple(tuple(x) for x in t["top"]))
            for t in data["logprobs"]
        )
    return Reply(**data, cached=True)


class CallCache:
    """A SQLite table of replies keyed by :func:`cache_key`.

    Args:
        path: database file (created with its folder if missing).

    Example:
        >>> import tempfile
        >>> cache = CallCache(Path(tempfile.mkdtemp()) / "c.sqlite")
        >>> key = cache_key("m", [Message("user", "hi")], Settings(seed=1))
        >>> cache.put(key, Reply("hello", 3, 1))
        >>> cache.get(key).text, cache.get(key).cached
        ('hello', True)
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection used from the event loop thread only; WAL lets parallel runs share it.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, reply TEXT)")
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Reply | None:
        """The cached reply, or None."""
        row = self._db.execute("SELECT reply FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return _decode(row[0])

    def put(self, key: str, reply: Reply) -> None:
        """Store a reply (the first one stored for a key wins)."""
        self._db.execute("INSERT OR IGNORE INTO calls VALUES (?, ?)", (key, _encode(reply)))

    def close(self) -> None:
        """Close the database."""
        self._db.close()
