"""Carry unfinished experiment runs from one sitting to the next through git.

A sitting's machine keeps only what is committed: `runs/` is ignored, so a run cut off when
the sitting ends is lost unless what resuming needs (config, log, checkpoint, best weights,
dataset cache, input copies) is committed. `save` packs the unfinished runs of a spec (a
checkpoint, no record) into `experiments/checkpoints/<spec name>.tar.gz`, or deletes that
archive once none is left; `restore` puts them back in `runs/`, unless a run there is as far
along or already finished. `files` lists what resuming needs, one path per line (for
`gpu_sitting.sh`). Standard library only, so that it runs on a bare device machine too.

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
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

# What a run needs to resume (and, once finished, to load); `inputs/` holds its file copies.
RESUME_FILES = (
    "config.json",
    "dataset.npz",
    "log.jsonl",
    "model.safetensors",
    "checkpoint.pt",
    "item_attributes.json",
)
ARCHIVES = Path("experiments/checkpoints")
PRETRAIN = "pretrain"  # a --pretrain run's first stage, inside its run directory


def spec_name(spec: Path) -> str:
    with open(spec, "rb") as file:
        return tomllib.load(file)["name"]


def resume_files(run_dir: Path, finished_too: bool = False) -> list[Path]:
    names = RESUME_FILES + (("metrics.json",) if finished_too else ())
    files = [run_dir / f for f in names if (run_dir / f).is_file()]
    return files + sorted(p for p in (run_dir / "inputs").glob("*") if p.is_file())


def unfinished_files(name: str, pattern: str = "*") -> list[Path]:
    """Files of the runs of spec `name` that have a checkpoint (their own, or that of the
    pretraining run in their `pretrain/`) and no record, ids matching `pattern`."""
    runs = Path("runs") / name
    files = []
    for run_dir in sorted(p for p in runs.glob("*/*/*") if p.is_dir()):
        run_id = str(run_dir.relative_to(runs))
        record = Path("results/records") / name / run_id / "record.json"
        if record.is_file() or not fnmatch.fnmatch(run_id, pattern):
            continue
        pretrain = run_dir / PRETRAIN
        if not (run_dir / "checkpoint.pt").is_file() and not (pretrain / "log.jsonl").is_file():
            continue
        files += resume_files(run_dir) + resume_files(pretrain, finished_too=True)
    return files


def epochs_in(log_text: str) -> int:
    lines = [line for line in log_text.splitlines() if line.strip()]
    return json.loads(lines[-1])["epoch"] if lines else 0


def describe(epochs: tuple[int, int]) -> str:
    return f"epoch {epochs[0]}" + (f" (pretraining: {epochs[1]})" if epochs[1] else "")


def local_text(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def progress(read, run_dir: Path) -> tuple[int, int]:
    """(epochs, pretraining epochs) of a run, `read(path)` giving a log's text or None."""
    return tuple(epochs_in(read(d / "log.jsonl") or "") for d in (run_dir, run_dir / PRETRAIN))


def save(spec: Path) -> None:
    name = spec_name(spec)
    archive = ARCHIVES / f"{name}.tar.gz"
    files = unfinished_files(name)
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
            tar.add(path)
    partial.replace(archive)
    for log in (f for f in files if f.name == "log.jsonl"):
        stage = " (pretraining)" if log.parent.name == PRETRAIN else ""
        print(f"{log.parent}: after epoch {epochs_in(log.read_text())}{stage}")
    print(f"{archive}: {len(files)} files, {archive.stat().st_size / 2**20:.1f} MiB")


def restore(spec: Path) -> None:
    name = spec_name(spec)
    archive = ARCHIVES / f"{name}.tar.gz"
    if not archive.is_file():
        print(f"{name}: no archive {archive}; nothing to restore")
        return
    root = Path("runs") / name
    with tarfile.open(archive, "r:gz") as tar:
        members: dict[Path, list[tarfile.TarInfo]] = {}
        for member in tar.getmembers():
            path = Path(member.name)
            if not member.isfile() or not path.is_relative_to(root) or ".." in path.parts:
                sys.exit(f"error: {archive}: unexpected member {member.name}")
            run_dir = root.joinpath(*path.relative_to(root).parts[:3])
            members.setdefault(run_dir, []).append(member)
        for run_dir, run_members in members.items():
            run_id = run_dir.relative_to(root)
            logs = {
                Path(m.name): tar.extractfile(m).read().decode()
                for m in run_members
                if Path(m.name).name == "log.jsonl"
            }
            saved, local = progress(logs.get, run_dir), progress(local_text, run_dir)
            here = any((d / "checkpoint.pt").is_file() for d in (run_dir, run_dir / PRETRAIN))
            if (Path("results/records") / name / run_id / "record.json").is_file():
                print(f"{run_dir}: finished (it has a record); the archive is stale, skipped")
            elif here and local >= saved:
                here_after, saved_after = describe(local), describe(saved)
                print(f"{run_dir}: here after {here_after}, archive after {saved_after}; kept")
            else:
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                tar.extractall(members=run_members, filter="data")
                print(f"{run_dir}: restored, resumes after {describe(saved)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("save", "restore"):
        commands.add_parser(command).add_argument("specs", nargs="+", type=Path)
    files = commands.add_parser("files")
    files.add_argument("--pattern", default="*", help="only run ids matching")
    files.add_argument("names", nargs="+", help="spec names")
    args = parser.parse_args(argv)
    if args.command == "files":
        for name in args.names:
            for path in unfinished_files(name, args.pattern):
                print(path)
        return
    for spec in args.specs:
        (save if args.command == "save" else restore)(spec)


if __name__ == "__main__":
    main()
