"""Small builders shared by engine-level tests (scripted backends only test engine logic)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from societies.backends.base import ChatBackend, Message, Reply, Settings
from societies.backends.model import Model, RetryPolicy
from societies.config import parse_config
from societies.plan import build_plan
from societies.runner import Run
from societies.storage import RunStore


def config(**overrides: Any) -> dict[str, Any]:
    """A small valid config: one S2 society, arithmetic, two rounds, scripted models."""
    base: dict[str, Any] = {
        "name": "t",
        "models": {"s": {"backend": "scripted", "replies": ["The answer is 1."]}},
        "defaults": {"model": "s", "sampling": {"temperature": 0.0, "max_tokens": 8}},
        "societies": [{"machinesom": "S2"}],
        "rounds": 2,
        "strategies": ["00", "01"],
        "task": {"name": "arithmetic", "n": 2, "seed": 0},
        "run": {"concurrency": 4, "cache": False},
    }
    base.update(overrides)
    return base


class SameModel(ChatBackend):
    """A test backend presented under one fixed identity.

    Tests that stand one model's different behaviours (failing, then recovered) in with
    different scripted backends wrap them in this, so a re-run counts as the same experiment.
    """

    def __init__(self, inner: ChatBackend) -> None:
        self.inner = inner

    @property
    def identity(self) -> str:
        return "test-model"

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        return await self.inner.generate(messages, settings)


def make_run(tmp_path: Path, cfg: dict[str, Any], backend: ChatBackend | None = None,
             retry: RetryPolicy | None = None, limit: int | None = None) -> Run:
    """Build and prepare a run in ``tmp_path``; every model is ``backend`` if given."""
    exp = parse_config(cfg)
    plan = build_plan(exp)
    store = RunStore(tmp_path)
    factory: Callable[[Any, str], Model] | None = None
    if backend is not None:
        pinned = SameModel(backend)
        factory = lambda pool, name: Model(pinned, name, retry=retry)  # noqa: E731
    run = Run(plan, store, limit=limit, model_factory=factory)
    run.prepare()
    return run


def speaker(messages: Sequence[Message]) -> str:
    """The agent's name, read from its system prompt ("You are agentN, ...", or a mixed
    society's "You are overconfident-7, ...")."""
    match = re.search(r"You are ([\w-]+)", messages[0].content)
    assert match, messages[0].content
    return match.group(1)


def tagged_reply(messages: Sequence[Message]) -> str:
    """A reply naming who speaks in which round, so tests can see who saw what."""
    turn = sum(m.role == "assistant" for m in messages)
    return f"<{speaker(messages)}@{turn}> The answer is {turn}."


def interrupt_cli_run(cfg: dict[str, Any], tmp_path: Path, wait_s: float = 60
                      ) -> tuple[list[str], int, str, Path]:
    """Start ``societies run`` on ``cfg`` in a subprocess, send Ctrl-C once its first record is
    written, and wait for it to end: the command, its exit status, its stderr and the records
    file (to resume with the same command)."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "societies.cli", "run", str(path), "--out", str(out), "--quiet"]
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT
    # ignored: restore the default so that the CLI sees Ctrl-C wherever the suite runs.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    records = out / "records.jsonl"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not (records.exists() and records.stat().st_size):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return cmd, proc.returncode, err, records
