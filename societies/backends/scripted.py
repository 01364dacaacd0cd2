"""A scripted backend for testing the engine's logic: fixed replies, no model.

The reply for a call is chosen by the round, counted as the number of assistant messages already
in the conversation (round 0 has none). Give each agent its own scripted model to script agents
separately. Every call is logged in :attr:`ScriptedBackend.calls` so tests can check exactly what
each agent was shown.

Its identity is what decides its replies: a hash of the reply list, or of a function's
qualified name, code and captured values. Two scripted models with the same script therefore
share call-cache entries, as two llama.cpp backends on the same file do.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from types import CodeType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from societies.backends.base import ChatBackend, Message, Reply, Settings

# Options that change how fast replies come, never what they are: the per-call sleep.
EXECUTION_OPTIONS: frozenset[str] = frozenset({"delay"})


def script_identity(replies: Sequence[str] | Callable[..., str]) -> str:
    """A hash of what decides a script's replies (see the module doc).

    For a function: its qualified name, its bytecode, constants and names, and the reprs of
    its defaults and captured values. A captured object without a value-based repr shows its
    address, so such scripts are told apart rather than wrongly shared.

    Example:
        >>> script_identity(["(A)", "(B)"]) == script_identity(("(A)", "(B)"))
        True
        >>> script_identity(["(A)"]) == script_identity(["(B)"])
        False
    """
    if not callable(replies):
        blob = json.dumps(["list", list(replies)])
    else:
        fn: Any = replies
        code = getattr(fn, "__code__", None) or getattr(type(fn).__call__, "__code__", None)
        cells = [c.cell_contents for c in getattr(fn, "__closure__", None) or ()]
        blob = repr(["callable", getattr(fn, "__qualname__", type(fn).__qualname__),
                     _code(code) if code else repr(fn), getattr(fn, "__defaults__", None), cells])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _code(code: CodeType) -> list[Any]:
    # Nested code objects (inner functions, comprehensions) would repr with their address.
    return [code.co_code.hex(), code.co_names,
            [_code(c) if isinstance(c, CodeType) else c for c in code.co_consts]]


class Options(BaseModel):
    """Config options: ``replies[i]`` answers round ``i`` (the last one repeats)."""

    model_config = ConfigDict(extra="forbid")
    replies: list[str] = Field(min_length=1)
    delay: float = Field(0.0, ge=0, description="seconds to sleep per call (concurrency tests)")


class ScriptedBackend(ChatBackend):
    """Replies from a script instead of a model.

    Args:
        replies: reply per round, or a function from the messages to the reply text.
        delay: seconds each call sleeps, to let concurrent calls overlap.

    Example:
        >>> import asyncio
        >>> b = ScriptedBackend(["(A)", "(B)"])
        >>> asyncio.run(b.generate([Message("user", "Q?")], Settings())).text
        '(A)'
    """

    def __init__(
        self, replies: Sequence[str] | Callable[[Sequence[Message]], str], delay: float = 0.0
    ) -> None:
        self._replies = replies if callable(replies) else list(replies)
        self._delay = delay
        self._identity = f"scripted:{script_identity(self._replies)}"
        self.calls: list[tuple[Message, ...]] = []

    @property
    def identity(self) -> str:
        return self._identity

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        self.calls.append(tuple(messages))
        if self._delay:
            await asyncio.sleep(self._delay)
        if callable(self._replies):
            text = self._replies(messages)
        else:
            turn = sum(m.role == "assistant" for m in messages)
            text = self._replies[min(turn, len(self._replies) - 1)]
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        return Reply(text, prompt_tokens=prompt_tokens, completion_tokens=len(text.split()))


def create(options: Options, resolver: Any) -> ScriptedBackend:
    """Build a scripted backend from config options."""
    return ScriptedBackend(options.replies, options.delay)
