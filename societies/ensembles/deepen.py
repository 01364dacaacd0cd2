"""DeePEn: fuse models with different vocabularies in a shared *relative* space.

Huang et al. (2024), "Ensemble Learning for Heterogeneous Large Language Models with Deep
Parallel Collaboration". Per decoding step, with member 0 as the main model:

1. Anchors ``A``: token strings (exact bytes) found in every member's vocabulary.
2. Relative representation of token ``i`` of model ``m``: ``R_m[i] = softmax_a(cos(e_i, e_a)/τ)``
   over the anchors, ``e`` being the model's input embeddings.
3. Each member's next-token distribution maps to ``r_m = p_m R_m``; ``r̄ = Σ_m w_m r_m``.
4. Inverse step: from the main model's own ``p``, a few steps that lower ``KL(r̄ ‖ p R_0)``;
   the main model's token is picked from the result (``Piece.source == 0``).

Two deliberate departures from the paper, both measured (experiments/ensembles/README.md):

* ``temperature`` τ: a plain row softmax (τ = 1) over these 576/640-dim embeddings gives rows
  that are nearly uniform and alike for every token (one token's rows in SmolLM2 and in Gemma:
  cosine 0.992; two different tokens': 0.990), so the ensemble never changed a decision. At
  τ = 0.05 rows are distinctive (0.9995 against 0.0000).
* The step: ``p ← p + η·p⊙(s − 1)`` with ``s = R (r̄ / pR) = −∇_p KL``: gradient descent under
  the ``diag(p)`` (Fisher) metric. It keeps ``p`` a distribution, η = 1 is the EM update, and by
  convexity the KL never rises for η in (0, 1]. Plain steps ``p − η∇`` (the paper's form, at its
  η = 0.15) overshoot with sharp rows: at τ = 0.1 they changed 67% of decisions, mostly to
  neither model's choice, and raised the KL from 0.15 to 3.3. Default η = 0.5: at 0.15 DeePEn
  changed 3% of SmolLM2's decisions, at 0.5 17% (nearly all to Gemma's choice).

Memory (the dense ``R`` for Gemma would be 262,144 × 46,145 float32 ≈ 48 GB). We never form it:

* at most ``anchors`` anchors, the most frequent common tokens (frequency ≈ the best rank of
  the token id over the members: BPE and SentencePiece vocabularies are ordered by merge
  order / score); only their normalised embeddings are kept (``anchors × dim`` float32);
* rows are computed on the fly for *candidates* only: each member's top-``candidates`` tokens
  (its distribution renormalised over them), and for the main model that set plus the other
  members' top tokens mapped by exact bytes;
* the search runs over the main model's candidates; the main model's mass outside them stays as
  it was, so the picker still sees the full vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from societies.ensembles.base import Method, Picker, Piece, TokenBackend
from societies.errors import ConfigError

TINY = 1e-30


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    return vectors / np.maximum(norms, 1e-12)[:, None]


def relative_rows(vectors: np.ndarray, anchors: np.ndarray, temperature: float) -> np.ndarray:
    """Relative representations ``softmax_a(cos(v, anchor_a) / temperature)``.

    Args:
        vectors: ``[n, dim]`` unit-norm embeddings of the tokens to represent.
        anchors: ``[k, dim]`` unit-norm embeddings of the anchor tokens.
        temperature: softmax temperature τ > 0.

    Returns:
        ``[n, k]`` float32 rows, each a distribution over the anchors.
    """
    logits = (vectors @ anchors.T) / np.float32(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """``KL(p ‖ q)`` of two distributions over the same support (terms with p = 0 vanish)."""
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(np.maximum(q[mask], TINY)))))


def inverse_search(p: np.ndarray, rows: np.ndarray, target: np.ndarray, steps: int,
                   lr: float) -> tuple[np.ndarray, list[float]]:
    """Move ``p`` so that ``p @ rows`` approaches ``target`` in KL, starting from ``p``.

    Args:
        p: ``[n]`` distribution over the main model's (candidate) tokens.
        rows: ``[n, k]`` relative representations of those tokens.
        target: ``[k]`` aggregated relative distribution ``r̄``.
        steps: number of updates.
        lr: step size η in (0, 1].

    Returns:
        The updated distribution and ``KL(target ‖ p @ rows)`` before each step and at the end.
    """
    p = np.asarray(p, dtype=np.float64)
    rows64 = rows.astype(np.float64, copy=False)
    losses: list[float] = []
    for _ in range(steps):
        q = p @ rows64
        losses.append(kl_divergence(target, q))
        s = rows64 @ (target / np.maximum(q, TINY))
        # p·s sums to Σ r̄ = 1, so p stays a distribution without renormalising.
        p = p + lr * p * (s - 1.0)
    losses.append(kl_divergence(target, p @ rows64))
    return p, losses


def vocabulary_map(member: TokenBackend) -> dict[bytes, int]:
    """Bytes → token id, one id per string (control tokens, which detokenize to b"", left out).

    Where several ids share bytes (Gemma's byte-fallback ``<0x35>`` and ``5``), the id that the
    model's own tokenizer produces for the string wins: it is the one the model predicts.
    """
    mapping: dict[bytes, int] = {}
    clashes: set[bytes] = set()
    for token, text in enumerate(member.vocabulary()):
        if not text:
            continue
        if text in mapping:
            clashes.add(text)
        else:
            mapping[text] = token
    for text in clashes:
        try:
            own = member.tokenize(text.decode("utf-8"))
        except UnicodeDecodeError:
            continue
        if len(own) == 1 and member.token_bytes(own[0]) == text:
            mapping[text] = own[0]
    return mapping


class DeePEn(Method):
    """The DeePEn collaboration rule (see the module docstring for the approximations).

    Args:
        anchors: the most anchors to use (None: every common token).
        candidates: top-k tokens taken from each member per step.
        steps: inverse-search steps T.
        lr: inverse-search step size η in (0, 1].
        temperature: relative-representation softmax temperature τ.
        weights: one non-negative weight per member (default: equal).
        main: index of the member whose tokens are emitted (default: the first).
    """

    def __init__(self, anchors: int | None = 8192, candidates: int = 32, steps: int = 5,
                 lr: float = 0.5, temperature: float = 0.05,
                 weights: Sequence[float] | None = None, main: int = 0) -> None:
        if anchors is not None and (not isinstance(anchors, int) or anchors < 1):
            raise ConfigError(f"deepen.anchors: a positive integer or null, got {anchors!r}")
        if not isinstance(candidates, int) or candidates < 1:
            raise ConfigError(f"deepen.candidates: a positive integer, got {candidates!r}")
        if not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"deepen.steps: an integer >= 0, got {steps!r}")
        if not 0 < lr <= 1:
            raise ConfigError(f"deepen.lr: must be in (0, 1] (1 is a full EM step), got {lr}")
        if not temperature > 0:
            raise ConfigError(f"deepen.temperature: must be > 0, got {temperature}")
        if weights is not None and (any(w < 0 for w in weights) or sum(weights) <= 0):
            raise ConfigError(f"deepen.weights: non-negative with a positive sum, got {weights}")
        if not isinstance(main, int) or main < 0:
            raise ConfigError(f"deepen.main: a member index >= 0, got {main!r}")
        self.main = main
        self.anchors, self.candidates, self.steps = anchors, candidates, steps
        self.lr, self.temperature = lr, temperature
        self.weights = None if weights is None else [float(w) for w in weights]
        self._vocab: list[dict[bytes, int]] = []
        self._embeddings: list[np.ndarray] = []
        self._inv_norms: list[np.ndarray] = []
        self._anchor_vectors: list[np.ndarray] = []
        self._weights = np.ones(1)

    def prepare(self, members: Sequence[TokenBackend]) -> None:
        """Find the anchors and keep each member's normalised anchor embeddings."""
        if self.main >= len(members):
            raise ConfigError(f"deepen.main: {self.main} is not a member index "
                              f"({len(members)} members)")
        if self.weights is not None and len(self.weights) != len(members):
            raise ConfigError(f"deepen.weights: {len(self.weights)} weights for "
                              f"{len(members)} members")
        weights = self.weights or [1.0] * len(members)
        self._weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self._vocab = [vocabulary_map(m) for m in members]
        self._embeddings, self._inv_norms = [], []
        for member in members:
            emb = member.input_embeddings()
            if emb is None:
                raise ConfigError(f"deepen: member {member.identity} gives no input embeddings")
            norms = np.sqrt(np.einsum("ij,ij->i", emb, emb, dtype=np.float32,
                                      casting="same_kind"))
            self._embeddings.append(emb)
            self._inv_norms.append((1.0 / np.maximum(norms, 1e-12)).astype(np.float32))
        common = set(self._vocab[0]).intersection(*self._vocab[1:])
        if not common:
            raise ConfigError("deepen: the members share no token strings to use as anchors")

        def rank(text: bytes) -> float:
            return min(v[text] / m.vocab_size for v, m in zip(self._vocab, members, strict=True))

        chosen = sorted(common, key=lambda t: (rank(t), t))[: self.anchors]
        self._anchor_vectors = [self._rows(m, np.array([v[t] for t in chosen]))
                                for m, v in enumerate(self._vocab)]

    def _rows(self, member: int, ids: np.ndarray) -> np.ndarray:
        """Unit-norm float32 embeddings of some tokens of one member."""
        vectors = np.asarray(self._embeddings[member][ids], dtype=np.float32)
        return vectors * self._inv_norms[member][ids, None]

    def relative(self, member: int, ids: np.ndarray) -> np.ndarray:
        """Relative representations of tokens ``ids`` of member ``member`` (``[n, anchors]``)."""
        return relative_rows(self._rows(member, ids), self._anchor_vectors[member],
                             self.temperature)

    def step(self, members: Sequence[TokenBackend], logprobs: Sequence[np.ndarray],
             pick: Picker) -> Piece:
        """Fuse the members' distributions and emit the main model's chosen token.

        ``Piece.info``: ``changed`` (1 when the token is not the main model's own most likely
        one; sampling alone also makes it 1), ``kl_before`` / ``kl_after`` the search's loss,
        ``candidates`` the size of the main model's candidate set.
        """
        if not self._anchor_vectors:
            self.prepare(members)
        main = self.main
        lps = [np.asarray(lp) for lp in logprobs]
        tops = [_top_k(lp, self.candidates) for lp in lps]
        main_eos = sorted(members[main].eos_tokens, key=lambda t: -lps[main][t])
        main_ids = set(tops[main].tolist())
        for m in range(len(members)):
            for token in tops[m].tolist() if m != main else ():
                if token in members[m].eos_tokens:  # "stop" maps to stop
                    main_ids.update(main_eos[:1])
                elif (mapped := self._vocab[main].get(members[m].token_bytes(token))) is not None:
                    main_ids.add(mapped)
        candidates = np.array(sorted(main_ids))
        main_rows = self.relative(main, candidates)
        start = _renormalised(lps[main][candidates])
        target = np.zeros(main_rows.shape[1], dtype=np.float64)
        for m, lp in enumerate(lps):
            if m == main:
                target += self._weights[m] * (start @ main_rows)
            else:
                target += self._weights[m] * (_renormalised(lp[tops[m]])
                                              @ self.relative(m, tops[m]))
        mass = float(np.exp(lps[main][candidates].astype(np.float64)).sum())
        fused, losses = inverse_search(start, main_rows, target, self.steps, self.lr)
        # Outside the candidates the main model's own probabilities stay (the search never
        # saw them); the candidates share the mass they had between them.
        full = np.array(lps[main], dtype=np.float64)
        full[candidates] = np.log(np.maximum(fused * mass, TINY))
        token = int(pick(full))
        info = {"changed": float(token != int(candidates[int(np.argmax(start))])),
                "kl_before": losses[0], "kl_after": losses[-1],
                "candidates": float(len(candidates))}
        eos = token in members[main].eos_tokens
        return Piece(b"" if eos else members[main].token_bytes(token), source=main,
                     token=token, eos=eos, info=info)


def _top_k(logprobs: np.ndarray, k: int) -> np.ndarray:
    """Ids of the ``k`` most probable tokens (unordered)."""
    k = min(k, logprobs.shape[0])
    return np.argpartition(logprobs, -k)[-k:]


def _renormalised(logprobs: np.ndarray) -> np.ndarray:
    """A sub-vector of log-probabilities as a distribution over its own entries (float64)."""
    x = np.asarray(logprobs, dtype=np.float64)
    x = np.exp(x - x.max())
    return x / x.sum()
