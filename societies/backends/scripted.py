"""A scripted backend for testing the engine's logic: fixed replies, no model.

The reply for a call is chosen by the round, counted as the number of assistant messages already
in the conversation (round 0 has none). Give each agent its own scripted model to script agents
separately. Every call is logged in :attr:`ScriptedBackend.calls` so tests can check exactly what
each agent was shown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from societies.backends.base import ChatBackend, Message, Reply, Settings


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
        self.calls: list[tuple[Message, ...]] = []

    @property
    def identity(self) -> str:
        return f"scripted:{id(self)}"

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
