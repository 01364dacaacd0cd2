"""Where the BIG-bench task files live, and how ``make data`` puts them there.

The ``bigbench`` 1.0.0 source distribution on PyPI (358 MB) ships every task of the benchmark
under ``bigbench/benchmark_tasks/``. We keep only the JSON tasks (1,041 ``task.json`` files,
subtasks included; 1.7 GB, a few image-as-text tasks being most of it) in one data directory:
``$SOCIETIES_DATA_DIR/bigbench`` when that variable is set, otherwise ``bigbench`` inside the
platform's user data directory for ``societies`` (``~/.local/share/societies/bigbench`` on
Linux). A task is then named by its path under that directory, as
``chess_state_tracking/synthetic_short``.

``python -m societies.tasks.bigbench_data`` (what ``make data`` runs) downloads the archive,
checks its SHA-256, extracts those files into a temporary directory beside the target and
renames it into place, so an interrupted run leaves nothing half-written. The names of the
programmatic tasks (a ``task.py``, no ``task.json``) go to ``programmatic.txt``, so that naming
one gets a precise error rather than "not found". Once the directory
holds the completion stamp, it does nothing. The download is ``pip download`` run by an older pip
(:data:`PIP`, in a private virtual environment): current pips refuse this sdist, because its
metadata names a dependency by a ``file://`` URL; we need none of its code.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

from societies.errors import ConfigError, UserError

VERSION = "1.0.0"
SDIST = f"bigbench-{VERSION}.tar.gz"
SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
STAMP = ".complete"
_TASKS_ROOT = ("bigbench", "benchmark_tasks")
PROGRAMMATIC = "programmatic.txt"


def data_dir() -> Path:
    """The BIG-bench data directory (it may not exist yet): ``$SOCIETIES_DATA_DIR/bigbench``,
    else ``bigbench`` in the user data directory."""
    root = os.environ.get("SOCIETIES_DATA_DIR")
    if root:
        return Path(root).expanduser() / "bigbench"
    from platformdirs import user_data_dir

    return Path(user_data_dir("societies")) / "bigbench"


def require_data(directory: Path | None = None) -> Path:
    """The data directory, checked to be complete.

    Raises:
        UserError: no finished extraction there, with the command that makes one.
    """
    directory = directory or data_dir()
    if not (directory / STAMP).is_file():
        raise UserError(f"BIG-bench data not found at {directory}; run `make data` "
                        "(downloads the bigbench sdist, ~360 MB)")
    return directory


def resolve(name: str, directory: Path | None = None) -> Path:
    """The ``task.json`` of the task called ``name`` (``chess_state_tracking/synthetic_short``).

    Raises:
        UserError: no data directory.
        ConfigError: a programmatic task, or no such task (naming close ones).
    """
    root = require_data(directory)
    clean = name.strip().strip("/")
    path = root / clean / "task.json"
    if clean and ".." not in PurePosixPath(clean).parts and path.is_file():
        return path
    programmatic = (root / PROGRAMMATIC).read_text().split() if (root / PROGRAMMATIC).is_file() \
        else []
    if clean in programmatic:
        raise ConfigError(f"task.task: {clean} is a programmatic BIG-bench task (task.py, no "
                        "task.json); only JSON tasks can be run")
    known = sorted(str(p.parent.relative_to(root)) for p in root.glob("**/task.json"))
    close = difflib.get_close_matches(clean, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f" ({len(known)} tasks there)"
    raise ConfigError(f"task.task: no BIG-bench task {clean!r} in {root}{hint}")


def task_path(member: str) -> PurePosixPath | None:
    """An archive member's path under ``benchmark_tasks/``; None outside it.

    >>> str(task_path("bigbench-1.0.0/bigbench/benchmark_tasks/chess/real/task.json"))
    'chess/real/task.json'
    >>> task_path("bigbench-1.0.0/bigbench/api/task.py") is None
    True
    """
    parts = PurePosixPath(member).parts
    for start in range(len(parts) - 1):
        if parts[start : start + 2] == _TASKS_ROOT:
            rest = parts[start + 2 :]
            # Anything that could climb out of the data directory is dropped.
            return PurePosixPath(*rest) if rest and ".." not in rest else None
    return None


PIP = "pip==22.3.1"  # newer pips refuse this sdist (see the module docstring)


def download(target: Path) -> Path:
    """Download the sdist to ``target`` with pip (kept if already there with the right hash).

    pip runs from a small private virtual environment pinned to :data:`PIP`, made once beside
    the downloads; the archive is then checked against the pinned SHA-256.
    """
    if target.is_file() and _sha256(target) == SHA256:
        return target
    pip_download(target.parent)
    if _sha256(target) != SHA256:
        target.unlink()
        raise UserError(f"{SDIST}: downloaded file does not match the pinned SHA-256")
    return target


def pip_download(directory: Path) -> None:
    """``pip download`` the sdist into ``directory`` with the pinned older pip."""
    directory.mkdir(parents=True, exist_ok=True)
    venv = directory / "pip-venv"
    pip = venv / "bin" / "pip"
    if not pip.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(pip), "install", "-q", PIP], check=True)
    subprocess.run([str(pip), "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"bigbench=={VERSION}", "-d", str(directory)], check=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract(archive: Path, directory: Path) -> int:
    """Extract the kept files of ``archive`` into ``directory`` (replaced whole); the count."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bigbench-", dir=directory.parent))
    count = 0
    programs: set[str] = set()
    try:
        # A stream ("r|gz") reads the 358 MB archive once, front to back.
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                where = task_path(member.name)
                if where is None or not member.isfile():
                    continue
                if where.name == "task.py":
                    programs.add(str(where.parent))
                if where.name != "task.json":
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                path = staging.joinpath(*where.parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(source.read())
                count += 1
        programmatic = sorted(p for p in programs if not (staging / p / "task.json").is_file())
        (staging / PROGRAMMATIC).write_text("".join(f"{p}\n" for p in programmatic))
        (staging / STAMP).write_text(f"bigbench {VERSION} sdist, sha256 {SHA256}\n")
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return count


def fetch(directory: Path | None = None, keep_archive: bool = False, force: bool = False) -> str:
    """Make the data directory if it is not complete; a one-line account of what was done."""
    directory = directory or data_dir()
    if (directory / STAMP).is_file() and not force:
        return f"BIG-bench data already at {directory}"
    archive = directory.parent / "downloads" / SDIST
    started = time.perf_counter()
    download(archive)
    downloaded = time.perf_counter()
    count = extract(archive, directory)
    done = time.perf_counter()
    if not keep_archive:
        archive.unlink()
    return (f"BIG-bench data at {directory}: {count} files; download {downloaded - started:.1f} s,"
            f" extract {done - downloaded:.1f} s")


def main(argv: list[str] | None = None) -> int:
    """``python -m societies.tasks.bigbench_data [--dir DIR] [--force] [--keep-archive]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=None, help="data directory (default: "
                        "$SOCIETIES_DATA_DIR/bigbench or the user data directory)")
    parser.add_argument("--force", action="store_true", help="download and extract again")
    parser.add_argument("--keep-archive", action="store_true", help="keep the 358 MB sdist")
    args = parser.parse_args(argv)
    try:
        print(fetch(args.dir, keep_archive=args.keep_archive, force=args.force))
    except (UserError, OSError, tarfile.TarError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
