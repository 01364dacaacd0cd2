"""The run lock: ``RUN/.running`` says a run is being written, and by whom."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from societies.backends.base import Message
from societies.backends.scripted import ScriptedBackend
from societies.errors import UserError
from societies.storage import RunStore
from tests.helpers import config, make_run


async def test_a_run_holds_its_lock_while_writing_and_removes_it_after(tmp_path: Path) -> None:
    seen: list[dict[str, object]] = []

    def reply(messages: Sequence[Message]) -> str:
        seen.append(json.loads((tmp_path / ".running").read_text()))
        return "The answer is 1."

    run = make_run(tmp_path, config(), ScriptedBackend(reply))
    assert not (tmp_path / ".running").exists()
    await run.execute(progress=False)
    assert seen and all(s["pid"] == os.getpid() and s["host"] == socket.gethostname()
                        for s in seen)
    assert not (tmp_path / ".running").exists()
    assert RunStore(tmp_path).check_readable() == []


async def test_a_run_stopped_by_an_error_removes_its_lock(tmp_path: Path) -> None:
    def reply(messages: Sequence[Message]) -> str:
        raise UserError("model 'x' is not served here")

    run = make_run(tmp_path, config(), ScriptedBackend(reply))
    with pytest.raises(UserError, match="not served"):
        await run.execute(progress=False)
    assert not (tmp_path / ".running").exists()


async def test_a_second_run_into_a_directory_being_written_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path, config(), ScriptedBackend(["The answer is 1."]))
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01T00:00"}
    (tmp_path / ".running").write_text(json.dumps(lock))
    with pytest.raises(UserError, match=rf"is being written by pid {os.getpid()} "):
        run.prepare()
    with pytest.raises(UserError, match=r"delete .*\.running if no run is going"):
        await run.execute(progress=False)
    assert not (tmp_path / "records.jsonl").exists()
    assert json.loads((tmp_path / ".running").read_text()) == lock  # not the refused run's


async def test_a_lock_left_by_a_dead_run_does_not_stop_a_resume(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    run = make_run(tmp_path, config(), ScriptedBackend(["The answer is 1."]))
    (tmp_path / ".running").write_text(json.dumps(
        {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "yesterday"}))
    run.prepare()
    await run.execute(progress=False)
    assert len(RunStore(tmp_path).records()) == run.total_units
    assert not (tmp_path / ".running").exists()
