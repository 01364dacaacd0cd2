"""The run directory's writes: atomic and durable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from societies import storage


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
