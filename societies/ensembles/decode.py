"""The decode loop shared by every token-level method, and the cross-tokenizer hand-off.

One step: every member's next-token distribution -> ``method.step`` (vocabulary alignment and
the combination rule live in the method) -> a :class:`Picker` (greedy, or the chat backends'
sampler chain) -> the chosen :class:`Piece` is handed to every member by :class:`TextSync`
-> stopping criteria (EOS, ``max_tokens``, stop strings).

Sampling means what it means on every chat backend (:class:`~societies.backends.base.Settings`):
temperature 0 is greedy; otherwise top-k (0 = off), top-p (1 = off), min-p (0 = off), then
temperature and a draw from a numpy generator seeded per call. The draw is
:func:`societies.backends.sampling.sample` itself, the sampler of ``llamacpp_batch``, so the
two cannot drift apart.

A failure inside a member (its model, its tokenizer, the hand-off of another member's text)
is raised as a :class:`~societies.ensembles.base.MemberError` naming the member; a context
overflow stays what it is.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from societies.backends.base import BackendError, Message, Settings
from societies.backends.sampling import sample
from societies.ensembles.base import Method, Picker, Piece, TokenBackend, blame

_ESCAPE = 0xDC00  # surrogateescape maps an undecodable byte b to chr(0xDC00 + b)
# Single-byte token of each byte value, per member; building it reads the whole vocabulary.
_BYTE_IDS: weakref.WeakKeyDictionary[TokenBackend, dict[int, int]] = weakref.WeakKeyDictionary()


def softmax(scores: np.ndarray) -> np.ndarray:
    """Probabilities from scores (float64; -inf entries get 0)."""
    shifted = scores.astype(np.float64) - np.max(scores)
    exp = np.exp(shifted)
    return exp / exp.sum()


class GreedyPicker(Picker):
    """Argmax; ties go to the lowest index so runs are reproducible."""

    def __call__(self, logprobs: np.ndarray) -> int:
        return int(np.argmax(logprobs))


class SamplingPicker(Picker):
    """The chat backends' sampler: top-k, top-p, min-p, temperature, then a seeded draw.

    Args:
        temperature: > 0 (temperature 0 is :class:`GreedyPicker`).
        top_k: keep the ``top_k`` best candidates (0 = off).
        top_p: keep the fewest best candidates whose probability reaches ``top_p`` (1 = off).
        min_p: drop candidates below ``min_p`` times the best one's probability (0 = off).
        seed: the generator's seed; one picker per call keeps reruns exact.

    The filters see the scores before temperature, as llama.cpp's chain does.
    """

    def __init__(self, temperature: float, top_k: int = 0, top_p: float = 1.0,
                 min_p: float = 0.0, seed: int | None = None) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (use GreedyPicker for 0), got {temperature}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if not 0 <= min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {min_p}")
        # Exactly these keys: sample() leaves every penalty off unless asked.
        self.params: dict[str, Any] = {"temp": float(temperature), "top_k": int(top_k),
                                       "top_p": float(top_p), "min_p": float(min_p)}
        self.rng = np.random.default_rng(seed)

    def __call__(self, logprobs: np.ndarray) -> int:
        # sample() may edit its input (penalties); methods share theirs, so give it a copy.
        return sample(np.array(logprobs), (), self.params, self.rng)


def make_picker(settings: Settings) -> Picker:
    """The picker for one call's settings: greedy at temperature 0, else the sampler chain."""
    if settings.temperature == 0:
        return GreedyPicker()
    return SamplingPicker(settings.temperature, settings.top_k, settings.top_p,
                          settings.min_p, settings.seed)


class TextSync:
    """Keeps every member's token sequence spelling the same text: prompt + emitted bytes.

    Each member has a *stable* boundary (a token index and the emitted byte offset it ends
    at); tokens before it and their KV cache are never touched again. A new piece is appended
    as-is to its source member (and to members sharing its vocabulary). Every other member
    re-tokenizes only its unstable tail (the text after its boundary plus the piece), keeps
    the tokens that did not change and evaluates the rest. Bytes that are not (yet) valid
    UTF-8, e.g. half a CJK character from a byte-level token, become the member's single-byte
    tokens, so sequences stay byte-exact and the next distributions can finish the character.

    Args:
        members: the members, already holding their prompts (``reset`` done).
        tail_tokens: how many trailing tokens stay re-tokenizable (merges like "hel"+"lo"
            reach back at most a few tokens; a longer tail costs tokenizer time only).
        names: the members' names for errors (default: their identities).
    """

    def __init__(self, members: Sequence[TokenBackend], tail_tokens: int = 4,
                 names: Sequence[str] | None = None) -> None:
        if tail_tokens < 1:
            raise ValueError(f"tail_tokens must be >= 1, got {tail_tokens}")
        self.members = list(members)
        self.names = list(names) if names is not None else [m.identity for m in members]
        self.tail_tokens = tail_tokens
        self.emitted = bytearray()
        self.prompt_lengths = [len(m.tokens) for m in members]
        self._base = list(self.prompt_lengths)  # stable boundary: token index ...
        self._base_bytes = [0] * len(members)  # ... and the emitted byte offset it ends at
        sizes = [m.vocab_size for m in members]
        self._vocab_group = [sizes.index(s) if self._same_vocab(members[sizes.index(s)], m)
                             else i for i, (s, m) in enumerate(zip(sizes, members, strict=True))]

    @staticmethod
    def _same_vocab(a: TokenBackend, b: TokenBackend) -> bool:
        return a is b or (a.vocab_size == b.vocab_size and a.vocabulary() == b.vocabulary())

    def push(self, piece: Piece) -> None:
        """Append ``piece`` to every member."""
        self.emitted += piece.text
        for i, member in enumerate(self.members):
            shares = (piece.source is not None and piece.token is not None
                      and self._vocab_group[i] == self._vocab_group[piece.source])
            with blame(self.names[i]):
                if shares:
                    assert piece.token is not None
                    member.append([piece.token])
                elif piece.text:
                    self._retokenize(i)
                self._advance_boundary(i)

    def generated(self, i: int) -> list[int]:
        """Member ``i``'s tokens after its prompt."""
        return self.members[i].tokens[self.prompt_lengths[i]:]

    def _retokenize(self, i: int) -> None:
        member, base = self.members[i], self._base[i]
        new = self._tokenize_bytes(i, bytes(self.emitted[self._base_bytes[i]:]))
        old = member.tokens[base:]
        if member.detokenize(new) != self.emitted[self._base_bytes[i]:]:
            raise RuntimeError(f"{member.identity}: tokenize/detokenize do not round-trip "
                               f"{bytes(self.emitted[self._base_bytes[i]:])!r}")
        keep = 0
        while keep < min(len(old), len(new)) and old[keep] == new[keep]:
            keep += 1
        member.truncate(base + keep)
        member.append(new[keep:])

    def _tokenize_bytes(self, i: int, data: bytes) -> list[int]:
        """Tokens spelling ``data`` exactly: text runs via the tokenizer, stray bytes one by one."""
        text = data.decode("utf-8", "surrogateescape")
        tokens: list[int] = []
        run_start = 0
        for pos, char in enumerate([*text, ""]):
            if char and not _ESCAPE <= ord(char) < _ESCAPE + 256:
                continue
            if pos > run_start:
                tokens += self.members[i].tokenize(text[run_start:pos])
            run_start = pos + 1
            if char:
                tokens.append(self._byte_token(i, ord(char) - _ESCAPE))
        return tokens

    def _byte_token(self, i: int, byte: int) -> int:
        member = self.members[i]
        if member not in _BYTE_IDS:
            ids: dict[int, int] = {}
            for token, piece in enumerate(member.vocabulary()):
                if len(piece) == 1:
                    ids.setdefault(piece[0], token)
            _BYTE_IDS[member] = ids
        table = _BYTE_IDS[member]
        if byte not in table:
            raise ValueError(f"no token for byte 0x{byte:02x}: it cannot follow the text "
                             "another member wrote")
        return table[byte]

    def _advance_boundary(self, i: int) -> None:
        tokens = self.members[i].tokens
        limit = len(tokens) - self.tail_tokens
        if limit <= self._base[i]:
            return
        offset, base = self._base_bytes[i], self._base[i]
        best = (base, offset)
        member = self.members[i]
        for t in range(base, limit):
            offset += len(member.token_bytes(tokens[t]))
            # A boundary inside a UTF-8 character would split it between two re-tokenizations.
            if offset >= len(self.emitted) or self.emitted[offset] & 0xC0 != 0x80:
                best = (t + 1, offset)
        self._base[i], self._base_bytes[i] = best


class LazyLogprobs(Sequence[np.ndarray]):
    """Members' next-token log-probabilities, computed on first access.

    Gated methods (GaC with a threshold, Co-LLM) often read only one member; the others'
    pending tokens are then evaluated later in one batch.
    """

    def __init__(self, members: Sequence[TokenBackend],
                 names: Sequence[str] | None = None) -> None:
        self._members = members
        self._names = list(names) if names is not None else [m.identity for m in members]
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._members)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        i = range(len(self._members))[i]
        if i not in self._cache:
            with blame(self._names[i]):
                self._cache[i] = self._members[i].next_logprobs()
        return self._cache[i]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))


@dataclass
class DecodeResult:
    """What one decode produced.

    Attributes:
        text: the emitted bytes decoded as UTF-8 (invalid bytes replaced), stop string cut.
        data: the emitted bytes.
        pieces: every piece emitted (EOS excluded).
        prompt_tokens: prompt length per member.
        finish_reason: "stop" (EOS or stop string) or "length".
        info: per-step diagnostics summed over steps (e.g. ``deferred``).
    """

    text: str
    data: bytes
    pieces: list[Piece]
    prompt_tokens: list[int]
    finish_reason: str
    info: dict[str, float] = field(default_factory=dict)


def decode(members: Sequence[TokenBackend], method: Method, prompts: Sequence[str],
           picker: Picker, max_tokens: int, stop: Sequence[str] = (),
           tail_tokens: int = 4, names: Sequence[str] | None = None) -> DecodeResult:
    """Generate one completion with ``members`` combined by ``method``.

    ``method.prepare`` must have been called for these members. ``prompts`` holds each
    member's prompt text (as rendered by its own ``format_prompt``). ``names`` name the
    members in errors (default: their identities).
    """
    if len(prompts) != len(members):
        raise ValueError(f"{len(members)} members but {len(prompts)} prompts")
    if len({id(m) for m in members}) != len(members):
        raise ValueError("a backend object appears twice among members; give each its own")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    names = list(names) if names is not None else [m.identity for m in members]
    if len(names) != len(members):
        raise ValueError(f"{len(members)} members but {len(names)} names")
    for member, prompt, name in zip(members, prompts, names, strict=True):
        with blame(name):
            member.reset(member.tokenize(prompt, add_special=True))
    method.start(members)
    sync = TextSync(members, tail_tokens, names)
    stops = [s.encode("utf-8") for s in stop if s]
    pieces: list[Piece] = []
    info: dict[str, float] = {}
    finish, cut = "length", None
    while len(pieces) < max_tokens:
        piece = method.step(members, LazyLogprobs(members, names), picker)
        for key, value in piece.info.items():
            info[key] = info.get(key, 0.0) + value
        if piece.eos or (piece.source is not None and piece.token is not None
                         and piece.token in members[piece.source].eos_tokens):
            finish = "stop"
            break
        sync.push(piece)
        pieces.append(piece)
        start = max(0, len(sync.emitted) - len(piece.text) - max(map(len, stops), default=0))
        hits = [pos for s in stops if (pos := sync.emitted.find(s, start)) >= 0]
        if hits:
            finish, cut = "stop", min(hits)
            break
    data = bytes(sync.emitted[:cut])
    return DecodeResult(data.decode("utf-8", "replace"), data, pieces, sync.prompt_lengths,
                        finish, info)


def decode_chat(load: Callable[[], tuple[Sequence[TokenBackend], Method]],
                messages: Sequence[Message], settings: Settings, names: Sequence[str],
                what: str) -> DecodeResult:
    """One chat reply from the members and method ``load`` gives, with the call's sampling.

    Each member formats the messages its own way; the stop strings are the call's plus every
    member's own. Any error but a :class:`BackendError`, loading included, becomes one prefixed
    with ``what`` (the ensemble's description), so the engine fails the unit, not the run.
    """
    try:
        members, method = load()
        stops = {*settings.stop, *(s for m in members for s in m.stop_strings)}
        return decode(members, method, [m.format_prompt(messages) for m in members],
                      make_picker(settings), settings.max_tokens, sorted(stops), names=names)
    except BackendError:
        raise
    except Exception as err:
        raise BackendError(f"{what}: {type(err).__name__}: {err}") from err
