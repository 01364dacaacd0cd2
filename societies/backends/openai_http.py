"""The ``openai`` backend: any server that speaks OpenAI's chat-completions protocol.

vLLM, Ollama, llama.cpp's server and OpenAI itself all answer ``POST {base_url}/chat/completions``.
Failures are raised as what the engine should make of them:

* 429, 408, 5xx, timeouts, dropped connections: :class:`TransientBackendError` (with the
  server's ``Retry-After``); ``Model`` retries, and a unit whose call still fails is recorded
  failed and redone on resume. A server lost *mid-run* is transient too.
* 400 naming the context length: :class:`ContextOverflowError`; that agent's branch ends.
* An unknown model, a wrong ``base_url`` (404), a refused API key, or a server that cannot be
  reached before the first call: :class:`EndpointError`, a ``UserError`` and *not* a
  ``BackendError``. The engine turns backend errors into failed units and carries on, which
  would fill the run with failures no retry fixes; a ``UserError`` escapes it, and the CLI
  prints one line and exits 2.

Several servers of one model: ``base_url`` may be a list. Calls are spread over the servers
(fewest in flight first), ``max_concurrent`` applies to each, and a server that fails
``endpoint_failures`` times in a row is set aside for ``endpoint_cooldown`` seconds (see
:mod:`societies.backends.endpoints`); request and token rates stay limits of the whole model.
Servers that cannot be reached before the first call are set aside; none reachable is an
:class:`EndpointError` as with one. The list is part of the model's identity as a single
``base_url`` is (sorted, so its order does not matter to the call cache): a run resumes only
with the same servers. Limits, waits and the cool-down are execution options.

The API key is read from the variable named by ``api_key_env``; it never appears in options,
identity, records, logs, error messages or reprs.

Sampling (``sampling_params``: ``full`` or ``openai``): see :mod:`societies.backends.openai_wire`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from societies.backends.base import (
    BackendError,
    ChatBackend,
    Message,
    Reply,
    Settings,
    TransientBackendError,
)
from societies.backends.endpoints import EndpointPool
from societies.backends.limits import RequestLimiter
from societies.backends.openai_wire import (
    EndpointError,
    Refused,
    http_error,
    parse_logprobs,
    request_body,
)
from societies.backends.sampling import finish_reason
from societies.errors import MissingDependency, UserError

if TYPE_CHECKING:
    import aiohttp

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Options that change how fast or how politely replies come, never what they are (a resumed
# run may change them): limits, waits, and which variable holds the key.
EXECUTION_OPTIONS: frozenset[str] = frozenset({
    "timeout", "connect_wait", "requests_per_minute", "tokens_per_minute", "max_concurrent",
    "api_key_env", "endpoint_failures", "endpoint_cooldown"})

class Options(BaseModel):
    """Config options of the ``openai`` backend."""

    model_config = ConfigDict(extra="forbid")
    base_url: str | list[str] = Field(description=(
        "API root, e.g. http://127.0.0.1:8000/v1, or a list of servers of the same model"))
    model: str = Field(min_length=1, description="model name as the server knows it")
    api_key_env: str | None = Field(None, description="NAME of the variable holding the key")
    timeout: float = Field(120.0, gt=0, description="seconds for one request, all included")
    connect_wait: float = Field(10.0, ge=0, description="seconds to wait for the server to "
                                "answer before the first call")
    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    max_concurrent: int = Field(8, gt=0, description="calls in flight per server")
    endpoint_failures: int = Field(3, gt=0, description=(
        "with several servers: consecutive failed calls (transport or 5xx) that set one aside"))
    endpoint_cooldown: float = Field(30.0, ge=0, description=(
        "with several servers: seconds a failing one is set aside"))
    extra_body: dict[str, Any] = Field(default_factory=dict, description="added to each request")
    sampling_params: Literal["full", "openai"] = Field("full", description=(
        "full: send top_k, min_p and the penalties (off) too, as llama.cpp servers and vLLM "
        "take them; openai: only OpenAI's own fields, for endpoints that reject others "
        "(settings with top_k or min_p on are then refused)"))

    @field_validator("base_url", "api_key_env", "extra_body")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name == "base_url":
            return _check_urls(value)
        # Never echo the value: a key pasted here by mistake must not reach an error message.
        if info.field_name == "api_key_env" and value and not _ENV_NAME.fullmatch(value):
            raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                             "not the key itself")
        if info.field_name == "extra_body" and {"model", "messages"} & set(value):
            raise ValueError("may not set model or messages")
        return value


def _check_urls(value: str | list[str]) -> str | list[str]:
    urls = [value] if isinstance(value, str) else value
    if not urls:
        raise ValueError("the list of servers is empty")
    for i, url in enumerate(urls):
        if not re.match(r"https?://[^/\s]+", url):
            at = "" if isinstance(value, str) else f"entry {i} "
            raise ValueError(f"{at}must start with http:// or https:// and name a host")
    clean = [u.rstrip("/") for u in urls]
    if len(set(clean)) < len(clean):
        raise ValueError("lists a server twice")
    return clean[0] if isinstance(value, str) else clean


def endpoint_urls(options: Options) -> list[str]:
    """The servers of ``options``, one or several.

    >>> endpoint_urls(Options(base_url=["http://a:1/v1", "http://b:1/v1/"], model="m"))
    ['http://a:1/v1', 'http://b:1/v1']
    """
    return [options.base_url] if isinstance(options.base_url, str) else list(options.base_url)


def shown(options: Options) -> str:
    """The server, or the list of servers, as error messages name them.

    >>> shown(Options(base_url=["http://a:1/v1", "http://b:1/v1"], model="m"))
    '[http://a:1/v1, http://b:1/v1]'
    """
    urls = endpoint_urls(options)
    return urls[0] if isinstance(options.base_url, str) else f"[{', '.join(urls)}]"


def check_settings(options: Options, settings: Settings) -> None:
    """Raise ValueError (one line) if this endpoint cannot apply ``settings`` exactly.

    Only ``sampling_params: openai`` refuses anything: top_k or min_p switched on.
    """
    if options.sampling_params != "openai":
        return
    on = [f"{name}={value}" for name, value, off in
          (("top_k", settings.top_k, 0), ("min_p", settings.min_p, 0.0)) if value != off]
    if on:
        raise ValueError(
            f"openai {shown(options)} model {options.model!r} has sampling_params: openai, "
            f"which sends only temperature, top_p, seed, stop and max_tokens, so it cannot "
            f"apply {', '.join(on)}; switch them off (0) or use sampling_params: full with a "
            "server that takes them (vLLM, llama.cpp)")


@dataclass(frozen=True)
class _Secret:
    """A string that does not print itself (reprs end up in logs and tracebacks)."""

    value: str = field(repr=False)


def _require_aiohttp() -> Any:
    try:
        import aiohttp
        import asyncio_throttle  # noqa: F401 - checked here so a missing one fails at create()
    except ImportError as err:
        raise MissingDependency("the openai backend", "openai", err.name or "aiohttp") from None
    return aiohttp


@dataclass
class _LoopState:
    """What must be rebuilt in each event loop: the HTTP session and the limiter's locks."""

    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    limiter: RequestLimiter
    reach_lock: asyncio.Lock
    endpoints: EndpointPool


class OpenAIBackend(ChatBackend):
    """A model behind an OpenAI-compatible HTTP server.

    Args:
        options: validated config options.
        api_key: the key itself (None for servers that need none).
    """

    def __init__(self, options: Options, api_key: str | None = None) -> None:
        self.options = options
        self._key = _Secret(api_key) if api_key else None
        self._state: _LoopState | None = None
        self._reached = self._closed = False
        self._unreachable: str | None = None  # once given up on, later callers fail at once
        self._urls = endpoint_urls(options)
        self._where = f"openai {shown(options)} model {options.model!r}"  # error prefix
        self._identity = f"openai:{','.join(sorted(self._urls))}:{options.model}"
        if options.sampling_params != "full":  # the server's own defaults then apply
            self._identity += f":{options.sampling_params}"
        if options.extra_body:  # it can change replies, so the call cache must tell them apart
            blob = json.dumps(options.extra_body, sort_keys=True).encode()
            self._identity += ":" + hashlib.sha256(blob).hexdigest()[:8]

    @property
    def identity(self) -> str:
        return self._identity

    def check_settings(self, settings: Settings) -> None:
        """Raise ValueError if this endpoint cannot apply ``settings`` (see the module doc).

        Call it at plan time for every agent on this model: a call with such settings fails
        with an :class:`EndpointError` (the run stops), which is later than it should be.
        """
        check_settings(self.options, settings)

    def __repr__(self) -> str:
        return f"OpenAIBackend({self._identity!r})"

    def _scrub(self, text: str) -> str:
        key = self._key.value if self._key else None
        return text.replace(key, "***") if key else text

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key.value}"} if self._key else {}

    async def _loop_state(self) -> _LoopState:
        aiohttp = _require_aiohttp()
        if self._closed:  # e.g. a straggling retry after its run ended: no stray traffic
            raise BackendError(f"{self._where}: the backend is closed")
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop or state.session.closed:
            opts = self.options
            # uvicorn-based servers (vLLM, llama-cpp-python) drop idle connections after 5 s;
            # letting ours go first avoids sending a request down a connection being closed.
            total = opts.max_concurrent * len(self._urls)  # max_concurrent is per server
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=opts.timeout),
                connector=aiohttp.TCPConnector(limit=total, keepalive_timeout=4.0))
            limiter = RequestLimiter(total, opts.requests_per_minute, opts.tokens_per_minute)
            pool = EndpointPool(self._urls, opts.max_concurrent, opts.endpoint_failures,
                                opts.endpoint_cooldown)
            state = self._state = _LoopState(loop, session, limiter, asyncio.Lock(), pool)
        return state

    async def _reach(self, state: _LoopState) -> None:
        """Make sure a server answers at all before the first call (see the module doc).

        With several servers, those that do not answer within ``connect_wait`` are set aside
        for a cool-down; only when none answers is it an :class:`EndpointError`.
        """
        async with state.reach_lock:
            if self._reached:
                return
            if self._unreachable:
                raise EndpointError(self._unreachable)
            errors = await asyncio.gather(*(self._ping(state, url) for url in self._urls))
            if all(errors):
                self._unreachable = (
                    f"{self._where}: cannot reach the server ({self._scrub(errors[0] or '')}); "
                    "is it running, and is base_url right?")
                raise EndpointError(self._unreachable)
            for endpoint, error in zip(state.endpoints.endpoints, errors, strict=True):
                if error:
                    state.endpoints.set_aside(endpoint, self.options.endpoint_cooldown,
                                              f"cannot reach it ({self._scrub(error)})")
            self._reached = True

    async def _ping(self, state: _LoopState, url: str) -> str | None:
        """None once ``url`` answers anything, else why it could not be reached in time."""
        aiohttp = _require_aiohttp()
        deadline = time.monotonic() + self.options.connect_wait
        delay = 0.05
        while True:
            try:
                async with state.session.get(f"{url}/models", headers=self._headers()) as resp:
                    await resp.read()
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as err:
                if time.monotonic() + delay > deadline:
                    return str(err) or type(err).__name__
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)
                continue
            except (aiohttp.ClientError, TimeoutError):
                pass  # something answered; the real request will say what is wrong
            return None

    def _http_error(self, status: int, headers: Mapping[str, str], raw: bytes,
                    url: str | None = None) -> Exception:
        """The exception for an HTTP error answer (see the module doc for the mapping)."""
        return http_error(status, headers, raw, self._where, url or self._urls[0],
                          self.options.model, self.options.api_key_env, self._scrub,
                          several=len(self._urls) > 1)

    async def _post(self, state: _LoopState, body: dict[str, Any]) -> dict[str, Any]:
        """Send one request to the least busy server; tell the pool how that server did."""
        async with state.endpoints.use() as endpoint:
            try:
                data = await self._post_to(state, endpoint.url, body)
            except TransientBackendError as err:
                if not isinstance(err, Refused):  # transport or a 5xx: the server is unwell
                    state.endpoints.failed(endpoint, str(err))
                if len(self._urls) == 1:
                    if err.retry_after:
                        state.limiter.pause(err.retry_after)
                    raise
                if err.retry_after:  # only this server asked to wait
                    state.endpoints.pause(endpoint, err.retry_after)
                # The retry waits only as long as no other server can take it.
                raise type(err)(str(err), state.endpoints.wait()) from None
            state.endpoints.succeeded(endpoint)
            return data

    async def _post_to(self, state: _LoopState, url: str, body: dict[str, Any]) -> dict[str, Any]:
        aiohttp = _require_aiohttp()
        where = self._where if len(self._urls) == 1 else f"{self._where} at {url}"
        try:
            async with state.session.post(f"{url}/chat/completions", json=body,
                                          headers=self._headers()) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise self._http_error(resp.status, resp.headers, raw, url)
            data = json.loads(raw)
        except TimeoutError:
            raise TransientBackendError(f"{where}: no reply within "
                                        f"{self.options.timeout:g} s") from None
        except aiohttp.ClientError as err:  # refused, reset, dropped mid-body, bad framing
            raise TransientBackendError(
                f"{where}: {type(err).__name__}: {self._scrub(str(err))}") from None
        except ValueError:  # a 200 whose body is cut short or not JSON
            raise TransientBackendError(f"{where}: reply is not valid JSON") from None
        if not isinstance(data, dict) or not data.get("choices"):
            raise BackendError(f"{where}: reply has no choices; is base_url an "
                               "OpenAI-compatible API?")
        return data

    async def check(self) -> None:
        """Raise EndpointError now if the server cannot be reached."""
        state = await self._loop_state()
        if not self._reached:
            await self._reach(state)

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        try:
            self.check_settings(settings)
        except ValueError as err:  # no retry fixes it: stop the run (plan time is better)
            raise EndpointError(str(err)) from None
        state = await self._loop_state()
        if not self._reached:
            await self._reach(state)
        body = request_body(self.options.model, messages, settings,
                            self.options.sampling_params == "full", self.options.extra_body)
        estimate = sum(len(m.content) for m in messages) // 4 + settings.max_tokens
        async with state.limiter.admit(estimate) as ticket:
            data = await self._post(state, body)
            usage = data.get("usage") or {}
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            if prompt or completion:
                ticket.used = prompt + completion
        choice = data["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
        return Reply(text=text.strip(), prompt_tokens=prompt, completion_tokens=completion,
                     finish_reason=finish_reason(choice.get("finish_reason")),
                     logprobs=parse_logprobs(choice) if settings.logprobs is not None else None)

    async def aclose(self) -> None:
        """Close the HTTP session; later calls fail with BackendError and send nothing.

        The session is closed only from the loop that opened it (aiohttp cannot do otherwise).
        """
        self._closed = True
        state, self._state = self._state, None
        if state is not None and state.loop is asyncio.get_running_loop():
            await state.session.close()


def create(options: Options, resolver: Any) -> OpenAIBackend:
    """Build an ``openai`` backend; fails here, not mid-run, if the key variable is unset."""
    _require_aiohttp()
    key = None
    if options.api_key_env is not None:
        key = os.environ.get(options.api_key_env)
        if not key:
            raise UserError(f"openai {shown(options)}: environment variable "
                            f"{options.api_key_env} (api_key_env) is not set or empty")
    return OpenAIBackend(options, key)
