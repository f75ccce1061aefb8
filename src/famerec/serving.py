"""HTTP service: top-k recommendations (with FAME's explanations) from one loaded run.

The model is loaded once at start, from safetensors only. Bad requests get a 4xx answer with
a message, never a 500, and the service keeps serving.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from famerec import __version__
from famerec.errors import FamerecError
from famerec.recommender import Recommender

MAX_ITEMS = 1000  # items per sequence in a request
MAX_BATCH = 1000  # sequences per batch request
MAX_K = 1000

ItemIdField = StrictInt | StrictStr
Sequence = Annotated[list[ItemIdField], Field(min_length=1, max_length=MAX_ITEMS)]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: Sequence = Field(description="item ids of the input data, oldest first")
    k: int = Field(10, ge=1, le=MAX_K, strict=True)
    explain: bool = Field(False, description="add FAME's per-head lists, gate and router weights")
    exclude_seen: bool = True
    strict: bool = Field(False, description="unknown item ids are an error instead of skipped")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sequences: list[Sequence] = Field(min_length=1, max_length=MAX_BATCH)
    k: int = Field(10, ge=1, le=MAX_K, strict=True)
    exclude_seen: bool = True
    strict: bool = False


class ScoredItem(BaseModel):
    item: ItemIdField
    score: float


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    unknown: list[ItemIdField]
    used: int = Field(description="known items in the request")
    heads: list[dict[str, Any]] | None = None
    note: str | None = None


class BatchResponse(BaseModel):
    results: list[RecommendResponse]


def create_app(recommender: Recommender) -> FastAPI:
    app = FastAPI(
        title="famerec",
        version=__version__,
        description=f"Top-k recommendations from the {recommender.model_name} run "
        f"{recommender.run_dir}.",
    )
    # Scoring is a few milliseconds of matrix work: serialize it instead of letting many
    # threads fight over the same cores.
    lock = threading.Lock()

    @app.exception_handler(FamerecError)
    async def bad_request(request: Request, error: FamerecError):
        return JSONResponse(status_code=422, content={"detail": str(error)})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    def model_info() -> dict[str, Any]:
        config = recommender.config.model
        metrics = recommender.metrics
        return {
            "model": recommender.model_name,
            "run": str(recommender.run_dir),
            "dataset": metrics.get("dataset", {}),
            "items": recommender.num_items,
            "users": recommender.data.num_users,
            "hidden_size": config.hidden_size,
            "layers": config.num_layers,
            "heads": config.num_heads,
            "experts": config.num_experts if config.name == "fame" else None,
            "max_len": config.max_len,
            "metrics": {key: metrics.get(key) for key in ("valid", "test", "best_epoch")},
        }

    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
    def recommend(request: RecommendRequest) -> dict[str, Any]:
        with lock:
            if request.explain:
                return recommender.explain(
                    request.items, request.k, request.exclude_seen, request.strict
                ).to_dict()
            return recommender.recommend(
                request.items, request.k, request.exclude_seen, request.strict
            ).to_dict()

    @app.post("/recommend/batch", response_model=BatchResponse, response_model_exclude_none=True)
    def recommend_batch(request: BatchRequest) -> dict[str, Any]:
        with lock:
            results = recommender.recommend_batch(
                request.sequences, request.k, request.exclude_seen, request.strict
            )
        return {"results": [r.to_dict() for r in results]}

    return app


DEVICE_NAME = re.compile(r"cpu|auto|cuda(:\d+)?")


def check_serve_options(port: int, device: str) -> None:
    """Reject bad options before the (slow) model load, each with one line."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise FamerecError(f"--port must be between 0 and 65535 (0: any free port), got {port}")
    if not isinstance(device, str) or not DEVICE_NAME.fullmatch(device):
        raise FamerecError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}")


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, or a FamerecError that says why not (port in use, ...)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as error:
        reason = str(error.strerror or error).split(" (while attempting to bind")[0]
        raise FamerecError(f"cannot listen on {host}:{port}: {reason}") from None


def address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Server(uvicorn.Server):
    """uvicorn's server, quiet, that calls `on_ready()` once it accepts requests, not before."""

    def __init__(self, app: FastAPI, on_ready: Callable[[], None] | None = None):
        super().__init__(uvicorn.Config(app, log_level="warning", access_log=False))
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_ready is not None:
            self.on_ready()


def serve(
    run_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Load the run, bind, then serve until interrupted; `on_ready(url)` runs once the server
    accepts requests (port 0 binds any free port, which the url names)."""
    check_serve_options(port, device)
    app = create_app(Recommender(run_dir, device=device))
    with listen(host, port) as sock:
        url = address_of(sock)
        server = Server(app, on_ready=None if on_ready is None else lambda: on_ready(url))
        server.run(sockets=[sock])
