"""Combination rules on tiny hand-built distributions with known answers, then a few real
tokens from each method with the bundled models."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from societies.backends.base import Message
from societies.ensembles.base import Method, TokenBackend
from societies.ensembles.decode import GreedyPicker, decode
from societies.ensembles.methods import (
    Contrastive,
    GaC,
    LogitAverage,
    ProbAverage,
    ProxyTuning,
    UniTE,
    member_weights,
)


class Vocab(TokenBackend):
    """A fixed vocabulary (b"" entries are control tokens, ``eos`` ends); no model behind it:
    the tests hand distributions to ``method.step`` directly."""

    def __init__(self, pieces: Sequence[bytes], eos: int) -> None:
        self.pieces, self.eos = list(pieces), eos

    identity = property(lambda self: "vocab")  # type: ignore[assignment]
    vocab_size = property(lambda self: len(self.pieces))  # type: ignore[assignment]
    eos_tokens = property(lambda self: frozenset({self.eos}))  # type: ignore[assignment]
    tokens = property(lambda self: [])  # type: ignore[assignment]

    def token_bytes(self, token: int) -> bytes:
        return self.pieces[token]

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        data, out = text.encode(), []
        while data:  # longest match; bytes nothing spells are skipped
            fits = [t for t, p in enumerate(self.pieces) if p and data.startswith(p)]
            if not fits:
                data = data[1:]
                continue
            best = max(fits, key=lambda t: len(self.pieces[t]))
            out.append(best)
            data = data[len(self.pieces[best]):]
        return out

    def format_prompt(self, messages: Sequence[Message]) -> str:
        return ""

    def reset(self, tokens: Sequence[int]) -> None: ...
    def append(self, tokens: Sequence[int]) -> None: ...
    def truncate(self, length: int) -> None: ...

    def next_logprobs(self) -> np.ndarray:
        raise AssertionError("tests pass distributions directly")


def lp(*probs: float) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p / p.sum()).astype(np.float32)


A = Vocab([b"x", b"a", b"b", b"c", b""], eos=4)  # no "d"
B = Vocab([b"a", b"b", b"d", b"<ctl>", b"", b"ab"], eos=4)
P_A = lp(0.04, 0.5, 0.3, 0.15, 0.01)
P_B = lp(0.05, 0.4, 0.5, 0.0, 0.05, 0.0)


def step(method: Method, members: list[TokenBackend], probs: list[np.ndarray]) -> tuple:
    method.prepare(members)
    piece = method.step(members, probs, GreedyPicker())
    return piece.text, piece.source, piece.token, piece.eos


def test_unite_union_of_top_k_and_weighted_argmax() -> None:
    # top-2 union {a, b, d}. A renormalised: a .625 b .375 d 0 (A cannot spell d);
    # B: a .053 b .421 d .526. Equal weights: b .398 wins; A (main) has b, so A emits it.
    assert step(UniTE(top_k=2), [A, B], [P_A, P_B]) == (b"b", 0, 2, False)
    # Weights .2/.8: d .421 > b .412; only B has d, so B emits it.
    assert step(UniTE(top_k=2, weights=[0.2, 0.8]), [A, B], [P_A, P_B]) == (b"d", 1, 2, False)
    # main=1: B emits b with its own id.
    assert step(UniTE(top_k=2, main=1), [A, B], [P_A, P_B]) == (b"b", 1, 1, False)


def test_unite_counts_a_missing_token_by_the_first_token_of_its_spelling() -> None:
    p_b = lp(0.1, 0.1, 0.0, 0.0, 0.0, 0.8)  # B is sure of "ab", a token A lacks
    p_a = lp(0.0, 0.55, 0.45, 0.0, 0.0)
    # A's "ab" counts p_A(a): A renormalised over {ab, a, b}: .355 .355 .290;
    # B: ab .8 a .1 b .1. Sum: ab wins, and only B has it.
    assert step(UniTE(top_k=1), [A, B], [p_a, p_b]) == (b"ab", 1, 5, False)


def test_eos_is_shared_across_vocabularies() -> None:
    p_a, p_b = lp(0.1, 0.1, 0.1, 0.1, 0.6), lp(0.1, 0.1, 0.1, 0.0, 0.7, 0.0)
    assert step(UniTE(top_k=1), [A, B], [p_a, p_b])[3] is True
    assert step(GaC(), [A, B], [p_a, p_b])[3] is True


def test_gac_sums_over_the_union_and_gates_on_the_main_member() -> None:
    p_a = lp(0.05, 0.4, 0.35, 0.15, 0.05)
    p_b = lp(0.1, 0.6, 0.2, 0.0, 0.1, 0.0)
    # Union: b = .35/2 + .6/2 = .475 beats a = .25.
    assert step(GaC(), [A, B], [p_a, p_b]) == (b"b", 0, 2, False)
    gac = GaC(gate_threshold=0.5)  # A's top is .4 < .5: ensemble
    assert step(gac, [A, B], [p_a, p_b]) == (b"b", 0, 2, False)
    assert gac.step([A, B], [p_a, p_b], GreedyPicker()).info == {"ensembled": 1.0}
    gac = GaC(gate_threshold=0.3)  # A's top is .4 >= .3: A alone
    assert step(gac, [A, B], [p_a, p_b]) == (b"a", 0, 1, False)
    assert gac.step([A, B], [p_a, p_b], GreedyPicker()).info == {"ensembled": 0.0}


SAME = Vocab([b"w", b"x", b"y", b"z", b""], eos=4)
SAME2 = Vocab([b"w", b"x", b"y", b"z", b""], eos=4)
SAME3 = Vocab([b"w", b"x", b"y", b"z", b""], eos=4)


def test_contrastive_plausibility_cutoff() -> None:
    expert = lp(0.59, 0.3, 0.04, 0.07, 0.0)
    amateur = lp(0.7, 0.25, 0.001, 0.049, 0.0)
    # alpha .1: cutoff .059 drops y (ratio 40); of the rest z has the best ratio 1.43.
    assert step(Contrastive(alpha=0.1), [SAME, SAME2], [expert, amateur])[0] == b"z"
    assert step(Contrastive(alpha=0.01), [SAME, SAME2], [expert, amateur])[0] == b"y"
    method = Contrastive(alpha=0.1)
    method.prepare([SAME, SAME2])
    assert np.isneginf(method.scores([expert, amateur])[2])


def test_average_weights_and_same_vocabulary_rules() -> None:
    p1, p2 = lp(0.6, 0.4, 0, 0, 0), lp(0.1, 0.9, 0, 0, 0)
    assert step(ProbAverage(), [SAME, SAME2], [p1, p2])[0] == b"x"  # .35 / .65
    assert step(ProbAverage([0.9, 0.1]), [SAME, SAME2], [p1, p2])[0] == b"w"  # .55 / .45
    assert step(LogitAverage([0.5, 0.5]), [SAME, SAME2], [p1, p2])[0] == b"x"
    base, expert, anti = (lp(0.5, 0.5, 0.1, 0.1, 0.1), lp(0.8, 0.2, 0.1, 0.1, 0.1),
                          lp(0.2, 0.8, 0.1, 0.1, 0.1))
    assert step(ProxyTuning(), [SAME, SAME2, SAME3], [base, expert, anti])[0] == b"w"
    with pytest.raises(ValueError, match="same vocabulary"):
        ProbAverage().prepare([A, B])
    with pytest.raises(ValueError, match="exactly 3"):
        ProxyTuning().prepare([SAME, SAME2])


@pytest.mark.parametrize(("make", "message"), [
    (lambda: member_weights([1.0], 2), "2 non-negative"),
    (lambda: member_weights([0.0, 0.0], 2), "not all 0"),
    (lambda: member_weights([-1.0, 2.0], 2), "non-negative"),
    (lambda: UniTE(top_k=0), "top_k"), (lambda: GaC(gate_threshold=0), "gate_threshold"),
    (lambda: Contrastive(alpha=0), "alpha"), (lambda: UniTE(main=3).prepare([A, B]), "main")])
def test_bad_arguments_say_what_is_wrong(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


# -- a few real tokens per method ------------------------------------------------------------

@pytest.fixture(scope="module")
def models() -> Iterator[dict[str, TokenBackend]]:
    from societies.ensembles.llama_tokens import LlamaTokenBackend

    loaded = {"s1": LlamaTokenBackend("bundled:smollm2", n_ctx=256),
              "s2": LlamaTokenBackend("bundled:smollm2", n_ctx=256),
              "s3": LlamaTokenBackend("bundled:smollm2", n_ctx=256),
              "g": LlamaTokenBackend("bundled:gemma3", n_ctx=256, prompt_format="plain")}
    yield loaded
    for m in loaded.values():
        m.close()  # type: ignore[attr-defined]


@pytest.mark.real
@pytest.mark.parametrize(("make", "names"), [
    (lambda: UniTE(top_k=5), "s1 g"), (lambda: UniTE(main=1), "s1 g"), (GaC, "s1 g"),
    (lambda: GaC(gate_threshold=0.6, main=1), "s1 g"),
    (lambda: ProbAverage([0.7, 0.3]), "s1 s2"), (lambda: LogitAverage([0.3, 0.7]), "s1 s2"),
    (lambda: Contrastive(alpha=0.1), "s1 s2"), (ProxyTuning, "s1 s2 s3")])
def test_real_members_produce_text(models: dict[str, TokenBackend], make: object,
                                   names: str) -> None:
    members = [models[n] for n in names.split()]
    method: Method = make()  # type: ignore[operator]
    method.prepare(members)
    messages = [Message("user", "What is 2 + 3? Answer with a number.")]
    result = decode(members, method, [m.format_prompt(messages) for m in members],
                    GreedyPicker(), max_tokens=4)
    assert result.pieces or result.finish_reason == "stop"
    assert result.data == b"".join(p.text for p in result.pieces)
    for i, m in enumerate(members):
        assert m.detokenize(m.tokens[result.prompt_tokens[i]:]) == result.data
