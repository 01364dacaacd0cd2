"""DeePEn: relative representations, the inverse search, the memory approximation, real run."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest

from societies.backends.base import Message
from societies.ensembles.base import Picker, TokenBackend
from societies.ensembles.deepen import (
    DeePEn,
    inverse_search,
    kl_divergence,
    normalise_rows,
    relative_rows,
    vocabulary_map,
)
from societies.errors import ConfigError, UserError


class ArrayBackend(TokenBackend):
    """A vocabulary and an embedding matrix; distributions are given to ``step`` directly."""

    def __init__(self, name: str, vocab: Sequence[bytes], emb: np.ndarray,
                 eos: frozenset[int] = frozenset()) -> None:
        self._name, self._vocab, self._emb, self._eos = name, list(vocab), emb, eos

    identity = property(lambda self: self._name)
    vocab_size = property(lambda self: len(self._vocab))
    eos_tokens = property(lambda self: self._eos)
    tokens = property(lambda self: [])

    def token_bytes(self, token: int) -> bytes:
        return self._vocab[token]

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        # The canonical id of a string: the last one listed (byte-fallback entries come first).
        ids = [i for i, b in enumerate(self._vocab) if b == text.encode()]
        return ids[-1:]

    def format_prompt(self, messages: Sequence[Message]) -> str:
        return ""

    def reset(self, tokens: Sequence[int]) -> None: ...
    def append(self, tokens: Sequence[int]) -> None: ...
    def truncate(self, length: int) -> None: ...

    def next_logprobs(self) -> np.ndarray:
        raise NotImplementedError

    def input_embeddings(self) -> np.ndarray:
        return self._emb


class Recorder(Picker):
    """Greedy, keeping the log-probabilities it was shown."""

    def __call__(self, logprobs: np.ndarray) -> int:
        self.last = np.asarray(logprobs, dtype=np.float64)
        return int(np.argmax(logprobs))


def test_relative_rows_are_a_softmax_of_cosines() -> None:
    anchors = normalise_rows(np.array([[1.0, 0.0], [0.0, 1.0]]))
    vectors = normalise_rows(np.array([[2.0, 0.0], [1.0, 1.0]]))  # cosines [1, 0] and [.71, .71]
    rows = relative_rows(vectors, anchors, temperature=0.5)
    assert rows[0] == pytest.approx([np.e**2 / (np.e**2 + 1), 1 / (np.e**2 + 1)], rel=1e-6)
    assert rows[1] == pytest.approx([0.5, 0.5])
    sharp = relative_rows(vectors, anchors, temperature=0.01)
    assert sharp[0, 0] > 0.999  # a token that is an anchor maps onto itself


def test_search_moves_the_main_distribution_toward_the_aggregate() -> None:
    rng = np.random.default_rng(0)
    rows = relative_rows(normalise_rows(rng.normal(size=(6, 4))),
                         normalise_rows(rng.normal(size=(3, 4))), 0.3)
    p = np.array([0.7, 0.1, 0.1, 0.05, 0.03, 0.02])
    target = 0.5 * (p @ rows) + 0.5 * (np.array([0, 0, 0, 0, 0.1, 0.9]) @ rows)
    fused, losses = inverse_search(p, rows, target, steps=10, lr=0.5)
    assert fused.sum() == pytest.approx(1.0) and (fused >= 0).all()
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(losses))
    assert losses[-1] < 0.5 * losses[0]
    assert fused[5] > p[5]


def test_candidates_covering_the_vocabulary_reproduce_the_exact_rule() -> None:
    main, other, _, ps, pg = _tiny_case()
    method = DeePEn(anchors=None, candidates=10_000, temperature=0.2)
    method.prepare([main, other])
    picker = Recorder()
    for k in range(5):
        method.step([main, other], [ps[k], pg[k]], picker)
        exact = _exact(main, other, ps[k], pg[k], 0.2)
        assert np.exp(picker.last) == pytest.approx(exact, abs=1e-6)


def test_approximation_agrees_with_the_exact_rule_on_a_tiny_case() -> None:
    main, other, _, ps, pg = _tiny_case()
    exact = [_exact(main, other, ps[k], pg[k], 0.2) for k in range(len(ps))]
    agreement, mean_kl = {}, {}
    for candidates in (4, 12, 24):  # of 40 and 50 tokens
        method = DeePEn(anchors=None, candidates=candidates, temperature=0.2)
        method.prepare([main, other])
        picker, agree, kls = Recorder(), 0, []
        for k in range(len(ps)):
            piece = method.step([main, other], [ps[k], pg[k]], picker)
            agree += piece.token == int(np.argmax(exact[k]))
            kls.append(kl_divergence(exact[k], np.exp(picker.last)))
        agreement[candidates], mean_kl[candidates] = agree / len(ps), float(np.mean(kls))
    assert agreement[12] >= 0.9 and agreement[24] == 1.0
    assert mean_kl[4] > mean_kl[12] > mean_kl[24] and mean_kl[12] < 0.1


def test_options_are_validated() -> None:
    for bad in ({"anchors": 0}, {"candidates": 0}, {"steps": -1}, {"lr": 0.0}, {"lr": 1.5},
                {"temperature": 0.0}, {"weights": [-1.0, 2.0]}, {"main": -1}):
        with pytest.raises(ConfigError, match="deepen"):
            DeePEn(**bad)  # type: ignore[arg-type]
    main, other, *_ = _tiny_case()
    with pytest.raises(ConfigError, match="3 weights for 2 members"):
        DeePEn(weights=[1, 1, 1]).prepare([main, other])
    with pytest.raises(ConfigError, match="not a member index"):
        DeePEn(main=2).prepare([main, other])
    assert issubclass(ConfigError, UserError)


def test_duplicate_strings_map_to_the_tokenizer_s_own_id() -> None:
    member = ArrayBackend("m", [b"", b"5", b"a", b"5"], np.eye(4))
    assert vocabulary_map(member) == {b"5": 3, b"a": 2}


def test_another_member_s_stop_maps_to_the_main_model_s_stop() -> None:
    emb = np.eye(4)
    main = ArrayBackend("main", [b"", b"a", b"b", b"c"], emb, eos=frozenset({0}))
    other = ArrayBackend("other", [b"", b"a", b"b", b"c"], emb, eos=frozenset({0}))
    method = DeePEn(candidates=1, temperature=0.05, lr=1.0, steps=10)
    method.prepare([main, other])
    certain_stop = np.log(np.array([0.97, 0.01, 0.01, 0.01]))
    piece = method.step([main, other], [np.log(np.array([0.4, 0.5, 0.05, 0.05])), certain_stop],
                        Recorder())
    assert piece.eos and piece.token == 0 and piece.text == b""


def _tiny_case() -> tuple[ArrayBackend, ArrayBackend, np.ndarray, np.ndarray, np.ndarray]:
    """Two vocabularies of 40 and 50 strings sharing 30, with related embeddings."""
    rng = np.random.default_rng(1)
    words = [f"w{i}".encode() for i in range(60)]
    concept = rng.normal(size=(60, 8))
    main_words, other_words = words[:40], words[10:60]
    main_emb = concept[:40] + 0.3 * rng.normal(size=(40, 8))
    other_emb = concept[10:60] @ rng.normal(size=(8, 6)) + 0.3 * rng.normal(size=(50, 6))
    main = ArrayBackend("main", main_words, main_emb)
    other = ArrayBackend("other", other_words, other_emb)
    n = 60
    ps = np.log(rng.dirichlet(np.full(40, 0.1), size=n)).astype(np.float32)
    pg = np.log(rng.dirichlet(np.full(50, 0.1), size=n)).astype(np.float32)
    return main, other, concept, ps, pg


def _exact(main: ArrayBackend, other: ArrayBackend, lp_main: np.ndarray, lp_other: np.ndarray,
           temperature: float) -> np.ndarray:
    """The dense rule: every anchor, every token, the whole distributions."""
    common = sorted(set(main._vocab) & set(other._vocab))
    a_main = normalise_rows(main._emb[[main._vocab.index(c) for c in common]])
    a_other = normalise_rows(other._emb[[other._vocab.index(c) for c in common]])
    r_main = relative_rows(normalise_rows(main._emb), a_main, temperature)
    r_other = relative_rows(normalise_rows(other._emb), a_other, temperature)
    p_main = np.exp(lp_main.astype(np.float64))
    p_main /= p_main.sum()
    p_other = np.exp(lp_other.astype(np.float64))
    p_other /= p_other.sum()
    target = 0.5 * (p_main @ r_main) + 0.5 * (p_other @ r_other)
    fused, _ = inverse_search(p_main, r_main, target, 5, 0.5)
    return fused


REAL_RUN = """
import json, resource, time
from societies.backends.base import Message
from societies.backends.bundled import bundled_path
from societies.ensembles.decode import GreedyPicker, decode
from societies.ensembles.deepen import DeePEn
from societies.ensembles.llama_tokens import LlamaTokenBackend
s = LlamaTokenBackend(bundled_path("smollm2"), n_ctx=256)
g = LlamaTokenBackend(bundled_path("gemma3"), n_ctx=256, prompt_format="plain")
method = DeePEn()
method.prepare([s, g])
messages = [Message("user", "What is the capital of France?")]
start = time.time()
result = decode([s, g], method, [s.format_prompt(messages), g.format_prompt(messages)],
                GreedyPicker(), 6)
print(json.dumps({"text": result.text, "pieces": [p.source for p in result.pieces],
                  "info": result.info, "seconds": time.time() - start,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


@pytest.mark.real
def test_real_smollm2_gemma_generation_stays_under_4_gb() -> None:
    pytest.importorskip("gguf")
    from societies.backends.bundled import bundled_path

    try:
        bundled_path("smollm2"), bundled_path("gemma3")
    except UserError as err:
        pytest.skip(str(err))
    # A fresh process, so the peak RSS is this run's alone.
    done = subprocess.run([sys.executable, "-c", REAL_RUN], capture_output=True, text=True,
                          timeout=300, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["text"].strip()
    assert out["pieces"] and set(out["pieces"]) == {0}  # the main model emits every token
    assert out["info"]["kl_after"] < out["info"]["kl_before"]
    assert out["peak_rss_gb"] < 4.0


# -- one and two inverse steps, by hand ------------------------------------------------------
#
# Main vocabulary a, b, c with embeddings (1, 0), (0, 1), (1, 1); the other model's a, b, d in
# three dimensions: (1, 0, 0), (0, 1, 0), (1, 1, 1). Anchors: the common strings a and b.
# At τ = 1 a token's relative representation is the softmax of its cosines to the anchors:
# a -> (σ, 1 − σ) with σ = e / (e + 1), b -> (1 − σ, σ), c and d -> (1/2, 1/2).

SIGMA = np.e / (np.e + 1)


def _hand_pair() -> tuple[ArrayBackend, ArrayBackend]:
    main = ArrayBackend("main", [b"a", b"b", b"c"], np.array([[1.0, 0], [0, 1], [1, 1]]))
    other = ArrayBackend("other", [b"a", b"b", b"d"],
                         np.array([[1.0, 0, 0], [0, 1, 0], [1, 1, 1]]))
    return main, other


def _kl(target: np.ndarray, p: np.ndarray, rows: np.ndarray) -> float:
    """KL(r̄ ‖ pR), written out."""
    q = [sum(p[i] * rows[i, a] for i in range(len(p))) for a in range(rows.shape[1])]
    return float(sum(t * np.log(t / qa) for t, qa in zip(target, q, strict=True)))


def _hand_steps(p: np.ndarray, rows: np.ndarray, target: np.ndarray, steps: int,
                lr: float) -> np.ndarray:
    """Gradient steps under the Fisher metric: the gradient g of KL(r̄ ‖ pR) with respect to
    p by central differences, then p ← p − η·p⊙(g − ⟨p, g⟩), which keeps p a distribution."""
    for _ in range(steps):
        g = np.zeros_like(p)
        for i in range(len(p)):
            e = np.zeros_like(p)
            e[i] = 1e-6
            g[i] = (_kl(target, p + e, rows) - _kl(target, p - e, rows)) / 2e-6
        p = p - lr * p * (g - p @ g)
    return p


@pytest.mark.parametrize(("steps", "lr"), [(1, 1.0), (2, 0.5)])
def test_inverse_steps_match_a_hand_computation(steps: int, lr: float) -> None:
    main, other = _hand_pair()
    p_main, p_other = np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.6, 0.3])
    rows_main = np.array([[SIGMA, 1 - SIGMA], [1 - SIGMA, SIGMA], [0.5, 0.5]])
    rows_other = rows_main  # d's cosines to a and b are equal too
    method = DeePEn(anchors=None, candidates=3, steps=steps, lr=lr, temperature=1.0)
    method.prepare([main, other])
    assert method.relative(0, np.arange(3)) == pytest.approx(rows_main, abs=1e-6)
    assert method.relative(1, np.arange(3)) == pytest.approx(rows_other, abs=1e-6)
    # r̄ = ½·p_main R_main + ½·p_other R_other = (0.575 − 0.15σ, 0.425 + 0.15σ).
    target = 0.5 * p_main @ rows_main + 0.5 * p_other @ rows_other
    assert target == pytest.approx([0.575 - 0.15 * SIGMA, 0.425 + 0.15 * SIGMA])
    assert target == pytest.approx([0.46534, 0.53466], abs=1e-5)
    picker = Recorder()
    piece = method.step([main, other], [np.log(p_main), np.log(p_other)], picker)
    expected = _hand_steps(p_main, rows_main, target, steps, lr)
    assert expected.sum() == pytest.approx(1.0)
    assert np.exp(picker.last) == pytest.approx(expected, abs=1e-6)
    assert piece.info["kl_before"] == pytest.approx(_kl(target, p_main, rows_main), rel=1e-6)
    assert piece.info["kl_after"] == pytest.approx(_kl(target, expected, rows_main), rel=1e-5)
    assert piece.info["kl_after"] < piece.info["kl_before"]
    if steps == 1:
        # One full step by hand: s = R (r̄ / pR), p' = p⊙s; p·R = (0.4 + 0.2σ, 0.6 − 0.2σ)
        # = (.54621, .45379), r̄ / pR = (.85194, 1.17821), s = (.93969, 1.09047, 1.01508).
        ratio = target / np.array([0.4 + 0.2 * SIGMA, 0.6 - 0.2 * SIGMA])
        s = rows_main @ ratio
        assert np.exp(picker.last) == pytest.approx(p_main * s, abs=1e-6)
        assert np.exp(picker.last) == pytest.approx([0.46985, 0.32714, 0.20302], abs=1e-5)
