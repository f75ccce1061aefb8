"""Run a spec: each run is `python -m famerec -q train ...` in a subprocess, J at a time.

A run with a record (or a finished run directory) is skipped, an interrupted one continues with
--resume, a failed one is reported with the end of its output and the others go on.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

import famerec
from famerec.errors import PAUSED, FamerecError
from famerec.experiments.plan import (
    DONE,
    PRUNED,
    READY,
    RESTORED,
    WAITING,
    Plan,
    Run,
    Store,
    format_value,
)
from famerec.experiments.pruning import reached as last_epoch
from famerec.experiments.pruning import read_log
from famerec.experiments.records import commit, copy_record, utc_now
from famerec.experiments.spec import Spec, known_options, relative
from famerec.runs.dir import CONFIG, DirectoryLock, RunDir, logged_seconds, write_json
from famerec.runs.dir import PRETRAIN as PRETRAIN_DIR
from famerec.runs.load import resolve_device
from famerec.runs.machine import machine, usable_cores

# Settings the runner decides for every run (not part of what a run computes).
RUNNER_KEYS = ("train.threads", "train.device", "train.precision")


def train_command(
    settings: dict[str, Any],
    out: Path,
    threads: int,
    device: str | None,
    resume: bool,
    precision: str | None = None,
) -> list[str]:
    """The `famerec train` arguments (after `python -m famerec`) of a resolved run."""
    args = ["-q", "train", "--out", relative(out)]
    if "train.precision" in settings:  # a spec that sets it compares precisions: it wins
        precision = None
    elif resume and precision is not None:  # a run ends at the precision it started with
        precision = started_precision(out) or precision
    chosen = {"train.threads": threads, "train.device": device, "train.precision": precision}
    for key, value in settings.items():
        if key in RUNNER_KEYS and chosen[key] is not None:
            continue
        flag, kind = known_options()[key]
        if kind is bool:
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, format_value(value)]
    args += ["--threads", str(threads)]
    if device is None and resume and "train.device" not in settings:
        device = "auto"  # a run resumed here runs here: its config may name another machine's GPU
    if device is not None:
        args += ["--device", device]
    if precision is not None:
        args += ["--precision", precision]
    if resume:
        args.append("--resume")
    return args


def started_precision(out: Path) -> str | None:
    """The precision a run directory's saved config trains at (None if unreadable): a
    precision is not a resumable change, so a resumed run keeps it whatever the sitting asks.
    A `--pretrain` run paused in its SASRec stage has only that stage's config.json; its second
    stage keeps the precision its first started with."""
    for config in (out / CONFIG, out / PRETRAIN_DIR / CONFIG):
        try:
            return json.loads(config.read_text())["train"]["precision"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGINT both stop the runner cleanly (its jobs end, finished records stay),
    also where SIGINT arrives ignored, as for a job started in the background by a script."""

    def interrupt(signum: int, frame: Any) -> None:
        for sig in signals:  # a second signal (timeout signals the group too) must not cut
            signal.signal(sig, signal.SIG_IGN)  # the cleanup short
        raise KeyboardInterrupt

    signals = (signal.SIGTERM, signal.SIGINT)
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


STARTUP = 30.0  # seconds a run may take to load its data and model before its first epoch


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def grid_summary(spec: Spec, plan: Plan) -> str:
    """The size of the grid, per dataset and in all, and where it stands."""
    seeds = len(spec.seeds)
    parts = [
        f"{e.name} 1 setting x {plural(seeds, 'seed')} (control)"
        if e.control
        else f"{e.name} {plural(e.trials, 'trial')} + {plural(seeds - 1, 'seed rerun')}"
        for e in spec.run_order()
    ]
    per_dataset = sum(seeds if e.control else e.trials + seeds - 1 for e in spec.run_order())
    support = sum(len(p.support) for p in plan.entries.values())
    counts = plan.counts()
    lines = [
        f"{spec.name}: {plural(len(spec.datasets), 'dataset')} "
        f"({', '.join(d.name for d in spec.datasets)}), seeds {', '.join(map(str, spec.seeds))}, "
        f"selection on validation {spec.metric}",
        f"  per dataset: {'; '.join(parts)} = {plural(per_dataset, 'run')}",
    ]
    if spec.pending():
        lines.append(f"  pending (not run): {spec.pending()}")
    lines.append(
        f"  grid: {plural(per_dataset * len(spec.datasets), 'run')}"
        + (f" + {plural(support, 'support run')} found so far" if support else "")
        + f"; {counts[DONE]} done, {counts[READY]} ready, {counts[WAITING]} waiting"
        + (f", {counts[PRUNED]} pruned" if PRUNED in counts else "")
    )
    if spec.pruning is not None:
        rungs = ", ".join(map(str, spec.pruning.rungs))
        lines.append(
            f"  pruned search: each stage's trials ranked on validation {spec.metric} at epochs "
            f"{rungs}; the best 1/{spec.pruning.reduction} train on"
        )
        whole = [e.name for e in spec.entries if not e.control and not spec.prunes(e)]
        if whole:
            lines.append(f"  not pruned (every trial trains to its end): {', '.join(whole)}")
    return "\n".join(lines)


@dataclass
class Job:
    run: Run
    process: subprocess.Popen
    log_path: Path
    started: float
    resumed: bool
    command: list[str]
    commit: str  # the checkout the job started from: the code this sitting of the run ran
    restore: bool = False  # retrains a recorded run whose directory is not here (Plan.restore)


class Runner:
    def __init__(
        self,
        spec: Spec,
        jobs: int = 1,
        device: str | None = None,
        only: str | Sequence[str] | None = None,
        precision: str | None = None,
        runs_dir: Path | None = None,
        stream: IO[str] | None = None,
        poll_seconds: float = 0.2,
        time_limit: float | None = None,
        rungs_only: bool = False,
    ):
        self.spec = spec
        self.jobs = max(1, jobs)
        self.threads = max(1, usable_cores() // self.jobs)
        self.device = device
        self.precision = precision
        # run-id patterns (fnmatch); a run is wanted if it matches any
        self.only = [only] if isinstance(only, str) else list(only or [])
        # start only trials that train to a rung of a pruned search, none past the last rung
        self.rungs_only = rungs_only
        self.store = Store(spec.records_dir, runs_dir or spec.runs_dir)
        self.stream = stream or sys.stderr
        self.poll_seconds = poll_seconds
        self.time_limit = time_limit  # seconds from run(); each job gets what is left
        self.deadline: float | None = None
        self.paused: set[str] = set()
        self.unstarted: set[str] = set()  # left for the next sitting: an epoch would not fit
        self.epoch_logs: dict[str, tuple[bool, list[dict[str, Any]]]] = {}  # recorded runs' logs
        self.bar: tqdm | None = None
        # what the experiment commands rewrite: not a reason to call the code "dirty"
        report = spec.report_dir
        self.outputs = (spec.records_dir, report / spec.name, report / f"{spec.name}.md")

    # -- output -----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def wanted(self, run: Run) -> bool:
        return not self.only or any(fnmatch.fnmatch(run.label, p) for p in self.only)

    def held_back(self, run: Run) -> bool:
        """A ready run that --rungs-only leaves: it would train past its stage's last rung
        (a survivor, a seed, an entry with no pruning), or only to rungs already decided on
        record (a survivor whose run directory was lost)."""
        return self.rungs_only and run.state == READY and (run.stop_at is None or run.settled)

    def wanted_restores(self, plan: Plan) -> dict[str, list[Run]]:
        """The starts to retrain that are wanted, each with the wanted runs that wait for it: a
        start is wanted when --only names it or any of those runs."""
        if self.rungs_only:  # a retrained start trains to its end
            return {}
        waiting: dict[str, list[Run]] = {}
        for run in plan.runs:
            if run.needs is not None and self.wanted(run):
                waiting.setdefault(run.needs, []).append(run)
        return {
            i: waiting.get(i, [])
            for i, r in plan.restores.items()
            if self.wanted(r) or i in waiting
        }

    def priority(self, runs: list[Run]) -> int:
        """The first --only pattern any of `runs` matches (a run, or a start to retrain with
        the runs that wait for it): runs matching an earlier pattern start first."""
        ranks = [i for r in runs for i, p in enumerate(self.only) if fnmatch.fnmatch(r.label, p)]
        return min(ranks, default=0)

    def plan(self) -> Plan:
        return Plan(self.spec, self.store)

    def command(self, run: Run) -> tuple[list[str], bool]:
        out = self.store.run_dir(run.id)
        resume = RunDir(out).is_resumable  # a --pretrain run paused in its first stage too
        args = train_command(run.settings, out, self.threads, self.device, resume, self.precision)
        kept = args[args.index("--precision") + 1] if self.precision else None
        if resume and kept != self.precision and "train.precision" not in run.settings:
            self.say(f"{run.label}: resumed at {kept}, the precision it started with")
        return args, resume

    # -- records ----------------------------------------------------------------------------

    def save_record(
        self,
        run: Run,
        wall: float | None,
        resumed: bool,
        args: list[str],
        code: str | None = None,
    ) -> None:
        """Copy a finished run into its record; `code` is the commit its last sitting started
        from (the checkout may have moved on while it ran), else the checkout now."""
        run_dir = self.store.run_dir(run.id)
        metrics = self.store.metrics(run.id)
        info = {
            **self.identity(run),
            "command": shlex.join(["famerec", *args]) if args else None,
            **trained_on(metrics),
            "commit": code or self.checkout(),
            # a resumed run's own figure covers its earlier sittings; the runner saw this one
            "wall_seconds": metrics.get("wall_seconds")
            if resumed or wall is None
            else round(wall, 1),
            "sitting_seconds": round(wall, 1) if wall is not None else None,
            "threads": self.threads,
            "jobs": self.jobs,
            "resumed": resumed,
            "finished": utc_now(),
        }
        pruned = self.store.record(run.id).get("pruned")
        if pruned:  # a pruned trial trained on as another run's start: the decision stands
            info["pruned"] = pruned
        copy_record(run_dir, self.store.record_dir(run.id), info)
        self.store.forget(run.id)

    def save_restored(self, job: Job, wall: float) -> None:
        """A recorded run retrained for its weights: the record stays as it was (selection
        read it); `restored.json` beside it says when, where and with what result."""
        run = job.run
        metrics = RunDir(self.store.run_dir(run.id)).metrics()  # the record holds the original's
        info = {
            "id": run.id,
            "why": "retrained at its recorded settings: other runs start from its weights and "
            "its run directory was not on this machine; the record above is the original run",
            "command": shlex.join(["famerec", *job.command]),
            **trained_on(metrics),
            "commit": job.commit,
            "sitting_seconds": round(wall, 1),
            "best_epoch": metrics.get("best_epoch"),
            "valid": metrics.get("valid"),
            "test": metrics.get("test"),
            "finished": utc_now(),
        }
        write_json(self.store.record_dir(run.id) / RESTORED, info)
        self.store.forget(run.id)
        ours = metrics["valid"][self.spec.metric]
        theirs = self.store.metrics(run.id)["valid"][self.spec.metric]
        self.say(
            f"restored {run.id}: valid {self.spec.metric} {ours:.4f} (its record: "
            f"{theirs:.4f}) in {format_seconds(wall)}"
        )

    def identity(self, run: Run) -> dict[str, Any]:
        """What a record says the run is."""
        return {
            "id": run.id,
            "spec": self.spec.name,
            "dataset": run.dataset,
            "model": run.entry,
            "stage": run.stage,
            "seed": run.seed,
            "settings": run.names,
        }

    def checkout(self) -> str:
        return commit(Path(self.spec.path).resolve().parent, self.outputs)

    def sync(self, plan: Plan) -> None:
        """Copy the records of runs that finished here but were not recorded (interrupted)."""
        for run in plan.runs:
            if run.id is None:  # waits for another stage: not named yet
                continue
            unrecorded = not self.store.has_record(run.id)
            # a trial pruned (here or by a spec sharing the records) that trained on to its
            # end, as a start or as a trial of a spec without pruning: its record still ends
            # at its rung
            trained_on = (
                run.state in (PRUNED, DONE)
                and not unrecorded
                and self.store.finished_locally(run.id)
                and not (self.store.record_dir(run.id) / "metrics.json").is_file()
            )
            if (run.state == DONE and unrecorded) or trained_on:
                self.save_record(run, None, False, [])
                self.say(f"recorded {run.id} (finished earlier)")
        self.record_pruned(plan)

    def record_pruned(self, plan: Plan) -> None:
        """Record each newly pruned trial: its config, log (and metrics, had it finished), and
        a record.json saying where it was pruned. Its run directory is left as it is."""
        for run in plan.runs:
            if run.state != PRUNED or self.store.has_record(run.id):
                continue
            run_dir = self.store.run_dir(run.id)
            log = read_log(run_dir)
            info = {
                **self.identity(run),
                "pruned": run.rung,
                "epochs_run": last_epoch(log),
                "wall_seconds": round(logged_seconds(log), 1),
                "machine": dict(self.this_machine),
                "commit": self.checkout(),
                "threads": self.threads,
                "jobs": self.jobs,
                "finished": utc_now(),
            }
            copy_record(run_dir, self.store.record_dir(run.id), info)
            self.store.forget(run.id)
            self.say(f"pruned {run.id}: {run.rung}")

    # -- estimates --------------------------------------------------------------------------

    def estimate(self, plan: Plan, left: list[Run]) -> float | None:
        """Seconds left: each run like the finished runs of its model and dataset (else of its
        dataset, else of all), J at a time."""
        walls: dict[tuple[str, str], list[float]] = {}
        for run in plan.runs:
            if run.state == DONE:
                wall = self.store.wall_seconds(run.id)
                if wall:
                    walls.setdefault((run.dataset, run.entry), []).append(float(wall))
        if not walls:
            return None

        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        everything = [w for values in walls.values() for w in values]
        total = 0.0
        for run in left:
            same = walls.get((run.dataset, run.entry))
            dataset = [w for (d, _), values in walls.items() if d == run.dataset for w in values]
            total += mean(same or dataset or everything)
        return total / self.jobs

    @functools.cached_property
    def this_machine(self) -> dict[str, Any]:
        """Where this sitting runs (`famerec.runs.machine`), read once. Without `--device` the
        runs take the spec's device, else "auto", which trains on a GPU where one is
        available: such a sitting is a GPU one."""
        device = self.device or str(self.spec.base.get("train.device", "auto"))
        return machine(resolve_device(device).type if device == "auto" else device)

    def recorded_epochs(self, run_id: str) -> tuple[bool, list[dict[str, Any]]]:
        """The logged epochs of a recorded run (finished, pruned, or a start to retrain) that
        ran on this sitting's kind of device (CPU or GPU, by its record's machine), none if it
        ran on the other; and whether it ran on this very machine (the same GPU, or the same
        CPU by name, family and model). A record is read once a sitting (its log does not
        change); a run without one (yet: it may finish or be pruned in this sitting) has
        none to go by."""
        if run_id in self.epoch_logs:
            return self.epoch_logs[run_id]
        if not self.store.has_record(run_id):
            return False, []
        recorded = self.store.record(run_id).get("machine", {})
        here = self.this_machine
        kind = ("gpu" in recorded) == ("gpu" in here)
        keys = ("gpu",) if "gpu" in here else ("cpu", "cpu_id")
        same = kind and keys[-1] in here and all(recorded.get(k) == here[k] for k in keys)
        self.epoch_logs[run_id] = (same, self.store.log(run_id) if kind else [])
        return self.epoch_logs[run_id]

    def first_epoch_seconds(self, plan: Plan, run: Run) -> float | None:
        """About how long the first epoch of a run with none logged here takes (training and
        validation), from records of runs on this sitting's kind of device: the mean epoch of
        its own record (a start retrained from it), else of the finished or pruned runs of its
        setting at other seeds, else of its entry on its dataset; records from this very
        machine first (two CPUs alike by name may differ 2-3x in speed), then from any, and
        within each, those trained with this sitting's threads first. None
        with nothing to go by, or when its run directory has logged an epoch (of either stage
        of a --pretrain run), which its trainer goes by."""
        if run.id is None:
            return None
        if self.store.runs_dir is not None:
            here = self.store.run_dir(run.id)
            if read_log(here) or read_log(here / PRETRAIN_DIR):
                return None
        like = [
            r
            for r in plan.runs
            if r.state in (DONE, PRUNED)
            and r.id not in (None, run.id)
            and (r.dataset, r.entry) == (run.dataset, run.entry)
        ]
        groups = ([run], [r for r in like if r.names == run.names], like)
        for this_machine in (True, False):
            for group in groups:
                logs = []  # (log, threads) of the group's records from this kind of machine
                for r in group:
                    same, log = self.recorded_epochs(str(r.id))
                    if same or not this_machine:
                        logs.append((log, self.store.record(str(r.id)).get("threads")))
                for same_threads in (True, False):  # 1 thread is up to 2x slower than 2
                    epochs = [
                        e
                        for log, threads in logs
                        if threads == self.threads or not same_threads
                        for e in log
                    ]
                    if epochs:
                        return logged_seconds(epochs) / len(epochs)
        return None

    def fits(self, plan: Plan, run: Run) -> bool:
        """Whether a run started now would train an epoch before --time-limit. The trainer
        pauses between epochs by the time of its last, but a run with no epoch yet trains its
        first whatever time is left: one that like runs say would overrun (with STARTUP
        seconds for loading its data and model) waits for the next sitting."""
        if self.deadline is None:
            return True
        estimate = self.first_epoch_seconds(plan, run)
        left = self.deadline - time.monotonic()
        if estimate is None or estimate + STARTUP <= left:
            return True
        self.unstarted.add(run.id)
        if self.bar is not None:
            self.bar.update(1)
        needed = estimate + STARTUP
        longer = self.time_limit is not None and needed > self.time_limit
        self.say(
            f"left  {run.id}: an epoch takes about {format_seconds(estimate)}, "
            f"{format_seconds(max(0.0, left))} of --time-limit is left"
            + (
                f" (a sitting needs at least {format_seconds(needed)} to start it)"
                if longer
                else ""
            )
        )
        return False

    # -- running ----------------------------------------------------------------------------

    def start(self, run: Run, restore: bool = False) -> Job:
        """Start `run`'s `famerec train`; `restore`: it retrains a recorded run (Plan.restore)."""
        args, resumed = self.command(run)
        out = self.store.run_dir(run.id)
        log_path = out.parent / f"{out.name}.log"  # not with_suffix: names hold dots (lr=0.001)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        source = str(Path(famerec.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
        code = self.checkout()
        sitting = []  # not part of the run's command (its record's)
        if self.deadline is not None:
            sitting = ["--time-limit", f"{max(0.0, self.deadline - time.monotonic()):.0f}"]
        if run.stop_at is not None:  # pruned search: pause at the rung
            sitting += ["--stop-after-epoch", str(run.stop_at)]
        with open(log_path, "a") as log:
            log.write(f"$ famerec {shlex.join(args + sitting)}\n")
            log.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "famerec", *args, *sitting],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        what = " (retraining its recorded settings: only its record is here)" if restore else ""
        self.say(f"start {run.id}" + (" (resuming)" if resumed else "") + what)
        return Job(run, process, log_path, time.monotonic(), resumed, args, code, restore)

    def run(self, dry_run: bool = False) -> int:
        if dry_run:  # reads only: no lock
            return self.dry_run(self.summarize())
        with self.locked():  # before the plan is read: another runner may be changing it
            plan = self.summarize()
            if self.time_limit is not None:
                self.deadline = time.monotonic() + self.time_limit
            with interruptible():
                return self.run_jobs(plan)

    def summarize(self) -> Plan:
        """The plan, once its summary is printed."""
        plan = self.plan()
        self.say(grid_summary(self.spec, plan))
        self.say(
            f"  {plural(self.jobs, 'job')} at a time, {plural(self.threads, 'thread')} each"
            + (f", --device {self.device}" if self.device else "")
            + (f", --precision {self.precision}" if self.precision else "")
        )
        return plan

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One runner at a time per runs folder: a second fails at once with InUseError (each
        `famerec train` child also locks its own run directory)."""
        folder = Path(self.store.runs_dir or self.spec.runs_dir)
        lock = DirectoryLock(folder, label=relative(folder))
        try:
            lock.acquire()
        except OSError as error:
            raise FamerecError(f"cannot write to {relative(folder)}: {error.strerror}") from None
        try:
            yield
        finally:
            lock.release()

    def run_jobs(self, plan: Plan) -> int:
        """Run what is ready, J at a time, until nothing is left or the runner is stopped."""
        self.sync(plan)
        running: dict[str, Job] = {}
        failed: dict[str, str] = {}
        finished = 0
        began = time.monotonic()
        self.bar = tqdm(
            total=sum(1 for run in plan.runs if self.counts_as_left(run, failed)),
            unit="run",
            file=self.stream,
            disable=not self.stream.isatty(),
            dynamic_ncols=True,
        )
        try:
            while True:
                plan = self.plan()
                self.record_pruned(plan)
                # restores first: every run that starts from one waits for it
                restores = self.wanted_restores(plan)
                candidates = [plan.restores[i] for i in restores]
                candidates += [
                    run
                    for run in plan.runs
                    if run.state == READY and self.wanted(run) and not self.held_back(run)
                ]
                ready = [
                    run
                    for run in candidates
                    if run.id not in running
                    and run.id not in failed
                    and run.id not in self.paused
                    and run.id not in self.unstarted
                ]
                # in the order of the --only patterns (a stable sort), restores first in each
                ready.sort(
                    key=lambda run: (
                        self.priority([run, *restores.get(run.id, [])]),
                        run.id not in restores,
                    )
                )
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    ready = []  # past --time-limit: let the running jobs pause, start none
                while ready and len(running) < self.jobs:
                    run = ready.pop(0)
                    if not self.fits(plan, run):
                        continue
                    running[run.id] = self.start(run, restore=run.id in plan.restores)
                if not running:
                    break
                ended = self.wait(running)
                for job in ended:
                    del running[job.run.id]
                for count, job in enumerate(ended, 1):
                    finished += self.finish(job, failed)
                    plan = self.plan()
                    left = [r for r in plan.runs if self.counts_as_left(r, failed)]
                    handled = finished + len(failed) + len(self.paused) + len(self.unstarted)
                    # runs still to handle: those left, those running and those that ended with
                    # this one (the plan counts a run done once its metrics.json is written)
                    to_handle = {r.id for r in left} | set(running)
                    to_handle |= {j.run.id for j in ended[count:]}
                    self.bar.total = handled + len(to_handle)
                    self.bar.update(1)
                    eta = self.estimate(plan, left) if left else None
                    self.say(
                        f"[{handled}/{self.bar.total}] "
                        f"elapsed {format_seconds(time.monotonic() - began)}"
                        + (f", about {format_seconds(eta)} left" if eta is not None else "")
                    )
        except KeyboardInterrupt:
            for job in running.values():
                job.process.terminate()
            for job in running.values():
                job.process.wait()
            self.bar.close()
            self.bar = None
            self.say("interrupted: run the same command again to resume")
            return 130
        self.bar.close()
        self.bar = None
        return self.summary(self.plan(), finished, failed, time.monotonic() - began)

    def counts_as_left(self, run: Run, failed: dict[str, str]) -> bool:
        return (
            run.state not in (DONE, PRUNED)
            and self.wanted(run)
            and run.id not in failed
            and run.id not in self.paused
            and run.id not in self.unstarted
        )

    def finish(self, job: Job, failed: dict[str, str]) -> int:
        """Record a finished run, or report a failed one; 1 if it finished."""
        wall = time.monotonic() - job.started
        if job.restore and job.process.returncode == 0 and self.store.finished_locally(job.run.id):
            self.save_restored(job, wall)
            return 1
        if job.process.returncode == 0 and self.store.finished_locally(job.run.id):
            self.save_record(job.run, wall, job.resumed, job.command, job.commit)
            score = self.store.metrics(job.run.id)["valid"][self.spec.metric]
            self.say(
                f"done  {job.run.id}: valid {self.spec.metric} {score:.4f} "
                f"in {format_seconds(wall)}"
            )
            return 1
        epoch = last_epoch(read_log(self.store.run_dir(job.run.id)))
        if job.process.returncode == PAUSED and job.run.stop_at and epoch >= job.run.stop_at:
            self.say(f"rung  {job.run.id}: epoch {epoch} in {format_seconds(wall)}")
            return 0  # judged with the other trials of its stage once they reach the rung
        if job.process.returncode == PAUSED:
            self.paused.add(job.run.id)
            reached = RunDir(self.store.run_dir(job.run.id)).reached()
            self.say(f"paused {job.run.id} at --time-limit after {reached}")
            return 0
        failed[job.run.id] = tail(job.log_path)
        self.say(
            f"FAILED {job.run.id} (exit {job.process.returncode}) after "
            f"{format_seconds(wall)}:\n{failed[job.run.id]}"
        )
        return 0

    def wait(self, running: dict[str, Job]) -> list[Job]:
        while True:
            done = [job for job in running.values() if job.process.poll() is not None]
            if done:
                return done
            time.sleep(self.poll_seconds)

    def summary(self, plan: Plan, finished: int, failed: dict[str, str], seconds: float) -> int:
        self.say(
            f"{self.spec.name}: {finished} runs finished in {format_seconds(seconds)}, "
            f"{len(failed)} failed; records in {relative(self.spec.records_dir)}"
        )
        for run_id in failed:
            self.say(f"  failed: {run_id} (log: {relative(self.store.run_dir(run_id))}.log)")
        reasons = Counter(
            (
                "trains past its last rung: left by --rungs-only"
                if run.stop_at is None
                else "retrains to rungs decided on record: left by --rungs-only"
            )
            if self.held_back(run)
            else run.reason or "not started"
            for run in plan.runs
            if self.counts_as_left(run, failed)
        )
        for reason, count in reasons.items():
            self.say(f"  {count} run(s) left: {reason}")
        if self.paused:
            self.say(
                f"  {len(self.paused)} run(s) paused at --time-limit: run the same command "
                "again to resume"
            )
        if self.unstarted:
            self.say(
                f"  {len(self.unstarted)} run(s) not started: an epoch would have ended past "
                "--time-limit; run the same command again (with a --time-limit longer than "
                "an epoch) to start them"
            )
        return 1 if failed else PAUSED if self.paused or self.unstarted else 0

    def dry_run(self, plan: Plan) -> int:
        for run in plan.runs:
            if not self.wanted(run):
                continue
            if run.state == READY:
                args, _ = self.command(run)
                if run.stop_at is not None:
                    args += ["--stop-after-epoch", str(run.stop_at)]
                rung = f" ({run.rung})" if run.rung else ""
                held = " (left by --rungs-only)" if self.held_back(run) else ""
                self.say(f"ready    {run.id}{rung}{held}\n         famerec {shlex.join(args)}")
            elif run.state == DONE:
                self.say(f"done     {run.id}" + (f" ({run.rung})" if run.rung else ""))
            elif run.state == PRUNED:
                self.say(f"pruned   {run.id}: {run.rung}")
            else:
                self.say(f"waiting  {run.label}: {run.reason}")
        for run in (plan.restores[i] for i in self.wanted_restores(plan)):
            command = shlex.join(self.command(run)[0])
            self.say(f"restore  {run.id} (only its record is here)\n         famerec {command}")
        return 0


def trained_on(metrics: dict[str, Any]) -> dict[str, Any]:
    """Where a finished run trained, from its metrics.json: device, precision, torch, machine
    (the machine its metrics.json names, that of the sitting that finished it; here where an
    older one names none)."""
    device = str(metrics.get("device", "unknown"))
    return {
        "device": device,
        "precision": metrics.get("precision", "unknown"),
        "torch": metrics.get("torch", "unknown"),
        "machine": metrics.get("machine") or machine(device),
    }


def tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "  (no output)"
    return "\n".join("  | " + line for line in text[-lines:])
