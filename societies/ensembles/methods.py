"""Token-level combination rules: averaging, UniTE, GaC, contrastive decoding, proxy-tuning.

Members with different tokenizers are aligned by a token's *string* (its exact bytes, so
SentencePiece's "▁the", byte-level BPE's "Ġthe" and a byte-fallback <0x20> all read b" the" /
b" "). End-of-sequence tokens of every member share one key, so "stop" can win by agreement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from societies.ensembles.base import (
    Method,
    Picker,
    Piece,
    TokenBackend,
    member_vocabulary_digest,
)

EOS = None  # the shared key of every member's end-of-sequence tokens
Key = bytes | None


def member_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Weights normalised to sum 1 (uniform when None); checked against ``n`` members."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {n} non-negative numbers, not all 0; got {weights}")
    return w / w.sum()


def token_piece(members: Sequence[TokenBackend], source: int, token: int,
                info: dict[str, float] | None = None) -> Piece:
    """The piece for ``members[source]``'s token (an EOS piece for its end tokens)."""
    eos = token in members[source].eos_tokens
    text = b"" if eos else members[source].token_bytes(token)
    return Piece(text, source, token, eos=eos, info=info)


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


class _SameVocab(Method):
    """Members sharing one vocabulary; ``main`` emits the chosen id."""

    needs: int | None = None  # exact member count the rule is defined for

    def __init__(self, weights: Sequence[float] | None = None, main: int = 0) -> None:
        self.weights = None if weights is None else tuple(weights)
        self.main = main

    def prepare(self, members: Sequence[TokenBackend]) -> None:
        name = type(self).__name__
        if self.needs is not None and len(members) != self.needs:
            raise ValueError(f"{name} needs exactly {self.needs} members, got {len(members)}")
        sizes = {m.vocab_size for m in members}
        if len(sizes) != 1:
            raise ValueError(f"{name} needs members with the same vocabulary; sizes {sizes}")
        # Equal sizes are not enough: ids are added id by id, so each must spell the same bytes.
        digests = [member_vocabulary_digest(m) for m in members]
        if len(set(digests)) != 1:
            other = next(i for i, d in enumerate(digests) if d != digests[0])
            raise ValueError(f"{name} needs members with the same vocabulary; members 0 and "
                             f"{other} both have {sizes.pop()} tokens but spell them differently")
        if not 0 <= self.main < len(members):
            raise ValueError(f"main {self.main} is not a member index")
        self._w = member_weights(self.weights, len(members))

    def scores(self, logprobs: Sequence[np.ndarray]) -> np.ndarray:
        """Combined scores over the shared vocabulary (a new array)."""
        raise NotImplementedError

    def step(self, members: Sequence[TokenBackend], logprobs: Sequence[np.ndarray],
             pick: Picker) -> Piece:
        return token_piece(members, self.main, pick(self.scores(logprobs)))


class ProbAverage(_SameVocab):
    """Weighted mean of the members' probabilities: ``log Σ w_i p_i``."""

    def scores(self, logprobs: Sequence[np.ndarray]) -> np.ndarray:
        total = sum(w * np.exp(lp.astype(np.float64)) for w, lp in zip(self._w, logprobs,
                                                                       strict=True))
        return _log(np.asarray(total))


class LogitAverage(_SameVocab):
    """Weighted mean of log-probabilities (a product of experts): ``Σ w_i log p_i``."""

    def scores(self, logprobs: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(sum(w * lp.astype(np.float64) for w, lp in zip(self._w, logprobs,
                                                                        strict=True)))


class Contrastive(_SameVocab):
    """Contrastive decoding (Li et al. 2023): members are ``[expert, amateur]``.

    Candidates are the expert's plausible tokens, ``p_exp >= alpha * max p_exp``; their score
    is ``log p_exp - log p_ama`` (the amateur's distribution at ``amateur_temperature``).
    """

    needs = 2

    def __init__(self, alpha: float = 0.1, amateur_temperature: float = 1.0) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if not amateur_temperature > 0:
            raise ValueError(f"amateur_temperature must be > 0, got {amateur_temperature}")
        super().__init__(None, 0)
        self.alpha, self.amateur_temperature = alpha, amateur_temperature

    def scores(self, logprobs: Sequence[np.ndarray]) -> np.ndarray:
        expert, amateur = (lp.astype(np.float64) for lp in logprobs)
        if self.amateur_temperature != 1:
            amateur = amateur / self.amateur_temperature
            amateur = amateur - np.logaddexp.reduce(amateur)
        plausible = expert >= np.log(self.alpha) + expert.max()
        with np.errstate(invalid="ignore"):  # -inf - -inf where neither can say the token
            return np.where(plausible, expert - amateur, -np.inf)


class ProxyTuning(_SameVocab):
    """Proxy-tuning (Liu et al. 2024): members ``[base, expert, anti_expert]``; scores
    ``s_base + s_expert - s_anti`` (log-probabilities differ from logits by a per-model
    constant, which softmax ignores)."""

    needs = 3

    def __init__(self) -> None:
        super().__init__(None, 0)

    def scores(self, logprobs: Sequence[np.ndarray]) -> np.ndarray:
        base, expert, anti = (lp.astype(np.float64) for lp in logprobs)
        with np.errstate(invalid="ignore"):
            scores = base + expert - anti
        return np.where(np.isnan(scores), -np.inf, scores)  # -inf - -inf: impossible anyway


class VocabIndex:
    """One member's tokens by string: ``key(id)`` and ``ids(key)``; built once per member."""

    def __init__(self, member: TokenBackend) -> None:
        self.member = member
        self.keys: list[Key] = []  # b"": a control token that is no text at all, never chosen
        self.by_key: dict[Key, list[int]] = {}
        for token, piece in enumerate(member.vocabulary()):
            key = EOS if token in member.eos_tokens else piece
            self.keys.append(key)
            if key != b"":
                self.by_key.setdefault(key, []).append(token)
        self._first: dict[Key, list[int]] = {}

    def first_ids(self, key: Key) -> list[int]:
        """Ids standing for ``key``: its own tokens, else the first token of its spelling here
        (UniTE's rule for a token this vocabulary lacks), else none."""
        if key in self.by_key:
            return self.by_key[key]
        if key not in self._first:
            assert key is not None  # every member has EOS tokens
            try:
                spelled = self.member.tokenize(key.decode("utf-8"))[:1]
            except UnicodeDecodeError:  # part of a character: its longest known byte prefix
                spelled = next((self.by_key[key[:n]][:1] for n in range(len(key) - 1, 0, -1)
                                if key[:n] in self.by_key), [])
            self._first[key] = spelled
        return self._first[key]


class _CrossVocab(Method):
    """Members with any tokenizers; ``main`` emits the chosen string when it has it."""

    def __init__(self, weights: Sequence[float] | None = None, main: int = 0) -> None:
        self.weights = None if weights is None else tuple(weights)
        self.main = main

    def prepare(self, members: Sequence[TokenBackend]) -> None:
        if not 0 <= self.main < len(members):
            raise ValueError(f"main {self.main} is not a member index")
        self._w = member_weights(self.weights, len(members))
        self._index = [VocabIndex(m) for m in members]

    def emit(self, members: Sequence[TokenBackend], logprobs: Sequence[np.ndarray], key: Key,
             info: dict[str, float]) -> Piece:
        """The piece for ``key``: the main member's token if it has one, else the member whose
        token for it is likeliest."""
        if key is EOS:
            return Piece(b"", eos=True, info=info)
        owners = [i for i, ix in enumerate(self._index) if key in ix.by_key]
        source = self.main if self.main in owners else max(
            owners, key=lambda i: float(logprobs[i][self._index[i].by_key[key]].max()))
        ids = self._index[source].by_key[key]
        token = ids[int(np.argmax(logprobs[source][ids]))]
        return Piece(key, source, token, info=info)


class UniTE(_CrossVocab):
    """UniTE (Yao et al. 2024): ensemble over the union of every member's top-k tokens.

    Each member's probabilities are restricted to the union and renormalised (a token it lacks
    counts with the probability of the first token of its spelling), weighted and summed.
    """

    def __init__(self, top_k: int = 10, weights: Sequence[float] | None = None,
                 main: int = 0) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        super().__init__(weights, main)
        self.top_k = top_k

    def step(self, members: Sequence[TokenBackend], logprobs: Sequence[np.ndarray],
             pick: Picker) -> Piece:
        union: dict[Key, None] = {}
        for ix, lp in zip(self._index, logprobs, strict=True):
            top = np.argpartition(lp, -self.top_k)[-self.top_k:]
            for token in top[np.argsort(-lp[top], kind="stable")].tolist():
                if (key := ix.keys[token]) != b"":
                    union.setdefault(key)
        keys = list(union)
        probs = np.zeros((len(members), len(keys)))
        for i, (ix, lp) in enumerate(zip(self._index, logprobs, strict=True)):
            for j, key in enumerate(keys):
                if ids := ix.first_ids(key):
                    probs[i, j] = np.exp(lp[ids].astype(np.float64)).sum()
            if (mass := probs[i].sum()) > 0:
                probs[i] /= mass
        chosen = pick(_log(self._w @ probs))
        return self.emit(members, logprobs, keys[chosen], {"union": float(len(keys))})


class GaC(_CrossVocab):
    """GaC (Yu et al. 2024): weighted sum of probabilities over the union of all vocabularies.

    Args:
        gate_threshold: when set, ensemble only where the main member's top probability is
            below it; elsewhere the main member's own pick is taken.
    """

    def __init__(self, weights: Sequence[float] | None = None, main: int = 0,
                 gate_threshold: float | None = None) -> None:
        if gate_threshold is not None and not 0 < gate_threshold <= 1:
            raise ValueError(f"gate_threshold must be in (0, 1], got {gate_threshold}")
        super().__init__(weights, main)
        self.gate_threshold = gate_threshold

    def prepare(self, members: Sequence[TokenBackend]) -> None:
        super().prepare(members)
        position: dict[Key, int] = {}
        for ix in self._index:
            for key in ix.by_key:
                position.setdefault(key, len(position))
        self._keys = list(position)
        trash = len(self._keys)  # control tokens that spell nothing land here and are dropped
        self._maps = [np.array([position.get(k, trash) for k in ix.keys], dtype=np.int64)
                      for ix in self._index]

    def step(self, members: Sequence[TokenBackend], logprobs: Sequence[np.ndarray],
             pick: Picker) -> Piece:
        if self.gate_threshold is not None:
            main_lp = logprobs[self.main]
            if float(np.exp(main_lp.max())) >= self.gate_threshold:
                return token_piece(members, self.main, pick(main_lp), {"ensembled": 0.0})
        total = np.zeros(len(self._keys) + 1)
        for w, where, lp in zip(self._w, self._maps, logprobs, strict=True):
            if w > 0:
                total += np.bincount(where, weights=w * np.exp(lp.astype(np.float64)),
                                     minlength=total.size)
        chosen = pick(_log(total[:-1]))
        return self.emit(members, logprobs, self._keys[chosen], {"ensembled": 1.0})
