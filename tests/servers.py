"""Loopback servers for backend tests (helpers, not tests).

* :func:`start_llama_server` runs the real ``llama_cpp.server`` on a GGUF file;
* :class:`FaultProxy` sits in front of it and serves a seeded schedule of faults (429 with
  Retry-After, 500, dropped connections, slow replies) so retry and resume paths run for real;
* :class:`StubServer` answers chat completions from a Python function, for the answers a real
  server will not give on demand (404 for an unknown model, 401, precise timing).

Everything binds 127.0.0.1 and talks only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

FAULTS = ("429", "500", "drop", "slow")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc``, killing it if it does not exit within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_llama_server(model_path: str | Path, port: int | None = None, n_ctx: int = 2048,
                       logits_all: bool = False, extra_args: Sequence[str] = (),
                       wait: float = 120.0) -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``python -m llama_cpp.server`` on loopback and wait until it lists its model.

    The GGUF's own chat template is used (no ``--chat_format``). ``logits_all`` (needed for
    logprobs) is off by default: it makes every prompt token pay for a full-vocabulary row.
    ``extra_args`` go to the server as they are. Output goes to a temporary log file whose tail
    is shown if the server dies or does not come up within ``wait`` s.

    Returns:
        The root URL (``http://127.0.0.1:PORT``; the API is under ``/v1``) and the process.
    """
    port = port or free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path),
           "--host", LOOPBACK, "--port", str(port), "--n_ctx", str(n_ctx),
           "--logits_all", str(logits_all), *extra_args]
    # The child keeps its own copy of the log's file descriptor; ours can close at once.
    with tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as resp:
                if resp.status == 200:
                    return url, proc
        except OSError:
            time.sleep(0.2)
    stop_process(proc)
    tail = Path(log.name).read_text(errors="replace")[-2000:]
    raise RuntimeError(f"llama_cpp.server on port {port} did not come up within {wait:g} s "
                       f"(exit code {proc.returncode}); log {log.name}:\n{tail}")


class _Loopback:
    """An aiohttp app on a free loopback port; ``async with`` starts and stops it."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Start serving; returns the root URL."""
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, LOOPBACK, port).start()
        self.url = f"http://{LOOPBACK}:{port}"
        return self.url

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def fault_schedule(seed: int, n: int, kinds: Sequence[str] = FAULTS,
                   rate: float = 0.5) -> list[str]:
    """A schedule of ``n`` faults and "ok"s, shuffled with ``random.Random(seed)``.

    Every kind in ``kinds`` appears at least once; each other entry is a fault with
    probability ``rate``.
    """
    rng = random.Random(seed)
    rest = [rng.choice(kinds) if rng.random() < rate else "ok" for _ in range(n - len(kinds))]
    schedule = [*kinds, *rest]
    rng.shuffle(schedule)
    return schedule


class FaultProxy(_Loopback):
    """A reverse proxy to a loopback upstream that injects faults into chosen requests.

    Request ``i`` to a faulty path gets ``schedule[i]``; past the schedule, a fault drawn from
    ``kinds`` with probability ``rate`` (``random.Random(seed)``), else it is forwarded.
    Other paths (``/v1/models``) are always forwarded. :attr:`counts` counts what was served
    per kind: "ok" = a faulty path forwarded untouched, "other" = any other path.

    Args:
        upstream: root URL of the server behind, on 127.0.0.1.
        schedule: the first requests' faults ("429", "500", "drop", "slow" or "ok").
        seed, rate, kinds: the random faults after the schedule.
        retry_after: range of the Retry-After seconds sent with 429s.
        slow_delay: seconds a "slow" request is held before being forwarded.
        fault_paths: path suffixes that get faults.
    """

    def __init__(self, upstream: str, schedule: Sequence[str] = (), seed: int = 0,
                 rate: float = 0.0, kinds: Sequence[str] = FAULTS,
                 retry_after: tuple[float, float] = (0.1, 0.3), slow_delay: float = 0.3,
                 fault_paths: Sequence[str] = ("/chat/completions",)) -> None:
        super().__init__()
        if urlsplit(upstream).hostname != LOOPBACK:
            raise ValueError(f"FaultProxy only forwards to {LOOPBACK}, not {upstream}")
        self.upstream = upstream.rstrip("/")
        self.schedule = list(schedule)
        self.rate, self.kinds, self.retry_after = rate, tuple(kinds), retry_after
        self.slow_delay, self.fault_paths = slow_delay, tuple(fault_paths)
        self.counts: Counter[str] = Counter()
        self.upstream_status: Counter[int] = Counter()  # what the upstream answered, by status
        self.requests = 0  # requests to faulty paths
        self._rng = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def start(self) -> str:
        # A fresh upstream connection per request: a pooled one that uvicorn closed after its
        # 5 s keep-alive would fail a forward now and then, and the counts must be exact.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        return await super().start()

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()

    def _next_fault(self) -> str:
        i, self.requests = self.requests, self.requests + 1
        if i < len(self.schedule):
            return self.schedule[i]
        return self._rng.choice(self.kinds) if self._rng.random() < self.rate else "ok"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._next_fault() if request.path.endswith(self.fault_paths) else "other"
        self.counts[fault] += 1
        if fault == "other":
            return await self._forward(request, body)
        if fault == "429":
            wait = self._rng.uniform(*self.retry_after)
            return web.json_response({"error": {"message": "rate limited (injected)"}},
                                     status=429, headers={"Retry-After": f"{wait:.2f}"})
        if fault == "500":
            return web.json_response({"error": {"message": "server error (injected)"}},
                                     status=500)
        if fault == "drop":
            assert request.transport is not None
            request.transport.close()  # the client sees the connection die without a reply
            return web.Response()
        if fault == "slow":
            await asyncio.sleep(self.slow_delay)
        return await self._forward(request, body)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "authorization", "accept")}
        try:
            async with self._session.request(request.method, self.upstream + request.path_qs,
                                             data=body, headers=headers) as up:
                payload = await up.read()
                self.upstream_status[up.status] += 1
                return web.Response(status=up.status, body=payload, content_type=(
                    up.content_type or "application/json"))
        except aiohttp.ClientError as err:
            return web.json_response({"error": {"message": f"upstream: {err}"}}, status=502)


Handler = Callable[[dict[str, Any], web.Request], Awaitable[web.StreamResponse]]


def completion(text: str, prompt_tokens: int = 5, completion_tokens: int = 3,
               **choice: Any) -> dict[str, Any]:
    """A minimal OpenAI chat-completion body."""
    return {"id": "stub", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text},
         "finish_reason": "stop", **choice}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens}}


class StubServer(_Loopback):
    """An OpenAI-shaped server whose chat endpoint is a Python function.

    Every chat request is logged in :attr:`requests` as (monotonic arrival time, JSON body,
    headers); :attr:`in_flight_max` is the most chat requests seen open at once.

    Args:
        handler: ``async (body, request) -> response``; the default echoes "ok".
        models: model ids listed at ``/v1/models``.
    """

    def __init__(self, handler: Handler | None = None, models: Sequence[str] = ("stub",)) -> None:
        super().__init__()
        self.handler = handler or self._ok
        self.requests: list[tuple[float, dict[str, Any], dict[str, str]]] = []
        self.in_flight = self.in_flight_max = 0
        self.models = [{"id": m, "object": "model"} for m in models]
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_post("/v1/chat/completions", self._chat)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": self.models})

    @staticmethod
    async def _ok(body: dict[str, Any], request: web.Request) -> web.StreamResponse:
        return web.json_response(completion("ok"))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        self.requests.append((time.monotonic(), body, dict(request.headers)))
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            return await self.handler(body, request)
        finally:
            self.in_flight -= 1
