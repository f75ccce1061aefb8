"""Time to quality on Beauty, in the spirit of MLPerf's time-to-train: how many epochs and
minutes each model's training takes until its validation NDCG@10 first reaches a frozen target.

The targets lie in `benchmarks/time_to_quality_targets.json`: per model, 99 % of the best
validation NDCG@10 of its committed full Beauty run at its defaults
(`results/records/defaults_beauty`). The file was written once and is read, never recomputed:
a target may be raised, never lowered (`tests/test_time_to_quality.py` checks it against the
records). `--write-targets` creates it only where it does not exist.

Each chosen model trains in its own `famerec train --model M --dataset beauty --threads T
--out RUNS/M` subprocess, one after another, with the same --threads; flags after `--` go to
every `famerec train` (a recipe's flags). A run goes on to its own early stop, so the table also
gives its best validation NDCG@10, its epochs and its test NDCG@10. Minutes are the log's
seconds of training and validation (`train_seconds` + `eval_seconds` per epoch, an epoch hook
such as ICLRec's clustering included) up to the epoch that reached the target: start-up,
dataset loading and the final test are left out. FAME starts from a SASRec run, whose cost
belongs to FAME's time: its run uses `--pretrain` (the SASRec stage trains into RUNS/fame/pretrain
first, with the same settings and seed) and its row adds that whole stage's logged seconds and
epochs; with `-- --init-from RUN` instead, RUN's logged seconds are added (from its log, else
the training seconds its metrics.json gives). `--from-runs` reads finished or partial run
directories (or committed records) and trains nothing; their times and threads are as recorded.

    python benchmarks/time_to_quality.py --models sasrec,fame            # trains; 2 threads
    python benchmarks/time_to_quality.py --models cl4srec --threads 1 -- --lr 3e-3 --epochs 100
    python benchmarks/time_to_quality.py --from-runs results/records/defaults_beauty/beauty/*/* \\
        --record benchmarks/records/time-to-quality-$(git rev-parse --short HEAD).txt
    python benchmarks/time_to_quality.py --write-targets   # only where the file is missing
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from famerec.experiments.records import commit, git, utc_now
from famerec.report import table
from famerec.runs.dir import CONFIG, METRICS, PRETRAIN, RunDir, logged_seconds
from famerec.runs.machine import cpu_label, machine, usable_cores

REPO = Path(__file__).resolve().parents[1]
TARGETS = REPO / "benchmarks" / "time_to_quality_targets.json"
RECORDS = "results/records/defaults_beauty/beauty"  # the defaults runs the targets come from
MODELS = (
    "sasrec",
    "fame",
    "gru4rec",
    "bert4rec",
    "core",
    "cl4srec",
    "duorec",
    "iclrec",
    "attenmixer",
    "miasrec",
    "msgifsr",
)
FRACTION = 0.99
METRIC = "NDCG@10"


class Failure(Exception):
    """Ends the script with one line and exit code 2."""


# -- targets ---------------------------------------------------------------------------------


def valid_scores(log: list[dict]) -> list[tuple[int, float]]:
    """(epoch, validation NDCG@10) of each logged epoch that has one; other fields are ignored."""
    return [
        (record["epoch"], record["valid"][METRIC])
        for record in log
        if METRIC in (record.get("valid") or {})
    ]


def best_valid(log: list[dict]) -> tuple[float, int] | None:
    """The best validation NDCG@10 of a log and its first epoch, or None without one."""
    scores = valid_scores(log)
    if not scores:
        return None
    epoch, best = max(scores, key=lambda s: (s[1], -s[0]))
    return best, epoch


def target_of(best: float) -> float:
    """99 % of `best`; the logs hold 6 decimals, so 8 keep the product exact."""
    return round(FRACTION * best, 8)


def targets_from_records(repo: Path = REPO) -> dict[str, Any]:
    """The targets file's content, from each model's committed defaults_beauty record."""
    models = {}
    for model in MODELS:
        found = sorted(p for p in (repo / RECORDS / model).glob("*") if (p / METRICS).is_file())
        if len(found) != 1:
            raise Failure(f"{RECORDS}/{model}: expected one finished record, found {len(found)}")
        record = found[0]
        best = best_valid(RunDir(record).read_log())
        if best is None:
            raise Failure(f"{record}: its log holds no validation {METRIC}")
        path = record.relative_to(repo).as_posix()
        info = json.loads((record / "record.json").read_text())
        written = git(repo, "log", "-1", "--format=%h", "--", f"{path}/log.jsonl")
        models[model] = {
            "target": target_of(best[0]),
            "record": path,
            "best_valid_ndcg10": best[0],
            "best_epoch": best[1],
            "record_commit": info.get("commit"),
            "committed_in": written.strip() if written else None,
            "note": "never lower a target",
        }
    return {
        "about": (
            "Time-to-quality targets on Beauty: 99 % of the best validation NDCG@10 in each "
            "model's committed defaults_beauty record (record_commit: the commit the run "
            "trained at; committed_in: the commit that added its log). Written once by "
            "benchmarks/time_to_quality.py --write-targets; never lower a target."
        ),
        "dataset": "beauty",
        "metric": f"valid {METRIC}",
        "fraction": FRACTION,
        "models": models,
    }


def write_targets(path: Path = TARGETS) -> None:
    if path.exists():
        raise Failure(f"{path.name} exists; targets are frozen: edit it by hand only to raise one")
    path.write_text(json.dumps(targets_from_records(), indent=2) + "\n")


def load_targets(path: Path = TARGETS) -> dict[str, float]:
    if not path.is_file():
        raise Failure(f"no targets file {path.name}; create it once with --write-targets")
    models = json.loads(path.read_text())["models"]
    return {model: entry["target"] for model, entry in models.items()}


# -- reading a run ---------------------------------------------------------------------------


def time_to_target(log: list[dict], target: float) -> tuple[int, float] | None:
    """The first epoch whose validation NDCG@10 reaches `target`, and the logged seconds of
    training and validation up to and including it; None if no epoch does."""
    seconds = 0.0
    for record in log:
        seconds += logged_seconds([record])
        score = (record.get("valid") or {}).get(METRIC)
        if score is not None and score >= target:
            return record["epoch"], seconds
    return None


@dataclass
class Start:
    """The run a FAME run started from: its logged seconds and epochs, and where they came from."""

    seconds: float
    epochs: int | None
    source: str


def start_of(run: RunDir, config: dict, metrics: dict | None) -> Start | None:
    """The cost of the run `run` started from: its `--pretrain` stage, or its `--init-from` run
    (found as named, else where the experiment runner keeps its record: `runs/X` ->
    `results/records/X`), else the seconds metrics.json names; None if it started from none."""
    stage = RunDir(run / PRETRAIN)
    if stage.is_started:
        log = stage.read_log()
        return Start(logged_seconds(log), len(log), f"{PRETRAIN}/ (its --pretrain stage)")
    source = config["train"].get("init_from")
    if not source:
        return None
    candidates = [Path(source), REPO / source]
    if Path(source).parts[:1] == ("runs",):
        candidates.append(REPO / "results" / "records" / Path(*Path(source).parts[1:]))
    for candidate in candidates:
        log = RunDir(candidate).read_log()
        if log:
            shown = candidate.relative_to(REPO) if candidate.is_relative_to(REPO) else candidate
            return Start(logged_seconds(log), len(log), f"{shown.as_posix()} (its log)")
    seconds = ((metrics or {}).get("init_from") or {}).get("train_seconds")
    if seconds is not None:
        return Start(seconds, None, f"{source} (metrics.json's training seconds, no validation)")
    raise Failure(f"{run}: cannot find what its start {source} cost (no log, no seconds)")


def read_run(path: str | Path, targets: dict[str, float]) -> dict[str, Any]:
    """One table row from a run directory, finished or not."""
    run = RunDir(path)
    if not run.is_started and not (run / PRETRAIN / CONFIG).is_file():
        raise Failure(f"{path} holds no famerec run")
    config = json.loads(((run if run.is_started else RunDir(run / PRETRAIN)) / CONFIG).read_text())
    model = config["model"]["name"] if run.is_started else "fame"  # only its pretraining began
    data = config["data"]
    if data.get("dataset") != "beauty" or data.get("path"):
        raise Failure(f"{path}: the targets are for the bundled Beauty dataset")
    if model not in targets:
        raise Failure(f"{path}: no target for model {model}")
    metrics = run.metrics() if run.is_finished else None
    log = run.read_log()
    start = start_of(run, config, metrics)
    reached = time_to_target(log, targets[model])
    best = best_valid(log)
    record = run / "record.json"
    info = json.loads(record.read_text()) if record.is_file() else {}
    before = start.seconds if start else 0.0
    return {
        "model": model,
        "path": str(path),
        "threads": config["train"].get("threads"),
        "jobs": info.get("jobs"),
        "target": targets[model],
        "epochs": reached[0] if reached else None,
        "seconds": before + reached[1] if reached else None,
        "start": start,
        "best": best[0] if best else None,
        "best_epoch": metrics["best_epoch"] if metrics else (best[1] if best else None),
        "epochs_run": len(log),
        "test": metrics["test"][METRIC] if metrics else None,
        "run_seconds": before + logged_seconds(log),
        "finished": metrics is not None,
        "record": info,
        "machine": info.get("machine") or (metrics or {}).get("machine"),
    }


# -- the table -------------------------------------------------------------------------------


def minutes(seconds: float) -> str:
    return f"{seconds / 60:,.1f}"


def render(rows: list[dict[str, Any]], header: str) -> str:
    order = {model: i for i, model in enumerate(MODELS)}
    rows = sorted(rows, key=lambda r: order.get(r["model"], len(order)))
    sasrec = next((r["seconds"] for r in rows if r["model"] == "sasrec" and r["seconds"]), None)
    body = []
    for r in rows:
        extra = f" (+{r['start'].epochs})" if r["start"] and r["start"].epochs is not None else ""
        threads = f"{r['threads']}" + (f" ({r['jobs']} jobs)" if (r["jobs"] or 1) > 1 else "")
        reached = r["seconds"] is not None
        body.append(
            [
                r["model"],
                threads,
                f"{r['target']:.4f}",
                f"{r['epochs']}{extra}" if reached else "not reached",
                minutes(r["seconds"]) if reached else "not reached",
                f"{r['seconds'] / sasrec:.2f}x" if reached and sasrec else "",
                f"{r['best']:.4f}" if r["best"] is not None else "",
                f"{r['best_epoch'] or '-'} / {r['epochs_run']}{extra}"
                + ("" if r["finished"] else " (unfinished)"),
                f"{r['test']:.4f}" if r["test"] is not None else "",
                minutes(r["run_seconds"]),
            ]
        )
    headers = [
        "model",
        "threads",
        "target",
        "epochs to target",
        "minutes to target",
        "vs SASRec",
        "best valid NDCG@10",
        "best / run epochs",
        "test NDCG@10",
        "run minutes",
    ]
    notes = [
        "Target: 99 % of the model's best validation NDCG@10 in its defaults_beauty record "
        "(benchmarks/time_to_quality_targets.json). Minutes: logged training + validation "
        "seconds up to the first epoch at or above the target (start-up and test left out); "
        "'run minutes': the whole run's. '(+N)': epochs of the SASRec run FAME starts from, "
        "whose seconds are in its minutes. 'vs SASRec': minutes to target over SASRec's.",
        "Runs:",
    ]
    for r in rows:
        where = f"- {r['model']}: {r['path']}"
        machine = r["machine"] or {}
        if r["record"]:
            where += (
                f" (record: commit {r['record'].get('commit')}, {cpu_label(machine)} "
                f"{machine.get('cores')} cores, {r['record'].get('jobs')} job(s), "
                f"finished {r['record'].get('finished')})"
            )
        elif machine:  # a plain run's metrics.json names its machine (runs since it does)
            where += f" (machine: {cpu_label(machine)} {machine.get('cores')} cores)"
        if r["start"]:
            where += f"; start: {r['start'].source}, {minutes(r['start'].seconds)} min"
        notes.append(where)
    align = "llrrrrrrrr"
    return "\n".join([header, "", table(headers, body, align), "", *notes]) + "\n"


def header_line(threads: str) -> str:
    torch = importlib.metadata.version("torch")
    cores, usable = os.cpu_count() or 1, usable_cores()
    pinned = f", this process pinned to {usable}" if usable < cores else ""
    return (
        f"Time to quality on Beauty: commit {commit(REPO)}, machine {cpu_label(machine('cpu'))} "
        f"({cores} cores{pinned}), torch {torch}, threads {threads}, {utc_now()}."
    )


# -- measuring -------------------------------------------------------------------------------


def train(model: str, out: Path, threads: int, extra: list[str]) -> int:
    """`famerec train` of one model into `out`; its output goes to stderr. Returns its code."""
    args = ["train", "--model", model, "--dataset", "beauty", "--threads", str(threads)]
    args += ["--out", str(out), *extra]
    if model == "fame" and "--init-from" not in extra and "--pretrain" not in extra:
        args.append("--pretrain")
    print(f"$ famerec {' '.join(args)}", file=sys.stderr, flush=True)
    return subprocess.run(
        [sys.executable, "-m", "famerec", *args], stdout=sys.stderr, stdin=subprocess.DEVNULL
    ).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help=f"comma-separated, from {','.join(MODELS)}")
    parser.add_argument("--threads", type=int, default=2, help="of every run (default 2)")
    parser.add_argument("--runs", default="runs/time-to-quality", help="runs go to RUNS/MODEL")
    parser.add_argument("--from-runs", nargs="+", metavar="DIR", help="read runs, train none")
    parser.add_argument("--record", type=Path, help="also write the output to this file")
    parser.add_argument("--targets", type=Path, default=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--write-targets", action="store_true", help="create the targets file")
    args = parser.parse_args(argv)
    try:
        if args.write_targets:
            write_targets(args.targets)
            print(f"wrote {args.targets.name}")
            return 0
        targets = load_targets(args.targets)
        failed = []
        if args.from_runs:
            if args.models or extra:
                raise Failure("--from-runs trains nothing: drop --models and the flags after --")
            paths = args.from_runs
            header = header_line("as recorded by each run") + (
                " Read with --from-runs: the machine is the one that read the runs; times and "
                "threads are as each run recorded them, not measured now."
            )
        else:
            if not args.models:
                raise Failure("choose --models (or read finished runs with --from-runs)")
            models = args.models.split(",")
            unknown = [m for m in models if m not in targets]
            if unknown:
                raise Failure(f"no target for {', '.join(unknown)}; targets: {', '.join(targets)}")
            paths = []
            for model in models:
                out = Path(args.runs) / model
                if train(model, out, args.threads, extra) != 0:
                    failed.append(model)
                if RunDir(out).is_started or (out / PRETRAIN / CONFIG).is_file():
                    paths.append(out)
            flags = f" famerec train flags: {' '.join(extra)}." if extra else ""
            header = header_line(f"{args.threads} per run, one run at a time") + flags
        text = render([read_run(p, targets) for p in paths], header)
    except Failure as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(text)
    if failed:
        print(f"error: famerec train failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
