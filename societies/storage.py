"""The run directory: the only code that touches run files.

``RUN/config.json``   the resolved config and its identity hash (refuses a different config)
``RUN/records.jsonl`` one :class:`~societies.records.UnitRecord` per line, appended and fsynced
``RUN/summary.json``  per-round metrics, recomputed from the records, written atomically
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from societies.errors import UserError
from societies.records import UnitRecord


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
            UserError: the directory holds a run of a different experiment.
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
            self._drop_torn_tail()  # once per resume, so appends start on a fresh line
            return
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {"identity": identity, "identity_parts": parts or {}, "config": config,
               "effective": effective or {}}
        write_atomic(self.config_path, json.dumps(doc, indent=2))

    def saved_config(self) -> dict[str, Any]:
        """The config saved in this run directory."""
        if not self.config_path.exists():
            raise UserError(f"{self.root}: not a run directory (no config.json)")
        data: dict[str, Any] = json.loads(self.config_path.read_text())["config"]
        return data

    def records(self) -> list[UnitRecord]:
        """Every unit's latest record, in file order.

        A unit that failed and was re-run has two lines; the later one wins. A line cut short by
        an interrupted write is ignored (it is the unit that will be redone).
        """
        if not self.records_path.exists():
            return []
        latest: dict[str, UnitRecord] = {}
        with self.records_path.open() as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.endswith("\n"):
                    break  # torn final write
                try:
                    record = UnitRecord.model_validate_json(line)
                except ValidationError:
                    raise UserError(f"{self.records_path}:{lineno}: not a valid record") from None
                latest.pop(record.unit_id, None)  # re-insert so order follows the latest line
                latest[record.unit_id] = record
        return list(latest.values())

    def done(self) -> set[str]:
        """Unit ids finished successfully; failed units are retried on resume."""
        return {r.unit_id for r in self.records() if r.status == "ok"}

    def append(self, records: Iterable[UnitRecord]) -> None:
        """Append records and flush them to disk before returning."""
        lines = "".join(r.model_dump_json() + "\n" for r in records)
        if not lines:
            return
        with self.records_path.open("a") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def _drop_torn_tail(self) -> None:
        if not self.records_path.exists():
            return
        data = self.records_path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.records_path.open("r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    def write_summary(self, summary: BaseModel) -> None:
        """Write the summary atomically."""
        write_atomic(self.summary_path, summary.model_dump_json(indent=2))
