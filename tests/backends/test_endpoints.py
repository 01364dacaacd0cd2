"""Several servers for one ``openai`` model (``base_url`` a list): spreading, per-server limits,
failing servers set aside and brought back, all down, identity and config errors.

Stub servers give the answers on demand (a 500 every time, exact timing); the real test runs a
society through two fault proxies in front of the real ``llama_cpp.server``, one of them
failing every call, and checks the healthy one carried the run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from societies.backends.base import BackendError, Message, Settings, TransientBackendError
from societies.backends.endpoints import EndpointPool
from societies.backends.model import Model, RetryPolicy
from societies.backends.openai_http import EndpointError, OpenAIBackend, Options, create
from societies.backends.registry import validate_spec
from societies.config import parse_config
from societies.errors import ConfigError
from societies.plan import build_plan
from societies.runner import Run
from societies.storage import RunStore
from tests.servers import FaultProxy, StubServer, completion, free_port

ASK = [Message("user", "What is 2 + 3?")]
SHORT = Settings(temperature=0.0, max_tokens=8, seed=1)


def backend(urls: list[str], **options: Any) -> OpenAIBackend:
    return create(Options(base_url=urls, model="stub", connect_wait=0.3, **options), None)


def slow(seconds: float) -> Any:
    async def handler(body: dict[str, Any], request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.json_response(completion("ok"))
    return handler


async def failing(body: dict[str, Any], request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": {"message": "boom"}}, status=500)


def retrying(b: OpenAIBackend, attempts: int = 6) -> Model:
    return Model(b, "srv", RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=0.05))


async def test_calls_spread_over_servers_within_each_servers_limit() -> None:
    async with StubServer(slow(0.1)) as a, StubServer(slow(0.1)) as b:
        srv = backend([f"{a.url}/v1", f"{b.url}/v1"], max_concurrent=2)
        try:
            replies = await asyncio.gather(*(srv.generate(ASK, SHORT) for _ in range(12)))
        finally:
            await srv.aclose()
    assert all(r.text == "ok" for r in replies)
    assert len(a.requests) == len(b.requests) == 6  # fewest in flight first: an even share
    assert a.in_flight_max == b.in_flight_max == 2  # never more than max_concurrent each


async def test_a_failing_server_is_set_aside_and_the_other_carries_the_calls() -> None:
    async with StubServer(failing) as bad, StubServer() as good:
        srv = backend([f"{bad.url}/v1", f"{good.url}/v1"], endpoint_failures=2,
                      endpoint_cooldown=60)
        model = retrying(srv)
        try:
            for _ in range(10):
                assert (await model.generate(ASK, SHORT)).text == "ok"
        finally:
            await srv.aclose()
    assert len(bad.requests) == 2  # two failures in a row, then it is left alone
    assert len(good.requests) == 10 and model.retries == 2


async def test_a_set_aside_server_is_tried_again_after_its_cool_down() -> None:
    async with StubServer(failing) as flaky, StubServer() as good:
        srv = backend([f"{flaky.url}/v1", f"{good.url}/v1"], endpoint_failures=1,
                      endpoint_cooldown=0.3)
        model = retrying(srv)
        try:
            await model.generate(ASK, SHORT)
            await model.generate(ASK, SHORT)
            assert len(flaky.requests) == 1
            flaky.handler = StubServer._ok  # it recovers while set aside
            await asyncio.sleep(0.35)
            await asyncio.gather(*(model.generate(ASK, SHORT) for _ in range(4)))
        finally:
            await srv.aclose()
    assert len(flaky.requests) == 3  # back in the rotation: half of the four


async def test_all_servers_down_ends_in_the_usual_backend_error() -> None:
    async with StubServer(failing) as a, StubServer(failing) as b:
        srv = backend([f"{a.url}/v1", f"{b.url}/v1"], endpoint_failures=1,
                      endpoint_cooldown=0.05)
        model = retrying(srv, attempts=4)
        try:
            with pytest.raises(BackendError) as err:
                await model.generate(ASK, SHORT)
        finally:
            await srv.aclose()
    assert isinstance(err.value, TransientBackendError)
    assert model.retries == 3 and len(a.requests) + len(b.requests) >= 2
    assert "HTTP 500" in str(err.value) or "set aside" in str(err.value)


async def test_all_servers_set_aside_is_transient_with_the_wait() -> None:
    pool = EndpointPool(["http://a/v1", "http://b/v1"], limit=1, failures=1, cooldown=5.0)
    for endpoint in pool.endpoints:
        pool.failed(endpoint, "down")
    with pytest.raises(TransientBackendError, match="all 2 endpoints are set aside") as err:
        async with pool.use():
            pass
    assert err.value.retry_after is not None and 4.0 < err.value.retry_after <= 5.0


async def test_a_429_pauses_only_the_server_that_sent_it() -> None:
    async def busy(body: dict[str, Any], request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": "busy"}}, status=429,
                                 headers={"Retry-After": "30"})
    async with StubServer(busy) as a, StubServer() as b:
        srv = backend([f"{a.url}/v1", f"{b.url}/v1"], endpoint_failures=1)
        model = retrying(srv)
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for _ in range(4):
                await model.generate(ASK, SHORT)
            elapsed = loop.time() - start
        finally:
            await srv.aclose()
    assert len(a.requests) == 1 and len(b.requests) == 4
    assert elapsed < 5  # the other server went on at once: no 30 s pause of the whole model


async def test_an_unreachable_server_is_set_aside_and_none_reachable_is_an_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    async with StubServer() as live:
        srv = backend([dead, f"{live.url}/v1"])
        try:
            replies = [await srv.generate(ASK, SHORT) for _ in range(3)]
        finally:
            await srv.aclose()
    assert [r.text for r in replies] == ["ok"] * 3 and len(live.requests) == 3
    srv = backend([dead, f"http://127.0.0.1:{free_port()}/v1"])
    try:
        with pytest.raises(EndpointError, match="cannot reach the server") as err:
            await srv.generate(ASK, SHORT)
    finally:
        await srv.aclose()
    assert dead in str(err.value) and "\n" not in str(err.value)


def test_identity_names_the_servers_in_any_order_and_one_is_as_before() -> None:
    one = create(Options(base_url="http://h:1/v1/", model="m"), None)
    assert one.identity == "openai:http://h:1/v1:m"
    assert create(Options(base_url=["http://h:1/v1"], model="m"), None).identity == one.identity
    ab = create(Options(base_url=["http://a:1/v1", "http://b:1/v1"], model="m"), None)
    ba = create(Options(base_url=["http://b:1/v1", "http://a:1/v1"], model="m"), None)
    assert ab.identity == ba.identity == "openai:http://a:1/v1,http://b:1/v1:m"


@pytest.mark.parametrize(("urls", "message"), [
    ([], "the list of servers is empty"),
    (["http://a:1/v1", "ftp://b"], "entry 1 must start with http:// or https://"),
    (["http://a:1/v1", "http://a:1/v1/"], "lists a server twice"),
])
def test_bad_server_lists_are_one_line_naming_the_field(urls: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_spec({"backend": "openai", "base_url": urls, "model": "m"}, "models.srv")
    assert str(err.value).startswith("models.srv.base_url") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_cool_down_and_failures_are_execution_options() -> None:
    def identity(**extra: Any) -> str:
        return parse_config({
            "name": "t", "societies": [{"machinesom": "S1"}], "task": {"name": "arithmetic"},
            "models": {"srv": {"backend": "openai", "base_url": ["http://a:1/v1"],
                               "model": "m", **extra}}}).identity()
    assert identity() == identity(endpoint_failures=5, endpoint_cooldown=1, max_concurrent=2)
    assert identity() != identity(base_url=["http://a:1/v1", "http://b:1/v1"])


@pytest.mark.real
async def test_society_run_over_two_endpoints_one_failing(llama_server: str,
                                                          tmp_path: Path) -> None:
    async with FaultProxy(llama_server) as healthy, \
            FaultProxy(llama_server, rate=1.0, kinds=("500",)) as broken:
        config = parse_config({
            "name": "two-endpoints",
            "models": {"srv": {"backend": "openai", "model": "smollm2", "timeout": 60,
                               "base_url": [f"{broken.url}/v1", f"{healthy.url}/v1"],
                               "endpoint_failures": 2, "endpoint_cooldown": 600}},
            "defaults": {"model": "srv", "sampling": {"temperature": 0.0, "max_tokens": 8}},
            "societies": [{"name": "pair", "overconfident": 1, "easy_going": 1}],
            "rounds": 1, "strategies": ["0"], "task": {"name": "arithmetic", "n": 1},
            "run": {"concurrency": 2, "cache": False,
                    "retry": {"attempts": 4, "base_delay": 0.01, "max_delay": 0.05}},
        })
        store = RunStore(tmp_path)
        run = Run(build_plan(config), store)
        run.prepare()
        await run.execute(progress=False)
    lines = [json.loads(line) for line in store.records_path.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["status"] == "ok"
    assert broken.counts["500"] == 2  # set aside after two failures, never tried again
    assert healthy.counts["ok"] == 4  # 2 rounds x 2 agents, each answered once
