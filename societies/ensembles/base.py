"""The token-level contract: a model that holds one sequence in its own KV cache.

Only token-level methods (ensembles, Co-LLM, contrastive decoding) need it. A decoder over
several TokenBackends is itself a :class:`~societies.backends.base.ChatBackend`.
"""

from __future__ import annotations

import abc
import hashlib
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from societies.backends.base import BackendError, Message


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
        """Start a new sequence from prompt tokens.

        Backends may keep the cache of the prefix it shares with the previous *prompt* (see
        :func:`reusable_prefix`), never of tokens generated after it: a reply must depend on
        its call alone, not on the calls before it.
        """

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


def reusable_prefix(previous_prompt: Sequence[int], prompt: Sequence[int], evaluated: int) -> int:
    """How many leading tokens of ``prompt`` may keep the KV a backend still holds.

    Only the previous prompt's tokens count (``evaluated`` bounds what was computed): generated
    tokens were computed one per step, and llama.cpp rounds a one-token step differently from
    a prompt chunk (on the shipped Q4_1 SmolLM2, reusing a reply's KV moved next-token
    log-probabilities by up to 0.7 against computing the same prompt afresh). The last two
    prompt tokens are always computed, together, so the prompt's last position is never a
    one-token step either. The ``llamacpp`` and ``llamacpp_batch`` chat backends follow the
    same rule, so an ensemble of one model replies as they do.

    Example:
        >>> reusable_prefix([1, 2, 3, 4], [1, 2, 3, 4, 5, 6], evaluated=9)
        4
        >>> reusable_prefix([1, 2, 3, 4], [1, 2, 3, 4], evaluated=9)
        2
    """
    keep = 0
    for old, new in zip(previous_prompt, prompt, strict=False):
        if old != new:
            break
        keep += 1
    return max(0, min(keep, evaluated, len(prompt) - 2))


def vocabulary_digest(pieces: Sequence[bytes]) -> str:
    """SHA-256 (hex) of a vocabulary as the map token id -> bytes.

    Two vocabularies of the same size can still spell different strings (another tokenizer,
    or the same strings in another order); methods that add distributions id by id need this
    map to be identical, not merely the size.

    Example:
        >>> vocabulary_digest([b"a", b"bc"]) == vocabulary_digest([b"ab", b"c"])
        False
    """
    digest = hashlib.sha256()
    for piece in pieces:
        # Length-prefixed, so the boundaries between pieces are part of the hash.
        digest.update(len(piece).to_bytes(4, "little"))
        digest.update(piece)
    return digest.hexdigest()


_DIGESTS: weakref.WeakKeyDictionary[TokenBackend, str] = weakref.WeakKeyDictionary()


def member_vocabulary_digest(member: TokenBackend) -> str:
    """:func:`vocabulary_digest` of a member's ``vocabulary()``, computed once per member."""
    if member not in _DIGESTS:
        _DIGESTS[member] = vocabulary_digest(member.vocabulary())
    return _DIGESTS[member]


class Method(abc.ABC):
    """A collaboration rule: picks the next piece of text from the members' distributions.

    The decode loop (``societies.ensembles.decode``) calls :meth:`prepare` once per set of
    members, then per step gives every member's ``next_logprobs()`` to :meth:`step`, appends
    the returned piece to every member (re-tokenizing only the unstable tail where tokenizers
    differ) and stops on EOS or ``max_tokens``.
    """

    def prepare(self, members: Sequence[TokenBackend]) -> None:  # noqa: B027 - optional
        """Precompute vocabulary maps etc. for these members (called once)."""

    def start(self, members: Sequence[TokenBackend]) -> None:  # noqa: B027 - optional
        """A call begins: ``members`` hold their prompts (state kept across calls must not
        carry more than the prompts' KV; see :func:`reusable_prefix`)."""

    @abc.abstractmethod
    def step(self, members: Sequence[TokenBackend], logprobs: Sequence[np.ndarray],
             pick: Picker) -> Piece:
        """Choose the next piece. ``pick`` applies the call's sampling settings and selects."""


class Picker(abc.ABC):
    """Turns a (log-)probability vector into one index: greedy, or the chat backends' sampler
    (top-k, top-p, min-p, temperature, seeded draw; see ``societies.ensembles.decode``)."""

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


class MemberError(BackendError):
    """A member failed during a call; ``member`` names it (its model name in the config)."""

    def __init__(self, member: str, error: BaseException) -> None:
        super().__init__(f"ensemble member {member}: {type(error).__name__}: {error}")
        self.member = member


@contextmanager
def blame(member: str) -> Iterator[None]:
    """Re-raise any failure inside the block as a :class:`MemberError` naming ``member``.

    A :class:`BackendError` passes unchanged: a context overflow must stay one (it ends the
    agent's branch rather than failing the unit), and an error already named stays named.
    """
    try:
        yield
    except BackendError:
        raise
    except Exception as err:
        raise MemberError(member, err) from err
