"""The former name of `famerec.tables` (terminal and markdown tables), kept for its importers."""

from famerec.tables import metrics_table, table

__all__ = ["metrics_table", "table"]
