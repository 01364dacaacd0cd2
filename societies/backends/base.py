"""The chat backend contract: everything a debating agent needs from a model.

A backend turns a list of chat messages into one reply. Retries, caching, rate limits and token
accounting are *not* a backend's job: :class:`societies.backends.model.Model` adds them once,
for every backend.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    content: str


@dataclass(frozen=True)
class Settings:
    """Sampling settings for one call.

    Attributes:
        temperature: 0 means greedy decoding.
        max_tokens: the most completion tokens to generate.
        seed: sampling seed; the engine derives one per call so that reruns are exact.
        top_p: nucleus sampling mass (1 = off).
        top_k: keep only the ``top_k`` most likely tokens (0 = off).
        min_p: drop tokens below ``min_p`` times the top token's probability (0 = off).
        stop: strings that end the completion (not included in the text).

    Every backend applies these the same way and nothing else: no library default (such as
    llama-cpp-python's top_k 40 / min_p 0.05) is ever left in effect.
        logprobs: if set, ask for this many top log-probabilities per token (where supported).
    """

    temperature: float = 0.7
    max_tokens: int = 128
    seed: int | None = None
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    stop: tuple[str, ...] = ()
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Reply:
    """What a backend returns for one call.

    Attributes:
        text: the completion text.
        prompt_tokens: tokens in the prompt as the backend counted them.
        completion_tokens: tokens generated.
        finish_reason: "stop", "length" or a backend-specific reason.
        logprobs: per-token log-probabilities, when asked for and supported.
        retries: how many retries the wrapper needed (filled by the wrapper).
        cached: whether the reply came from the call cache (filled by the wrapper).
        latency_s: seconds the successful backend call took (filled by the wrapper; 0 when
            cached).
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    logprobs: tuple[TokenLogprob, ...] | None = None
    retries: int = 0
    cached: bool = False
    extra: dict[str, float] = field(default_factory=dict)
    latency_s: float = 0.0


class BackendError(Exception):
    """A call that failed. The engine records the unit as failed, and a re-run redoes it.

    Only :class:`ContextOverflowError` is part of a result: that agent's branch ends there.
    """


class TransientBackendError(BackendError):
    """A call that may succeed if retried (429, 5xx, timeout, dropped connection).

    Attributes:
        retry_after: seconds the server asked us to wait, if it said.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ContextOverflowError(BackendError):
    """The prompt plus the requested completion does not fit the model's context."""


class ChatBackend(abc.ABC):
    """Turns chat messages into a reply. Subclasses implement :meth:`generate`.

    ``identity`` names the model exactly (file hash, or model id + revision) so the call cache
    can key on it; two backends with the same identity must give the same reply for the same
    messages, settings and seed.
    """

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """A string that pins the model's weights and prompt format."""

    @abc.abstractmethod
    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        """Return the model's reply to ``messages``."""

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Fail fast, before a run writes anything, if the backend cannot serve at all.

        Remote backends check that the server answers; local ones have nothing to check
        (their files were already resolved when they were created).
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources (servers, sessions, model memory)."""
