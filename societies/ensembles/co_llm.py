"""Co-LLM: a base model that learns, token by token, when to let an assistant write.

Shen et al. (2024), "Learning to Decode Collaboratively with Multiple Language Models". A
deferral head on the base model's last hidden state ``h_t`` gives ``π_t = σ(w·h_t + b)``, the
probability that the assistant produces token ``t``. Training maximises the marginal likelihood
``Σ_t log[(1 − π_t)·p_base(x_t) + π_t·p_asst(x_t)]`` of target tokens, after a few epochs of
BCE on pseudo-labels (1 where the assistant gives ``x_t`` more probability than the base). At
inference the assistant writes when ``π_t > η``.

Features: ``hidden`` (the paper's; llama.cpp gives last-layer states in embedding mode with
pooling ``none``) or ``logprobs``, the fallback for backends without hidden states: the base's
8 largest log-probabilities and its entropy. With different tokenizers the deferral is at text
level: the assistant writes one of its own tokens and the base re-tokenizes the text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from societies.ensembles.base import Method, Picker, Piece, TokenBackend
from societies.errors import ConfigError, UserError

FEATURES = ("hidden", "logprobs")
TOP_LOGPROBS = 8
BaseState = Callable[[TokenBackend], tuple[np.ndarray, np.ndarray]]


def logprob_features(logprobs: np.ndarray) -> np.ndarray:
    """The fallback features: the 8 largest log-probabilities (descending) and the entropy."""
    lp = np.asarray(logprobs, dtype=np.float64)
    k = min(TOP_LOGPROBS, lp.size)
    top = np.full(TOP_LOGPROBS, -100.0)  # -100 stands for "no such token" and for -inf
    top[:k] = np.maximum(np.sort(np.partition(lp, -k)[-k:])[::-1], -100.0)
    p = np.exp(lp)
    entropy = -float(np.sum(p[p > 0] * lp[p > 0]))
    return np.append(top, entropy).astype(np.float32)


class DeferralHead(nn.Module):
    """``π = σ(w·((x − mean)/scale) + b)``; mean and scale are fixed from the training data.

    Args:
        dim: feature size (the base model's hidden size for ``hidden`` features).
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deferral logits ``w·x̂ + b`` (shape ``[n]``) of features ``x`` (``[n, dim]``)."""
        return self.linear((x - self.mean) / self.scale).squeeze(-1)

    def prob(self, x: np.ndarray) -> float:
        """π for one feature vector."""
        with torch.no_grad():
            z = self(torch.as_tensor(np.asarray(x, dtype=np.float32))[None])
        return float(torch.sigmoid(z)[0])


def marginal_nll(z: torch.Tensor, logp_base: torch.Tensor, logp_asst: torch.Tensor) -> torch.Tensor:
    """Mean of ``−log[(1 − σ(z))·p_base + σ(z)·p_asst]``, computed in log space."""
    mixed = torch.logaddexp(nn.functional.logsigmoid(-z) + logp_base,
                            nn.functional.logsigmoid(z) + logp_asst)
    return -mixed.mean()


def pseudo_labels(logp_base: torch.Tensor, logp_asst: torch.Tensor) -> torch.Tensor:
    """1.0 where the assistant gives the target token more probability than the base."""
    return (logp_asst > logp_base).float()


def train_head(features: np.ndarray, logp_base: np.ndarray, logp_asst: np.ndarray,
               bce_epochs: int = 50, epochs: int = 200, lr: float = 1e-2,
               weight_decay: float = 1e-4, seed: int = 0) -> tuple[DeferralHead, list[float]]:
    """Fit a deferral head: BCE on pseudo-labels, then the marginal likelihood.

    Full-batch Adam: the training sets here are a few thousand tokens.

    Args:
        features: ``[n, dim]`` features at the positions that predict each target token.
        logp_base: ``[n]`` log-probability the base gives the target token.
        logp_asst: ``[n]`` log-probability the assistant gives it.
        bce_epochs: pseudo-label epochs (initialisation).
        epochs: marginal-likelihood epochs.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: torch seed for the initial weights.

    Returns:
        The head and the marginal NLL after each marginal-likelihood epoch.
    """
    threads = torch.get_num_threads()
    # The matrices are tiny: extra threads only spin at barriers (50x slower on a busy 2-core
    # machine), so train on one and give the setting back.
    torch.set_num_threads(1)
    try:
        return _train(features, logp_base, logp_asst, bce_epochs, epochs, lr, weight_decay, seed)
    finally:
        torch.set_num_threads(threads)


def _train(features: np.ndarray, logp_base: np.ndarray, logp_asst: np.ndarray, bce_epochs: int,
           epochs: int, lr: float, weight_decay: float, seed: int,
           ) -> tuple[DeferralHead, list[float]]:
    torch.manual_seed(seed)
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    lb = torch.as_tensor(np.asarray(logp_base, dtype=np.float32))
    la = torch.as_tensor(np.asarray(logp_asst, dtype=np.float32))
    head = DeferralHead(x.shape[1])
    head.mean.copy_(x.mean(0))
    head.scale.copy_(x.std(0).clamp_min(1e-4) if len(x) > 1 else torch.ones(x.shape[1]))
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    labels = pseudo_labels(lb, la)
    for _ in range(bce_epochs):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(head(x), labels).backward()
        opt.step()
    history: list[float] = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = marginal_nll(head(x), lb, la)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return head, history


def save_head(path: str | Path, head: DeferralHead, meta: dict[str, Any]) -> None:
    """Write the state dict to ``path`` and the metadata to ``path`` + ``.json``.

    ``meta`` must name ``base`` (the base backend's identity) and ``features``; ``dim`` is
    added from the head.
    """
    path = Path(path)
    if meta.get("features") not in FEATURES or not meta.get("base"):
        raise ValueError(f"head metadata needs base and features in {FEATURES}, got {meta}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(head.state_dict(), path)
    full = {**meta, "dim": int(head.linear.in_features)}
    Path(f"{path}.json").write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")


def load_head(path: str | Path, base: str | None = None) -> tuple[DeferralHead, dict[str, Any]]:
    """Read a head saved by :func:`save_head`.

    Args:
        path: the state-dict file (its metadata is ``path`` + ``.json``).
        base: if given, the base backend identity the head must have been trained for.

    Raises:
        UserError: missing files, or a head trained for another base model.
    """
    path, meta_path = Path(path), Path(f"{path}.json")
    if not path.is_file() or not meta_path.is_file():
        raise UserError(f"co_llm head not found: {path} (and {meta_path.name}) must both exist")
    try:
        meta = json.loads(meta_path.read_text())
        dim = int(meta["dim"])
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"co_llm head metadata {meta_path} is unreadable: {err}") from None
    if base is not None and meta.get("base") != base:
        raise UserError(f"co_llm head {path} was trained for base model {meta.get('base')}, "
                        f"not {base}; train one with python -m societies.ensembles.train_co_llm")
    head = DeferralHead(dim)
    try:
        head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # torch raises several types for a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"co_llm head {path} does not hold a head of size {dim} as its "
                        f"metadata says: {first}") from None
    head.eval()
    return head, meta


def hard_deferral_nll(pi: np.ndarray, logp_base: np.ndarray, logp_asst: np.ndarray,
                      threshold: float) -> float:
    """Mean NLL of the target tokens when the assistant writes exactly where ``π > η``."""
    chosen = np.where(pi > threshold, logp_asst, logp_base)
    return float(-np.mean(chosen))


def pick_threshold(pi: np.ndarray, logp_base: np.ndarray, logp_asst: np.ndarray,
                   thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                   ) -> tuple[float, list[dict[str, float]]]:
    """The η with the lowest teacher-forced NLL on a validation split (ties: the higher η,
    which defers less), and a table of NLL and deferral rate per η."""
    rows = [{"threshold": float(t), "nll": hard_deferral_nll(pi, logp_base, logp_asst, t),
             "deferral_rate": float(np.mean(pi > t))} for t in thresholds]
    best = min(rows, key=lambda r: (round(r["nll"], 9), -r["threshold"]))
    return best["threshold"], rows


class CoLLM(Method):
    """Inference: members are ``[base, assistant]``; the assistant writes where ``π > η``.

    Args:
        head: the trained deferral head.
        threshold: η in [0, 1].
        features: ``hidden`` or ``logprobs`` (as the head was trained).
        base_state: for ``hidden``, maps the base member to its last hidden state and its
            next-token log-probabilities (the base member itself is then never evaluated).
        max_chunk: the most assistant tokens per deferral when tokenizers differ (more than
            one only to finish a character split across byte tokens).
    """

    def __init__(self, head: DeferralHead, threshold: float, features: str = "hidden",
                 base_state: BaseState | None = None, max_chunk: int = 4) -> None:
        if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise ConfigError(f"co_llm.threshold: must be in [0, 1], got {threshold!r}")
        if features not in FEATURES:
            raise ConfigError(f"co_llm: features must be one of {FEATURES}, got {features!r}")
        if features == "hidden" and base_state is None:
            raise ConfigError("co_llm: a head on hidden states needs the base's hidden states")
        self.head, self.threshold, self.features = head, float(threshold), features
        self.base_state, self.max_chunk = base_state, max_chunk
        self._shared = False

    def prepare(self, members: Sequence[TokenBackend]) -> None:
        """Check there are two members and whether they share a vocabulary."""
        if len(members) != 2:
            raise ConfigError(f"co_llm needs exactly 2 members (base, assistant), "
                              f"got {len(members)}")
        base, asst = members
        self._shared = (base.vocab_size == asst.vocab_size
                        and base.vocabulary() == asst.vocabulary())

    def start(self, members: Sequence[TokenBackend]) -> None:
        """Tell a hidden-state reader that a new prompt begins (it reuses only prompt KV)."""
        if (begin := getattr(self.base_state, "start", None)) is not None:
            begin(members[0].tokens)

    def step(self, members: Sequence[TokenBackend], logprobs: Sequence[np.ndarray],
             pick: Picker) -> Piece:
        """Let the base write one token, or the assistant one of its own."""
        base, asst = members
        if self.base_state is not None:
            hidden, base_lp = self.base_state(base)
        else:
            hidden, base_lp = None, logprobs[0]
        x = hidden if self.features == "hidden" else logprob_features(base_lp)
        pi = self.head.prob(np.asarray(x))
        if pi <= self.threshold:
            token = pick(base_lp)
            return _piece(base, 0, token, {"deferred": 0.0, "pi": pi, "steps": 1.0})
        info = {"deferred": 1.0, "pi": pi, "steps": 1.0}
        if self._shared:
            return _piece(asst, 1, pick(logprobs[1]), info)
        return self._chunk(base, asst, logprobs[1], pick, info)

    def _chunk(self, base: TokenBackend, asst: TokenBackend, lp: np.ndarray, pick: Picker,
               info: dict[str, float]) -> Piece:
        """The assistant writes one of its tokens (more only to finish a UTF-8 character).

        Its text may end inside a base token ("hel" where the base has "hello"); the decode
        loop re-tokenizes the base's tail, so the text stays exact and the base decides again
        at the next step.
        """
        start, chunk, written = len(asst.tokens), b"", []
        for _ in range(self.max_chunk):
            token = pick(lp)
            if token in asst.eos_tokens:
                if not chunk:
                    return _piece(asst, 1, token, info)
                break
            chunk += asst.token_bytes(token)
            written.append(token)
            info["assistant_tokens"] = float(len(written))
            try:
                chunk.decode("utf-8")
                break
            except UnicodeDecodeError:  # half a character: the next token finishes it
                asst.append([token])
                lp = asst.next_logprobs()
        asst.truncate(start)  # the decode loop appends the piece to every member itself
        if len(written) == 1:
            return Piece(chunk, 1, written[0], info=info)
        return Piece(chunk, None, None, info=info)


def _piece(member: TokenBackend, source: int, token: int, info: dict[str, float]) -> Piece:
    eos = token in member.eos_tokens
    return Piece(b"" if eos else member.token_bytes(token), source, token, eos=eos, info=info)
