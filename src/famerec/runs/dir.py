"""A run directory and its files. A run is finished exactly when metrics.json exists; every file
is written atomically (temporary file, then rename), so an interrupted run never looks finished.
A run that fails leaves nothing behind unless it holds a completed epoch worth resuming.

One process at a time writes a run directory: it holds the directory's lock (`DirectoryLock`,
an OS file lock on `.lock`) from before it looks at the directory until it is done; another
writer fails at once. Temporary files start with `.famerec-tmp-`; those of a killed write are
removed by the next writer. A directory holding only such leftovers (and the lock file) is
empty as far as a new run is concerned.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from famerec.errors import ConfigError, FamerecError, InUseError

try:
    import fcntl
except ImportError:  # Windows: no flock; directories are not locked there
    fcntl = None

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.json"
LOG = "log.jsonl"
CHECKPOINT = "checkpoint.pt"
DATASET = "dataset.npz"
PRETRAIN = "pretrain"
INPUT = "input.parquet"  # in-memory data given to famerec.train(), kept with its run
RANKS = "ranks.npz"  # per-user ranks of the validation and test items
ITEM_ATTRIBUTES = "item_attributes.json"  # a copy of --item-attributes FILE, kept with its run
INPUTS = "inputs"  # copies of the other files a run's settings name (FAME's --attributes)
ITEMS = "items.json"  # what the run keeps of its item table (--items): names, attributes
OWN_FILES = (
    CONFIG,
    WEIGHTS,
    METRICS,
    LOG,
    CHECKPOINT,
    DATASET,
    PRETRAIN,
    INPUT,
    RANKS,
    ITEM_ATTRIBUTES,
    INPUTS,
    ITEMS,
)
PROBE_BYTES = 64 * 1024
LOCK = ".lock"  # the lock file of a run directory (and of a spec's runs folder)
TEMP_PREFIX = ".famerec-tmp-"  # every temporary file famerec writes starts with it
OLD_TEMP = re.compile(r"\.tmp-[0-9a-f]{12}\.")  # the temporary files of earlier versions


def is_temporary(name: str) -> bool:
    """Whether `name` is a temporary file of famerec's (left behind by a killed write)."""
    return name.startswith(TEMP_PREFIX) or OLD_TEMP.match(name) is not None


def is_leftover(name: str) -> bool:
    """A name that does not make a directory hold anything: a temporary file or the lock."""
    return name == LOCK or is_temporary(name)


def logged_seconds(epochs: list[dict]) -> float:
    """Training and validation seconds of logged epochs: a run's time less its start-ups, its
    test and any epoch an interruption cut short, so a lower bound of its wall time."""
    return sum(e.get("train_seconds", 0.0) + e.get("eval_seconds", 0.0) for e in epochs)


def write_error(path: Path, error: OSError) -> FamerecError:
    return FamerecError(f"cannot write {path}: {error.strerror or error}")


def new_temp_file(path: Path) -> Path:
    """An empty hidden file next to `path`, named TEMP_PREFIX + a random part + `path`'s name
    (so it keeps its suffix). Created with mode 0666 so that the umask applies
    (tempfile.mkstemp makes every file 0600)."""
    tmp = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}.{path.name}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


def atomic_write(path: Path, content: bytes | str | Callable[[Path], None]) -> None:
    """Write `content` to a temporary file next to `path`, then rename it over `path`.

    `content` is bytes or text, or a function that writes the temporary file it is given (for
    libraries that write files themselves). Every failed write (a full disk, say) is an OSError
    here and ends with one line.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temp_file(path)
        try:
            if callable(content):
                content(tmp)
            else:
                tmp.write_bytes(content.encode() if isinstance(content, str) else content)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as error:
        raise write_error(path, error) from None


def to_json(payload: Any, indent: int | None = None) -> str:
    """Standard JSON only: a NaN or infinity is a bug to report, not a token to write."""
    return json.dumps(payload, indent=indent, allow_nan=False)


def write_json(path: Path, payload: Any) -> None:
    atomic_write(path, to_json(payload, indent=2) + "\n")


def write_ranks(path: Path, ranks: dict[str, np.ndarray]) -> None:
    """Per-user target ranks of each split (e.g. "valid", "test") as a compressed .npz:
    `<split>_users` (user index) and `<split>_ranks` (0-based rank), both int32; a target that
    was excluded from the ranking gets the largest int32."""
    arrays = {}
    for split, split_ranks in ranks.items():
        limit = np.iinfo(np.int32).max
        arrays[f"{split}_users"] = np.arange(len(split_ranks), dtype=np.int32)
        arrays[f"{split}_ranks"] = np.minimum(split_ranks, limit).astype(np.int32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    atomic_write(path, write)


def read_ranks(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (users, ranks)} from a file written by `write_ranks`."""
    with np.load(path, allow_pickle=False) as arrays:
        splits = sorted(name[: -len("_ranks")] for name in arrays.files if name.endswith("_ranks"))
        return {s: (arrays[f"{s}_users"], arrays[f"{s}_ranks"]) for s in splits}


class DirectoryLock:
    """An exclusive lock on a folder for one famerec process: `flock` on FOLDER/.lock, a file
    that holds the holder's pid as text. The kernel releases the lock when its process ends,
    however it ends (kill -9 included), so a lock is never stale: a lock file without a holder
    is simply taken over.

    The holder removes the file when it releases it; a process that opened the file just
    before and gets the lock on the removed file notices (the path names another file, or
    none) and tries again, so two processes never both hold a folder's lock.
    """

    def __init__(self, folder: str | Path, label: str | None = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.label = label or str(self.folder)  # how errors name the folder
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        """Take the lock, creating the folder (and its parents) if needed; raise InUseError at
        once if another process holds it, OSError if the folder cannot be written."""
        if self.fd is not None or fcntl is None:
            return
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:  # the folder was removed as we opened: again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = lock_holder(fd)
                os.close(fd)
                raise InUseError(
                    f"{self.label} is in use by another famerec process (pid {pid})"
                ) from None
            except OSError:
                os.close(fd)
                raise
            if same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as we opened it: take the one there now
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        """Remove the lock file (if it is still this lock's) and release the lock."""
        if self.fd is None:
            return
        try:
            if same_file(self.fd, self.path):
                self.path.unlink()
        except OSError:
            pass  # a lock file left behind is harmless: the next writer takes it over
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def lock_holder(fd: int) -> str:
    """The pid written in a lock file; its holder writes it just after taking the lock."""
    for _ in range(50):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text if text.isdigit() else "unknown"
        time.sleep(0.01)
    return "unknown"


def remove_empty(folder: Path, top: Path | None) -> None:
    """Remove `folder` and its parents up to `top` (one of them) as long as they are empty."""
    if top is None:
        return
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == top:
            return
        folder = folder.parent


def move_contents(source: Path, target: Path) -> None:
    """Move everything in `source` but its lock file into `target` (the same file system)."""
    for entry in source.iterdir():
        if entry.name != LOCK:
            entry.rename(target / entry.name)


def remove_temporary_files(folder: Path) -> None:
    """Delete the temporary files that killed writes left in `folder` and its subfolders
    (not in the runs nested in it: each is cleaned by its own writer, under its own lock)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if is_temporary(entry.name) and not entry.is_dir():
            entry.unlink(missing_ok=True)
        elif entry.is_dir() and entry.name != PRETRAIN and not entry.is_symlink():
            remove_temporary_files(entry)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.created: Path | None = None  # the topmost directory that lock() created
        self.was_empty = False  # lock() found the directory existing and empty (leftovers aside)
        self._lock = DirectoryLock(self.path)
        self._remove_created = False  # release() emptied the run: unlock() removes its folders

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def is_finished(self) -> bool:
        return (self.path / METRICS).is_file()

    @property
    def is_started(self) -> bool:
        return (self.path / CONFIG).is_file()

    @property
    def in_first_stage(self) -> bool:
        """A `--pretrain` run that has begun its SASRec stage (`pretrain/`) and has no
        config.json of its own yet: it resumes too."""
        return not self.is_started and (self.path / PRETRAIN).exists()

    @property
    def is_resumable(self) -> bool:
        return self.is_started or self.in_first_stage

    def metrics(self) -> dict:
        return json.loads((self.path / METRICS).read_text())

    def contents(self) -> list[str]:
        """The names in the directory that count: leftovers (temporary files, the lock) aside."""
        return [p.name for p in self.path.iterdir() if not is_leftover(p.name)]

    def lock(self) -> None:
        """Take the directory's lock (creating the directory if needed) before anything looks at
        it or writes in it; a second writer ends here with one line (InUseError). Remembers
        what existed, for `release`. Readers (load, serve, status) take no lock."""
        if self._lock.held:
            return
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} exists and is not a directory")
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            self._lock.acquire()
        except OSError as error:
            remove_empty(self.path, missing[-1] if missing else None)
            raise FamerecError(f"cannot write to --out {self.path}: {error.strerror}") from None
        # empty, or holding only the input data of an earlier famerec.train() that failed
        empty = not [name for name in self.contents() if name != INPUT]
        self.created = missing[-1] if missing and empty else None
        self.was_empty = not missing and empty
        self._remove_created = False

    def unlock(self) -> None:
        """Release the lock; after a `release` that emptied the run, also remove the folders
        that `lock` created (those still empty)."""
        self._lock.release()
        if self._remove_created:
            self._remove_created = False
            remove_empty(self.path, self.created)

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Check the directory suits a new (or resumed) run; raise a clear error if not. Takes
        the lock for the call where the caller holds none. With --overwrite the old run is
        deleted; a new or resumed run starts without the temporary files of killed writes."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise ConfigError(f"--out {self.path} exists and is not a directory")
        if self._lock.held:
            self._prepare(resume, overwrite)
            return
        try:
            with DirectoryLock(self.path):
                self._prepare(resume, overwrite)
        except OSError as error:
            raise FamerecError(f"cannot write to --out {self.path}: {error.strerror}") from None

    def _prepare(self, resume: bool, overwrite: bool) -> None:
        contents = self.contents()
        if not [name for name in contents if name != INPUT]:
            remove_temporary_files(self.path)
            return  # empty, or only the input data that famerec.train() wrote for this run
        foreign = [name for name in contents if name not in OWN_FILES and not name.startswith(".")]
        if not self.is_resumable:
            if foreign:
                raise ConfigError(
                    f"--out {self.path} is not empty and holds no famerec run; "
                    "choose another directory"
                )
            if not overwrite:
                raise ConfigError(
                    f"--out {self.path} holds the first files of a run that ended before it "
                    f"wrote its {CONFIG}; start over with --overwrite"
                )
        if overwrite:
            if foreign:
                raise ConfigError(
                    f"--overwrite refuses to clear {self.path}: it holds files famerec did not "
                    f"write ({', '.join(sorted(foreign)[:3])})"
                )
            self.set_aside()  # kept until the new run ends or pauses (nothing lost on bad input)
            return
        if resume:
            remove_temporary_files(self.path)
            return
        if self.is_finished:
            raise ConfigError(
                f"{self.path} holds a finished run; choose another --out, or pass --overwrite"
            )
        raise ConfigError(
            f"{self.path} holds an unfinished run; continue it with --resume, "
            "or start over with --overwrite"
        )

    def clear(self) -> None:
        """Delete everything in the directory but its lock file."""
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.name == LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    @property
    def aside(self) -> Path:
        """Where --overwrite keeps the old run until the new one ends or pauses: a hidden
        sibling."""
        return self.path.parent / f".{self.path.name}.overwritten"

    def set_aside(self) -> None:
        """Move the old run (everything but the lock file) to `aside`: the new run's checks of
        its data and settings may still fail, and then the old run comes back (`release`)."""
        shutil.rmtree(self.aside, ignore_errors=True)  # an earlier overwrite cut short
        self.aside.mkdir()
        move_contents(self.path, self.aside)

    def discard_aside(self) -> None:
        """The new run ended, paused, or holds an epoch to resume from: the old run that
        --overwrite set aside goes."""
        shutil.rmtree(self.aside, ignore_errors=True)

    def claim(self) -> None:
        """Write a probe file in the (locked) directory before any data is read, so that an
        unwritable or full --out fails at once."""
        probe = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = new_temp_file(self.path / "probe")
            with open(probe, "wb") as handle:
                handle.write(bytes(PROBE_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            self.release()
            raise FamerecError(f"cannot write to --out {self.path}: {error.strerror}") from None
        finally:
            if probe is not None:
                probe.unlink(missing_ok=True)

    def release(self) -> bool:
        """After a failure: undo `lock` and `claim` unless the run holds a completed epoch (a
        checkpoint or a pretraining run), which stays resumable: empty the directory if it was
        empty, and (at `unlock`) remove it if `lock` created it. Returns whether the run was
        kept."""
        if (self.path / CHECKPOINT).exists() or (self.path / PRETRAIN).exists():
            self.discard_aside()
            return True
        if self.aside.is_dir():  # --overwrite: the new run failed before an epoch; the old returns
            self.clear()
            move_contents(self.aside, self.path)
            self.aside.rmdir()
            return False
        if self.created is not None or self.was_empty:
            self.clear()
            self._remove_created = self.created is not None
            if not self._lock.held:
                self.unlock()
        return False

    def write_ranks(self, ranks: dict[str, np.ndarray]) -> None:
        write_ranks(self.path / RANKS, ranks)

    def append_log(self, record: dict) -> None:
        line = to_json(record) + "\n"
        try:
            with open(self.path / LOG, "a") as handle:
                handle.write(line)
        except OSError as error:
            raise write_error(self.path / LOG, error) from None

    def read_log(self) -> list[dict]:
        """The log's records; a line cut short by a crash (only the last can be) ends it."""
        path = self.path / LOG
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def reached(self) -> str:
        """Where a paused run stands: its last logged epoch, or, for a --pretrain run paused
        before its second stage logged one, its pretraining stage's (or that stage, finished)."""
        epochs = len(self.read_log())
        stage = RunDir(self.path / PRETRAIN)
        if not epochs and stage.is_started and not stage.is_finished:
            return f"pretraining epoch {len(stage.read_log())}"
        if not epochs and stage.is_finished:
            return "its pretraining stage"
        return f"epoch {epochs}"

    def last_epoch_seconds(self) -> float | None:
        """Training and validation seconds of the log's last epoch: what the next epoch may
        take. Before a --pretrain run's second stage logs one, its first stage's last epoch
        (a lower bound: FAME's epochs cost more than its SASRec stage's); None before any."""
        for folder in (self, RunDir(self.path / PRETRAIN)):
            records = folder.read_log()
            if records:
                return logged_seconds(records[-1:])
        return None

    def logged_seconds(self, last_epoch: int | None = None) -> float:
        """Seconds of training and validation in the log (up to `last_epoch`)."""
        return logged_seconds(
            [r for r in self.read_log() if last_epoch is None or r.get("epoch", 0) <= last_epoch]
        )

    def truncate_log(self, last_epoch: int) -> None:
        """Drop log records after `last_epoch` (written after the last checkpoint)."""
        records = [r for r in self.read_log() if r.get("epoch", 0) <= last_epoch]
        atomic_write(self.path / LOG, "".join(to_json(r) + "\n" for r in records))


def input_copy(run_dir: RunDir, key: str, part: int) -> Path:
    """Where a run keeps its copy of file `part` (0-based) of setting `key` (file_settings)."""
    if key == "model.item_attributes":
        return run_dir / ITEM_ATTRIBUTES  # the name runs have kept it under from the start
    return run_dir / INPUTS / f"{key}-{part + 1}.json"
