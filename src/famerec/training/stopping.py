"""When to stop training: early stopping on validation NDCG@10 that does not stop too soon.

Plain patience (stop after `patience` epochs without a new best) fails in two ways, both seen
on small dense data (studies/early_stopping.py):

* An epoch is a unit of data, not of optimization. On 1,000 users an epoch is 4 Adam steps, so
  10 epochs of patience are 40 steps, and a model that sits on a plateau for a few hundred steps
  before it learns item-to-item transitions is stopped on the plateau. Beauty's best epoch comes
  after about 2,500 steps. So no run stops before `min_steps` optimizer steps.
* Late in a run the curve climbs slowly under noise, and a lucky epoch sets a best that the trend
  needs longer than `patience` to beat. So the patience grows with the epoch of the best:
  waiting `growth` times as long as it took to get there bounds the epochs spent after the best
  to a fixed share of the run, while early bests (which come fast) keep plain patience.

The weights kept are those of the best validation epoch either way; only when to stop changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StoppingRule:
    patience: int
    min_steps: int = 0
    growth: float = 0.0

    @classmethod
    def from_config(cls, train: Any) -> StoppingRule:
        return cls(train.patience, train.min_steps, train.patience_growth)

    def wait(self, best_epoch: int) -> int:
        """Epochs without a new best that end the run, once it has a best at `best_epoch`."""
        return max(self.patience, math.ceil(self.growth * best_epoch))

    def stops(self, epoch: int, best_epoch: int, steps: int) -> bool:
        return steps >= self.min_steps and epoch - best_epoch >= self.wait(best_epoch)

    def state(self, epoch: int, best_epoch: int, steps: int) -> dict[str, Any]:
        """The rule's view after `epoch`, as log.jsonl records it."""
        return {
            "best_epoch": best_epoch,
            "epochs_without_best": epoch - best_epoch,
            "patience": self.wait(best_epoch),
            "steps": steps,
            "min_steps": self.min_steps,
            "stop": self.stops(epoch, best_epoch, steps),
        }

    def replay(self, curve: list[float], steps_per_epoch: int, epochs: int) -> tuple[int, int]:
        """(epochs run, best epoch) of this rule on a recorded validation curve: the run's
        trajectory does not depend on when it stops, so one long run shows every rule."""
        best_epoch, best = 0, -math.inf
        for epoch, metric in enumerate(curve[:epochs], start=1):
            if metric > best:
                best_epoch, best = epoch, metric
            if self.stops(epoch, best_epoch, epoch * steps_per_epoch):
                return epoch, best_epoch
        return min(len(curve), epochs), best_epoch
