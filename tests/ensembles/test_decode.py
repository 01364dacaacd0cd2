"""The decode loop, pickers and processors, on small fake members with known behaviour."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from societies.backends.base import Message
from societies.ensembles.base import Method, Piece, TokenBackend
from societies.ensembles.decode import (
    GreedyPicker,
    LazyLogprobs,
    SamplingPicker,
    Temperature,
    TextSync,
    TopK,
    TopP,
    decode,
    make_picker,
)
from societies.ensembles.methods import GaC, UniTE


class FakeBackend(TokenBackend):
    """Every single byte plus ``words``; tokenizes greedily by longest match; wants to write
    ``target`` (a prompt + answer), preferring the longest token that continues it."""

    def __init__(self, words: Sequence[bytes], target: bytes = b"", name: str = "fake") -> None:
        self.vocab = [bytes([b]) for b in range(256)] + [w for w in words if len(w) > 1]
        self.eos = len(self.vocab)
        self.vocab.append(b"")
        self.target, self.name = target, name
        self._tokens: list[int] = []
        self.evaluations = 0

    identity = property(lambda self: self.name)  # type: ignore[assignment]
    vocab_size = property(lambda self: len(self.vocab))  # type: ignore[assignment]
    eos_tokens = property(lambda self: frozenset({self.eos}))  # type: ignore[assignment]
    tokens = property(lambda self: list(self._tokens))  # type: ignore[assignment]

    def token_bytes(self, token: int) -> bytes:
        return self.vocab[token]

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        data, out = text.encode(), []
        while data:
            best = max((t for t, w in enumerate(self.vocab) if w and data.startswith(w)),
                       key=lambda t: len(self.vocab[t]))
            out.append(best)
            data = data[len(self.vocab[best]):]
        return out

    def format_prompt(self, messages: Sequence[Message]) -> str:
        return messages[-1].content

    def reset(self, tokens: Sequence[int]) -> None:
        self._tokens = list(tokens)

    def append(self, tokens: Sequence[int]) -> None:
        self._tokens += tokens

    def truncate(self, length: int) -> None:
        del self._tokens[length:]

    def next_logprobs(self) -> np.ndarray:
        self.evaluations += 1
        text = self.detokenize(self._tokens)
        rest = self.target[len(text):] if self.target.startswith(text) else b""
        scores = np.full(len(self.vocab), -20.0)
        for t, w in enumerate(self.vocab):
            if w and rest.startswith(w):
                scores[t] = len(w)
        if not rest:
            scores[self.eos] = 5.0
        return (scores - np.logaddexp.reduce(scores)).astype(np.float32)


PROMPT = "Q: hi\nA:"
ANSWER = " the cat sat on the mat"


def pair() -> list[FakeBackend]:
    target = (PROMPT + ANSWER).encode()
    return [FakeBackend([b" the", b" cat", b" sat"], target, "words"),
            FakeBackend([b" th", b"e c", b"at"], target, "pieces")]


@pytest.mark.parametrize("method", [UniTE(top_k=3), GaC(), GaC(gate_threshold=0.5)])
def test_two_tokenizers_write_the_target_and_stop_on_eos(method: Method) -> None:
    members = pair()
    method.prepare(members)
    result = decode(members, method, [PROMPT, PROMPT], GreedyPicker(), max_tokens=50)
    assert result.text == ANSWER
    assert result.finish_reason == "stop"
    assert b"".join(p.text for p in result.pieces) == result.data
    for m in members:
        assert m.detokenize(m.tokens) == (PROMPT + ANSWER).encode()


def test_max_tokens_and_stop_strings() -> None:
    members = pair()
    method = UniTE(top_k=3)
    method.prepare(members)
    short = decode(members, method, [PROMPT] * 2, GreedyPicker(), max_tokens=2)
    assert (short.finish_reason, len(short.pieces)) == ("length", 2)
    cut = decode(members, method, [PROMPT] * 2, GreedyPicker(), 50, stop=["sat"])
    assert (cut.text, cut.finish_reason) == (" the cat ", "stop")


def test_decode_validates_arguments() -> None:
    members = pair()
    with pytest.raises(ValueError, match="2 members but 1 prompts"):
        decode(members, UniTE(), [PROMPT], GreedyPicker(), 5)
    with pytest.raises(ValueError, match="appears twice"):
        decode([members[0], members[0]], UniTE(), [PROMPT] * 2, GreedyPicker(), 5)
    with pytest.raises(ValueError, match="max_tokens"):
        decode(members, UniTE(), [PROMPT] * 2, GreedyPicker(), 0)


def test_lazy_logprobs_evaluate_only_what_is_read() -> None:
    members = pair()
    for m in members:
        m.reset(m.tokenize(PROMPT))
    lazy = LazyLogprobs(members)
    assert len(lazy) == 2 and lazy[-1] is lazy[1]
    assert [m.evaluations for m in members] == [0, 1]


def test_processors_do_not_mutate_and_keep_the_right_candidates() -> None:
    scores = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    before = scores.copy()
    assert np.isfinite(TopK(2)(scores)).tolist() == [True, True, False, False]
    assert np.isfinite(TopP(0.8)(scores)).tolist() == [True, True, False, False]
    assert np.isfinite(TopP(0.81)(scores)).tolist() == [True, True, True, False]
    assert np.allclose(Temperature(2.0)(scores), scores / 2)
    np.testing.assert_array_equal(scores, before)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Temperature(0), "GreedyPicker"), (lambda: TopK(0), "top_k"),
    (lambda: TopP(0), "top_p"), (lambda: TopP(1.5), "top_p")])
def test_processor_arguments_are_checked(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_pickers() -> None:
    scores = np.log(np.array([0.1, 0.6, 0.3]))
    assert GreedyPicker()(scores) == 1
    assert isinstance(make_picker(0), GreedyPicker)
    draws = [make_picker(1.0, seed=7)(scores) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same draw
    picker = SamplingPicker([TopK(1)], seed=1)
    assert {picker(scores) for _ in range(20)} == {1}
    counts = np.bincount([make_picker(1.0, seed=s)(scores) for s in range(400)], minlength=3)
    assert counts[1] > counts[2] > counts[0]


TEXT = st.text(alphabet=st.sampled_from(list("ab c\n1 2你😀é")), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(text=TEXT, cuts=st.lists(st.integers(1, 5), min_size=1, max_size=20),
       main=st.integers(0, 1))
def test_handoff_keeps_every_member_byte_exact(text: str, cuts: list[int], main: int) -> None:
    members = pair()
    for m in members:
        m.reset(m.tokenize(PROMPT))
    prompts = [m.tokens for m in members]
    sync = TextSync(members, tail_tokens=2)
    data, pos, pieces = text.encode(), 0, []
    for n in cuts * 4:  # arbitrary byte chunks: they split UTF-8 characters too
        if pos >= len(data):
            break
        pieces.append(Piece(data[pos:pos + n]))
        pos += n
    for t in members[main].tokenize(text):  # then the main member's own tokens
        pieces.append(Piece(members[main].token_bytes(t), main, t))
    for piece in pieces:
        sync.push(piece)
        for i, m in enumerate(members):
            assert m.tokens[:len(prompts[i])] == prompts[i]
            assert m.detokenize(sync.generated(i)) == bytes(sync.emitted)
    assert bytes(sync.emitted) == b"".join(p.text for p in pieces)
