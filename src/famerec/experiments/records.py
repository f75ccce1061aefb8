"""A finished run's small record, copied to a committed folder: no weights, no data.

`record.json` is written last, so a record is complete exactly when it exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from famerec.experiments.plan import RECORD
from famerec.runs.dir import CONFIG, LOG, METRICS, RANKS, write_json

RECORD_FILES = (CONFIG, METRICS, LOG, RANKS)


def copy_record(run_dir: Path, record_dir: Path, info: dict[str, Any]) -> None:
    """Copy the record files of a finished run and write its record.json."""
    record_dir.mkdir(parents=True, exist_ok=True)
    (record_dir / RECORD).unlink(missing_ok=True)
    for name in RECORD_FILES:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, record_dir / name)
    write_json(record_dir / RECORD, info)


def git(folder: Path, *args: str) -> str | None:
    """A git command's output in `folder`, or None where git or the checkout is missing."""
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def commit(folder: Path, outputs: tuple[Path, ...] = ()) -> str:
    """The checked-out commit (short hash, `-dirty` with uncommitted changes to tracked files
    other than the `outputs` the experiment tools rewrite), or "unknown" outside a checkout."""
    head, top = (
        git(folder, "rev-parse", "--short", "HEAD"),
        git(folder, "rev-parse", "--show-toplevel"),
    )
    changes = git(folder, "status", "--porcelain", "--untracked-files=no")
    if head is None or top is None or changes is None:
        return "unknown"
    root = Path(top.strip()).resolve()
    skip = [Path(os.path.relpath(Path(p).resolve(), root)).as_posix() for p in outputs]
    dirty = [
        line
        for line in changes.splitlines()
        if not any(line[3:] == s or line[3:].startswith(s + "/") for s in skip)
    ]
    return head.strip() + ("-dirty" if dirty else "")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
