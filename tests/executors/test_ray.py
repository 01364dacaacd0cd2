"""The Ray executor on a local Ray instance (2 CPUs, no dashboard), started once per module.

Scripted backends check the executor's logic (same records as the local executor, resume
across executors, a worker killed mid-question); the real test runs a small grid against a
real ``llama_cpp.server`` on loopback with a worker killed once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from societies.backends.base import ChatBackend, Message, Reply, Settings
from societies.backends.model import Model, RetryPolicy
from societies.backends.registry import BackendPool
from societies.backends.scripted import ScriptedBackend
from societies.config import parse_config
from societies.executors.ray import RayJobLost
from societies.plan import build_plan
from societies.runner import Run
from societies.storage import RunStore
from tests.helpers import SameModel, config, interrupt_cli_run, make_run, tagged_reply

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def grid(executor: str, n: int = 6, **ray: Any) -> dict[str, Any]:
    """S2 on ``n`` sums, strategies 00 and 01: 2 units per question."""
    return config(task={"name": "arithmetic", "n": n},
                  run={"concurrency": 4, "cache": False, "executor": executor,
                       "ray": {"in_flight": 4, **ray}})


def content(store: RunStore) -> list[dict[str, Any]]:
    """Every record line as JSON, without the call timings (which differ run to run)."""
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "latency_s"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return [strip(json.loads(line)) for line in store.records_path.read_text().splitlines()]


async def test_ray_writes_the_same_records_in_the_same_order_as_local(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply, delay=0.02)
    local = make_run(tmp_path / "local", grid("local"), backend)
    await local.execute(progress=False)
    remote = make_run(tmp_path / "ray", grid("ray"), backend)
    await remote.execute(progress=False)
    expected = content(local.store)
    assert len(expected) == 12
    assert content(remote.store) == expected
    assert backend.calls, "the local run called the driver's backend"
    assert (remote.store.root / "summary.json").exists()


async def _interrupted(run: Run, after: int) -> int:
    """Run until at least ``after`` records are on disk, then cancel it as Ctrl-C would."""
    task = asyncio.create_task(run.execute(progress=False))
    path = run.store.records_path
    while not task.done() and not (path.exists() and len(path.read_text().splitlines()) >= after):
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return len(path.read_text().splitlines())


async def test_a_run_resumes_across_executors_without_loss_or_duplicates(tmp_path: Path) -> None:
    backend = ScriptedBackend(tagged_reply, delay=0.1)  # ~0.3 s per question
    reference = make_run(tmp_path / "ref", grid("local", n=8), backend)
    await reference.execute(progress=False)
    out = tmp_path / "run"
    first = await _interrupted(make_run(out, grid("local", n=8), backend), after=2)
    second = await _interrupted(make_run(out, grid("ray", n=8), backend), after=first + 2)
    assert 0 < first < second < 16
    await make_run(out, grid("local", n=8), backend).execute(progress=False)
    records = content(RunStore(out))
    ids = [r["unit_id"] for r in records]
    assert len(ids) == len(set(ids)) == 16
    assert all(r["status"] == "ok" for r in records)
    by_id = {r["unit_id"]: r for r in content(reference.store)}
    assert all(r == by_id[r["unit_id"]] for r in records)  # the same replies, whoever ran them


@pytest.mark.slow
def test_ctrl_c_on_ray_keeps_finished_questions_and_a_local_run_finishes(tmp_path: Path) -> None:
    # The CLI in a subprocess starts (and on Ctrl-C shuts down) its own local Ray instance.
    cfg = grid("ray", n=16)
    cfg["models"]["s"]["delay"] = 0.15
    cmd, code, err, records = interrupt_cli_run(cfg, tmp_path, wait_s=120)
    assert code == 130, err
    assert "run the same command again to resume" in err
    assert 0 < len(records.read_text().splitlines()) < 32
    assert subprocess.run([*cmd, "--executor", "local"], check=False).returncode == 0
    ids = [json.loads(line)["unit_id"] for line in records.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 32


class DieOnce(ChatBackend):
    """Kills its worker process at its first call anywhere, once: a marker file says so."""

    def __init__(self, inner: ChatBackend, marker: str) -> None:
        self.inner, self.marker = inner, marker

    @property
    def identity(self) -> str:
        return self.inner.identity

    async def generate(self, messages: Sequence[Message], settings: Settings) -> Reply:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return await self.inner.generate(messages, settings)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)  # as a worker killed by the OOM killer or a lost node


def scripted_dying(marker: str, pool: BackendPool, name: str) -> Model:
    """A model factory for the workers: scripted replies, one worker dies at its first call."""
    return Model(SameModel(DieOnce(ScriptedBackend(tagged_reply, delay=0.02), marker)), name)


def real_dying(marker: str, pool: BackendPool, name: str) -> Model:
    """The configured real model, one worker dying at its first call."""
    policy = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.5)
    return Model(DieOnce(pool.chat(name), marker), name, retry=policy)


async def test_a_worker_killed_mid_question_is_retried_and_recorded_once(tmp_path: Path) -> None:
    marker = tmp_path / "died"
    plan = build_plan(parse_config(grid("ray")))
    run = Run(plan, RunStore(tmp_path / "run"),
              model_factory=functools.partial(scripted_dying, str(marker)))
    run.prepare()
    await run.execute(progress=False)
    assert marker.read_text() != str(os.getpid())  # a worker died, not this process
    records = content(run.store)
    assert sorted(r["unit_id"] for r in records) == sorted({r["unit_id"] for r in records})
    assert len(records) == 12 and all(r["status"] == "ok" for r in records)
    reference = make_run(tmp_path / "ref", grid("local"),
                         ScriptedBackend(tagged_reply))
    await reference.execute(progress=False)
    assert records == content(reference.store)


def real_config(server: str) -> dict[str, Any]:
    """Two agents on the real server, two sums, one debate round: 8 calls of <= 12 tokens."""
    return {
        "name": "ray-real",
        "models": {"srv": {"backend": "openai", "base_url": f"{server}/v1",
                           "model": "smollm2", "timeout": 60, "connect_wait": 2}},
        "defaults": {"model": "srv", "sampling": {"temperature": 0.0, "max_tokens": 12}},
        "societies": [{"name": "pair", "overconfident": 1, "easy_going": 1}],
        "rounds": 1, "strategies": ["0"],
        "task": {"name": "arithmetic", "n": 2},
        "run": {"concurrency": 2, "cache": False, "executor": "ray"},
    }


async def run_real(server: str, root: Path, marker: Path | None = None) -> Run:
    factory = functools.partial(real_dying, str(marker)) if marker else None
    run = Run(build_plan(parse_config(real_config(server))), RunStore(root),
              model_factory=factory)
    await run.check()
    run.prepare()
    summary = await run.execute(progress=False)
    assert {g.strategy for g in summary.groups} == {"0"}  # the driver summarised it all
    records = content(run.store)
    assert [r["unit_id"] for r in records] == [f"pair/0/0/{q.id}" for q in run.questions]
    assert all(r["status"] == "ok" for r in records)
    turns = [t for r in records for rnd in r["rounds"] for t in rnd["turns"]]
    assert len(turns) == 8  # 2 questions x 2 rounds x 2 agents
    assert all(t["reply"] and t["completion_tokens"] > 0 for t in turns)
    return run


async def test_a_question_whose_worker_dies_on_every_try_stops_the_run_keeping_the_rest(
        tmp_path: Path) -> None:
    marker = tmp_path / "died"
    out = tmp_path / "run"
    run = Run(build_plan(parse_config(grid("ray", max_retries=0))), RunStore(out),
              model_factory=functools.partial(scripted_dying, str(marker)))
    run.prepare()
    with pytest.raises(RayJobLost, match=r"its Ray worker died \(1 tries, run.ray.max_retries 0\)"):
        await run.execute(progress=False)
    assert len(run.store.done()) < 12 and not run.store.lock_path.exists()
    await make_run(out, grid("local"), ScriptedBackend(tagged_reply)).execute(progress=False)
    ids = [r["unit_id"] for r in content(RunStore(out))]
    assert len(ids) == len(set(ids)) == 12


@pytest.mark.real
async def test_real_server_grid_on_ray(llama_server: str, tmp_path: Path) -> None:
    await run_real(llama_server, tmp_path / "run")


@pytest.mark.real
@pytest.mark.slow
async def test_real_server_grid_on_ray_with_a_worker_killed(llama_server: str,
                                                            tmp_path: Path) -> None:
    marker = tmp_path / "died"
    await run_real(llama_server, tmp_path / "run", marker)
    assert marker.exists()
