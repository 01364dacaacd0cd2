"""The run directory's writes: atomic and durable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from societies import storage
from societies.errors import UserError
from societies.records import SCHEMA_VERSION, Round, Turn, UnitRecord


def test_write_atomic_fsyncs_the_file_before_the_rename_and_the_folder_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    monkeypatch.setattr(storage.os, "replace", replace)
    target = tmp_path / "summary.json"
    target.write_text("old")
    storage.write_atomic(target, "new")
    assert target.read_text() == "new" and not list(tmp_path.glob("*.tmp"))
    assert events == ["fsync-file", "rename", "fsync-dir"]


# --- reading run directories: streaming, and bad directories as one line -------------------

def _record(uid: str, status: str = "ok", reply: str = "The answer is 1.") -> UnitRecord:
    turn = Turn(agent="a1", pattern="answer", reply=reply, answer="1", correct=True)
    society, strategy, repeat, qid = uid.split("/")
    return UnitRecord(unit_id=uid, task="arithmetic", question_id=qid, society=society,
                      strategy=strategy, repeat=int(repeat), gold="1", agents=["a1"],
                      rounds=[Round(index=0, turns=[turn])], status=status)  # type: ignore[arg-type]


def _store(tmp_path: Path, records: list[UnitRecord] | None = None) -> storage.RunStore:
    store = storage.RunStore(tmp_path / "run")
    store.prepare({"name": "t"}, "id0")
    if records:
        store.append(records)
    return store


def _add_line(store: storage.RunStore, line: str) -> None:
    with store.records_path.open("a") as fh:
        fh.write(line)


# A record as the first societies wrote it: schema 1, no raw_answer/finish_reason/model/...
SCHEMA_1 = json.dumps({
    "schema_version": 1, "unit_id": "S/0/0/q9", "task": "arithmetic", "question_id": "q9",
    "society": "S", "strategy": "0", "repeat": 0, "gold": "1", "agents": ["a1"],
    "rounds": [{"index": 0, "turns": [{"agent": "a1", "pattern": "answer", "reply": "1",
                                       "answer": "1", "correct": True}]}],
    "status": "ok", "error": None})


def test_iter_records_streams_the_latest_line_of_each_unit_in_the_order_of_records(
        tmp_path: Path) -> None:
    store = _store(tmp_path, [_record("S/0/0/q1", "failed"), _record("S/0/0/q2"),
                              _record("S/0/0/q1"), _record("S/0/0/q3")])
    it = store.iter_records()
    assert not isinstance(it, list)
    got = [(r.unit_id, r.status) for r in it]
    assert got == [("S/0/0/q2", "ok"), ("S/0/0/q1", "ok"), ("S/0/0/q3", "ok")]
    assert [r.unit_id for r in store.records()] == [u for u, _ in got]
    # The index keeps offsets only: the second q1 line (line 3) starts after two lines.
    index = store.index()
    lines = store.records_path.read_bytes().splitlines(True)
    assert index.latest["S/0/0/q1"] == (len(lines[0]) + len(lines[1]), 3)
    assert index.lines == 4 and index.torn_line is None


def test_iter_records_holds_one_record_at_a_time(tmp_path: Path) -> None:
    import tracemalloc

    store = _store(tmp_path, [_record(f"S/0/0/q{i}", reply="x" * 4000) for i in range(300)])
    tracemalloc.start()
    try:
        held = store.records()
        list_peak = tracemalloc.get_traced_memory()[1]
        del held
        tracemalloc.reset_peak()
        n = sum(1 for _ in store.iter_records())
        iter_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 300
    assert iter_peak * 10 < list_peak  # 1.2 MB of replies held vs one record at a time


def test_a_directory_without_config_is_not_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "records.jsonl").write_text("")
    with pytest.raises(UserError, match=r"not a run directory \(no config.json\)"):
        storage.RunStore(tmp_path).check_readable()


@pytest.mark.parametrize("content", [None, "", '{"schema_version":2,"unit_id":"S/0/0/q'])
def test_a_run_without_complete_records_has_no_records_yet(
        tmp_path: Path, content: str | None) -> None:
    store = _store(tmp_path)
    if content is not None:
        store.records_path.write_text(content)
    with pytest.raises(UserError, match=r"run: no records yet \(the run has not finished a unit\)"):
        store.check_readable()


def test_a_torn_last_line_is_a_warning_and_the_rest_is_read(tmp_path: Path) -> None:
    store = _store(tmp_path, [_record("S/0/0/q1"), _record("S/0/0/q2")])
    _add_line(store, _record("S/0/0/q3").model_dump_json()[:40])
    assert store.check_readable() == [
        f"{store.records_path}:3: last line is incomplete (an interrupted write); it is "
        "ignored and will be redone"]
    assert [r.unit_id for r in store.records()] == ["S/0/0/q1", "S/0/0/q2"]


def test_schema_1_records_still_read_with_a_warning_naming_how_many(tmp_path: Path) -> None:
    store = _store(tmp_path, [_record("S/0/0/q1")])
    _add_line(store, SCHEMA_1 + "\n")
    warnings = store.check_readable()
    expected = f"1 of 2 records have an older schema_version than {SCHEMA_VERSION}"
    assert len(warnings) == 1 and expected in warnings[0]
    old = store.records()[1]
    assert old.schema_version == 1 and old.rounds[0].turns[0].finish_reason == "stop"


def test_a_record_from_a_newer_societies_asks_for_an_upgrade(tmp_path: Path) -> None:
    store = _store(tmp_path, [_record("S/0/0/q1")])
    newer = json.loads(_record("S/0/0/q2").model_dump_json()) | {
        "schema_version": SCHEMA_VERSION + 1, "future": 1}
    _add_line(store, json.dumps(newer) + "\n")
    message = (f"{store.records_path}:2: schema_version {SCHEMA_VERSION + 1} is newer than this "
               f"societies ({SCHEMA_VERSION}): upgrade")
    for read in (store.check_readable, store.records):
        with pytest.raises(UserError) as err:
            read()
        assert str(err.value) == message


def test_a_line_that_is_not_json_mid_file_names_file_and_line(tmp_path: Path) -> None:
    store = _store(tmp_path, [_record("S/0/0/q1")])
    _add_line(store, "{not json\n")
    store.append([_record("S/0/0/q2")])
    for read in (store.check_readable, store.records):
        with pytest.raises(UserError, match=rf"{store.records_path}:2: not a valid record"):
            read()


def test_a_record_that_does_not_validate_names_file_line_and_field(tmp_path: Path) -> None:
    store = _store(tmp_path, [_record("S/0/0/q1")])
    bad = json.loads(_record("S/0/0/q2").model_dump_json()) | {"repeat": "x"}
    _add_line(store, json.dumps(bad) + "\n")
    with pytest.raises(UserError, match=r"records.jsonl:2: not a valid record \(repeat: "):
        store.records()


def test_a_run_being_written_is_reported_with_its_pid(tmp_path: Path) -> None:
    store = _store(tmp_path, [_record("S/0/0/q1")])
    with store.writing():
        warnings = store.check_readable()
    assert len(warnings) == 1 and warnings[0].startswith(
        f"{store.root} is still being written by pid {os.getpid()} (started 20")
    assert warnings[0].endswith("); figures cover the units finished so far")
    assert not store.lock_path.exists() and store.check_readable() == []


def test_a_lock_left_by_a_dead_process_is_an_interrupted_run(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    store = _store(tmp_path, [_record("S/0/0/q1")])
    store.lock_path.write_text(json.dumps({"pid": int(dead.stdout), "started": "yesterday",
                                           "host": socket.gethostname()}))
    (warning,) = store.check_readable()
    assert warning.startswith(f"{store.root}: an interrupted run (pid {dead.stdout.strip()}, "
                              "started yesterday)")
    assert "still being written" not in warning


def test_a_missing_directory_or_unreadable_records_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nowhere: no such run directory"):
        storage.RunStore(tmp_path / "nowhere").check_readable()
    store = _store(tmp_path)
    store.records_path.mkdir()
    with pytest.raises(UserError, match=r"records.jsonl: cannot be read \(Is a directory\)"):
        store.check_readable()


def test_records_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    import gc

    store = _store(tmp_path, [_record("S/0/0/q1")])
    assert gc.isenabled()
    assert len(store.records()) == 1 and gc.isenabled()
    gc.disable()
    try:
        store.records()
        assert not gc.isenabled()
    finally:
        gc.enable()
