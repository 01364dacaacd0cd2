"""Backend ``response_ensemble``: several models answer in full, and one reply comes out.

Config (long form, or the shorthand ``{ensemble: mbr, members: [...]}``)::

    models:
      trio: {backend: response_ensemble, members: [smollm2, gemma3, smollm2-hot],
             method: fuse, judge: smollm2, top: 2}

Every member answers the whole conversation, concurrently, with the call's sampling settings
and a seed derived per member (so two copies of one model still differ when sampling). Then:

- ``majority``: the reply of the first member giving the most frequent answer, answers read
  without a task by :func:`~societies.ensembles.response_rank.answer_key`;
- ``mbr``: minimum Bayes risk, the reply with the highest mean bag-of-words F1 to the others;
- ``rank``: pairwise ranking by the ``judge`` model (``prompts/rank_pair.j2``), each pair
  asked in both orders so that a judge favouring one position cancels out; most wins returns,
  equal wins going to the reply MBR prefers;
- ``fuse``: ``rank``, then the judge writes one reply from the ``top`` best
  (``prompts/fuse.j2``, in place of the last user message, the rest of the conversation kept).

The reply's token counts are the sums over every member and judge call, so comparisons at an
equal budget are honest; members are the pool's shared backends and are closed by the pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from societies.backends.base import (
    BackendError,
    ChatBackend,
    ContextOverflowError,
    Message,
    Reply,
    Settings,
    TransientBackendError,
)
from societies.cards import render, template_source
from societies.ensembles import response_rank as rr
from societies.errors import ConfigError

MethodName = Literal["majority", "mbr", "rank", "fuse"]
METHODS: tuple[str, ...] = get_args(MethodName)
JUDGED = ("rank", "fuse")
TEMPLATES = {"majority": (), "mbr": (), "rank": ("rank_pair",), "fuse": ("rank_pair", "fuse")}
T = TypeVar("T")


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("response_ensemble_options", message)


class Options(BaseModel):
    """Config options of a response-level ensemble."""

    model_config = ConfigDict(extra="forbid")
    method: MethodName
    members: list[str] = Field(description="model names; each answers every call")
    judge: str | None = Field(None, validate_default=True,
                              description="model that compares replies (rank) and fuses (fuse)")
    top: int = Field(2, ge=1, description="fuse: how many of the best replies the fuser reads")
    verdict_tokens: int = Field(8, ge=1, description="rank: most tokens a judge's verdict takes")

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, method: Any) -> Any:
        if method not in METHODS:
            raise _error(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        return method

    @field_validator("members")
    @classmethod
    def _members(cls, members: list[str]) -> list[str]:
        if len(members) < 2:
            raise _error(f"a response ensemble needs at least 2 members, got {len(members)}")
        return members

    @field_validator("judge")
    @classmethod
    def _judge(cls, judge: str | None, info: ValidationInfo) -> str | None:
        method = info.data.get("method")
        if judge is None and method in JUDGED:
            raise _error(f"method {method} needs a judge model")
        return judge

    @field_validator("top")
    @classmethod
    def _top(cls, top: int, info: ValidationInfo) -> int:
        members = info.data.get("members")
        if members is not None and top > len(members):
            raise _error(f"top {top} is more than the {len(members)} members")
        return top


def member_seed(seed: int | None, index: int) -> int | None:
    """The seed member ``index`` samples with (None stays None: unseeded stays unseeded).

    >>> member_seed(3, 0) == member_seed(3, 0) != member_seed(3, 1)
    True
    """
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}|response-member|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def request_of(messages: Sequence[Message]) -> str:
    """What the conversation asks now: its last user message (all of it if there is none)."""
    users = [m.content for m in messages if m.role == "user"]
    return users[-1] if users else "\n\n".join(m.content for m in messages)


async def _all(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Await every call concurrently; on the first failure cancel the rest, then re-raise."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _ask(who: str, backend: ChatBackend, messages: Sequence[Message],
               settings: Settings) -> Reply:
    """One member or judge call; an error says who failed and keeps its kind."""
    try:
        return await backend.generate(messages, settings)
    except ContextOverflowError as err:
        raise ContextOverflowError(f"{who}: {err}") from None
    except TransientBackendError as err:
        raise TransientBackendError(f"{who}: {err}", err.retry_after) from None
    except BackendError as err:
        raise BackendError(f"{who}: {err}") from None


class ResponseEnsemble(ChatBackend):
    """A chat backend that asks every member for a full reply and fuses them.

    Args:
        options: the validated config options.
        members: the members' chat backends, in ``options.members`` order.
        judge: the judge's backend (rank and fuse), else None.
        identity: what pins the replies (see :func:`create`).
    """

    def __init__(self, options: Options, members: Sequence[ChatBackend],
                 judge: ChatBackend | None, identity: str) -> None:
        self.options = options
        self.members = list(members)
        self.judge = judge
        self._identity = identity

    @property
    def identity(self) -> str:
        return self._identity

    async def check(self) -> None:
        for backend in [*self.members, *([self.judge] if self.judge else [])]:
            await backend.check()

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        start = time.perf_counter()
        names, method = self.options.members, self.options.method
        replies = await _all([
            _ask(f"member {name}", backend, messages,
                 replace(settings, seed=member_seed(settings.seed, i)))
            for i, (name, backend) in enumerate(zip(names, self.members, strict=True))])
        texts = [r.text for r in replies]
        spent = list(replies)
        order: list[int] = []
        if method == "majority":
            chosen = rr.majority(texts)
        elif method == "mbr":
            chosen = rr.medoid(texts)
        else:
            wins, verdicts = await self._rank(messages, texts, settings.seed)
            spent += verdicts
            order = rr.ranking(wins, texts)
            chosen = order[0]
        result = replies[chosen]
        if method == "fuse":
            best = [texts[i] for i in order[: self.options.top]]
            result = await self._fuse(messages, best, settings)
            spent.append(result)
            chosen = -1
        return replace(
            result, prompt_tokens=sum(r.prompt_tokens for r in spent),
            completion_tokens=sum(r.completion_tokens for r in spent),
            extra={"chosen": float(chosen), "calls": float(len(spent))},
            latency_s=time.perf_counter() - start)

    async def _rank(self, messages: Sequence[Message], texts: Sequence[str], seed: int | None,
                    ) -> tuple[list[float], list[Reply]]:
        """Wins per reply from the judge's verdicts on every ordered pair, and those calls."""
        assert self.judge is not None  # Options require a judge for rank and fuse
        request = request_of(messages)
        pairs = rr.ordered_pairs(len(texts))
        verdicts = await _all([
            _ask(f"judge {self.options.judge}", self.judge,
                 [Message("user", render("rank_pair", request=request, first=texts[a],
                                         second=texts[b]))],
                 # Greedy and short: a verdict is one letter, and it should not depend on luck.
                 Settings(temperature=0.0, max_tokens=self.options.verdict_tokens,
                          seed=member_seed(seed, 1000 + k)))
            for k, (a, b) in enumerate(pairs)])
        wins = rr.tally(len(texts), pairs, [rr.read_verdict(v.text) for v in verdicts])
        return wins, verdicts

    async def _fuse(self, messages: Sequence[Message], best: Sequence[str],
                    settings: Settings) -> Reply:
        """The judge's own reply, written from the best candidates."""
        assert self.judge is not None
        asked = Message("user", render("fuse", request=request_of(messages), candidates=best))
        last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        conversation = ([*messages[:last], asked, *messages[last + 1:]] if last is not None
                        else [*messages, asked])
        return await _ask(f"fuser {self.options.judge}", self.judge, conversation,
                          replace(settings, seed=member_seed(settings.seed, -1)))


# Options of the response ensembles being created right now: a member that leads back to one of
# them would recurse for ever (the pool builds members while building the ensemble).
_BUILDING: list[int] = []


@contextmanager
def _building(options: Options) -> Iterator[None]:
    _BUILDING.append(id(options))
    try:
        yield
    finally:
        _BUILDING.pop()


def _own_name(options: Options, resolver: Any) -> str:
    """This ensemble's name in the pool, for error paths (the pool does not pass it)."""
    for name in getattr(resolver, "names", list)():
        try:
            if resolver.spec(name).options is options:
                return str(name)
        except (ConfigError, ImportError):
            continue  # another model's problem is reported where that model is used
    return "response_ensemble"


def _backend(resolver: Any, name: str, field: str) -> ChatBackend:
    """A member's or judge's shared backend; errors name ``field``."""
    if name not in getattr(resolver, "names", lambda: [name])():
        known = ", ".join(resolver.names())
        raise ConfigError(f"{field}: unknown model {name!r}; known: {known}")
    if id(resolver.spec(name).options) in _BUILDING:
        raise ConfigError(f"{field}: {name!r} contains this ensemble (models may not loop)")
    backend: ChatBackend = resolver.chat(name)
    return backend


def create(options: Options, resolver: Any) -> ResponseEnsemble:
    """Build a response ensemble over the pool's shared member backends (nothing loads yet).

    The identity hashes the method, the members' and judge's identities, the options that
    change replies and the prompt templates used, so editing a template is a new model.
    """
    where = f"models.{_own_name(options, resolver)}"
    judged = options.method in JUDGED
    with _building(options):
        members = [_backend(resolver, name, f"{where}.members[{i}]")
                   for i, name in enumerate(options.members)]
        judge = (_backend(resolver, options.judge, f"{where}.judge")
                 if judged and options.judge is not None else None)
    pinned: dict[str, Any] = {
        "method": options.method, "members": [m.identity for m in members],
        "templates": {t: hashlib.sha256(template_source(t).encode()).hexdigest()
                      for t in TEMPLATES[options.method]}}
    if judge is not None:
        pinned.update(judge=judge.identity, verdict_tokens=options.verdict_tokens)
    if options.method == "fuse":
        pinned["top"] = options.top
    digest = hashlib.sha256(json.dumps(pinned, sort_keys=True).encode()).hexdigest()
    return ResponseEnsemble(options, members, judge,
                            f"response:{options.method}:{digest[:16]}")
