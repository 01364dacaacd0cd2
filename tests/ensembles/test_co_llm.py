"""Co-LLM: the loss, training, head files, thresholds, deferral at token and text level."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from societies.backends.base import Message
from societies.backends.registry import BackendPool, validate_spec
from societies.ensembles.base import TokenBackend
from societies.ensembles.co_llm import (
    CoLLM,
    DeferralHead,
    load_head,
    marginal_nll,
    pick_threshold,
    save_head,
    train_head,
)
from societies.ensembles.decode import GreedyPicker, decode
from societies.ensembles.train_co_llm import PrefixMass, solution
from societies.errors import ConfigError, UserError


class Oracle(TokenBackend):
    """Greedy longest-match tokenizer over ``vocab``; puts ``confidence`` on the token that
    continues ``target`` (after its own prompt, which is empty)."""

    def __init__(self, vocab: Sequence[bytes], target: bytes, confidence: float = 0.9) -> None:
        self.vocab, self.target, self.confidence = list(vocab), target, confidence
        self._tokens: list[int] = []

    identity = property(lambda self: f"oracle:{len(self.vocab)}")
    vocab_size = property(lambda self: len(self.vocab))
    eos_tokens = property(lambda self: frozenset({0}))  # vocab[0] is b"" (end)
    tokens = property(lambda self: list(self._tokens))

    def token_bytes(self, token: int) -> bytes:
        return self.vocab[token]

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        data, out = text.encode(), []
        while data:
            best = max((i for i, v in enumerate(self.vocab) if v and data.startswith(v)),
                       key=lambda i: len(self.vocab[i]))
            out.append(best)
            data = data[len(self.vocab[best]):]
        return out

    def format_prompt(self, messages: Sequence[Message]) -> str:
        return ""

    def reset(self, tokens: Sequence[int]) -> None:
        self._tokens = list(tokens)

    def append(self, tokens: Sequence[int]) -> None:
        self._tokens += tokens

    def truncate(self, length: int) -> None:
        del self._tokens[length:]

    def next_logprobs(self) -> np.ndarray:
        rest = self.target[len(self.detokenize(self._tokens)):]
        fits = [i for i, v in enumerate(self.vocab) if v and rest.startswith(v)]
        best = max(fits, key=lambda i: len(self.vocab[i])) if fits else 0
        p = np.full(len(self.vocab), (1 - self.confidence) / (len(self.vocab) - 1))
        p[best] = self.confidence
        return np.log(p).astype(np.float32)


def constant_head(pi: float, dim: int = 9) -> DeferralHead:
    head = DeferralHead(dim)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.fill_(math.log(pi / (1 - pi)))
    return head


def test_marginal_loss_matches_a_hand_computation() -> None:
    z = torch.tensor([0.0, math.log(3.0)])  # π = 0.5 and 0.75
    loss = marginal_nll(z, torch.log(torch.tensor([0.2, 0.4])), torch.log(torch.tensor([0.6, 0.1])))
    # 0.5·0.2 + 0.5·0.6 = 0.4 and 0.25·0.4 + 0.75·0.1 = 0.175
    assert float(loss) == pytest.approx(-(math.log(0.4) + math.log(0.175)) / 2, rel=1e-6)


def test_training_learns_an_obvious_deferral_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    asst_right = x[:, 0] > 0
    logp_asst = np.where(asst_right, np.log(0.9), np.log(0.05)) + rng.normal(0, 0.1, 600)
    logp_base = np.where(asst_right, np.log(0.05), np.log(0.9)) + rng.normal(0, 0.1, 600)
    head, history = train_head(x, logp_base, logp_asst, bce_epochs=20, epochs=100)
    pi = torch.sigmoid(head(torch.as_tensor(x))).detach().numpy()
    assert np.mean((pi > 0.5) == asst_right) > 0.95
    alone = min(-logp_base.mean(), -logp_asst.mean())
    assert history[-1] < history[0] and history[-1] < 0.5 * alone


def test_head_files_round_trip_and_name_their_base(tmp_path: Path) -> None:
    head = constant_head(0.3, dim=5)
    with torch.no_grad():
        head.linear.weight.normal_()
    path = tmp_path / "heads" / "h.pt"
    save_head(path, head, {"base": "llamacpp:base.gguf:abc:chat", "features": "hidden"})
    loaded, meta = load_head(path, base="llamacpp:base.gguf:abc:chat")
    x = np.arange(5, dtype=np.float32)
    assert loaded.prob(x) == pytest.approx(head.prob(x))
    assert meta["dim"] == 5 and meta["features"] == "hidden"
    with pytest.raises(UserError) as err:
        load_head(path, base="llamacpp:other.gguf:def:chat")
    assert "\n" not in str(err.value) and "base.gguf" in str(err.value)
    with pytest.raises(UserError, match="not found"):
        load_head(tmp_path / "missing.pt")


def test_threshold_outside_0_1_is_refused() -> None:
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="threshold"):
            CoLLM(constant_head(0.5), bad, features="logprobs")
        with pytest.raises(ConfigError, match=r"models\.pair\.threshold"):
            validate_spec({"co_llm": {"base": "a", "assistant": "b", "head": "h.pt",
                                      "threshold": bad}}, "models.pair")
    with pytest.raises(ConfigError, match="hidden states"):
        CoLLM(constant_head(0.5), 0.5, features="hidden")


def test_pick_threshold_takes_the_lowest_validation_nll() -> None:
    pi = np.array([0.1, 0.9, 0.6])
    logp_base, logp_asst = np.array([-0.1, -3.0, -1.0]), np.array([-2.0, -0.1, -2.0])
    best, table = pick_threshold(pi, logp_base, logp_asst, (0.05, 0.5, 0.7, 0.95))
    assert best == 0.7
    assert [round(r["deferral_rate"], 3) for r in table] == [1.0, 0.667, 0.333, 0.0]


def test_shared_vocabulary_defers_token_by_token() -> None:
    vocab = [b"", b"a", b"b", b" "]
    base, asst = Oracle(vocab, b"zz"), Oracle(vocab, b"ab a")
    for pi, threshold, source in ((0.9, 0.5, 1), (0.9, 1.0, 0), (0.2, 0.5, 0)):
        method = CoLLM(constant_head(pi), threshold, features="logprobs")
        method.prepare([base, asst])
        piece = method.step([base, asst], [base.next_logprobs(), asst.next_logprobs()],
                            GreedyPicker())
        assert piece.source == source and piece.info["deferred"] == float(source)
    result = decode([base, asst], method_for(0.9), ["", ""], GreedyPicker(), 10)
    # Four letters and the stop, all the assistant's.
    assert result.text == "ab a" and result.info["deferred"] == result.info["steps"] == 5


def test_different_tokenizers_defer_at_text_level() -> None:
    base = Oracle([b"", b"a", b"b", b" ", b"ab", b"\xc3", b"\xa9"], b"zz")
    asst = Oracle([b"", b"ab a", b"a", b"b", b" ", b"\xc3", b"\xa9"], "ab aé".encode())
    method = method_for(0.9)
    method.prepare([base, asst])
    piece = method.step([base, asst], [base.next_logprobs(), asst.next_logprobs()],
                        GreedyPicker())
    # One assistant token, "ab a", spans three base tokens; the loop re-tokenizes the base.
    assert piece.text == b"ab a" and piece.source == 1 and asst.tokens == []
    assert piece.info == {"deferred": 1.0, "pi": pytest.approx(0.9), "steps": 1.0,
                          "assistant_tokens": 1.0}
    # "é" comes as two byte tokens: one deferral writes both.
    result = decode([base, asst], method, ["", ""], GreedyPicker(), 10)
    assert result.text == "ab aé" and result.finish_reason == "stop"
    assert result.info["assistant_tokens"] == 3 and result.info["deferred"] == 3


def method_for(pi: float) -> CoLLM:
    return CoLLM(constant_head(pi), 0.5, features="logprobs")


def test_assistant_probability_of_a_base_token_follows_its_own_tokens() -> None:
    vocab = [b"a", b"ab", b"abc", b"b", b"c"]
    p0 = np.log(np.array([0.1, 0.5, 0.2, 0.1, 0.1]))
    p1 = np.log(np.array([0.1, 0.1, 0.1, 0.1, 0.6]))
    mass = PrefixMass(vocab)
    assert mass.mass(p0, b"ab") == pytest.approx(math.log(0.7))
    # "abc" as the assistant writes it: "ab" then "c"; base boundaries after a, b and c.
    curve = mass.curve(b"abc", [(0, 2), (2, 3)], np.array([p0[1], p1[4]]),
                       np.stack([p0, p1]), [0, 1, 2, 3])
    assert np.exp(curve) == pytest.approx([1.0, 0.8, 0.5, 0.3])
    assert solution((1, 2, 3, 4, 5, 6)).endswith("The answer is -19.")


def _bundled() -> None:
    from societies.backends.bundled import bundled_path

    try:
        bundled_path("smollm2"), bundled_path("gemma3")
    except UserError as err:
        pytest.skip(str(err))


@pytest.mark.real
def test_llama_hidden_states_feed_the_output_layer() -> None:
    _bundled()
    from societies.backends.bundled import bundled_path
    from societies.ensembles.co_llm_chat import LlamaHiddenStates
    from societies.ensembles.gguf_file import gguf_embeddings

    reader = LlamaHiddenStates(bundled_path("smollm2"), n_ctx=128)
    tokens = reader.llm.tokenize(b"The capital of France is Paris. The answer is", add_bos=True)
    hidden, logits = reader.all_positions(tokens)
    last_hidden, last_logprobs = LlamaHiddenStates(bundled_path("smollm2"), 128).last(tokens)
    # Tied embeddings: the last hidden state times the embedding matrix gives the logits.
    emb = gguf_embeddings(bundled_path("smollm2"))
    assert np.corrcoef(hidden[-1] @ emb.T, logits[-1])[0, 1] > 0.999
    # One batch or token by token: the same state up to the kernels' rounding.
    assert np.linalg.norm(last_hidden - hidden[-1]) < 0.05 * np.linalg.norm(hidden[-1])
    assert int(np.argmax(last_logprobs)) == int(np.argmax(logits[-1]))
    reader.close()


@pytest.mark.real
def test_a_head_for_another_base_is_refused_by_the_backend(tmp_path: Path) -> None:
    _bundled()
    from societies.ensembles.co_llm_chat import create

    pool = BackendPool({})
    head = tmp_path / "h.pt"
    save_head(head, constant_head(0.5, 576), {"base": "llamacpp:other.gguf:x:chat",
                                              "features": "hidden"})
    spec = validate_spec({"co_llm": {"base": "smollm2", "assistant": "gemma3",
                                     "head": str(head)}}, "models.pair")
    with pytest.raises(UserError, match=r"trained for base model llamacpp:other\.gguf"):
        create(spec.options, pool)  # type: ignore[arg-type]
    save_head(head, constant_head(0.5, 576), {"base": pool.chat("smollm2").identity,
                                              "features": "hidden"})
    assert create(spec.options, pool).identity.startswith("co_llm:")  # type: ignore[arg-type]


@pytest.mark.real
@pytest.mark.slow
async def test_real_training_run_and_a_reply(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             ) -> None:
    _bundled()
    from societies.backends.base import Settings
    from societies.ensembles.train_co_llm import main

    head = tmp_path / "smollm2-gemma3.pt"
    assert main(["--out", str(head), "--train", "12", "--val", "6", "--generate", "2",
                 "--thresholds", "0,0.5,1", "--max-tokens", "24"]) == 0
    out = capsys.readouterr().out
    assert "marginal NLL/token" in out and "picked threshold" in out
    pool = BackendPool({"pair": {"co_llm": {"base": "smollm2", "assistant": "gemma3",
                                            "head": str(head), "threshold": 0.0}}})
    reply = await pool.chat("pair").generate([Message("user", "What is 2+3?")],
                                             Settings(temperature=0, max_tokens=8))
    assert reply.text and reply.extra["deferral_rate"] == 1.0  # η = 0: the assistant writes
    await pool.aclose()


# Gemma-3 gets a prompt of 70 tokens: its follow-up keeps 64 tokens of KV, the shared prefix
# ending off a multiple of 32 (where Gemma's Q4_K kernels moved the hidden state by up to 1.03).
HIDDEN_PROMPTS = {
    "smollm2": "Question: what is 2+3? Answer:",
    "gemma3": "System: You are one of several agents in a debate about arithmetic and general "
              "knowledge. Read the other agents' answers carefully, point out mistakes, and give "
              "your own final answer at the end of your reply in the form 'The answer is X'. "
              "Keep replies short.\n\nUser: What is 12+30?\n\nAssistant:",
}


@pytest.mark.real
@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_hidden_states_of_a_follow_up_do_not_depend_on_the_call_before(model: str) -> None:
    _bundled()
    from societies.backends.bundled import bundled_path
    from societies.ensembles.co_llm_chat import LlamaHiddenStates

    kept, fresh = (LlamaHiddenStates(bundled_path(model), n_ctx=256) for _ in range(2))
    prompt = kept.llm.tokenize(HIDDEN_PROMPTS[model].encode(), add_bos=True)
    kept.start(prompt)
    tokens = list(prompt)
    for _ in range(4):  # a reply, one token per step as Co-LLM decodes it
        _, logprobs = kept.last(tokens)
        tokens.append(int(np.argmax(logprobs)))
    follow = tokens + kept.llm.tokenize(b" Are you sure? Answer:", add_bos=False)
    kept.start(follow)
    fresh.start(follow)
    hidden, logprobs = kept.last(follow)
    fresh_hidden, fresh_logprobs = fresh.last(follow)
    np.testing.assert_array_equal(hidden, fresh_hidden)
    np.testing.assert_array_equal(logprobs, fresh_logprobs)
    kept.close()
    fresh.close()
