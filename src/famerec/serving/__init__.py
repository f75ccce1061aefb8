"""Serving a finished run: Python, the HTTP service and its page.

* `recommender`: top-k (and FAME's explanations) from a finished run, in the data's own ids
  (`famerec.load`);
* `ann`: approximate top-k with a vector index, for large catalogs;
* `batcher`: the service's micro-batcher (work from many threads scored in one call);
* `app`: the HTTP service (`famerec serve`, `create_app`);
* `explorer`: the page the service answers at `GET /`.

The service's names are importable from here (`from famerec.serving import create_app`), as
they were when the service was the module `famerec.serving`; `app` is imported on first use, so
that `famerec.load` does not load the web framework. The former modules `famerec.recommender`,
`famerec.ann`, `famerec.batcher` and `famerec.explorer` are these modules under their old names.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    import famerec.serving.app as app

    if name == "app":
        return app
    try:
        return getattr(app, name)
    except AttributeError:
        raise AttributeError(f"module 'famerec.serving' has no attribute {name!r}") from None
