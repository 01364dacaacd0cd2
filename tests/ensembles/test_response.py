"""Backend ``response_ensemble``: config errors in one line, the four fusion methods on scripted
members and judges, token sums and seeds, and a society whose agent is a fused pair of SmolLM2
copies, run end to end on the real model."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from societies.backends.base import (
    BackendError,
    ChatBackend,
    ContextOverflowError,
    Message,
    Reply,
    Settings,
    TransientBackendError,
)
from societies.backends.registry import RESPONSE_METHODS, BackendPool
from societies.ensembles import response
from societies.ensembles.response import METHODS, Options, ResponseEnsemble
from societies.errors import ConfigError

ASK = [Message("system", "You are agent1."), Message("user", "What is 5 + 7?")]


def scripted(text: str) -> dict[str, Any]:
    return {"backend": "scripted", "replies": [text]}


def build(raw: dict[str, Any], **models: dict[str, Any]) -> Any:
    pool = BackendPool({"a": scripted("Answer: 1"), "b": scripted("Answer: 2"), **models})
    pool.register("trio", raw)
    return pool.chat("trio")


class Fake(ChatBackend):
    """Replies from a function of the last message; records every call and who overlapped."""

    def __init__(self, reply: Callable[[str], str], prompt: int = 10, completion: int = 3,
                 error: Exception | None = None) -> None:
        self.reply, self.prompt, self.completion, self.error = reply, prompt, completion, error
        self.calls: list[tuple[tuple[Message, ...], Settings]] = []
        self.busy = 0
        self.most_busy = 0

    @property
    def identity(self) -> str:
        return "fake"

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        self.calls.append((tuple(messages), settings))
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        await asyncio.sleep(0.01)  # lets the other members start: concurrency is observable
        self.busy -= 1
        if self.error is not None:
            raise self.error
        return Reply(self.reply(messages[-1].content), prompt_tokens=self.prompt,
                     completion_tokens=self.completion)


def ensemble(method: str, texts: Sequence[str], judge: Fake | None = None,
             shared: Fake | None = None, **options: Any) -> ResponseEnsemble:
    """An ensemble of members replying ``texts`` (all through ``shared`` if given)."""
    names = [f"m{i}" for i in range(len(texts))]
    members = [shared or Fake(lambda _, t=t: t) for t in texts]  # type: ignore[misc]
    opts = Options(method=method, members=names,  # type: ignore[arg-type]
                   judge="j" if judge else None, **options)
    return ResponseEnsemble(opts, members, judge, "test")


def prefers(good: str) -> Callable[[str], str]:
    """A judge that picks whichever side holds ``good``; fuses into "FUSED"."""
    def judge(prompt: str) -> str:
        if "Reply A:" not in prompt:
            return "FUSED"
        first = prompt.split("Reply A:")[1].split("Reply B:")[0]
        return "A" if good in first else "B"
    return judge


@pytest.mark.parametrize(("raw", "message"), [
    ({"backend": "response_ensemble", "method": "mbr", "members": ["a"]},
     "models.trio.members: a response ensemble needs at least 2 members, got 1"),
    ({"backend": "response_ensemble", "method": "rank", "members": ["a", "b"]},
     "models.trio.judge: method rank needs a judge model"),
    ({"ensemble": "fuse", "members": ["a", "b"]}, "models.trio.judge: method fuse needs a judge"),
    ({"ensemble": "fuse", "members": ["a", "b"], "judge": "a", "top": 3},
     "models.trio.top: top 3 is more than the 2 members"),
    ({"backend": "response_ensemble", "method": "vote", "members": ["a", "b"]},
     "models.trio.method: unknown method 'vote'; known: majority, mbr, rank, fuse"),
    ({"ensemble": "mbr", "members": ["a", "nobody"]},
     "models.trio.members[1]: unknown model 'nobody'; known: a, b, gemma3, smollm2, trio"),
    ({"ensemble": "rank", "members": ["a", "b"], "judge": "nobody"},
     "models.trio.judge: unknown model 'nobody'"),
    ({"ensemble": "mbr", "members": ["a", "trio"]},
     "models.trio.members[1]: 'trio' contains this ensemble (models may not loop)"),
    ({"ensemble": "mbr", "members": ["a", "b"], "judges": "a"}, "models.trio.judges: "),
])
def test_bad_input_is_one_line_naming_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_member_fails_the_cli_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from societies.cli import main
    from tests.helpers import config

    cfg = config(models={"a": scripted("Answer: 1"),
                         "trio": {"ensemble": "majority", "members": ["a", "ghost"]}},
                 defaults={"model": "trio"})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "models.trio.members[1]: unknown model 'ghost'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_shorthand_and_method_list_agree_with_the_registry() -> None:
    assert METHODS == RESPONSE_METHODS
    assert isinstance(build({"ensemble": "majority", "members": ["a", "b"]}), ResponseEnsemble)


def test_identity_pins_members_method_judge_top_and_templates(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"ensemble": "fuse", "members": ["a", "b"], "judge": "a"}
    first = build(base).identity
    assert first == build(base).identity and first.startswith("response:fuse:")
    assert build({**base, "members": ["b", "a"]}).identity != first
    assert build({**base, "judge": "b"}).identity != first
    assert build({**base, "top": 1}).identity != first
    assert build({**base, "ensemble": "rank"}).identity != first
    # A judge named for a method that calls none changes nothing.
    mbr = {"ensemble": "mbr", "members": ["a", "b"]}
    assert build({**mbr, "judge": "a"}).identity == build(mbr).identity
    monkeypatch.setattr(response, "template_source", lambda name: f"edited {name}")
    assert build(base).identity != first


async def test_majority_returns_the_first_reply_with_the_most_common_answer() -> None:
    texts = ["The answer is 5.", "5 + 7 = 12. Answer: 12", "I think it is 12", "Answer: 35"]
    reply = await ensemble("majority", texts).generate(ASK, Settings(seed=1))
    assert reply.text == texts[1] and reply.extra["chosen"] == 1


async def test_mbr_returns_the_medoid() -> None:
    texts = ["purple sky", "red green", "red green blue", "red green blue yellow"]
    reply = await ensemble("mbr", texts).generate(ASK, Settings())
    assert reply.text == "red green blue" and reply.extra["chosen"] == 2


async def test_rank_asks_both_orders_and_returns_what_the_judge_prefers() -> None:
    texts = ["Answer: 11", "Answer: 12 (GOOD)", "Answer: 13"]
    judge = Fake(prefers("GOOD"))
    reply = await ensemble("rank", texts, judge).generate(ASK, Settings(seed=4))
    assert reply.text == texts[1]
    shown = [re.findall(r"Answer: (\d+)", call[0][-1].content) for call in judge.calls]
    assert sorted(tuple(s) for s in shown) == sorted(
        (a, b) for a in ("11", "12", "13") for b in ("11", "12", "13") if a != b)
    assert all("What is 5 + 7?" in call[0][-1].content for call in judge.calls)
    # Verdicts are greedy and short, whatever the agent samples with.
    assert {(s.temperature, s.max_tokens) for _, s in judge.calls} == {(0.0, 8)}


async def test_a_judge_that_always_says_a_cancels_out_and_mbr_breaks_the_tie() -> None:
    texts = ["purple sky", "red green", "red green blue", "red green blue yellow"]
    judge = Fake(lambda _: "A")
    reply = await ensemble("rank", texts, judge).generate(ASK, Settings())
    assert len(judge.calls) == 12  # every reply wins 3 of its 6 comparisons
    assert reply.text == "red green blue" and reply.extra["chosen"] == 2  # the medoid


async def test_fuse_shows_the_top_replies_best_first_in_the_agents_conversation() -> None:
    texts = ["Answer: 11 (ok)", "Answer: 12 (GOOD)", "Answer: 99 (bad)"]
    judge = Fake(prefers("GOOD"))
    reply = await ensemble("fuse", texts, judge, top=2).generate(ASK, Settings(max_tokens=40))
    assert reply.text == "FUSED" and reply.extra["chosen"] == -1
    fuse_messages, fuse_settings = judge.calls[-1]
    assert fuse_messages[0] == ASK[0] and len(fuse_messages) == 2  # the system prompt stays
    prompt = fuse_messages[-1].content
    assert "What is 5 + 7?" in prompt and "(bad)" not in prompt
    assert prompt.index("(GOOD)") < prompt.index("(ok)")
    assert fuse_settings.max_tokens == 40  # the fuser writes with the agent's sampling


async def test_tokens_are_summed_over_every_member_and_judge_call() -> None:
    judge = Fake(prefers("GOOD"), prompt=20, completion=1)
    team = ensemble("fuse", ["x", "GOOD", "y"], judge)
    reply = await team.generate(ASK, Settings())
    # 3 members (10, 3) + 6 verdicts (20, 1) + 1 fusion (20, 1)
    assert (reply.prompt_tokens, reply.completion_tokens) == (3 * 10 + 7 * 20, 3 * 3 + 7 * 1)
    assert reply.extra["calls"] == 10 and reply.latency_s > 0


async def test_members_run_concurrently_with_their_own_seeds() -> None:
    shared = Fake(lambda _: "Answer: 3")
    team = ensemble("majority", ["", "", ""], shared=shared)
    await team.generate(ASK, Settings(seed=7, temperature=0.9))
    seeds = [s.seed for _, s in shared.calls]
    assert shared.most_busy == 3 and len(set(seeds)) == 3 and 7 not in seeds
    assert {s.temperature for _, s in shared.calls} == {0.9}
    shared.calls.clear()
    await team.generate(ASK, Settings(seed=None))
    assert [s.seed for _, s in shared.calls] == [None] * 3


@pytest.mark.parametrize("error", [
    BackendError("boom"), ContextOverflowError("too long"), TransientBackendError("busy", 2.0)])
async def test_a_failing_member_fails_the_call_naming_it_and_keeping_the_kind(
        error: Exception) -> None:
    failing = Fake(lambda _: "", error=error)
    team = ResponseEnsemble(Options(method="mbr", members=["ok", "bad"]),
                            [Fake(lambda _: "x"), failing], None, "test")
    with pytest.raises(type(error)) as err:
        await team.generate(ASK, Settings())
    assert str(err.value).startswith("member bad: ") and type(err.value) is type(error)


@pytest.mark.real
async def test_a_society_with_a_fused_smollm2_pair_runs(tmp_path: Path) -> None:
    """SmolLM2 twice (different seeds) and as judge and fuser, as one agent of a debate."""
    from societies.config import parse_config
    from societies.plan import build_plan
    from societies.runner import Run
    from societies.storage import RunStore

    small = {"backend": "llamacpp", "path": "bundled:smollm2", "n_threads": 1, "n_ctx": 1024}
    config = parse_config({
        "name": "response-society",
        "models": {"small": small,
                   "duo": {"ensemble": "fuse", "members": ["small", "small"], "judge": "small",
                           "verdict_tokens": 4}},
        "societies": [{"agents": [{"name": "duo", "model": "duo"},
                                  {"name": "solo", "model": "small"}]}],
        "defaults": {"sampling": {"temperature": 0.7, "max_tokens": 16, "seed": 5}},
        "rounds": 1, "strategies": ["0"],
        "task": {"name": "arithmetic", "n": 1, "seed": 0},
        "run": {"cache": False, "concurrency": 2}})
    run = Run(build_plan(config), RunStore(tmp_path / "run"))
    assert run.models["duo"].backend.identity.startswith("response:fuse:")
    run.prepare()
    try:
        await run.execute(progress=False)
    finally:
        await run.pool.aclose()
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    (record,) = [json.loads(line) for line in lines]
    assert record["status"] == "ok", record["error"]
    turns = [t for r in record["rounds"] for t in r["turns"]]
    duo = [t for t in turns if t["agent"] == "duo"]
    solo = [t for t in turns if t["agent"] == "solo"]
    assert len(duo) == 2 and all(t["reply"].strip() and t["error"] is None for t in duo)
    # Each duo turn is 5 calls (2 members, 2 verdicts, 1 fusion), each of at least one token;
    # a solo turn is one call of at most 16.
    assert all(t["completion_tokens"] >= 5 for t in duo)
    assert all(t["completion_tokens"] <= 16 for t in solo)
    assert all(d["prompt_tokens"] > 2 * s["prompt_tokens"] for d, s in zip(duo, solo, strict=True))
