"""Carry unfinished experiment runs from one sitting (or machine) to the next, outside git.

`runs/` is ignored, so a run cut off when a sitting ends is lost with the machine unless what
resuming needs (config, log, checkpoint, best weights, dataset cache, input copies; a
`--pretrain` run's `pretrain/` too) is copied elsewhere. `save` packs the unfinished runs of a
spec (a checkpoint, no record) into `experiments/checkpoints/<spec name>.tar.gz` beside the
spec (git-ignored: copy it to the next machine with scp or rsync, never commit it), or deletes
that archive once none is left; `restore` puts them back in `runs/`, unless a run there is as
far along or already finished. `files` lists what resuming needs, one path per line, relative
to the current folder; `pick --budget-mb M` lists, within M MiB, first the weights later runs
start from (per dataset, model, hidden size and seed, the finished run with the best
validation score among the runs the spec's other entries start from, or among run ids
matching `--weights`), then the unfinished runs' resume files, most trained first (for
`gpu_sitting.sh`, whose machine returns little). The run and record
folders are the spec's own (`famerec.experiments.load_spec`: by default `runs/<name>` and
`results/records/<name>` in the folder above the spec's); the archive holds paths from that
folder. See docs/long-runs.md.

    python tools/carry_runs.py save experiments/defaults_beauty.toml      # sitting end
    rsync -av experiments/checkpoints/ othermachine:famerec/experiments/checkpoints/
    python tools/carry_runs.py restore experiments/defaults_beauty.toml   # next sitting
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from famerec.experiments import load_spec  # noqa: E402
from famerec.experiments.plan import Store  # noqa: E402
from famerec.runs.dir import (  # noqa: E402
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

RESUME_FILES = (CONFIG, DATASET, LOG, WEIGHTS, CHECKPOINT, ITEM_ATTRIBUTES, INPUT)


def archive_of(spec) -> tuple[Path, Path]:
    """The spec's archive, and the folder its member paths start from (the repository root:
    the folder above the spec's)."""
    spec_file = spec.path.resolve()
    return spec_file.parent / "checkpoints" / f"{spec.name}.tar.gz", spec_file.parents[1]


def resume_files(run_dir: Path, finished_too: bool = False) -> list[Path]:
    names = RESUME_FILES + ((METRICS,) if finished_too else ())
    files = [run_dir / f for f in names if (run_dir / f).is_file()]
    return files + sorted(p for p in (run_dir / INPUTS).glob("*") if p.is_file())


def unfinished_files(spec, pattern: str = "*") -> list[Path]:
    """Files (relative to the spec's run folder) of its runs that have a checkpoint, their
    own or their pretraining stage's, and no record; run ids matching `pattern`."""
    files, store = [], Store(spec.records_dir)
    for run_dir in sorted(p for p in spec.runs_dir.glob("*/*/*") if p.is_dir()):
        run_id = run_dir.relative_to(spec.runs_dir)
        if store.has_record(str(run_id)):
            continue
        if not fnmatch.fnmatch(str(run_id), pattern):
            continue
        pretrain = run_dir / PRETRAIN
        if not (run_dir / CHECKPOINT).is_file() and not (pretrain / LOG).is_file():
            continue
        files += resume_files(run_dir) + resume_files(pretrain, finished_too=True)
    return [f.relative_to(spec.runs_dir) for f in files]


WEIGHT_FILES = (CONFIG, DATASET, LOG, WEIGHTS, METRICS, ITEM_ATTRIBUTES)


def starting_points(spec) -> list[str]:
    """Run-id patterns of the entries whose selected runs other entries start from (pending
    ones aside): table2_init's `*/sasrec-init/*`, table2_pruned's `*/sasrec/*`."""
    names = {name for e in spec.entries if e.pending is None for name in e.starts_from()}
    return [f"*/{name}/*" for name in sorted(names)]


def pick(spec, budget_mb: float, weights: str | None = None, pattern: str = "*") -> list[Path]:
    """What to carry off a machine that returns at most `budget_mb`, most useful first: the
    best finished run per (dataset, model, hidden size, seed) among ids matching `weights`
    (space-separated patterns; by default the spec's `starting_points`, the runs later stages
    start from), then unfinished runs by epochs trained, descending.
    Whole runs only; a run that does not fit is skipped for a smaller one. Paths relative to
    the spec's run folder."""
    runs, store = spec.runs_dir, Store(spec.records_dir)
    wanted = starting_points(spec) if weights is None else weights.split()
    best: dict[tuple, tuple[float, Path]] = {}
    unfinished: list[tuple[int, Path]] = []
    for run_dir in sorted(p for p in runs.glob("*/*/*") if p.is_dir()):
        run_id = str(run_dir.relative_to(runs))
        if store.has_record(run_id):
            if not any(fnmatch.fnmatch(run_id, w) for w in wanted):
                continue
            if not (run_dir / WEIGHTS).is_file():
                continue
            if not (run_dir / METRICS).is_file():
                continue
            metrics = json.loads((run_dir / METRICS).read_text())
            config = json.loads((run_dir / CONFIG).read_text())
            key = (*Path(run_id).parts[:2], config["model"]["hidden_size"], config["train"]["seed"])
            score = metrics["valid"][spec.metric]
            if key not in best or score > best[key][0]:
                best[key] = (score, run_dir)
        elif fnmatch.fnmatch(run_id, pattern):
            pretrain = run_dir / PRETRAIN
            if (run_dir / CHECKPOINT).is_file() or (pretrain / LOG).is_file():
                unfinished.append((sum(progress(local_text, run_dir)), run_dir))
    groups = [[d / f for f in WEIGHT_FILES if (d / f).is_file()] for _, d in best.values()]
    for _, run_dir in sorted(unfinished, key=lambda u: (-u[0], str(u[1]))):
        groups.append(resume_files(run_dir) + resume_files(run_dir / PRETRAIN, finished_too=True))
    chosen, left = [], budget_mb * 2**20
    for files in groups:
        size = sum(f.stat().st_size for f in files)
        if size <= left:
            chosen += files
            left -= size
    return [f.relative_to(runs) for f in chosen]


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


def save(spec) -> None:
    (archive, root), runs = archive_of(spec), spec.runs_dir
    files = unfinished_files(spec)
    if not files:
        if archive.exists():
            archive.unlink()
            print(f"{spec.name}: no unfinished run; deleted {archive}")
        else:
            print(f"{spec.name}: no unfinished run; nothing to save")
        return
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for path in files:
            tar.add(runs / path, arcname=os.path.relpath(runs / path, root))
    partial.replace(archive)
    logs = [f.parent for f in files if f.name == LOG]
    for run_id in sorted({d.parent if d.name == PRETRAIN else d for d in logs}):
        print(f"{spec.name}/{run_id}: after {describe(progress(local_text, runs / run_id))}")
    print(f"{archive}: {len(files)} files, {archive.stat().st_size / 2**20:.1f} MiB")


def restore(spec) -> None:
    (archive, root), runs = archive_of(spec), spec.runs_dir.resolve()
    store = Store(spec.records_dir)
    if not archive.is_file():
        print(f"{spec.name}: no archive {archive}; nothing to restore")
        return
    with tarfile.open(archive, "r:gz") as tar:
        by_run: dict[Path, list[tarfile.TarInfo]] = {}
        for member in tar.getmembers():
            path = (root / member.name).resolve()
            if not member.isfile() or not path.is_relative_to(runs):
                sys.exit(f"error: {archive}: unexpected member {member.name}")
            by_run.setdefault(Path(*path.relative_to(runs).parts[:3]), []).append(member)
        for run_id, members in by_run.items():
            logs = {
                (root / m.name).resolve(): tar.extractfile(m).read().decode()
                for m in members
                if Path(m.name).name == LOG
            }
            run_dir = runs / run_id
            saved, local = progress(logs.get, run_dir), progress(local_text, run_dir)
            here = any((d / CHECKPOINT).is_file() for d in (run_dir, run_dir / PRETRAIN))
            where = f"{spec.name}/{run_id}"
            if store.has_record(str(run_id)):
                print(f"{where}: finished (it has a record); the archive is stale, skipped")
            elif here and local >= saved:
                here_after, saved_after = describe(local), describe(saved)
                print(f"{where}: here after {here_after}, archive after {saved_after}; kept")
            else:
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                tar.extractall(path=root, members=members, filter="data")
                print(f"{where}: restored, resumes after {describe(saved)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("save", "restore", "files", "pick"):
        commands.add_parser(command).add_argument("specs", nargs="+", type=Path)
    parser.add_argument("--pattern", default="*", help="files, pick: only run ids matching")
    parser.add_argument(
        "--weights",
        help="pick: weights of the runs matching these space-separated patterns (default: the "
        "runs that the spec's other entries start from, e.g. '*/sasrec/*')",
    )
    parser.add_argument("--budget-mb", type=float, default=56.0, help="pick: at most this much")
    args = parser.parse_args(argv)
    for spec in map(load_spec, args.specs):
        if args.command in ("files", "pick"):
            paths = (
                unfinished_files(spec, args.pattern)
                if args.command == "files"
                else pick(spec, args.budget_mb, args.weights, args.pattern)
            )
            for path in paths:
                print(os.path.relpath(spec.runs_dir / path))
        else:
            (save if args.command == "save" else restore)(spec)


if __name__ == "__main__":
    main()
