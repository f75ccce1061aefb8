"""Pruned search: successive halving over the trials of a stage (`[selection.pruning]`).

Every trial of a stage trains to the first rung (an epoch; `famerec train --stop-after-epoch`
pauses it there, resumable). Once all of them reached it (or finished, early-stopped, before
it), they are ranked on their best validation score up to the rung, ties broken by run id, and
the best 1/reduction of them (rounded up) train on to the next rung; the others are pruned and
never continue. After the last rung the survivors train to their own early stop, and selection
picks among them as without pruning.

The decisions are a pure function of the trials' logged validation scores (log.jsonl, kept in
every record, pruned or not), so the same records give the same decisions in any sitting.
Test metrics are never read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from famerec.experiments.spec import SPLIT, Pruning
from famerec.runs.dir import LOG


def read_log(folder: Path) -> list[dict[str, Any]]:
    """A run's log.jsonl (no caching: a running trial's grows), [] if it has none yet."""
    try:
        lines = (folder / LOG).read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return entries


def rung_score(log: list[dict[str, Any]], rung: int, metric: str, finished: bool) -> float | None:
    """The best validation `metric` logged up to epoch `rung`; None while the trial has neither
    reached the rung nor finished (a finished trial competes with what it reached)."""
    epochs = [e for e in log if isinstance(e.get("epoch"), int) and SPLIT in e]
    if not finished and not any(e["epoch"] >= rung for e in epochs):
        return None
    values = [float(e[SPLIT][metric]) for e in logged_up_to(log, rung)]
    return max(values, default=float("-inf"))


def logged_up_to(log: list[dict[str, Any]], rung: int) -> list[dict[str, Any]]:
    """The log's epochs with validation scores, up to epoch `rung`."""
    return [e for e in log if isinstance(e.get("epoch"), int) and SPLIT in e and e["epoch"] <= rung]


def reached(log: list[dict[str, Any]]) -> int:
    """The last epoch a log records (0 before the first)."""
    return max((e["epoch"] for e in log if isinstance(e.get("epoch"), int)), default=0)


@dataclass
class Verdict:
    """Where successive halving stands for one stage's trials."""

    alive: list[str]  # the trials still searched, in the stage's order
    pruned: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (rung, score)
    rung: int | None = None  # the rung the alive trials train to; None: to their early stop
    scores: dict[str, float | None] = field(default_factory=dict)  # alive trials at `rung`
    # every rung from `rung` on is already decided on record (or keeps every trial): training
    # the alive trials to it adds no decision, only the epochs a lost run had
    settled: bool = False


def decide(
    ids: list[str],
    pruning: Pruning,
    score: Callable[[str, int], float | None],
    recorded: dict[str, int] | None = None,
) -> Verdict:
    """Successive halving over the trials `ids`: `score(id, rung)` is the trial's best
    validation score up to the rung, or None while it has not reached it. A rung is decided
    only once every trial still searched has a score at it.

    `recorded` (id -> rung) are decisions already on record: such a trial is pruned at that
    rung whatever the scores say now, and counts among the trials each rung up to it keeps a
    share of. The same logs give the same decisions; this keeps them when a survivor's log is
    lost (a sitting's run that did not come back) and the survivor trains to the rung again."""
    recorded = recorded or {}
    alive = list(ids)
    pruned: dict[str, tuple[int, float]] = {}

    def prune(run_id: str, rung: int, value: float | None) -> None:
        pruned[run_id] = (rung, float("-inf") if value is None else value)

    for rung in pruning.rungs:
        scores = {run_id: score(run_id, rung) for run_id in alive}
        searched = [run_id for run_id in alive if run_id not in recorded]
        if any(scores[run_id] is None for run_id in searched):
            for run_id in alive:
                if run_id in recorded:
                    prune(run_id, recorded[run_id], score(run_id, recorded[run_id]))
            settled = on_record(
                alive, pruning.rungs[pruning.rungs.index(rung) :], pruning, recorded
            )
            return Verdict(searched, pruned, rung, {r: scores[r] for r in searched}, settled)
        count = pruning.keep(len(alive))
        ranked = sorted(
            (r for r in alive if recorded.get(r) != rung and scores[r] is not None),
            key=lambda run_id: (-scores[run_id], run_id),
        )
        keep = set(ranked[:count])
        for run_id in alive:
            if run_id not in keep:
                prune(run_id, rung, scores[run_id])
        alive = [run_id for run_id in alive if run_id in keep]
    return Verdict(alive, pruned)


def on_record(
    alive: list[str], rungs: list[int], pruning: Pruning, recorded: dict[str, int]
) -> bool:
    """Whether the decisions on record fix every one of `rungs` for the trials `alive`: at
    each, the trials not recorded as pruned there are no more than the rung keeps."""
    for rung in rungs:
        dropped = {run_id for run_id in alive if recorded.get(run_id) == rung}
        if len(alive) - len(dropped) > pruning.keep(len(alive)):
            return False
        alive = [run_id for run_id in alive if run_id not in dropped]
    return True
