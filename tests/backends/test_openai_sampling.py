"""What the ``openai`` backend sends for each sampling setting, and what it refuses.

With ``sampling_params: full`` every knob goes out, so a llama.cpp or vLLM server applies our
settings and not its own defaults (llama-cpp-python's server: top-k 40, min-p 0.05, repeat
penalty 1.1); with ``openai`` only OpenAI's own fields go out, and settings needing more are
refused before anything is sent. The real server's side is tests/backends/test_parity.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from societies.backends.base import Message, Settings
from societies.backends.openai_http import EndpointError, OpenAIBackend, Options, create
from societies.backends.registry import validate_spec
from societies.errors import ConfigError
from tests.servers import StubServer, completion

ASK = [Message("user", "2 + 3?")]
OPENAI_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "seed", "stop"}


def backend(url: str, **options: Any) -> OpenAIBackend:
    return create(Options(base_url=url, model="m", **options), None)


async def test_full_sends_every_knob_with_off_values() -> None:
    async with StubServer() as stub:
        b = backend(f"{stub.url}/v1")
        await b.generate(ASK, Settings(temperature=0.0, max_tokens=5))
        await b.generate(ASK, Settings(temperature=0.8, max_tokens=5, top_k=7, min_p=0.1,
                                       top_p=0.9, seed=3, stop=("x",)))
        await b.aclose()
    off, on = (body for _, body, _ in stub.requests)
    # top_k 0 and min_p 0 are sent too: left out, the server's top-k 40 / min-p 0.05 apply.
    assert (off["top_k"], off["min_p"], off["top_p"], off["temperature"]) == (0, 0.0, 1.0, 0.0)
    assert (on["top_k"], on["min_p"], on["top_p"], on["seed"], on["stop"]) == (
        7, 0.1, 0.9, 3, ["x"])
    for body in (off, on):  # llama.cpp's and vLLM's names for the repetition penalty
        assert body["repeat_penalty"] == body["repetition_penalty"] == 1.0
        assert body["presence_penalty"] == body["frequency_penalty"] == 0.0


async def test_openai_mode_sends_only_openai_fields_and_refuses_more() -> None:
    async with StubServer() as stub:
        b = backend(f"{stub.url}/v1", sampling_params="openai")
        plain = Settings(temperature=0.7, max_tokens=5, seed=1, top_p=0.9, stop=("x",))
        b.check_settings(plain)
        await b.generate(ASK, plain)
        for needs_more in (Settings(top_k=5), Settings(min_p=0.05)):
            with pytest.raises(ValueError) as err:
                b.check_settings(needs_more)
            message = str(err.value)
            assert "\n" not in message and "sampling_params: openai" in message
            assert ("top_k=5" if needs_more.top_k else "min_p=0.05") in message
            # A call that slips past plan time stops the run (a UserError) and sends nothing.
            with pytest.raises(EndpointError, match="cannot apply"):
                await b.generate(ASK, needs_more)
        await b.aclose()
    assert len(stub.requests) == 1
    assert set(stub.requests[0][1]) == OPENAI_FIELDS
    full = backend(f"{stub.url}/v1")
    full.check_settings(Settings(top_k=5, min_p=0.05))  # full takes anything
    assert b.identity == f"{full.identity}:openai"  # the server's own defaults apply: apart


def test_sampling_params_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"models\.srv\.sampling_params"):
        validate_spec({"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                       "sampling_params": "vllm"}, "models.srv")


@pytest.mark.parametrize(("sent", "expected"), [("eos", "stop"), ("tool_calls", "stop"),
                                                ("length", "length"), (None, "stop")])
async def test_finish_reason_is_normalised(sent: str | None, expected: str) -> None:
    async def answer(body: dict[str, Any], request: web.Request) -> web.StreamResponse:
        return web.json_response(completion("ok", finish_reason=sent))

    async with StubServer(answer) as stub:
        b = backend(f"{stub.url}/v1")
        reply = await b.generate(ASK, Settings(max_tokens=5))
        await b.aclose()
    assert reply.finish_reason == expected
