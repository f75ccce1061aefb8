"""HTTP service: top-k recommendations (with FAME's explanations) from one loaded run.

The model is loaded once at start, from safetensors only. Bad requests get a 4xx answer with
a short message that never echoes the input back, never a 500, and the service keeps serving.
Every request's work is bounded (body size, items, sequences x k), and scoring runs in worker
threads, so one large request never stalls /healthz or the other clients.

Concurrent requests are scored together: a micro-batcher gathers the /recommend requests (and
/recommend/batch requests of up to `max_batch` sequences) that arrive within `batch_wait_ms` of
the oldest waiting one, up to `max_batch` sequences, scores them with one model call and
answers each with its own result (or its own error).

What batching cannot share is kept small: a valid JSON request to /recommend or /recommend/batch
reaches its handler without FastAPI's routing (`DirectRoutes`; anything else takes the route),
a call's answers reach the event loop in one wake-up (`MicroBatcher.submit_async`), and an
answer's head and body leave in one send (`CoalescedWrites`).

No client holds a connection for long, and there are never more connections than the process
can open (`GuardedHTTP`, `ConnectionLimits`): an idle connection is closed after
`timeout_keep_alive`, a request must arrive whole within `timeout_request` of its first byte, and
at `max_connections` a new connection takes the place of the one that has waited longest for its
client (503 only when every connection is being answered), so the event loop never runs out of
descriptors and /healthz keeps answering. A message repeated in a burst is logged once per
`LOG_INTERVAL_S` (`OncePerInterval`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi import Query as Param
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from famerec import __version__
from famerec.errors import FamerecError
from famerec.serving.batcher import MicroBatcher
from famerec.serving.recommender import NoKnownItemsError, Query, Recommender, UnknownItemsError

MAX_ITEMS = 1000  # items per sequence in a request
MAX_BATCH = 1000  # sequences per batch request
MAX_K = 1000
MAX_BATCH_ITEMS = 50_000  # items over all sequences of a batch request
MAX_BATCH_RESULTS = 100_000  # sequences x k of a batch request: the size of the answer
DEFAULT_MAX_BODY_BYTES = 1 << 20
# Scores computed at once (rows x catalog size): bounds a batch's memory whatever the catalog.
SCORES_PER_CHUNK = 1 << 21
DEFAULT_BATCH_WAIT_MS = 0.5  # how long a request may wait for others to be scored with
MAX_BATCH_WAIT_MS = 1000.0
DEFAULT_MAX_BATCH = 64  # sequences scored together at most (and at most a chunk's rows)
MAX_REPORTED_ERRORS = 10  # validation errors listed in one answer
MAX_MESSAGE_CHARS = 300  # longest message (and 1/8 of it for a location part) in an answer
DEFAULT_MAX_CONNECTIONS = 1000  # open connections at most (fewer where the descriptor limit is low)
MAX_CONNECTIONS = 1_000_000
# connections accepted in one turn of the event loop (and the queue of those not yet accepted):
# a turn's connections count towards the cap only on the next turn
ACCEPT_BATCH = 128
# open files beside the connections under the cap: two turns of accepted connections (those
# replaced close a turn later), and the process's own (the run's files, pipes, logs)
RESERVED_DESCRIPTORS = 2 * ACCEPT_BATCH + 128
DEFAULT_TIMEOUT_KEEP_ALIVE = 5.0  # seconds an open connection may wait for its next request
DEFAULT_TIMEOUT_REQUEST = 30.0  # seconds a request may take to arrive, from its first byte
MAX_TIMEOUT = 3600.0
LOG_INTERVAL_S = 60.0  # a message repeated in a burst is logged once per interval

log = logging.getLogger("famerec.serving")

ItemIdField = StrictInt | StrictStr
Sequence = Annotated[
    list[ItemIdField],
    Field(
        min_length=1,
        max_length=MAX_ITEMS,
        fail_fast=True,  # one error for a list of bad ids, not one each
        description=f"item ids, oldest first: 1 to {MAX_ITEMS:,}; only the most recent max_len "
        "known items feed the model, all of them are excluded from the answer",
    ),
]
K = Annotated[int, Field(ge=1, le=MAX_K, strict=True, description=f"list length, 1 to {MAX_K:,}")]


class RequestModel(BaseModel):
    """A request body with a bounded number of validation errors: unknown fields make one
    error (not one per field, which a large body could multiply into seconds of work)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def no_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [name for name in data if name not in cls.model_fields]
            if unknown:
                shown = ", ".join(repr(_clip(str(name), 40)) for name in unknown[:3])
                more = f" and {len(unknown) - 3:,} more" if len(unknown) > 3 else ""
                raise ValueError(f"unknown fields {shown}{more}")
        return data


class RecommendRequest(RequestModel):
    items: Sequence
    k: K = 10
    explain: bool = Field(False, description="add FAME's per-head lists, gate and router weights")
    exclude_seen: bool = True
    strict: bool = Field(False, description="unknown item ids are an error instead of skipped")


BATCH_LIMITS = (
    f"A batch request holds at most {MAX_BATCH:,} sequences of up to {MAX_ITEMS:,} items, "
    f"{MAX_BATCH_ITEMS:,} items in all, and asks for at most {MAX_BATCH_RESULTS:,} results "
    "(sequences x k): send more as several requests."
)


class BatchRequest(RequestModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"description": BATCH_LIMITS})

    sequences: list[Sequence] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        fail_fast=True,
        description=f"1 to {MAX_BATCH:,} sequences, at most {MAX_BATCH_ITEMS:,} items in all",
    )
    k: K = Field(
        10, description=f"list length, 1 to {MAX_K:,}; sequences x k at most {MAX_BATCH_RESULTS:,}"
    )
    exclude_seen: bool = True
    strict: bool = False

    @model_validator(mode="after")
    def bounded_work(self) -> BatchRequest:
        items = sum(len(sequence) for sequence in self.sequences)
        if items > MAX_BATCH_ITEMS:
            raise ValueError(
                f"the batch holds {items:,} items, more than {MAX_BATCH_ITEMS:,} in all: "
                "split it into several requests"
            )
        results = len(self.sequences) * self.k
        if results > MAX_BATCH_RESULTS:
            raise ValueError(
                f"sequences x k is {results:,}, more than {MAX_BATCH_RESULTS:,}: "
                "ask for a smaller k or split the batch"
            )
        return self


class ScoredItem(BaseModel):
    item: ItemIdField
    score: float
    name: str | None = Field(None, description="the item's name, for runs trained with --items")


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    unknown: list[ItemIdField]
    used: int = Field(description="known items in the request")
    heads: list[dict[str, Any]] | None = None
    note: str | None = None


class BatchResponse(BaseModel):
    results: list[RecommendResponse]


class ValidationDetail(BaseModel):
    loc: list[str | int] = Field(description="where in the request, e.g. body, items, 3")
    msg: str


class ValidationAnswer(BaseModel):
    detail: list[ValidationDetail]


class ErrorAnswer(BaseModel):
    detail: str


JSON = "application/json"


def json_bytes(content: Any) -> bytes:
    """JSON as Starlette's JSONResponse writes it. A batch answer is encoded one result at a
    time: json.dumps holds the GIL for a whole call, and one call over megabytes would stall
    the event loop's thread meanwhile."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def results_json(results: Iterable[bytes]) -> bytes:
    """A batch answer from its results, each already encoded."""
    return b'{"results":[' + b",".join(results) + b"]}"


@dataclass(frozen=True)
class Job:
    """A request for the micro-batcher: one /recommend, or a whole small /recommend/batch."""

    queries: tuple[Query, ...]
    batch: bool  # a /recommend/batch request: all its results, or its first error

    def answer(self, answers: list) -> bytes | FamerecError:
        """The request's JSON answer from its queries' answers, or the error it gets."""
        for position, answer in enumerate(answers):
            if isinstance(answer, NoKnownItemsError) and len(answers) > 1:
                return NoKnownItemsError(f"sequence {position} has no item the model knows")
            if isinstance(answer, FamerecError):
                return answer
        encoded = [json_bytes(answer.to_dict()) for answer in answers]
        return results_json(encoded) if self.batch else encoded[0]


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Location and message of the first errors, never the offending input: the answer stays
    small (and valid JSON: NaN is not) whatever the request held."""
    details = []
    for error in errors[:MAX_REPORTED_ERRORS]:
        message = error.get("msg", "invalid")
        reason = error.get("ctx", {}).get("error")
        if error.get("type") == "json_invalid" and isinstance(reason, str):
            message = f"{message}: {reason}"  # json's reason names a position, not the input
        where = [
            part if isinstance(part, int) else _clip(str(part), MAX_MESSAGE_CHARS // 8)
            for part in error.get("loc", ())
        ]
        details.append({"loc": where, "msg": _clip(message)})
    if len(errors) > MAX_REPORTED_ERRORS:
        more = len(errors) - MAX_REPORTED_ERRORS
        details.append({"loc": ["body"], "msg": f"and {more:,} more errors"})
    return details


class BodySizeLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 without being read further.

    A declared Content-Length is checked before anything is read; a chunked or undeclared body
    is counted as it arrives. An accepted body is handed to the app in one message.
    """

    def __init__(self, app: Callable, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay(whole, receive), send)  # then only http.disconnect

    async def _too_large(self, scope: dict, receive: Callable, send: Callable) -> None:
        answer = JSONResponse(
            status_code=413,
            content={"detail": f"request body over the limit of {self.max_bytes:,} bytes"},
            headers={"connection": "close"},  # do not read (or wait for) the rest of it
        )
        await answer(scope, receive, send)


Handler = Callable[[Any], Awaitable[Response]]


class DirectRoutes:
    """ASGI middleware: a plainly valid POST to one of `routes` skips FastAPI's routing.

    `routes` maps a path to its request model and handler. A request whose body is JSON
    (content-type application/json) that the model accepts goes to the handler at once, with
    the answer the route itself gives, a FamerecError's 422 included; anything else (another
    content type, bad JSON, a body the model refuses, another method or path) goes on to the
    app with its body, and gets the app's own answer, errors and all. FastAPI's route costs a
    few hundred microseconds of Python per request (routing, dependency solving, middleware
    layers): more than scoring one request costs in a batch. The body arrives in one message
    (`BodySizeLimit` sits outside). `answered[path]` counts the requests answered here.
    """

    def __init__(
        self,
        app: Callable,
        routes: dict[str, tuple[type[BaseModel], Handler]],
        answered: dict[str, int] | None = None,
    ):
        self.app = app
        self.routes = routes
        self.answered = {} if answered is None else answered

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        route = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = self.routes.get(scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        message = await receive()
        request = None
        if message["type"] == "http.request" and not message.get("more_body", False):
            request = self._parse(route[0], scope["headers"], message.get("body", b""))
        if request is None:
            await self.app(scope, _replay(message, receive), send)
            return
        self.answered[scope["path"]] = self.answered.get(scope["path"], 0) + 1
        try:
            response = await route[1](request)
        except FamerecError as error:
            response = famerec_error_answer(error)
        await response(scope, receive, send)

    @staticmethod
    def _parse(model: type[BaseModel], headers: list, body: bytes) -> BaseModel | None:
        """The request, if its content type is JSON and the model accepts it; else None."""
        for name, value in headers:
            if name == b"content-type":
                if value.split(b";", 1)[0].strip().lower() != b"application/json":
                    return None
                break
        else:
            return None  # FastAPI's rules for an undeclared type: left to it
        try:
            return model.model_validate(json.loads(body))
        except Exception:  # bad JSON, a refused body, too deep: the app's own answer
            return None


def _replay(message: dict, receive: Callable) -> Callable:
    """`receive` that gives `message` first, then what `receive` gives."""
    delivered = False

    async def replay() -> dict:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return message

    return replay


def famerec_error_answer(error: FamerecError) -> JSONResponse:
    """A request's own FamerecError (unknown ids with strict, no known item, ...): 422."""
    return JSONResponse(status_code=422, content={"detail": _clip(str(error))})


def create_app(
    recommender: Recommender,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> FastAPI:
    """The service's app. `batch_wait_ms` > 0 scores concurrent requests together (0: one
    request at a time); `max_batch` bounds the sequences scored at once."""
    check_body_limit(max_body_bytes)
    check_batching(batch_wait_ms, max_batch)
    # Scoring is matrix work on all cores: serialize it instead of letting many threads fight
    # over the same cores. It runs in the batcher's thread and in worker threads (batches too
    # large to join others, and every request when batching is off), so the event loop keeps
    # answering.
    lock = threading.Lock()
    chunk_rows = max(1, SCORES_PER_CHUNK // (recommender.num_items + 1))

    def answer_jobs(jobs: list[Job]) -> list[bytes | FamerecError]:
        queries = [query for job in jobs for query in job.queries]
        with lock:
            answers = recommender.answer_each(queries)
        results, start = [], 0
        for job in jobs:
            results.append(job.answer(answers[start : start + len(job.queries)]))
            start += len(job.queries)
        return results

    # an explained request scores every head: it takes as many rows of the chunk as heads
    explained_rows = recommender.config.model.num_heads if recommender.model.explains else 1
    batcher = None
    if batch_wait_ms > 0:
        capacity = min(max_batch, chunk_rows)
        batcher = MicroBatcher(answer_jobs, capacity, batch_wait_ms / 1000, "famerec-batcher")

    async def scored_together(job: Job) -> Response:
        size = sum(explained_rows if query.explain else 1 for query in job.queries)
        # the batcher raises the request's own error (a FamerecError: 422) here
        return Response(await batcher.submit_async(job, size), media_type=JSON)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if batcher is not None:
            await run_in_threadpool(batcher.close)  # answers what is pending, then stops

    app = FastAPI(
        lifespan=lifespan,
        title="famerec",
        version=__version__,
        description=f"Top-k recommendations from the {recommender.model_name} run "
        f"{recommender.run_dir}. Request bodies over {max_body_bytes:,} bytes get 413. "
        + BATCH_LIMITS,
    )
    # the routes that valid requests reach directly: filled in below, once their handlers exist
    direct: dict[str, tuple[type[BaseModel], Handler]] = {}
    app.state.answered_directly = {}  # path -> requests answered without FastAPI's routing
    app.add_middleware(DirectRoutes, routes=direct, answered=app.state.answered_directly)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)  # the outer one: added last
    app.state.batcher = batcher  # None when off
    errors = {
        413: {"model": ErrorAnswer, "description": "request body over the size limit"},
        422: {"model": ValidationAnswer, "description": "invalid request"},
    }

    add_error_handlers(app)
    add_reading_routes(app, recommender, lock, errors)

    def recommend_one(request: RecommendRequest) -> JSONResponse:
        with lock:
            if request.explain:
                answer = recommender.explain(
                    request.items, request.k, request.exclude_seen, request.strict
                )
            else:
                answer = recommender.recommend(
                    request.items, request.k, request.exclude_seen, request.strict
                )
        return JSONResponse(answer.to_dict())

    def recommend_many(request: BatchRequest) -> JSONResponse:
        results = []
        for start in range(0, len(request.sequences), chunk_rows):
            chunk = request.sequences[start : start + chunk_rows]
            with lock:  # per chunk: single requests get their turn in between
                try:
                    part = recommender.recommend_batch(
                        chunk, request.k, request.exclude_seen, request.strict
                    )
                except UnknownItemsError:
                    raise
                except FamerecError:
                    if len(request.sequences) > 1:
                        _name_unusable_sequence(recommender, chunk, start)
                    raise
            results.extend(json_bytes(recommendation.to_dict()) for recommendation in part)
        return Response(results_json(results), media_type=JSON)

    # The handlers are async and hand scoring and JSON encoding (the slow parts) to worker
    # threads; returning the finished response skips FastAPI's encoding on the event loop.
    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        response_model_exclude_none=True,
        responses=errors,
    )
    async def recommend(request: RecommendRequest) -> Response:
        return await answer_one(request)

    async def answer_one(request: RecommendRequest) -> Response:
        if batcher is not None:
            query = Query(
                request.items, request.k, request.exclude_seen, request.strict, request.explain
            )
            return await scored_together(Job((query,), batch=False))
        return await run_in_threadpool(recommend_one, request)

    @app.post(
        "/recommend/batch",
        response_model=BatchResponse,
        response_model_exclude_none=True,
        responses=errors,
        description=BATCH_LIMITS,
    )
    async def recommend_batch(request: BatchRequest) -> Response:
        return await answer_many(request)

    async def answer_many(request: BatchRequest) -> Response:
        if batcher is not None and len(request.sequences) <= batcher.capacity:
            queries = tuple(
                Query(items, request.k, request.exclude_seen, request.strict)
                for items in request.sequences
            )
            return await scored_together(Job(queries, batch=True))
        return await run_in_threadpool(recommend_many, request)  # in chunks, one at a time

    direct["/recommend"] = (RecommendRequest, answer_one)
    direct["/recommend/batch"] = (BatchRequest, answer_many)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """A FamerecError is a 422 with its one line; an invalid request a 422 listing what is
    wrong, without echoing the input."""

    @app.exception_handler(FamerecError)
    async def bad_request(request: Request, error: FamerecError):
        return famerec_error_answer(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": validation_details(error.errors())})


def add_reading_routes(
    app: FastAPI, recommender: Recommender, lock: threading.Lock, errors: dict[int, Any]
) -> None:
    """The routes that read the run and score nothing of a request's own: /healthz, the
    explorer page, /user/{id}, /model, /items and /facets."""

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def explorer() -> HTMLResponse:
        from famerec.serving.explorer import PAGE  # one self-contained page over the endpoints here

        return HTMLResponse(PAGE)

    @app.get("/user/{user_id}", responses=errors)
    def user(user_id: str) -> dict[str, Any]:
        """A known user's whole history, oldest first, with item names where the run has
        them (unknown users get 422)."""
        history = recommender.user_history(user_id)
        names = recommender.item_names(history) or [None] * len(history)
        return {
            "user": user_id,
            "items": [
                {"item": item, **({"name": name} if name is not None else {})}
                for item, name in zip(history, names)
            ],
        }

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
            "names": recommender.has_names,  # the run has an item table (--items)
            "explains": recommender.model.explains,  # per-head lists and weights (FAME)
            "metrics": {key: metrics.get(key) for key in ("valid", "test", "best_epoch")},
        }

    @app.get("/items", responses=errors)
    def items(
        id: Annotated[list[str] | None, Param(max_length=MAX_ITEMS)] = None,  # noqa: A002
        name: Annotated[str | None, Param(max_length=1000)] = None,
    ) -> dict[str, Any]:
        """Names and attributes of items (`?id=12&id=7`) from the run's item table (`--items`);
        unknown ids are left out, ids the data's rules refuse get 422. `?name=...`: the items
        of that name (any case), else up to 10 whose name holds it."""
        wanted = list(id or []) + (recommender.items_named(name) if name else [])
        return {"items": recommender.item_info(wanted)}

    @app.get("/facets", responses=errors)
    def facets(
        k: int = Param(10, ge=1, le=100), users: int = Param(1000, ge=1, le=100_000)
    ) -> dict[str, Any]:
        """`famerec explain --facets` on `users` sampled test users: how concentrated each
        head's top-k lists are in item attributes, beside the integrated and random lists
        (FAME runs; others get 422). Computed once per (k, users), then kept."""
        with lock:
            return recommender.facets(k, users)


def _name_unusable_sequence(recommender: Recommender, chunk: list, start: int) -> None:
    """recommend_batch numbers sequences within the chunk; name the one of the whole request."""
    for offset, items in enumerate(chunk):
        if not recommender.encode(items)[0]:
            raise FamerecError(f"sequence {start + offset} has no item the model knows")


DEVICES = ("cpu", "cuda", "auto")  # what resolve_device checks; "cuda:1" would fail late


def check_body_limit(max_body_bytes: int) -> None:
    if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise FamerecError(f"--max-body-bytes must be a positive integer, got {max_body_bytes}")


def check_batching(batch_wait_ms: float, max_batch: int) -> None:
    if not isinstance(batch_wait_ms, (int, float)) or not 0 <= batch_wait_ms <= MAX_BATCH_WAIT_MS:
        raise FamerecError(
            f"--batch-wait-ms must be between 0 and {MAX_BATCH_WAIT_MS:,.0f} "
            f"(0: no batching), got {batch_wait_ms}"
        )
    if not isinstance(max_batch, int) or not 1 <= max_batch <= MAX_BATCH:
        raise FamerecError(f"--max-batch must be between 1 and {MAX_BATCH:,}, got {max_batch}")


def check_serve_options(
    port: int,
    device: str,
    max_body_bytes: int,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    timeout_keep_alive: float = DEFAULT_TIMEOUT_KEEP_ALIVE,
    timeout_request: float = DEFAULT_TIMEOUT_REQUEST,
) -> None:
    """Reject bad options before the (slow) model load, each with one line."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise FamerecError(f"--port must be between 0 and 65535 (0: any free port), got {port}")
    if device not in DEVICES:
        raise FamerecError(f"--device must be cpu, cuda or auto, got {device!r}")
    check_body_limit(max_body_bytes)
    check_batching(batch_wait_ms, max_batch)
    check_connection_limits(max_connections, timeout_keep_alive, timeout_request)


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket, or a FamerecError that says why not (port in use, ...).

    Made from getaddrinfo's answer so that its protocol is TCP: asyncio turns Nagle's algorithm
    off only on such sockets, and with it on, every answer waited ~40 ms for a delayed ACK.
    """
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        if os.name == "posix":  # rebind right after a restart; a listening port stays taken
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
    except OSError as error:
        if sock is not None:
            sock.close()
        raise FamerecError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class CoalescedWrites:
    """A transport whose writes of one event-loop iteration leave together, in one send.

    uvicorn writes an answer's head and body separately, and each write of an idle transport
    is a send at once: two packets, two system calls and two wake-ups of the client for a
    small answer. Buffered here until the loop's next turn, they go out as one. Everything else
    is the transport's own; closing (or write_eof) sends what is buffered first, aborting drops
    it, as the transport itself does with its own buffer.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._buffered: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._buffered:
            self._loop.call_soon(self.flush)
        self._buffered.append(bytes(data))

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what is buffered to the transport now (a no-op if nothing is)."""
        if self._buffered:
            data = b"".join(self._buffered)
            self._buffered.clear()
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._buffered))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._buffered.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHTTP(AutoHTTPProtocol):
    """uvicorn's HTTP/1.1 protocol (h11, or httptools when installed) over `CoalescedWrites`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescedWrites(transport, self.loop))


# -- connections: a cap, and timeouts for clients that keep the service waiting -------------

SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 19\r\nretry-after: 1\r\nconnection: close\r\n\r\nService Unavailable"
)
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 15\r\nconnection: close\r\n\r\nRequest Timeout"
)


def check_connection_limits(
    max_connections: int, timeout_keep_alive: float, timeout_request: float
) -> None:
    if not isinstance(max_connections, int) or not 1 <= max_connections <= MAX_CONNECTIONS:
        raise FamerecError(
            f"--max-connections must be between 1 and {MAX_CONNECTIONS:,}, got {max_connections}"
        )
    for flag, seconds in (
        ("--timeout-keep-alive", timeout_keep_alive),
        ("--timeout-request", timeout_request),
    ):
        if not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_TIMEOUT:
            raise FamerecError(
                f"{flag} must be over 0 and at most {MAX_TIMEOUT:,.0f} seconds, got {seconds}"
            )


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections the service keeps open, and how long it waits for their clients.

    * `timeout_keep_alive` (seconds): a connection without a request in progress (a new one, or
      one whose answer has left) is closed after this long;
    * `timeout_request` (seconds): a request's headers and body must arrive within this long of
      its first byte, or it gets 408 and its connection is closed; a client that takes nothing
      of its answer for this long is dropped too;
    * `max_connections`: at the cap, a new connection takes the place of the one that has
      waited longest for its client (an idle one first, then one that is still sending its
      request or not reading its answer); only when every connection is being answered does
      the new one get 503.
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    timeout_keep_alive: float = DEFAULT_TIMEOUT_KEEP_ALIVE
    timeout_request: float = DEFAULT_TIMEOUT_REQUEST

    def __post_init__(self) -> None:
        check_connection_limits(self.max_connections, self.timeout_keep_alive, self.timeout_request)


class Connections:
    """A server's open connections, and those waiting for their clients, longest-waiting first
    (a dict keeps its order: a connection stays in its place while it waits for the same thing).
    `replaced` counts the connections closed to make room for new ones, `refused` the new ones
    that got 503."""

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits
        self.open: set[GuardedHTTP] = set()
        self.idle: dict[GuardedHTTP, None] = {}
        # sending a request, or not reading its answer
        self.in_request: dict[GuardedHTTP, None] = {}
        self.replaced = 0
        self.refused = 0

    def admit(self, connection: GuardedHTTP) -> bool:
        """Whether a new connection may stay: below the cap, or in the place of the connection
        that has waited longest for its client."""
        if len(self.open) >= self.limits.max_connections:
            waiting = self.idle or self.in_request
            if not waiting:
                self.refused += 1
                log.warning(
                    "%d connections open (--max-connections), all being answered: new ones get 503",
                    len(self.open),
                )
                return False
            self.replaced += 1
            log.warning(
                "%d connections open (--max-connections): closing the ones that waited longest "
                "for their clients to make room for new ones",
                len(self.open),
            )
            next(iter(waiting)).close_now()
        self.open.add(connection)
        return True

    def place(self, connection: GuardedHTTP, waiting: dict[GuardedHTTP, None] | None) -> None:
        """List an open connection under what it waits for (None: nothing, it is being answered)."""
        for listing in (self.idle, self.in_request):
            if listing is not waiting:
                listing.pop(connection, None)
        if waiting is not None and connection in self.open:
            waiting.setdefault(connection, None)  # one that was listed keeps its place

    def leave(self, connection: GuardedHTTP) -> None:
        self.open.discard(connection)
        self.place(connection, None)


class GuardedHTTP(CoalescingHTTP):
    """`CoalescingHTTP` that never waits long for a client, within a cap on connections.

    uvicorn times out only the wait after an answer: a client that sent nothing, half its
    headers or half its body kept its connection, and a descriptor, for ever; at the descriptor
    limit, accepting failed in a loop that logged each failure. Here what a connection waits for
    sets its timer (`ConnectionLimits`): the next request (a new connection, or after an
    answer): closed after `timeout_keep_alive`; the rest of a request whose first byte came:
    408 and closed `timeout_request` after that first byte. A request that has arrived whole is
    the service's to answer and has no timer, unless its client stops taking the answer (the
    transport pauses writing): dropped after `timeout_request` of that. `Connections` admits a
    new connection, closing the one that waited longest at the cap, or answers it 503.
    """

    def __init__(self, *args: Any, connections: Connections, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._guard = connections
        self._admitted = False
        self._waiting_for: str | None = None  # "next" request, the rest of the "request", None
        self._timer: asyncio.TimerHandle | None = None
        self._stalled: asyncio.TimerHandle | None = None  # the client takes none of its answer

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self._guard.admit(self):
            transport.write(SERVICE_UNAVAILABLE)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._wait_for("next")

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            super().data_received(data)
            self._follow(bytes_came=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow(bytes_came=False)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._admitted and self._stalled is None:
            self._stalled = self.loop.call_later(self._guard.limits.timeout_request, self.close_now)
            self._list()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
            self._list()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._stop_timers()
            self._guard.leave(self)
            super().connection_lost(exc)

    def _follow(self, bytes_came: bool) -> None:
        """Set the timer for what the connection waits for now."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # a request in progress
            self._wait_for("request" if cycle.more_body else None)
        else:  # bytes that make no whole request yet (the first ones, half its headers), or none
            self._wait_for("request" if bytes_came else "next")

    def _wait_for(self, what: str | None) -> None:
        if what == self._waiting_for:
            return  # the timer runs on: a request's counts from its first byte
        self._waiting_for = what
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if what is not None:
            limits = self._guard.limits
            seconds = limits.timeout_request if what == "request" else limits.timeout_keep_alive
            self._timer = self.loop.call_later(seconds, self._time_out)
        self._list()

    def _list(self) -> None:
        if self._waiting_for == "next":
            self._guard.place(self, self._guard.idle)
        elif self._waiting_for == "request" or self._stalled is not None:
            self._guard.place(self, self._guard.in_request)
        else:
            self._guard.place(self, None)

    def _time_out(self) -> None:
        self._timer = None
        cycle = self.cycle
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        if self._waiting_for == "request" and not answering:
            self.transport.write(REQUEST_TIMEOUT)
        self.close_now()

    def close_now(self) -> None:
        """Close the connection now; what its client has not taken of an answer is dropped."""
        self._stop_timers()
        self._guard.leave(self)
        self.transport.close()  # sends what is buffered here first
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # a client that does not read would hold it open

    def _stop_timers(self) -> None:
        for timer in (self._timer, self._stalled):
            if timer is not None:
                timer.cancel()
        self._timer = self._stalled = None


class OncePerInterval(logging.Filter):
    """A logging filter that lets each message through at most once per `interval` seconds;
    the next one to pass says how many were held back. A message is its logger, level and text
    (the template of a formatted one, the first line of a long one): asyncio, failing to accept
    at the descriptor limit, logged a traceback for each try, thousands a second."""

    def __init__(
        self, interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ):
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], list] = {}  # -> [when it last passed, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg).partition("\n")[0][:200])
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.interval:
                seen[1] += 1
                return False
            if seen is None and len(self._seen) >= 1000:  # bounded, whatever the messages
                self._seen.clear()
            held = 0 if seen is None else seen[1]
            self._seen[key] = [now, 0]
        if held:
            since = now - seen[0]
            record.msg = f"{record.msg} [and {held:,} more like it in the last {since:,.0f} s]"
        return True


# the event loop's, uvicorn's and the service's own
REPEATED_LOGS = ("asyncio", "uvicorn.error", "famerec.serving")


def limit_repeated_logs() -> None:
    """Log each message of REPEATED_LOGS at most once per LOG_INTERVAL_S (installed once)."""
    for name in REPEATED_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, OncePerInterval) for existing in logger.filters):
            logger.addFilter(OncePerInterval())


def fit_descriptor_limit(max_connections: int | None) -> int:
    """The connection cap of this process: `max_connections`, or when None the default,
    lowered where the limit on open files is too low to hold it. The soft limit is raised, as
    far as the hard one allows, to hold the cap and RESERVED_DESCRIPTORS more; a cap given that
    still does not fit is a FamerecError."""
    cap = DEFAULT_MAX_CONNECTIONS if max_connections is None else max_connections
    try:
        import resource
    except ImportError:  # no such limit to read here (not a POSIX system)
        return cap
    need = cap + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if raised > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
            except (OSError, ValueError):
                pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return cap
    room = soft - RESERVED_DESCRIPTORS
    if max_connections is None and room >= 1:
        return room
    raise FamerecError(
        f"--max-connections {cap:,} needs {need:,} open files, and this process may open "
        f"{soft:,} (ulimit -n): " + (f"give at most {room:,}" if room >= 1 else "raise the limit")
    )


class Server(uvicorn.Server):
    """uvicorn's server, quiet, that calls `on_ready()` once it accepts requests, not before.
    An answer's head and body leave in one send (`CoalescedWrites`); connections are held to
    `limits` (`GuardedHTTP`; `connections` counts them), and a message repeated in a burst is
    logged once per LOG_INTERVAL_S."""

    def __init__(
        self,
        app: FastAPI,
        on_ready: Callable[[], None] | None = None,
        limits: ConnectionLimits | None = None,
    ):
        self.connections = Connections(limits or ConnectionLimits())
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            http=partial(GuardedHTTP, connections=self.connections),
            backlog=ACCEPT_BATCH,
            # uvicorn's own timer after an answer: the same wait as ours
            timeout_keep_alive=self.connections.limits.timeout_keep_alive,
        )
        super().__init__(config)
        self.on_ready = on_ready
        limit_repeated_logs()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_ready is not None:
            self.on_ready()


def serve(
    run_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    max_body_bytes: int | None = None,
    on_ready: Callable[[str], None] | None = None,
    batch_wait_ms: float | None = None,
    max_batch: int | None = None,
    max_connections: int | None = None,
    timeout_keep_alive: float | None = None,
    timeout_request: float | None = None,
) -> None:
    """Load the run, bind, then serve until interrupted; `on_ready(url)` runs once the server
    accepts requests (port 0 binds any free port, which the url names). Options left None take
    the DEFAULT_ values (MAX_BODY_BYTES, BATCH_WAIT_MS, MAX_BATCH, TIMEOUT_KEEP_ALIVE,
    TIMEOUT_REQUEST; MAX_CONNECTIONS, or fewer where the limit on open files is low: see
    `fit_descriptor_limit`); batching as in `create_app`, connections as in `ConnectionLimits`."""
    if max_body_bytes is None:
        max_body_bytes = DEFAULT_MAX_BODY_BYTES
    if batch_wait_ms is None:
        batch_wait_ms = DEFAULT_BATCH_WAIT_MS
    if max_batch is None:
        max_batch = DEFAULT_MAX_BATCH
    if timeout_keep_alive is None:
        timeout_keep_alive = DEFAULT_TIMEOUT_KEEP_ALIVE
    if timeout_request is None:
        timeout_request = DEFAULT_TIMEOUT_REQUEST
    check_serve_options(
        port,
        device,
        max_body_bytes,
        batch_wait_ms,
        max_batch,
        DEFAULT_MAX_CONNECTIONS if max_connections is None else max_connections,
        timeout_keep_alive,
        timeout_request,
    )
    limits = ConnectionLimits(
        fit_descriptor_limit(max_connections), timeout_keep_alive, timeout_request
    )
    recommender = Recommender(run_dir, device=device)
    app = create_app(recommender, max_body_bytes, batch_wait_ms, max_batch)
    with listen(host, port) as sock:
        url = address_of(sock)
        ready = None if on_ready is None else lambda: on_ready(url)
        server = Server(app, on_ready=ready, limits=limits)
        server.run(sockets=[sock])
