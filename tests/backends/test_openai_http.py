"""The ``openai`` backend against a real llama.cpp server on loopback, a fault proxy, and stubs.

Real-server tests keep to 2 agents, 2 questions, 1 round and short replies: on two CPU cores
each call spends most of its time evaluating a prompt of a few hundred tokens.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from societies.backends.base import (
    BackendError,
    ContextOverflowError,
    Message,
    Settings,
    TransientBackendError,
)
from societies.backends.bundled import bundled_path
from societies.backends.limits import MAX_RETRY_AFTER, TokenBucket, parse_retry_after
from societies.backends.model import Model, RetryPolicy
from societies.backends.openai_http import EndpointError, OpenAIBackend, Options, create
from societies.backends.registry import BackendPool, validate_spec
from societies.cli import main
from societies.config import ExperimentConfig, parse_config
from societies.errors import ConfigError, MissingDependency, UserError
from societies.metrics import Summary
from societies.plan import build_plan
from societies.runner import ModelFactory, Run
from societies.storage import RunStore
from tests.servers import (
    FAULTS,
    FaultProxy,
    StubServer,
    completion,
    fault_schedule,
    free_port,
    start_llama_server,
    stop_process,
)

SHORT = Settings(temperature=0.0, max_tokens=16, seed=1)
ASK = [Message("user", "What is 2 + 3? Answer with one number.")]
KEY_VAR = "SOCIETIES_TEST_OPENAI_KEY"


def backend(base_url: str, **options: Any) -> OpenAIBackend:
    return create(Options(base_url=base_url, model=options.pop("model", "smollm2"), **options),
                  None)


def society_config(base_url: str, max_tokens: int = 24) -> ExperimentConfig:
    return parse_config({
        "name": "openai-run",
        "models": {"srv": {"backend": "openai", "base_url": base_url, "model": "smollm2",
                           "timeout": 60, "connect_wait": 1}},
        "defaults": {"model": "srv",
                     "sampling": {"temperature": 0.7, "max_tokens": max_tokens, "seed": 3}},
        "societies": [{"name": "pair", "overconfident": 1, "easy_going": 1}],
        "rounds": 1, "strategies": ["0"],
        "task": {"name": "arithmetic", "n": 2},
        "run": {"concurrency": 2, "cache": False},  # a cache would hide calls being counted
    })


def fast_retries(attempts: int = 8) -> ModelFactory:
    policy = RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=0.2)
    return lambda pool, name: Model(pool.chat(name), name, policy)


async def run_society(config: ExperimentConfig, root: Path,
                      factory: ModelFactory | None = None,
                      limit: int | None = None) -> tuple[RunStore, Summary]:
    store = RunStore(root)
    run = Run(build_plan(config), store, limit=limit, model_factory=factory)
    run.prepare()
    return store, await run.execute(progress=False)


def record_lines(store: RunStore) -> list[dict[str, Any]]:
    return [json.loads(line) for line in store.records_path.read_text().splitlines()]


# --- the real server ----------------------------------------------------------------------


@pytest.mark.real
async def test_generate_returns_text_and_usage(llama_server: str) -> None:
    b = backend(f"{llama_server}/v1")
    try:
        reply = await b.generate(ASK, SHORT)
    finally:
        await b.aclose()
    assert reply.text
    assert reply.prompt_tokens > 0 and 0 < reply.completion_tokens <= SHORT.max_tokens
    assert reply.finish_reason in ("stop", "length") and reply.logprobs is None
    assert b.identity == f"openai:{llama_server}/v1:smollm2"


@pytest.mark.real
@pytest.mark.slow
async def test_logprobs_pass_through() -> None:
    # Logprobs need a server started with logits_all, which slows every prompt: its own server.
    url, proc = start_llama_server(bundled_path("smollm2"), logits_all=True)
    b = backend(f"{url}/v1")
    try:
        reply = await b.generate(ASK, Settings(temperature=0.0, max_tokens=3, logprobs=2))
    finally:
        await b.aclose()
        stop_process(proc)
    assert reply.logprobs is not None and len(reply.logprobs) == reply.completion_tokens
    for token in reply.logprobs:
        assert token.logprob <= 0 and 1 <= len(token.top) <= 2
        assert token.top[0][1] >= token.logprob - 1e-6  # the best alternative is at least as likely


@pytest.mark.real
async def test_context_overflow_from_real_server(llama_server: str) -> None:
    b = backend(f"{llama_server}/v1")
    try:
        with pytest.raises(ContextOverflowError, match="context length"):
            await b.generate([Message("user", "apple " * 3000)], SHORT)
    finally:
        await b.aclose()


@pytest.mark.real
async def test_society_run_end_to_end(llama_server: str, tmp_path: Path) -> None:
    config = society_config(f"{llama_server}/v1")
    store, summary = await run_society(config, tmp_path)  # the runner's own model factory
    records = store.records()
    assert len(records) == 2 and all(r.status == "ok" for r in records)
    for record in records:
        assert [len(r.turns) for r in record.rounds] == [2, 2]
        for turn in (t for r in record.rounds for t in r.turns):
            assert turn.error is None and turn.prompt_tokens > 0 and turn.completion_tokens > 0
    assert summary.groups[0].n_units == 2


@pytest.mark.real
async def test_society_run_survives_injected_faults(llama_server: str, tmp_path: Path) -> None:
    # Every fault kind is in the schedule; after it the proxy is healthy, and no call can meet
    # more failures than it has attempts (8 > the 8 scheduled entries minus the slow ones).
    schedule = fault_schedule(seed=11, n=8)
    async with FaultProxy(llama_server, schedule, seed=11) as proxy:
        store, summary = await run_society(society_config(f"{proxy.url}/v1", 8), tmp_path,
                                           fast_retries(attempts=8))
    assert all(proxy.counts[kind] > 0 for kind in FAULTS), proxy.counts
    lines = record_lines(store)
    assert sorted(line["unit_id"] for line in lines) == sorted({r.unit_id for r in store.records()})
    assert len(lines) == 2 and all(line["status"] == "ok" for line in lines)
    # Each failed request was retried exactly once by some call; a slow one is no failure.
    failures = proxy.counts["429"] + proxy.counts["500"] + proxy.counts["drop"]
    assert sum(g.retries for g in summary.groups) == failures > 0


@pytest.mark.real
async def test_failed_units_are_redone_and_only_they(llama_server: str, tmp_path: Path) -> None:
    # The URL is part of the config identity, so "a healthy server" is the same proxy healed.
    async with FaultProxy(llama_server) as proxy:
        config = society_config(f"{proxy.url}/v1", max_tokens=8)
        await run_society(config, tmp_path, fast_retries(), limit=1)  # question 1 only
        assert proxy.counts["ok"] == 4  # 2 agents x (answer + 1 debate round)

        proxy.rate, proxy.kinds = 1.0, ("500",)  # every chat call now fails
        store, summary = await run_society(config, tmp_path, fast_retries(attempts=3))
        failed = [r for r in store.records() if r.status == "failed"]
        assert len(failed) == 1 and failed[0].error and "HTTP 500" in failed[0].error
        assert summary.groups[0].failed_units == 1 and proxy.counts["500"] >= 3

        proxy.rate = 0.0
        before = proxy.counts["ok"]
        store, summary = await run_society(config, tmp_path, fast_retries())
        # Only the failed unit's calls were made again.
        assert proxy.counts["ok"] - before == 4, (proxy.counts, proxy.upstream_status)
    oks = Counter(line["unit_id"] for line in record_lines(store) if line["status"] == "ok")
    assert len(oks) == 2 and set(oks.values()) == {1}
    assert summary.groups[0].n_units == 2 and summary.groups[0].failed_units == 0


# --- bad input ----------------------------------------------------------------------------


async def test_unreachable_server_is_one_user_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    b = backend(url, connect_wait=0.3)
    with pytest.raises(EndpointError, match="cannot reach the server") as err:
        await b.generate(ASK, SHORT)
    assert url in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(EndpointError):  # later callers give up at once
        await asyncio.wait_for(b.generate(ASK, SHORT), 0.2)
    await b.aclose()


def test_unreachable_server_stops_the_cli_with_exit_2(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    data = society_config(url).model_dump(mode="json")
    data["models"]["srv"]["connect_wait"] = 0.2
    config = tmp_path / "exp.yaml"
    config.write_text(json.dumps(data))  # JSON is YAML
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("societies: error: ") and url in err
    assert not (tmp_path / "run").exists()  # checked before anything was written


async def _not_found(body: dict[str, Any], request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": {"message": f"The model `{body['model']}` does not exist.",
                                        "type": "invalid_request_error",
                                        "code": "model_not_found"}}, status=404)


async def test_wrong_model_name_stops_the_run(tmp_path: Path) -> None:
    async with StubServer(_not_found) as stub:
        url = f"{stub.url}/v1"
        with pytest.raises(EndpointError) as err:
            await backend(url, model="no-such-model").generate(ASK, SHORT)
        assert "no-such-model" in str(err.value) and url in str(err.value)
        # In a run it is not a failed unit: it escapes the engine as a UserError (exit 2).
        with pytest.raises(UserError, match="no model 'smollm2'"):
            await run_society(society_config(url), tmp_path, fast_retries())


async def test_wrong_model_name_in_the_cli_leaves_no_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    async with StubServer(_not_found) as stub:
        data = society_config(f"{stub.url}/v1").model_dump(mode="json")
        config = tmp_path / "exp.yaml"
        config.write_text(json.dumps(data))
        argv = ["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]
        assert await asyncio.to_thread(main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "smollm2" in err
    # Nothing is left that would refuse the corrected config in the same directory.
    assert not (tmp_path / "run").exists()


def test_missing_api_key_variable_fails_at_create(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VAR, raising=False)
    with pytest.raises(UserError, match=KEY_VAR):
        BackendPool({"m": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                           "model": "x", "api_key_env": KEY_VAR}}).chat("m")


def test_a_key_pasted_as_the_variable_name_is_refused_without_echo() -> None:
    with pytest.raises(ConfigError, match="NAME of an environment variable") as err:
        validate_spec({"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x",
                       "api_key_env": "sk-live-abc123"}, "models.m")
    assert "sk-live-abc123" not in str(err.value)


async def test_the_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv(KEY_VAR, secret)

    async def refuse(body: dict[str, Any], request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": f"Incorrect API key provided: {secret}"}},
                                 status=401)

    async with StubServer() as stub:
        b = backend(f"{stub.url}/v1", api_key_env=KEY_VAR)
        await b.generate(ASK, SHORT)
        stub.handler = refuse
        with pytest.raises(EndpointError, match=KEY_VAR) as err:
            await b.generate(ASK, SHORT)
        await b.aclose()
    assert stub.requests[0][2]["Authorization"] == f"Bearer {secret}"
    shown = [str(err.value), repr(err.value), repr(b), b.identity, b.options.model_dump_json(),
             repr(b.__dict__)]
    assert not any(secret in text for text in shown)


def test_missing_aiohttp_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(MissingDependency, match=r"societies\[openai\]"):
        backend("http://127.0.0.1:9/v1")


# --- the wire protocol, with a stub -------------------------------------------------------


async def test_request_body_and_reply_parsing() -> None:
    top = [{"token": "5", "logprob": -0.1}, {"token": "6", "logprob": -2.5}]
    logprobs = {"content": [{"token": "5", "logprob": -0.1, "top_logprobs": top}]}

    async def answer(body: dict[str, Any], request: web.Request) -> web.StreamResponse:
        return web.json_response(completion("  5 ", 7, 1, logprobs=logprobs))

    async with StubServer(answer) as stub:
        b = backend(f"{stub.url}/v1", model="m1", extra_body={"top_k": 5})
        settings = Settings(temperature=0.5, max_tokens=9, seed=42, top_p=0.9, stop=("\n",),
                            logprobs=2)
        reply = await b.generate([Message("system", "s"), Message("user", "u")], settings)
        await b.aclose()
    body, headers = stub.requests[0][1], stub.requests[0][2]
    assert body == {"model": "m1", "messages": [{"role": "system", "content": "s"},
                                                {"role": "user", "content": "u"}],
                    "temperature": 0.5, "top_p": 0.9, "max_tokens": 9, "seed": 42,
                    "stop": ["\n"], "logprobs": True, "top_logprobs": 2,
                    "top_k": 5,  # extra_body wins over Settings.top_k
                    "min_p": 0.0, "repeat_penalty": 1.0, "repetition_penalty": 1.0,
                    "presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert "Authorization" not in headers
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("5", 7, 1)
    assert reply.logprobs and reply.logprobs[0].top == (("5", -0.1), ("6", -2.5))
    assert b.identity.startswith(f"openai:{stub.url}/v1:m1:")  # extra_body is in the identity


async def test_calls_after_aclose_fail_without_traffic() -> None:
    # The engine may leave a sibling call retrying after its unit failed; once the run has
    # closed the pool, that call must not reach the server any more.
    async with StubServer() as stub:
        b = backend(f"{stub.url}/v1")
        await b.generate(ASK, SHORT)
        await b.aclose()
        with pytest.raises(BackendError, match="closed"):
            await b.generate(ASK, SHORT)
    assert len(stub.requests) == 1


def _error(status: int, message: str, **headers: str) -> Any:
    async def handler(body: dict[str, Any], request: web.Request) -> web.StreamResponse:
        if status == 0:  # drop the connection without a reply
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        return web.json_response({"error": {"message": message}}, status=status,
                                 headers=headers)
    return handler


@pytest.mark.parametrize(("status", "message", "headers", "kind", "retry_after"), [
    (429, "slow down", {"Retry-After": "1.5"}, TransientBackendError, 1.5),
    (503, "overloaded", {}, TransientBackendError, None),
    (0, "", {}, TransientBackendError, None),
    (400, "This model's maximum context length is 2048 tokens. However, you requested 4000",
     {}, ContextOverflowError, None),
    (400, "temperature must be positive", {}, BackendError, None),
    (404, "Not Found", {}, EndpointError, None),
])
async def test_http_errors_map_to_backend_errors(status: int, message: str,
                                                 headers: dict[str, str], kind: type[Exception],
                                                 retry_after: float | None) -> None:
    async with StubServer(_error(status, message, **headers)) as stub:
        b = backend(f"{stub.url}/v1")
        with pytest.raises(kind) as err:
            await b.generate(ASK, SHORT)
        await b.aclose()
    if kind is BackendError:  # a plain 400 is final: not retried
        assert not isinstance(err.value, TransientBackendError | ContextOverflowError)
    if isinstance(err.value, TransientBackendError):
        assert err.value.retry_after == retry_after


def test_retry_after_header_forms() -> None:
    now = 1_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after("3") == 3.0 and parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after(date, now=now) == pytest.approx(7.0, abs=1.0)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert parse_retry_after("86400") == MAX_RETRY_AFTER
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


# --- limits -------------------------------------------------------------------------------


async def test_requests_per_minute_spaces_requests_evenly() -> None:
    async with StubServer() as stub:
        b = backend(f"{stub.url}/v1", requests_per_minute=300)  # one every 0.2 s
        await asyncio.gather(*(b.generate(ASK, SHORT) for _ in range(6)))
        await b.aclose()
    times = sorted(t for t, _, _ in stub.requests)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 6 and min(gaps) >= 0.19, gaps


async def test_max_concurrent_caps_requests_in_flight() -> None:
    async def slow(body: dict[str, Any], request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return web.json_response(completion("ok"))

    async with StubServer(slow) as stub:
        b = backend(f"{stub.url}/v1", max_concurrent=2)
        await asyncio.gather(*(b.generate(ASK, SHORT) for _ in range(6)))
        await b.aclose()
    assert stub.in_flight_max == 2


async def test_token_bucket_waits_and_settles_with_real_usage() -> None:
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    bucket = TokenBucket(100, period=60.0, clock=lambda: clock[0], sleep=sleep)
    await bucket.take(60)
    assert clock[0] == 0.0 and bucket.level == 40
    await bucket.take(60)  # 20 short at 100/60 tokens per second: 12 s
    assert clock[0] == pytest.approx(12.0) and bucket.level == pytest.approx(0.0)
    bucket.settle(60, 10)  # the reply used 10, not 60: refund 50
    assert bucket.level == pytest.approx(50.0)
    bucket.settle(10, 200)  # an underestimate leaves a debt
    assert bucket.level == pytest.approx(-140.0)
    await bucket.take(500)  # more than the bucket holds waits for a full bucket, not forever
    assert bucket.level == pytest.approx(0.0) and clock[0] == pytest.approx(12.0 + 144.0)


async def test_tokens_per_minute_is_corrected_by_reported_usage() -> None:
    async with StubServer() as stub:  # the stub reports 5 + 3 tokens; the estimate is ~25
        b = backend(f"{stub.url}/v1", tokens_per_minute=600)  # refills 10 tokens a second
        started = time.monotonic()
        await b.generate(ASK, SHORT)
        assert b._state is not None and b._state.limiter.tokens is not None
        level = b._state.limiter.tokens.level
        refilled = 10 * (time.monotonic() - started)
        await b.aclose()
    assert 600 - 8 - 1e-6 <= level <= 600 - 8 + refilled
