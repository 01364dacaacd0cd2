"""OpenAI's chat-completions protocol on the wire: the request body we send, the per-token
log-probabilities we read back, and what an HTTP error answer means for the engine (see
:mod:`societies.backends.openai_http` for the mapping's reasons).

Sampling (``sampling_params``). With ``full`` (the default) every request carries every knob of
:mod:`societies.backends.sampling`: ``top_k`` and ``min_p`` (0 = off) and the penalties at their
off values, ``repeat_penalty`` (llama.cpp's name; llama-cpp-python's server defaults it to 1.1)
and ``repetition_penalty`` (vLLM's, which otherwise takes the model's generation_config), so the
server's defaults (top-k 40, min-p 0.05 in llama.cpp) are not in effect. llama.cpp's servers
and vLLM take these fields; servers ignore fields they do not know. With ``openai``, for the
OpenAI API itself (which rejects unknown fields), only temperature, top_p, seed, stop and
max_tokens are sent, and settings that need more (top_k or min_p on) are refused:
:meth:`societies.backends.openai_http.OpenAIBackend.check_settings` says so before a run starts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from societies.backends.base import (
    BackendError,
    ContextOverflowError,
    Message,
    Settings,
    TokenLogprob,
    TransientBackendError,
)
from societies.backends.limits import parse_retry_after
from societies.errors import UserError

_CONTEXT = re.compile(r"context[ _](length|window)|maximum context|too many tokens|"
                      r"prompt is too long|exceeds? the model", re.I)
_NO_MODEL = re.compile(r"model.{0,200}(not found|does not exist|not exist|unknown)|"
                       r"(unknown|invalid) model", re.I | re.S)

# What `sampling_params: full` adds to every request: the knobs beyond OpenAI's own, off.
_PENALTIES_OFF = {"repeat_penalty": 1.0, "repetition_penalty": 1.0,
                  "presence_penalty": 0.0, "frequency_penalty": 0.0}


class EndpointError(UserError):
    """The server or its configuration is wrong in a way no retry fixes: stop the run."""


class Refused(TransientBackendError):
    """A healthy server declining for now (429, 408, 409, 425): no mark against its health."""


def request_body(model: str, messages: Sequence[Message], settings: Settings, full: bool,
                 extra: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of one chat-completions request.

    ``full`` sends every sampling knob (``top_k``, ``min_p``, the penalties off) so no server
    default is in effect; ``extra`` (the config's ``extra_body``) wins over everything.

    >>> sorted(request_body("m", [], Settings(max_tokens=8), False, {}))
    ['max_tokens', 'messages', 'model', 'temperature', 'top_p']
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "temperature": settings.temperature, "top_p": settings.top_p,
        "max_tokens": settings.max_tokens}
    if full:
        body.update(top_k=settings.top_k, min_p=settings.min_p, **_PENALTIES_OFF)
    if settings.seed is not None:
        body["seed"] = settings.seed
    if settings.stop:
        body["stop"] = list(settings.stop)
    if settings.logprobs is not None:
        body.update(logprobs=True, top_logprobs=settings.logprobs)
    return {**body, **extra}  # extra_body wins: it is the escape hatch


def parse_logprobs(choice: Mapping[str, Any]) -> tuple[TokenLogprob, ...] | None:
    """Per-token log-probabilities from a chat-completion choice, or None if it has none."""
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list):
        return None
    try:
        return tuple(
            TokenLogprob(str(t["token"]), float(t["logprob"]),
                         tuple((str(a["token"]), float(a["logprob"]))
                               for a in t.get("top_logprobs") or ()))
            for t in content)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # a server with its own idea of the format: the text is still good


def http_error(status: int, headers: Mapping[str, str], raw: bytes, where: str, url: str,
               model: str, api_key_env: str | None, scrub: Callable[[str], str],
               several: bool = False) -> Exception:
    """The exception for an HTTP error answer.

    Args:
        where: the model and server as messages name them, with the status appended here.
        url: the server that answered (named after the status when there are ``several``).
        scrub: removes the API key from text quoted in the message.
    """
    message, code = raw.decode("utf-8", "replace").strip(), ""
    try:
        err = json.loads(message).get("error", message)
        message = str(err.get("message", err)) if isinstance(err, dict) else str(err)
        code = str(err.get("code") or "") if isinstance(err, dict) else ""
    except (ValueError, AttributeError):
        pass
    message = scrub(" ".join(message.split()))[:300]
    where = f"{where}: HTTP {status}" + (f" at {url}" if several else "")
    if status in (401, 403):  # the body may quote part of the key, so it is not shown
        env = api_key_env
        hint = f"check the key in ${env}" if env else "set api_key_env to the key's variable"
        return EndpointError(f"{where}: the server refused the request; {hint}")
    if status == 404 or code == "model_not_found" or (
            status in (400, 422) and _NO_MODEL.search(message)):
        return EndpointError(f"{where}: no model {model!r} at "
                             f"{url} ({message or 'not found'}); check the "
                             "model name and base_url (which usually ends in /v1)")
    if status in (400, 413, 422) and (code == "context_length_exceeded"
                                      or _CONTEXT.search(message)):
        return ContextOverflowError(f"{where}: {message}")
    if status in (408, 409, 425, 429) or status >= 500:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        kind = TransientBackendError if status >= 500 else Refused
        return kind(f"{where}: {message}", retry_after)
    return BackendError(f"{where}: {message}")
