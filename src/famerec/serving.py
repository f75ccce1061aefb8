"""HTTP service: top-k recommendations (with FAME's explanations) from one loaded run.

The model is loaded once at start, from safetensors only. Bad requests get a 4xx answer with
a message, never a 500, and the service keeps serving.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

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
            "experts": getattr(recommender.config.options, "num_experts", None),
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


def serve(run_dir: str, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu") -> None:
    import uvicorn

    recommender = Recommender(run_dir, device=device)
    app = create_app(recommender)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
