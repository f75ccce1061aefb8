"""Carry unfinished experiment runs from one sitting to the next through git.

A sitting's machine keeps only what is committed: `runs/` is ignored, so a run cut off when
the sitting ends is lost unless what resuming needs (config, log, checkpoint, best weights,
dataset cache, input copies; a `--pretrain` run's `pretrain/` too) is committed. `save` packs
the unfinished runs of a spec (a checkpoint, no record) into `experiments/checkpoints/<spec
name>.tar.gz` beside the spec, or deletes that archive once none is left; `restore` puts them
back in `runs/`, unless a run there is as far along or already finished. `files` lists what
resuming needs, one path per line, relative to the repository root (for `gpu_sitting.sh`).
Paths follow the runner's defaults: `runs/<name>` and `results/records/<name>` in the folder
above the spec's.

    python benchmarks/carry_runs.py restore experiments/defaults_beauty.toml   # sitting start
    python benchmarks/carry_runs.py save experiments/defaults_beauty.toml      # sitting end
    git add experiments/checkpoints && git commit ...
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from famerec.rundir import (  # noqa: E402
    CHECKPOINT,
    CONFIG,
    DATASET,
    INPUT,
    INPUTS,
    ITEM_ATTRIBUTES,
    LOG,
    METRICS,
    PRETRAIN,
    WEIGHTS,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

RESUME_FILES = (CONFIG, DATASET, LOG, WEIGHTS, CHECKPOINT, ITEM_ATTRIBUTES, INPUT)
RECORD = "record.json"  # the runner's mark of a finished run (famerec.experiments.plan)


def spec_paths(spec: Path) -> tuple[str, Path, Path]:
    """(spec name, repository root, archive path) of a spec file."""
    with open(spec, "rb") as file:
        name = tomllib.load(file)["name"]
    spec = spec.resolve()
    return name, spec.parents[1], spec.parent / "checkpoints" / f"{name}.tar.gz"


def resume_files(run_dir: Path, finished_too: bool = False) -> list[Path]:
    names = RESUME_FILES + ((METRICS,) if finished_too else ())
    files = [run_dir / f for f in names if (run_dir / f).is_file()]
    return files + sorted(p for p in (run_dir / INPUTS).glob("*") if p.is_file())


def unfinished_files(root: Path, name: str, pattern: str = "*") -> list[Path]:
    """Files (relative to `root`) of the runs of spec `name` that have a checkpoint, their
    own or their pretraining stage's, and no record; run ids matching `pattern`."""
    runs = root / "runs" / name
    files = []
    for run_dir in sorted(p for p in runs.glob("*/*/*") if p.is_dir()):
        run_id = str(run_dir.relative_to(runs))
        if (root / "results/records" / name / run_id / RECORD).is_file():
            continue
        if not fnmatch.fnmatch(run_id, pattern):
            continue
        pretrain = run_dir / PRETRAIN
        if not (run_dir / CHECKPOINT).is_file() and not (pretrain / LOG).is_file():
            continue
        files += resume_files(run_dir) + resume_files(pretrain, finished_too=True)
    return [f.relative_to(root) for f in files]


def epochs_in(log_text: str | None) -> int:
    lines = [line for line in (log_text or "").splitlines() if line.strip()]
    return json.loads(lines[-1])["epoch"] if lines else 0


def progress(read: Callable[[Path], str | None], run_dir: Path) -> tuple[int, int]:
    """(epochs, pretraining epochs) of a run; `read(path)` gives a log's text or None."""
    return epochs_in(read(run_dir / LOG)), epochs_in(read(run_dir / PRETRAIN / LOG))


def describe(epochs: tuple[int, int]) -> str:
    return f"epoch {epochs[0]}" + (f" (pretraining: {epochs[1]})" if epochs[1] else "")


def local_text(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def save(spec: Path) -> None:
    name, root, archive = spec_paths(spec)
    files = unfinished_files(root, name)
    if not files:
        if archive.exists():
            archive.unlink()
            print(f"{name}: no unfinished run; deleted {archive}")
        else:
            print(f"{name}: no unfinished run; nothing to save")
        return
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for path in files:
            tar.add(root / path, arcname=str(path))
    partial.replace(archive)
    logs = [f.parent for f in files if f.name == LOG]
    for run_dir in sorted({d.parent if d.name == PRETRAIN else d for d in logs}):
        print(f"{run_dir}: after {describe(progress(local_text, root / run_dir))}")
    print(f"{archive}: {len(files)} files, {archive.stat().st_size / 2**20:.1f} MiB")


def restore(spec: Path) -> None:
    name, root, archive = spec_paths(spec)
    if not archive.is_file():
        print(f"{name}: no archive {archive}; nothing to restore")
        return
    runs = Path("runs") / name
    with tarfile.open(archive, "r:gz") as tar:
        by_run: dict[Path, list[tarfile.TarInfo]] = {}
        for member in tar.getmembers():
            path = Path(member.name)
            if not member.isfile() or not path.is_relative_to(runs) or ".." in path.parts:
                sys.exit(f"error: {archive}: unexpected member {member.name}")
            run_dir = runs.joinpath(*path.relative_to(runs).parts[:3])
            by_run.setdefault(run_dir, []).append(member)
        for run_dir, members in by_run.items():
            logs = {
                Path(m.name): tar.extractfile(m).read().decode()
                for m in members
                if Path(m.name).name == LOG
            }
            saved = progress(logs.get, run_dir)
            local = progress(lambda p: local_text(root / p), run_dir)
            here = any((root / d / CHECKPOINT).is_file() for d in (run_dir, run_dir / PRETRAIN))
            record = root / "results/records" / name / run_dir.relative_to(runs) / RECORD
            if record.is_file():
                print(f"{run_dir}: finished (it has a record); the archive is stale, skipped")
            elif here and local >= saved:
                here_after, saved_after = describe(local), describe(saved)
                print(f"{run_dir}: here after {here_after}, archive after {saved_after}; kept")
            else:
                if (root / run_dir).exists():
                    shutil.rmtree(root / run_dir)
                tar.extractall(path=root, members=members, filter="data")
                print(f"{run_dir}: restored, resumes after {describe(saved)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("save", "restore"):
        commands.add_parser(command).add_argument("specs", nargs="+", type=Path)
    files = commands.add_parser("files", help="list, from the repository root")
    files.add_argument("--pattern", default="*", help="only run ids matching")
    files.add_argument("names", nargs="+", help="spec names")
    args = parser.parse_args(argv)
    if args.command == "files":
        for name in args.names:
            for path in unfinished_files(Path.cwd(), name, args.pattern):
                print(path)
        return
    for spec in args.specs:
        (save if args.command == "save" else restore)(spec)


if __name__ == "__main__":
    main()
