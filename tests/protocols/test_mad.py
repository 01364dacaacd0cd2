"""MAD on scripted backends (call order, who sees what, moderator's early stop, refusals) and
once end to end on the bundled SmolLM2."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from societies.backends.base import Message
from societies.backends.scripted import ScriptedBackend
from societies.config import parse_config
from societies.errors import ConfigError
from societies.plan import build_plan
from tests.helpers import config, make_run, speaker, tagged_reply

DEBATERS = {"agents": [{"name": "pro"}, {"name": "con"}]}


def mad_config(**overrides: Any) -> dict[str, Any]:
    base = config(societies=[DEBATERS], protocol={"name": "mad"}, strategies=["00"],
                  task={"name": "arithmetic", "n": 1, "seed": 0})
    base.update(overrides)
    return base


def script(moderator: Callable[[int], str]) -> Callable[[Sequence[Message]], str]:
    """Debaters reply with their name and turn; the moderator's reply depends on how many times
    it was asked; the judge answers 7."""
    asked = {"moderator": 0}

    def reply(messages: Sequence[Message]) -> str:
        me = speaker(messages)
        if me == "moderator":
            asked["moderator"] += 1
            return moderator(asked["moderator"])
        if me == "judge":
            return "Having read both sides: the answer is 7."
        return tagged_reply(messages)

    return reply


def tags(text: str) -> list[str]:
    return re.findall(r"<(\w+@\d+)>", text)


async def test_sides_take_turns_and_read_each_others_latest_reply(tmp_path: Path) -> None:
    backend = ScriptedBackend(script(lambda n: "Verdict: open. They still disagree."))
    run = make_run(tmp_path, mad_config(), backend)
    await run.execute(progress=False)
    # Sequential: affirmative, negative, moderator per round; the judge after the last round.
    assert [speaker(c) for c in backend.calls] == [
        "pro", "con", "moderator", "pro", "con", "moderator", "pro", "con", "moderator",
        "judge"]
    seen = [(speaker(c), tags(c[-1].content)) for c in backend.calls]
    assert seen[:2] == [("pro", []), ("con", ["pro@0"])]  # the negative answers the opening
    assert seen[3:5] == [("pro", ["con@0"]), ("con", ["pro@1"])]  # each reads the other's latest
    assert seen[2] == ("moderator", ["pro@0", "con@0"])  # the round's two replies
    assert "Affirmative side (pro)" in backend.calls[-1][-1].content  # the judge's labels
    assert seen[-1] == ("judge", ["pro@2", "con@2"])
    (record,) = run.store.records()
    assert [[t.saw for t in r.turns] for r in record.rounds] == [
        [[], ["pro"]], [["con"], ["pro"]], [["con"], ["pro"]]]
    assert [[t.pattern for t in r.turns] for r in record.rounds] == [
        ["answer", "answer"], ["debate", "debate"], ["debate", "debate"]]
    assert [[a.agent for a in r.asides] for r in record.rounds] == [["moderator"]] * 3
    assert record.stopped_after is None
    assert record.final is not None and record.final.method == "judge"
    assert record.final.answer == "7" and record.final.turn is not None
    assert record.final.turn.agent == "judge" and record.final.turn.saw == ["pro", "con"]


async def test_a_settled_verdict_ends_the_debate_with_the_moderators_answer(
        tmp_path: Path) -> None:
    verdicts = {1: "Verdict: open. Unclear.", 2: "Verdict: settled. The negative wins: 42."}
    backend = ScriptedBackend(script(lambda n: verdicts.get(n, "Verdict: open")))
    run = make_run(tmp_path, mad_config(rounds=3, strategies=["000"]), backend)
    await run.execute(progress=False)
    # Stopped after round 1: no round 2 or 3 calls, and no judge.
    assert [speaker(c) for c in backend.calls] == ["pro", "con", "moderator"] * 2
    (record,) = run.store.records()
    assert record.stopped_after == 1
    assert record.final is not None and record.final.method == "moderator"
    assert record.final.answer == "42"
    assert [t.pattern for r in record.rounds[2:] for t in r.turns] == ["stopped"] * 4
    assert sum(t.completion_tokens for r in record.rounds[2:] for t in r.turns) == 0


async def test_a_verdict_after_the_last_round_decides_without_an_early_stop(
        tmp_path: Path) -> None:
    backend = ScriptedBackend(script(lambda n: "Verdict: settled. The negative wins: 42."))
    run = make_run(tmp_path, mad_config(rounds=0, strategies="all"), backend)
    await run.execute(progress=False)
    (record,) = run.store.records()
    assert record.final is not None and record.final.method == "moderator"
    assert record.stopped_after is None  # nothing was left to stop


async def test_settled_without_a_readable_answer_keeps_debating(tmp_path: Path) -> None:
    backend = ScriptedBackend(script(lambda n: "Verdict: settled, the affirmative side."))
    run = make_run(tmp_path, mad_config(rounds=1, strategies=["0"]), backend)
    await run.execute(progress=False)
    (record,) = run.store.records()
    assert record.stopped_after is None
    assert record.final is not None and record.final.method == "judge"


async def test_a_reflection_round_shows_a_debater_nobody(tmp_path: Path) -> None:
    backend = ScriptedBackend(script(lambda n: "Verdict: open"))
    run = make_run(tmp_path, mad_config(strategies=["01"]), backend)
    await run.execute(progress=False)
    (record,) = run.store.records()
    assert [t.pattern for t in record.rounds[2].turns] == ["reflection", "reflection"]
    assert [t.saw for t in record.rounds[2].turns] == [[], []]
    last_two = [c for c in backend.calls if speaker(c) in ("pro", "con")][-2:]
    assert all(tags(c[-1].content) == [] for c in last_two)


@pytest.mark.parametrize("society, count", [({"easy_going": 5}, 5), ({"machinesom": "S1"}, 3),
                                            ({"agents": [{"name": "solo"}]}, 1)])
def test_anything_but_two_debaters_is_refused_naming_the_society(
        society: dict[str, Any], count: int) -> None:
    cfg = mad_config(societies=[DEBATERS, society])
    with pytest.raises(ConfigError) as err:
        build_plan(parse_config(cfg))
    message = str(err.value)
    assert message.startswith("societies[1]: mad needs exactly two debaters")
    assert f"has {count} agents" in message and "\n" not in message


def test_cli_refuses_five_debaters_with_exit_2_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from societies.cli import main

    path = tmp_path / "mad.yaml"
    path.write_text(yaml.safe_dump(mad_config(societies=[{"easy_going": 5}])))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    assert "societies[0]: mad needs exactly two debaters" in capsys.readouterr().err


def test_roles_default_to_the_first_debaters_model_and_a_neutral_card() -> None:
    models = {"s": {"backend": "scripted", "replies": ["1"]},
              "t": {"backend": "scripted", "replies": ["2"]}}
    cfg = mad_config(models=models, societies=[{"agents": [{"name": "pro", "model": "t"},
                                                           {"name": "con"}]}],
                     protocol={"name": "mad", "judge": {"name": "boss", "model": "s",
                                                         "trait": "overconfident"}})
    plan = build_plan(parse_config(cfg))
    roles = {r.name: r for r in plan.protocol.roles}
    assert roles["moderator"].model == "t" and roles["moderator"].card.name == "neutral"
    assert roles["boss"].model == "s" and roles["boss"].card.name == "overconfident"
    assert plan.model_names() == ["s", "t"]


@pytest.mark.parametrize("protocol, message", [
    ({"name": "mad", "jduge": {}}, "protocol.jduge: unknown key"),
    ({"name": "mad", "moderator": "smollm2"}, "protocol.moderator: expected a mapping"),
    ({"name": "mad", "judge": {"trait": "nope"}}, "protocol.judge.trait: unknown trait card"),
    ({"name": "mad", "judge": {"model": "nope"}}, "protocol.judge.model: unknown model"),
])
def test_bad_role_options_name_the_field(protocol: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_plan(parse_config(mad_config(protocol=protocol)))


@pytest.mark.real
def test_mad_on_the_bundled_model_end_to_end(tmp_path: Path) -> None:
    """Two SmolLM2 debaters, a moderator and a judge, one question, one debate round."""
    from societies.backends.bundled import bundled_path
    from societies.errors import UserError
    from societies.storage import RunStore

    try:
        bundled_path("smollm2")
    except UserError as err:
        pytest.skip(str(err))
    cfg = {
        "name": "mad-real",
        "models": {"small": {"backend": "llamacpp", "path": "bundled:smollm2", "n_ctx": 2048,
                             "n_threads": 1}},
        "defaults": {"model": "small", "sampling": {"temperature": 0.7, "max_tokens": 40,
                                                    "seed": 1}},
        "societies": [{"name": "duo", "agents": [{"name": "pro"},
                                                 {"name": "con", "trait": "devils-advocate"}]}],
        "protocol": {"name": "mad"},
        "rounds": 1,
        "strategies": ["0"],
        "task": {"name": "arithmetic", "expression": "a+b", "high": 9, "n": 1, "seed": 0},
        "run": {"concurrency": 2},
    }
    path = tmp_path / "mad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from societies.cli import main

    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    (record,) = RunStore(tmp_path / "run").records()
    assert record.status == "ok" and record.final is not None
    assert record.final.method in ("moderator", "judge")
    assert record.final.turn is not None and record.final.turn.reply
    assert record.final.turn.model == "small" and record.final.turn.completion_tokens > 0
    assert all(t.reply and t.completion_tokens > 0 for t in record.rounds[0].turns)
    assert record.rounds[0].turns[1].saw == ["pro"]
    assert [a.agent for a in record.rounds[0].asides] == ["moderator"]
    if record.final.method == "judge":
        assert [a.agent for a in record.rounds[1].asides] == ["moderator"]


def test_the_experiment_config_plans() -> None:
    from societies.config import load_config
    from societies.paths import asset_dir

    plan = build_plan(load_config(asset_dir("experiments") / "protocols" / "mad.yaml"))
    assert plan.protocol.name == "mad" and len(plan.societies[0].agents) == 2
    assert {r.name for r in plan.protocol.roles} == {"moderator", "judge"}
    # run.executor: ray pickles the plan: the protocol must survive it with its roles.
    shipped = pickle.loads(pickle.dumps(plan))
    assert shipped.protocol.roles == plan.protocol.roles
