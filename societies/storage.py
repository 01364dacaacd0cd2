"""The run directory: the only code that touches run files.

``RUN/config.json``   the resolved config and its identity hash (refuses a different config)
``RUN/records.jsonl`` one :class:`~societies.records.UnitRecord` per line, appended and fsynced
``RUN/summary.json``  per-round metrics, recomputed from the records, written atomically
``RUN/.running``      pid, host and start time of the ``societies run`` writing it, if any
"""

from __future__ import annotations

import gc
import json
import os
import re
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from societies.errors import UserError
from societies.records import SCHEMA_VERSION, UnitRecord

# Records are written by ``model_dump_json``, which puts these two fields first; reading them with
# a regex lets the index pass skip parsing the replies. Other layouts fall back to ``json``.
_HEAD = re.compile(rb'\{"schema_version":(\d+),"unit_id":("(?:[^"\\]|\\.)*")')


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half.

    The data is fsynced before the rename and the directory after it, so a power cut cannot
    leave the new name pointing at an empty file.
    """
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RecordIndex:
    """Where each unit's latest record starts in ``records.jsonl``; no record text is kept.

    Attributes:
        latest: unit id -> (byte offset, line number) of its latest line, in the order of
            those lines.
        lines: complete lines read.
        torn_line: the number of an incomplete last line (an interrupted write), else None.
        older: how many latest records have a schema version older than this code's.
    """

    latest: dict[str, tuple[int, int]]
    lines: int
    torn_line: int | None
    older: int


@dataclass(frozen=True)
class RunLock:
    """The ``.running`` file of a run directory: who is (or was) writing it."""

    pid: int
    host: str
    started: str

    @property
    def alive(self) -> bool:
        """Whether the writer still runs (a lock from another host is taken to be alive)."""
        if self.pid <= 0:
            return False
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True


class RunStore:
    """A run directory.

    Args:
        root: the directory (created by :meth:`prepare`, never before).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config_path = self.root / "config.json"
        self.records_path = self.root / "records.jsonl"
        self.summary_path = self.root / "summary.json"
        self.lock_path = self.root / ".running"

    def prepare(self, config: dict[str, Any], identity: str,
                parts: dict[str, str] | None = None,
                effective: dict[str, Any] | None = None) -> None:
        """Create the directory, or check that it holds a run of the same experiment.

        Args:
            config: the config as written (saved for ``societies report``).
            identity: the run's identity (``societies.provenance``).
            parts: the hash of each part of the identity, saved so a refusal names the part.
            effective: the settings in effect (sampling per agent, ...), saved for people.

        Raises:
            UserError: the directory holds a run of a different experiment, or another live
                process is writing it.
        """
        if self.config_path.exists():
            saved = json.loads(self.config_path.read_text())
            if saved.get("identity") != identity:
                old = saved.get("identity_parts") or {}
                changed = [k for k, v in (parts or {}).items() if old.get(k) != v]
                what = f" ({', '.join(changed)} changed)" if old and changed else ""
                raise UserError(
                    f"{self.root}: holds a run of a different experiment{what} "
                    f"(identity {saved.get('identity')}, now {identity}); "
                    "use another --out directory or delete this one"
                )
            self._refuse_if_written()  # its torn tail may be a write in progress
            self._drop_torn_tail()  # once per resume, so appends start on a fresh line
            return
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {"identity": identity, "identity_parts": parts or {}, "config": config,
               "effective": effective or {}}
        write_atomic(self.config_path, json.dumps(doc, indent=2))

    def saved_config(self) -> dict[str, Any]:
        """The config saved in this run directory."""
        if not self.root.is_dir():
            raise UserError(f"{self.root}: no such run directory")
        if not self.config_path.exists():
            raise UserError(f"{self.root}: not a run directory (no config.json)")
        try:
            data: dict[str, Any] = json.loads(self.config_path.read_text())["config"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{self.config_path}: not a saved run config") from None
        except OSError as err:
            raise UserError(f"{self.config_path}: cannot be read ({err.strerror})") from None
        return data

    def check_readable(self) -> list[str]:
        """Check the directory before a report; return warnings, one line each.

        Raises:
            UserError: not a run directory, no records yet, a line that is not a record, or a
                record written by a newer ``societies``, or a file that cannot be read.
        """
        self.saved_config()
        try:
            index = self.index()
        except OSError as err:  # e.g. no permission, or records.jsonl is a folder
            raise UserError(f"{self.records_path}: cannot be read ({err.strerror})") from None
        if not index.latest:
            raise UserError(f"{self.root}: no records yet (the run has not finished a unit)")
        warnings: list[str] = []
        if index.torn_line is not None:
            warnings.append(f"{self.records_path}:{index.torn_line}: last line is incomplete "
                            "(an interrupted write); it is ignored and will be redone")
        if index.older:
            warnings.append(
                f"{self.records_path}: {index.older} of {len(index.latest)} records have an "
                f"older schema_version than {SCHEMA_VERSION}; fields added since read as "
                "their defaults")
        lock = self.lock()
        if lock is not None and lock.alive:
            host = "" if lock.host == socket.gethostname() else f" on {lock.host}"
            warnings.append(f"{self.root} is still being written by pid {lock.pid}{host} "
                            f"(started {lock.started}); figures cover the units finished so far")
        elif lock is not None:
            warnings.append(f"{self.root}: an interrupted run (pid {lock.pid}, started "
                            f"{lock.started}); figures cover the units finished so far, "
                            "`societies run` again to finish it")
        return warnings

    def index(self) -> RecordIndex:
        """Read only each line's unit id and offset; the last line of a unit wins.

        Raises:
            UserError: a line that is not JSON or has no unit id, or a newer schema version.
        """
        latest: dict[str, tuple[int, int]] = {}
        versions: dict[str, int] = {}
        lineno, offset, torn = 0, 0, None
        if self.records_path.exists():
            with self.records_path.open("rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.endswith(b"\n"):
                        torn = lineno  # only the last line can lack its newline
                        break
                    uid, version = self._head(line, lineno)
                    latest.pop(uid, None)  # re-insert so order follows the latest line
                    latest[uid] = (offset, lineno)
                    versions[uid] = version
                    offset += len(line)
        lines = lineno - 1 if torn is not None else lineno
        older = sum(v < SCHEMA_VERSION for v in versions.values())
        return RecordIndex(latest, lines, torn, older)

    def _head(self, line: bytes, lineno: int) -> tuple[str, int]:
        where = f"{self.records_path}:{lineno}"
        match = _HEAD.match(line)
        if match:
            uid, version = json.loads(match.group(2)), int(match.group(1))
        else:
            try:
                doc = json.loads(line)
            except ValueError:
                raise UserError(f"{where}: not a valid record (not JSON)") from None
            uid = doc.get("unit_id") if isinstance(doc, dict) else None
            version = doc.get("schema_version", SCHEMA_VERSION) if isinstance(doc, dict) else 0
            if not isinstance(uid, str) or not isinstance(version, int):
                raise UserError(f"{where}: not a valid record (unit_id is not a string or "
                                "schema_version not an integer)")
        if version > SCHEMA_VERSION:
            raise UserError(f"{where}: schema_version {version} is newer than this societies "
                            f"({SCHEMA_VERSION}): upgrade")
        return uid, version

    def iter_records(self) -> Iterator[UnitRecord]:
        """Every unit's latest record, in the order of those lines, one at a time.

        Memory holds the offsets of the index, not the records. A line cut short by an
        interrupted write is ignored (it is the unit that will be redone).

        Raises:
            UserError: a line that is not a valid record, with ``file:line``.
        """
        index = self.index()
        if not index.latest:
            return
        with self.records_path.open("rb") as fh:
            for offset, lineno in index.latest.values():  # increasing offsets: reads forward
                fh.seek(offset)
                try:
                    yield UnitRecord.model_validate_json(fh.readline())
                except ValidationError as err:
                    first = err.errors()[0]
                    loc = ".".join(str(p) for p in first["loc"])
                    raise UserError(f"{self.records_path}:{lineno}: not a valid record "
                                    f"({loc}: {first['msg']})") from None

    def records(self) -> list[UnitRecord]:
        """Every unit's latest record, in file order (see :meth:`iter_records`).

        A unit that failed and was re-run has two lines; the later one wins.
        """
        # Records hold no reference cycles, but each adds dozens of tracked objects, so the
        # cyclic collector would rescan the growing list again and again: 10,000 records took
        # 4x as long with it running (experiments/bench/bench_report.py).
        was_on = gc.isenabled()
        gc.disable()
        try:
            return list(self.iter_records())
        finally:
            if was_on:
                gc.enable()

    def done(self) -> set[str]:
        """Unit ids finished successfully; failed units are retried on resume."""
        return {r.unit_id for r in self.iter_records() if r.status == "ok"}

    def append(self, records: Iterable[UnitRecord]) -> None:
        """Append records and flush them to disk before returning."""
        lines = "".join(r.model_dump_json() + "\n" for r in records)
        if not lines:
            return
        with self.records_path.open("a") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def lock(self) -> RunLock | None:
        """Who is writing this run (or was, if it ended without cleaning up), if anyone."""
        try:
            doc = json.loads(self.lock_path.read_text())
            return RunLock(int(doc["pid"]), str(doc["host"]), str(doc["started"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):  # written atomically, so edited: not a writer
            return RunLock(0, socket.gethostname(), "unknown")

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold ``RUN/.running`` while a run writes records; removed however the block ends.

        Raises:
            UserError: another live process is writing this directory.
        """
        self._refuse_if_written()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        doc = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        write_atomic(self.lock_path, json.dumps(doc))
        try:
            yield
        finally:
            self.lock_path.unlink(missing_ok=True)

    def _refuse_if_written(self) -> None:
        lock = self.lock()
        if lock is not None and lock.alive:
            raise UserError(f"{self.root} is being written by pid {lock.pid} (started "
                            f"{lock.started}); wait for it, or delete {self.lock_path} if no "
                            "run is going")

    def _drop_torn_tail(self) -> None:
        if not self.records_path.exists():
            return
        with self.records_path.open("r+b") as fh:
            end = fh.seek(0, os.SEEK_END)
            pos = end
            while pos > 0:  # read backwards from the end, so a big file is not read whole
                step = min(pos, 1 << 16)
                fh.seek(pos - step)
                chunk = fh.read(step)
                if pos == end and chunk.endswith(b"\n"):
                    return
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    fh.truncate(pos - step + cut + 1)
                    return
                pos -= step
            fh.truncate(0)

    def write_summary(self, summary: BaseModel) -> None:
        """Write the summary atomically."""
        write_atomic(self.summary_path, summary.model_dump_json(indent=2))
