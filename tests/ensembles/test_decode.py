"""The decode loop, pickers and processors, on small fake members with known behaviour."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from societies.backends.base import BackendError, Message, Settings
from societies.ensembles.base import MemberError, Method, Piece, TokenBackend
from societies.ensembles.decode import (
    GreedyPicker,
    LazyLogprobs,
    SamplingPicker,
    TextSync,
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


P4 = np.log(np.array([0.5, 0.3, 0.15, 0.05]))


def drawn(picker: SamplingPicker, scores: np.ndarray, n: int = 300) -> set[int]:
    """The indices ``picker`` draws from ``scores`` in ``n`` tries."""
    return {picker(scores) for _ in range(n)}


def test_sampling_means_what_it_means_on_the_chat_backends() -> None:
    # Off values: top_k 0, top_p 1, min_p 0 keep every candidate.
    assert drawn(SamplingPicker(1.0, seed=0), P4) == {0, 1, 2, 3}
    assert drawn(SamplingPicker(1.0, top_k=2, seed=0), P4) == {0, 1}
    # top-p and min-p see the scores before temperature (llama.cpp's order): at temperature
    # 5 the tempered probabilities are about .32 .29 .25 .15, where top-p .79 would keep three.
    assert drawn(SamplingPicker(5.0, top_p=0.79, seed=0), P4) == {0, 1}
    assert drawn(SamplingPicker(5.0, top_p=0.81, seed=0), P4) == {0, 1, 2}
    assert drawn(SamplingPicker(5.0, min_p=0.35, seed=0), P4) == {0, 1}  # p >= .175
    assert drawn(SamplingPicker(5.0, min_p=0.29, seed=0), P4) == {0, 1, 2}  # p >= .145
    # Temperature 1, top-k 1 is greedy.
    assert drawn(SamplingPicker(1.0, top_k=1, seed=0), P4) == {0}


def test_sampling_frequencies_follow_the_tempered_distribution() -> None:
    picker = SamplingPicker(2.0, seed=11)
    counts = np.bincount([picker(P4) for _ in range(4000)], minlength=4) / 4000
    tempered = np.exp(P4 / 2) / np.exp(P4 / 2).sum()
    assert counts == pytest.approx(tempered, abs=0.03)


def test_pickers_from_settings_and_seeds() -> None:
    assert isinstance(make_picker(Settings(temperature=0, top_k=1, min_p=0.5)), GreedyPicker)
    picker = make_picker(Settings(temperature=0.7, top_k=3, top_p=0.9, min_p=0.05, seed=4))
    assert isinstance(picker, SamplingPicker)
    assert picker.params == {"temp": 0.7, "top_k": 3, "top_p": 0.9, "min_p": 0.05}
    again = make_picker(Settings(temperature=0.7, top_k=3, top_p=0.9, min_p=0.05, seed=4))
    assert [picker(P4) for _ in range(30)] == [again(P4) for _ in range(30)]  # seeded
    frozen = np.array(P4, dtype=np.float32)
    frozen.flags.writeable = False  # members share their arrays: pickers must not edit them
    make_picker(Settings(temperature=1.0, seed=0))(frozen)
    assert GreedyPicker()(np.log(np.array([0.1, 0.6, 0.3]))) == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"temperature": 0}, "GreedyPicker"), ({"temperature": 1, "top_k": -1}, "top_k"),
    ({"temperature": 1, "top_p": 0}, "top_p"), ({"temperature": 1, "top_p": 1.5}, "top_p"),
    ({"temperature": 1, "min_p": 2}, "min_p")])
def test_sampler_arguments_are_checked(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingPicker(**kwargs)  # type: ignore[arg-type]


class Broken(FakeBackend):
    """A member whose model fails on its second evaluation."""

    def next_logprobs(self) -> np.ndarray:
        if self.evaluations >= 1:
            raise RuntimeError("the model broke")
        return super().next_logprobs()


def test_a_failing_member_is_named_and_a_backend_error() -> None:
    target = (PROMPT + ANSWER).encode()
    members = [FakeBackend([b" the"], target, "words"), Broken([b" th"], target, "pieces")]
    method = GaC()
    method.prepare(members)
    with pytest.raises(MemberError, match="ensemble member second: RuntimeError: the model broke"
                       ) as err:
        decode(members, method, [PROMPT] * 2, GreedyPicker(), 10, names=["first", "second"])
    assert isinstance(err.value, BackendError) and err.value.member == "second"


class HalfCharacter(Method):
    """Writes the first byte of "你" (a byte-level token a SentencePiece model may lack)."""

    def step(self, members: Sequence[TokenBackend], logprobs: Sequence[np.ndarray],
             pick: object) -> Piece:
        return Piece(b"\xe4", 0, 0xE4)


def test_a_hand_off_that_cannot_be_spelled_names_the_member() -> None:
    main = FakeBackend([b" the"], name="bytes")
    other = FakeBackend([b" the"], name="words")
    other.vocab = [w if len(w) > 1 or w < b"\x80" else b"?" for w in other.vocab]  # no 0x80+
    with pytest.raises(MemberError, match="member other: ValueError: no token for byte 0xe4"):
        decode([main, other], HalfCharacter(), [PROMPT] * 2, GreedyPicker(), 10,
               names=["main", "other"])


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
