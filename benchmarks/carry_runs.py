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


def spec_name(spec: Path) -> str:
    with open(spec, "rb") as file:
        return tomllib.load(file)["name"]


def unfinished_files(name: str, pattern: str = "*") -> list[Path]:
    """Files of the runs of spec `name` that have a checkpoint and no record, ids matching."""
    runs = Path("runs") / name
    files = []
    for checkpoint in sorted(runs.glob("*/*/*/checkpoint.pt")):
        run_id = str(checkpoint.parent.relative_to(runs))
        record = Path("results/records") / name / run_id / "record.json"
        if record.is_file() or not fnmatch.fnmatch(run_id, pattern):
            continue
        files += [checkpoint.parent / f for f in RESUME_FILES if (checkpoint.parent / f).is_file()]
        files += sorted(p for p in (checkpoint.parent / "inputs").glob("*") if p.is_file())
    return files


def epochs_in(log_text: str) -> int:
    lines = [line for line in log_text.splitlines() if line.strip()]
    return json.loads(lines[-1])["epoch"] if lines else 0


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
        print(f"{log.parent}: after epoch {epochs_in(log.read_text())}")
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
            log = next(m for m in run_members if Path(m.name).name == "log.jsonl")
            saved = epochs_in(tar.extractfile(log).read().decode())
            local_log = run_dir / "log.jsonl"
            local = epochs_in(local_log.read_text()) if local_log.is_file() else 0
            if (Path("results/records") / name / run_id / "record.json").is_file():
                print(f"{run_dir}: finished (it has a record); the archive is stale, skipped")
            elif (run_dir / "checkpoint.pt").is_file() and local >= saved:
                print(f"{run_dir}: here after epoch {local}, archive after {saved}; kept")
            else:
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                tar.extractall(members=run_members, filter="data")
                print(f"{run_dir}: restored, resumes after epoch {saved}")


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
