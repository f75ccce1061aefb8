"""Plain-text tables for the terminal: markdown tables, and a run's metrics as one.

Formerly `famerec.report` (still importable); `famerec.experiments.report` builds the
comparison reports with these tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from famerec.evaluation import METRIC_NAMES


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; `align` is one 'l' or 'r' per column (default: numbers right)."""
    cells = [[_cell(v) for v in row] for row in rows]
    if align is None:
        align = "".join(
            "r" if rows and isinstance(rows[0][i], (int, float)) else "l"
            for i in range(len(headers))
        )
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        padded = [v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(values, widths, align)]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "| "
        + " | ".join(("-" * (w - 1) + ":") if a == "r" else "-" * w for w, a in zip(widths, align))
        + " |"
    )
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def metrics_table(metrics: dict[str, Any]) -> str:
    rows = [
        [split] + [metrics[split][name] for name in METRIC_NAMES] for split in ("valid", "test")
    ]
    summary = (
        f"{metrics.get('model', '?')} on {metrics['dataset']['name']}: best epoch "
        f"{metrics['best_epoch']} of {metrics['epochs_run']}, "
        f"{metrics['train_seconds']:.1f}s training"
    )
    return table(["split", *METRIC_NAMES], rows) + "\n" + summary
