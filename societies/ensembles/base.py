"""The token-level contract: a model that holds one sequence in its own KV cache.

Only token-level methods (ensembles, Co-LLM, contrastive decoding) need it. A decoder over
several TokenBackends is itself a :class:`~societies.backends.base.ChatBackend`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from societies.backends.base import Message


class TokenBackend(abc.ABC):
    """A model that can be stepped one token at a time.

    The backend holds exactly one sequence. ``reset`` starts a new one from prompt tokens,
    ``append`` extends it (evaluating the new tokens into the KV cache), ``truncate`` drops the
    tail (keeping the cache for the rest), and ``next_logprobs`` gives the log-probabilities of
    the next token over the whole vocabulary.
    """

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """Pins weights and prompt format (same meaning as ChatBackend.identity)."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids (rows of the output layer)."""

    @abc.abstractmethod
    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for when detokenized on its own (b"" for control tokens)."""

    @abc.abstractmethod
    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds BOS where the model expects one."""

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        """The bytes of a token sequence."""
        return b"".join(self.token_bytes(t) for t in tokens)

    @abc.abstractmethod
    def format_prompt(self, messages: Sequence[Message]) -> str:
        """Render chat messages into the prompt text this model expects (template or plain)."""

    @property
    @abc.abstractmethod
    def eos_tokens(self) -> frozenset[int]:
        """Token ids that end generation."""

    @property
    @abc.abstractmethod
    def tokens(self) -> list[int]:
        """The sequence held now (a copy)."""

    @abc.abstractmethod
    def reset(self, tokens: Sequence[int]) -> None:
        """Start a new sequence (reusing the cached prefix it shares with the old one)."""

    @abc.abstractmethod
    def append(self, tokens: Sequence[int]) -> None:
        """Extend the sequence by ``tokens``."""

    @abc.abstractmethod
    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` tokens."""

    @abc.abstractmethod
    def next_logprobs(self) -> np.ndarray:
        """Log-probabilities (float32, shape ``[vocab_size]``) of the next token."""

    def input_embeddings(self) -> np.ndarray | None:
        """The input embedding matrix ``[vocab_size, dim]`` if the backend can give it."""
        return None

    def vocabulary(self) -> list[bytes]:
        """``token_bytes`` of every id, in id order (backends cache it: methods call it often)."""
        return [self.token_bytes(t) for t in range(self.vocab_size)]

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Strings that end a turn in this model's prompt format (plain transcripts)."""
        return ()


class Method(abc.ABC):
    """A collaboration rule: picks the next piece of text from the members' distributions.

    The decode loop (``societies.ensembles.decode``) calls :meth:`prepare` once per set of
    members, then per step gives every member's ``next_logprobs()`` to :meth:`step`, appends
    the returned piece to every member (re-tokenizing only the unstable tail where tokenizers
    differ) and stops on EOS or ``max_tokens``.
    """

    def prepare(self, members: Sequence[TokenBackend]) -> None:  # noqa: B027 - optional
        """Precompute vocabulary maps etc. for these members (called once)."""

    @abc.abstractmethod
    def step(self, members: Sequence[TokenBackend], logprobs: Sequence[np.ndarray],
             pick: Picker) -> Piece:
        """Choose the next piece. ``pick`` applies temperature/top-k/top-p and selects."""


class Picker(abc.ABC):
    """Turns a (log-)probability vector into one index: greedy or seeded sampling, after the
    configured processors (temperature, top-k, top-p)."""

    @abc.abstractmethod
    def __call__(self, logprobs: np.ndarray) -> int:
        """Index chosen from ``logprobs`` (any 1-D array of log-probabilities)."""


class Piece:
    """What a method chose this step.

    Attributes:
        text: the bytes to append to the output.
        source: index of the member whose token this is (its id is ``token``), or None if
            the text does not correspond to one member token.
        token: the token id in ``members[source]``'s vocabulary, if ``source`` is set.
        eos: True if the ensemble chose to stop.
        info: per-step diagnostics (e.g. ``deferred``: 1.0 when Co-LLM deferred).
    """

    __slots__ = ("eos", "info", "source", "text", "token")

    def __init__(self, text: bytes, source: int | None = None, token: int | None = None,
                 eos: bool = False, info: dict[str, float] | None = None) -> None:
        self.text = text
        self.source = source
        self.token = token
        self.eos = eos
        self.info = info or {}
