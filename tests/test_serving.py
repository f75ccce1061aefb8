"""The HTTP service, started for real on a free local port and spoken to over HTTP."""

import asyncio
import json
import random
import re
import select
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import httpx
import pytest

from famerec import serving
from famerec.errors import FamerecError
from famerec.recommender import ExplainedRecommendation, HeadList, Recommendation, Recommender
from famerec.serving import Server, address_of, create_app, listen, validation_details
from tests.test_batcher import wait_for_pending
from tests.test_cli import assert_one_line_error, run_cli
from tests.test_recommender import assert_same_answer


@dataclass
class Service:
    """A `famerec serve` process on a port of its choice, and what it said when it started."""

    client: httpx.Client
    url: str
    announcement: str
    first_health: int | str  # status of /healthz asked once, right after the announcement


@pytest.fixture(scope="module")
def service(trained_runs):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "famerec",
            "serve",
            "--run",
            str(trained_runs["fame"]),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        said = []  # the server announces itself only once it serves; it may warn before that
        while not said or (said[-1] and "serving" not in said[-1]):
            said.append(process.stderr.readline())
        announcement = said[-1].strip()
        match = re.search(r" on (http://127\.0\.0\.1:\d+) ", announcement)
        if match is None:
            raise RuntimeError("server did not start: " + "".join(said))
        url = match.group(1)
        try:  # no retry: the announcement promises a listening server with the model loaded
            first_health: int | str = httpx.get(url + "/healthz", timeout=10).status_code
        except httpx.TransportError as error:
            first_health = repr(error)
        with httpx.Client(base_url=url, timeout=10) as client:
            yield Service(client, url, announcement, first_health)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(service):
    return service.client


def test_health_and_model(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    info = server.get("/model").json()
    assert info["model"] == "fame" and info["heads"] == 2 and info["experts"] == 4
    assert set(info["metrics"]["test"]) >= {"HR@10", "NDCG@10"}
    assert info["items"] == 30


def test_recommend(server):
    response = server.post("/recommend", json={"items": ["i1", "i2", "nope"], "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert len(body["items"]) == 5 and body["unknown"] == ["nope"] and body["used"] == 2
    scores = [entry["score"] for entry in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert "heads" not in body


def test_recommend_with_explanation(server):
    body = server.post("/recommend", json={"items": ["i1", "i2"], "k": 3, "explain": True}).json()
    assert len(body["heads"]) == 2
    assert sum(head["gate"] for head in body["heads"]) == pytest.approx(1.0, abs=1e-4)
    assert all(len(head["experts"]) == 4 and len(head["items"]) == 3 for head in body["heads"])


def test_batch(server):
    body = server.post(
        "/recommend/batch", json={"sequences": [["i1"], ["i2", "i3"]], "k": 2}
    ).json()
    assert [len(r["items"]) for r in body["results"]] == [2, 2]
    single = server.post("/recommend", json={"items": ["i2", "i3"], "k": 2}).json()
    batched = body["results"][1]["items"]
    assert [e["item"] for e in batched] == [e["item"] for e in single["items"]]
    for ours, theirs in zip(batched, single["items"]):
        assert ours["score"] == pytest.approx(theirs["score"], rel=1e-5)


@pytest.mark.parametrize(
    "payload",
    [
        b"this is not json",
        b'{"items": "i1"}',
        b'{"items": []}',
        b'{"items": ["i1"], "k": 0}',
        b'{"items": ["i1"], "k": 1001}',
        b'{"items": ["i1"], "k": "ten"}',
        b'{"items": [["i1"]]}',
        b'{"items": [true]}',
        b'{"items": ["nope"]}',
        b'{"items": ["i1", "nope"], "strict": true}',
        b'{"k": 3}',
        b'{"items": ["i1"], "surprise": 1}',
        ('{"items": [' + ",".join(['"i1"'] * 1001) + "]}").encode(),
    ],
)
def test_bad_requests_get_4xx_and_the_service_keeps_serving(server, payload):
    response = server.post(
        "/recommend", content=payload, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]
    assert server.get("/healthz").status_code == 200


def test_bad_batch_requests(server):
    assert server.post("/recommend/batch", json={"sequences": []}).status_code == 422
    too_many = {"sequences": [["i1"]] * 1001}
    assert server.post("/recommend/batch", json=too_many).status_code == 422
    assert server.post("/recommend/batch", json={"sequences": [["nope"]]}).status_code == 422


def test_openapi_docs(server):
    spec = server.get("/openapi.json").json()
    assert {"/recommend", "/recommend/batch", "/healthz", "/model"} <= set(spec["paths"])
    assert server.get("/docs").status_code == 200


def test_openapi_docs_state_the_limits(server):
    spec = server.get("/openapi.json").json()
    batch = spec["components"]["schemas"]["BatchRequest"]
    assert "50,000 items in all" in batch["description"]
    assert "100,000 results" in batch["description"]
    assert "sequences x k at most 100,000" in batch["properties"]["k"]["description"]
    assert "1 to 1,000 sequences" in batch["properties"]["sequences"]["description"]
    assert "1,048,576 bytes get 413" in spec["info"]["description"]
    assert "413" in spec["paths"]["/recommend/batch"]["post"]["responses"]


# -- the server announces itself only when it serves; bad options are one line ---------------


def test_serve_announces_itself_only_once_it_serves(service, trained_runs):
    assert service.announcement == (
        f"famerec: serving {trained_runs['fame']} on {service.url} (API docs at {service.url}/docs)"
    )
    assert service.first_health == 200


def test_answers_are_not_held_back(server):
    # a listening socket that asyncio did not know as TCP kept Nagle's algorithm on: every
    # answer (headers and body are two writes) then waited ~40 ms for the client's delayed ACK
    round_trips = []
    for _ in range(11):
        started = time.perf_counter()
        assert server.get("/healthz").status_code == 200
        round_trips.append(time.perf_counter() - started)
    assert sorted(round_trips)[5] < 0.02


@pytest.mark.parametrize(
    "options, words",
    [
        (["--port", "70000"], ["--port must be between 0 and 65535", "70000"]),
        (["--port", "-1"], ["--port must be between 0 and 65535", "-1"]),
        (["--device", "tpu"], ["--device must be cpu, cuda or auto", "'tpu'"]),
        (["--max-body-bytes", "0"], ["--max-body-bytes must be a positive integer"]),
        (["--batch-wait-ms", "-1"], ["--batch-wait-ms must be between 0 and 1,000", "-1.0"]),
        (["--batch-wait-ms", "1001"], ["--batch-wait-ms must be between 0 and 1,000", "1001"]),
        (["--batch-wait-ms", "nan"], ["--batch-wait-ms must be between 0 and 1,000", "nan"]),
        (["--max-batch", "0"], ["--max-batch must be between 1 and 1,000", "got 0"]),
        (["--max-batch", "1001"], ["--max-batch must be between 1 and 1,000", "1001"]),
        (["--max-connections", "0"], ["--max-connections must be between 1 and 1,000,000"]),
        (["--timeout-keep-alive", "0"], ["--timeout-keep-alive must be over 0", "got 0.0"]),
        (["--timeout-request", "-1"], ["--timeout-request must be over 0", "-1.0"]),
        (["--timeout-request", "nan"], ["--timeout-request must be over 0", "nan"]),
        (["--timeout-keep-alive", "3601"], ["at most 3,600 seconds", "3601"]),
    ],
)
def test_serve_bad_options_are_one_line(trained_runs, capsys, options, words):
    code, _, err = run_cli(["serve", "--run", str(trained_runs["fame"]), *options], capsys)
    assert_one_line_error(code, err, *words)
    assert "serving" not in err


def test_serve_on_a_port_in_use_is_one_line(trained_runs, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        args = ["serve", "--run", str(trained_runs["fame"]), "--port", str(port)]
        code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, f"cannot listen on 127.0.0.1:{port}", "in use")
    assert "serving" not in err


# -- NaN, Infinity and error answers that never echo the input ------------------------------


def post_json_text(client: httpx.Client, path: str, text: bytes) -> httpx.Response:
    return client.post(path, content=text, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    "path, text, where",
    [
        ("/recommend", b'{"items": ["i1"], "k": NaN}', ["body", "k"]),
        ("/recommend", b'{"items": ["i1"], "k": Infinity}', ["body", "k"]),
        ("/recommend", b'{"items": ["i1"], "k": -Infinity}', ["body", "k"]),
        ("/recommend", b'{"items": [NaN]}', ["body", "items", 0, "int"]),
        ("/recommend/batch", b'{"sequences": [["i1"]], "k": NaN}', ["body", "k"]),
    ],
)
def test_nan_and_infinity_get_422_with_a_message(server, path, text, where):
    # Python's json reads these literals; echoing them back made an invalid JSON answer (500)
    response = post_json_text(server, path, text)
    assert response.status_code == 422
    assert response.json()["detail"][0] == {"loc": where, "msg": "Input should be a valid integer"}
    assert server.get("/healthz").status_code == 200


HUGE = "z" * 200_000


@pytest.mark.parametrize(
    "path, payload",
    [
        ("/recommend", {"items": ["i1"], "k": HUGE}),
        ("/recommend", {"items": ["i1", 2.5, HUGE, *range(900)]}),
        ("/recommend", {"items": ["i1"], HUGE: 1}),
        ("/recommend", {"items": ["i1"], **{f"extra{n}": n for n in range(30_000)}}),
        ("/recommend/batch", {"sequences": [[True] * 1000] * 100, "k": HUGE}),
    ],
)
def test_errors_name_the_place_and_never_echo_the_input(server, path, payload):
    response = server.post(path, json=payload)
    assert response.status_code == 422
    assert (
        len(response.content) < 2_000
        and "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz" not in response.text
    )
    detail = response.json()["detail"]
    if isinstance(detail, list):  # validation errors: where and what, nothing else
        assert detail and all(set(entry) == {"loc", "msg"} for entry in detail)


def test_unknown_ids_are_named_within_a_bounded_answer(server):
    response = server.post("/recommend", json={"items": [HUGE, "i1"], "strict": True})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("1 unknown item ids: 'zzz")
    assert len(response.content) < 400


def test_validation_details_are_bounded():
    errors = [
        {"type": "int_type", "loc": ("body", "x" * 1000, n), "msg": "m" * 1000, "input": "secret"}
        for n in range(15)
    ]
    details = validation_details(errors)
    assert len(details) == 11 and details[-1] == {"loc": ["body"], "msg": "and 5 more errors"}
    assert all(len(json.dumps(entry)) < 400 for entry in details)
    assert "secret" not in json.dumps(details)


# -- request bodies over the size limit, shown on a real socket ------------------------------


def open_post(url: str, path: str, headers: dict[str, str]) -> socket.socket:
    """A raw HTTP/1.1 POST whose headers are sent and whose body is up to the caller."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    lines = [f"POST {path} HTTP/1.1", f"host: {host}", "content-type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass  # closed with some of what we sent unread; what came before the reset is the answer
    return answer


def test_declared_too_large_body_gets_413_before_it_is_sent(service):
    started = time.monotonic()
    with open_post(service.url, "/recommend", {"content-length": str(50 * 2**20)}) as sock:
        answer = read_until_closed(sock)  # the server answers and closes; no body was sent
    assert time.monotonic() - started < 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower()
    assert json.loads(body) == {"detail": "request body over the limit of 1,048,576 bytes"}
    assert service.client.get("/healthz").status_code == 200


def test_streamed_too_large_body_is_cut_off_and_healthz_answers_meanwhile(service):
    piece = b"1," * 32768  # 64 KiB
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    with open_post(service.url, "/recommend/batch", {"transfer-encoding": "chunked"}) as sock:
        sock.sendall(chunk * 16)  # exactly the limit, 1 MiB: the upload stays open
        assert service.client.get("/healthz", timeout=5).json() == {"status": "ok"}
        assert select.select([sock], [], [], 0.3)[0] == []  # no answer at the limit
        sock.sendall(b"a\r\n1,1,1,1,1,\r\n")  # 10 bytes more, and no last chunk: unfinished
        crossed = time.monotonic()
        answer = read_until_closed(sock)  # the server answers without the rest
    assert time.monotonic() - crossed < 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body) == {"detail": "request body over the limit of 1,048,576 bytes"}
    assert service.client.get("/healthz").status_code == 200


@contextmanager
def serving_in_thread(app):
    """The app behind a real socket, served by famerec's uvicorn server in this process, and
    an HTTP client for it."""
    sock = listen("127.0.0.1", 0)
    ready = threading.Event()
    server = Server(app, on_ready=ready.set)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        assert ready.wait(30)
        with httpx.Client(base_url=address_of(sock), timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def recommender(trained_runs):
    return Recommender(trained_runs["fame"])


def test_body_limit_is_configurable(recommender):
    with serving_in_thread(create_app(recommender, max_body_bytes=40)) as client:
        fits = b'{"items": ["i1", "i2"], "k": 2}'
        assert post_json_text(client, "/recommend", fits).status_code == 200
        too_long = b'{"items": ["i1", "i2", "i3", "i4"], "k": 2}'
        response = post_json_text(client, "/recommend", too_long)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body over the limit of 40 bytes"}


# -- bounded work per request, scored in chunks, off the event loop ---------------------------


def test_batch_work_is_bounded(server):
    items = server.post("/recommend/batch", json={"sequences": [["i1"] * 1000] * 51})
    assert items.status_code == 422
    assert "51,000 items, more than 50,000 in all" in items.json()["detail"][0]["msg"]
    results = server.post("/recommend/batch", json={"sequences": [["i1"]] * 101, "k": 1000})
    assert results.status_code == 422
    assert "sequences x k is 101,000, more than 100,000" in results.json()["detail"][0]["msg"]
    largest = {"sequences": [["i1", "i2"] * 25] * 1000, "k": 100, "exclude_seen": False}
    body = server.post("/recommend/batch", json=largest).json()
    assert len(body["results"]) == 1000
    assert all(len(result["items"]) == 30 for result in body["results"])  # k capped at 30 items


def test_batches_are_scored_in_chunks_like_one_batch(recommender, monkeypatch):
    monkeypatch.setattr(serving.app, "SCORES_PER_CHUNK", 3 * (recommender.num_items + 1))
    calls = []
    score_batch = recommender.recommend_batch

    def counted(sequences, *args):
        calls.append(len(sequences))
        return score_batch(sequences, *args)

    app = create_app(recommender)
    monkeypatch.setattr(recommender, "recommend_batch", counted)
    sequences = [[f"i{1 + (row * 7 + j) % 30}" for j in range(1 + row % 5)] for row in range(10)]
    with serving_in_thread(app) as client:
        body = client.post("/recommend/batch", json={"sequences": sequences, "k": 5}).json()
        assert calls == [3, 3, 3, 1]
        unusable = [*sequences[:7], ["nope"], *sequences[8:]]
        response = client.post("/recommend/batch", json={"sequences": unusable})
    # named by its place in the request, not in its chunk
    assert response.json() == {"detail": "sequence 7 has no item the model knows"}
    for ours, expected in zip(body["results"], score_batch(sequences, 5)):
        assert [entry["item"] for entry in ours["items"]] == expected.items
        # padded to its chunk's longest sequence: the same scores up to float rounding
        assert [entry["score"] for entry in ours["items"]] == pytest.approx(
            expected.scores, rel=1e-5
        )


def test_scoring_does_not_block_other_clients(trained_runs):
    recommender = Recommender(trained_runs["fame"])  # its own: the model gets a gate
    scoring, release = threading.Event(), threading.Event()
    score = recommender.model.score

    def gated_score(batch):
        scoring.set()
        release.wait(30)
        return score(batch)

    recommender.model.score = gated_score
    request = {"sequences": [["i1", "i2"], ["i3"]], "k": 3}
    app = create_app(recommender)
    with serving_in_thread(app) as client, ThreadPoolExecutor(1) as pool:
        url = str(client.base_url)
        pending = pool.submit(httpx.post, url + "/recommend/batch", json=request, timeout=30)
        try:
            assert scoring.wait(10)
            assert client.get("/healthz", timeout=5).json() == {"status": "ok"}
            assert client.get("/model", timeout=5).json()["items"] == 30
            assert not pending.done()  # the batch is still being scored
        finally:
            release.set()
        assert pending.result().status_code == 200
        assert len(pending.result().json()["results"]) == 2


# -- concurrent requests scored together, each answered with its own result ------------------


def answer_from_json(body: dict) -> Recommendation | ExplainedRecommendation:
    def listed(entries: list[dict]) -> tuple[list, list]:
        return [e["item"] for e in entries], [e["score"] for e in entries]

    recommendation = Recommendation(*listed(body["items"]), body["unknown"], body["used"])
    if "heads" not in body:
        return recommendation
    heads = [
        HeadList(h["head"], h["gate"], h["experts"], *listed(h["items"])) for h in body["heads"]
    ]
    return ExplainedRecommendation(recommendation, heads, body.get("note", ""))


def assert_same_response(ours: httpx.Response, expected: httpx.Response) -> None:
    """The same status and answer, scores up to float rounding (see assert_same_answer)."""
    assert ours.status_code == expected.status_code, ours.text
    body, theirs = ours.json(), expected.json()
    if ours.status_code != 200:
        assert body == theirs
    elif "results" in body:
        assert len(body["results"]) == len(theirs["results"])
        for one, other in zip(body["results"], theirs["results"]):
            assert_same_answer(answer_from_json(one), answer_from_json(other))
    else:
        assert_same_answer(answer_from_json(body), answer_from_json(theirs))


MIXED_REQUESTS = [  # path, body, rows it takes in a batch (an explained one: one per head)
    ("/recommend", {"items": ["i1", "i2", "i3"], "k": 5}, 1),
    ("/recommend", {"items": ["i4", "nope"], "k": 3, "exclude_seen": False}, 1),
    ("/recommend", {"items": ["i5", "nope"], "strict": True}, 1),  # 422: unknown ids
    ("/recommend", {"items": ["never", "nope"]}, 1),  # 422: no known item
    ("/recommend", {"items": ["i8", "i9"], "k": 4, "explain": True}, 2),
    ("/recommend", {"items": ["i6"] * 20 + ["i7"], "k": 30}, 1),
    ("/recommend/batch", {"sequences": [["i1"], ["i2", "i3"], ["i4", "x"]], "k": 2}, 3),
    ("/recommend/batch", {"sequences": [["i1"], ["never"]]}, 2),  # 422: sequence 1
    ("/recommend/batch", {"sequences": [["i2"], ["i3", "x"]], "strict": True}, 2),  # 422
    ("/recommend", {"items": ["i2", "i10", "i11"], "k": 2, "explain": True}, 2),
    ("/recommend", {"items": ["i12"], "k": 1}, 1),
]


def test_concurrent_requests_are_scored_together_each_with_its_own_answer(trained_runs):
    recommender = Recommender(trained_runs["fame"])  # its own: answer_each gets a gate
    with serving_in_thread(create_app(recommender, batch_wait_ms=0)) as unbatched:
        expected = [unbatched.post(path, json=body) for path, body, _ in MIXED_REQUESTS]
    calls, scoring, release = [], threading.Event(), threading.Event()
    answer_each = recommender.answer_each

    def gated(queries):
        calls.append(len(queries))
        scoring.set()
        assert release.wait(30)
        return answer_each(queries)

    recommender.answer_each = gated
    app = create_app(recommender)
    with serving_in_thread(app) as client, ThreadPoolExecutor(len(MIXED_REQUESTS) + 1) as pool:
        url = str(client.base_url)
        first = pool.submit(httpx.post, url + "/recommend", json={"items": ["i1"]}, timeout=30)
        try:
            assert scoring.wait(10)  # the first request holds the model: the others queue
            pending = [
                pool.submit(httpx.post, url + path, json=body, timeout=30)
                for path, body, _ in MIXED_REQUESTS
            ]
            wait_for_pending(app.state.batcher, sum(rows for _, _, rows in MIXED_REQUESTS))
        finally:
            release.set()
        answers = [future.result() for future in pending]
    assert first.result().status_code == 200
    assert calls == [1, 15]  # all the others (15 sequences) in one call
    for ours, theirs in zip(answers, expected):
        assert_same_response(ours, theirs)
    statuses = [200, 200, 422, 422, 200, 200, 200, 422, 422, 200, 200]
    assert [answer.status_code for answer in answers] == statuses  # errors stay their own
    assert answers[7].json() == {"detail": "sequence 1 has no item the model knows"}


def test_many_concurrent_clients_each_get_the_answer_for_their_own_sequence(
    recommender, monkeypatch
):
    clients, each = 16, 6
    rng = random.Random(0)
    requests = [
        {"items": [f"i{rng.randint(1, 30)}" for _ in range(rng.randint(1, 15))], "k": 1 + n % 10}
        for n in range(clients * each)
    ]
    scored = []
    answer_each = recommender.answer_each
    monkeypatch.setattr(
        recommender,
        "answer_each",
        lambda queries: scored.append(len(queries)) or answer_each(queries),
    )

    def one_client(start: int) -> list[tuple[dict, dict]]:
        with httpx.Client(base_url=url, timeout=30) as http:
            mine = requests[start::clients]
            return [(body, http.post("/recommend", json=body).json()) for body in mine]

    with serving_in_thread(create_app(recommender, batch_wait_ms=2)) as client:
        url = str(client.base_url)
        with ThreadPoolExecutor(clients) as pool:
            answered = [pair for part in pool.map(one_client, range(clients)) for pair in part]
    assert len(answered) == len(requests) and sum(scored) == len(requests)  # each scored once
    for request, body in answered:
        expected = recommender.recommend(request["items"], request["k"])
        assert_same_answer(answer_from_json(body), expected)


def test_batching_off_scores_one_request_at_a_time(recommender, monkeypatch):
    app = create_app(recommender, batch_wait_ms=0)
    assert app.state.batcher is None
    monkeypatch.setattr(recommender, "answer_each", None)  # never used
    body = {"items": ["i1", "i2"], "k": 3}
    with serving_in_thread(app) as client, ThreadPoolExecutor(4) as pool:
        url = str(client.base_url) + "/recommend"
        answers = list(pool.map(lambda _: httpx.post(url, json=body, timeout=30), range(4)))
    expected = recommender.recommend(body["items"], body["k"])
    for answer in answers:
        assert answer.status_code == 200
        assert answer_from_json(answer.json()).items == expected.items


def test_batch_requests_over_max_batch_are_scored_in_chunks_as_before(recommender, monkeypatch):
    scored = []
    answer_each, recommend_batch = recommender.answer_each, recommender.recommend_batch
    monkeypatch.setattr(
        recommender, "answer_each", lambda q: scored.append("together") or answer_each(q)
    )
    monkeypatch.setattr(
        recommender, "recommend_batch", lambda *a: scored.append("chunks") or recommend_batch(*a)
    )
    app = create_app(recommender, max_batch=2)
    with serving_in_thread(app) as client:
        for size in (1, 2, 3):
            response = client.post("/recommend/batch", json={"sequences": [["i1"]] * size})
            assert len(response.json()["results"]) == size
    assert scored == ["together", "together", "chunks"]
    with pytest.raises(RuntimeError, match="closed"):  # stopped with the service
        app.state.batcher.submit(None)


def test_serve_passes_the_batching_options(trained_runs, capsys, monkeypatch):
    given = {}

    def create(recommender, max_body_bytes, batch_wait_ms, max_batch):
        given.update(wait=batch_wait_ms, most=max_batch, body=max_body_bytes)
        raise FamerecError("stop before listening")

    monkeypatch.setattr(serving.app, "create_app", create)
    args = ["serve", "--run", str(trained_runs["fame"]), "--batch-wait-ms", "3.5"]
    code, _, err = run_cli([*args, "--max-batch", "8"], capsys)
    assert_one_line_error(code, err, "stop before listening")
    assert given == {"wait": 3.5, "most": 8, "body": 1 << 20}
    run_cli(args[:3], capsys)
    assert given == {"wait": 0.5, "most": 64, "body": 1 << 20}  # the defaults


# -- the short way for valid requests, and answers that leave in one send ---------------------

DIRECT_REQUESTS = [  # path, body: valid ones, and bodies FastAPI's route refuses
    ("/recommend", {"items": ["i1", "i2", "nope"], "k": 5}),
    ("/recommend", {"items": ["i3", "i4"], "k": 3, "explain": True, "exclude_seen": False}),
    ("/recommend", {"items": ["i5", "nope"], "strict": True}),  # 422: unknown ids
    ("/recommend", {"items": ["never"]}),  # 422: no known item
    ("/recommend/batch", {"sequences": [["i1"], ["i2", "i3"]], "k": 2}),
    ("/recommend/batch", {"sequences": [["i1"], ["never"]]}),  # 422: sequence 1
    ("/recommend", {"items": ["i1"], "k": 0}),  # invalid: FastAPI answers
    ("/recommend", {"items": ["i1"], "surprise": 1}),  # invalid: FastAPI answers
    ("/recommend/batch", {"sequences": [["i1"] * 1000] * 51}),  # invalid: FastAPI answers
]


@pytest.mark.parametrize("batch_wait_ms", [0, 0.5])
def test_valid_requests_skip_the_router_with_the_route_s_own_answer(recommender, batch_wait_ms):
    app = create_app(recommender, batch_wait_ms=batch_wait_ms)
    answers = []
    with serving_in_thread(app) as client:
        for path, body in DIRECT_REQUESTS:
            text = json.dumps(body).encode()
            direct = client.post(path, content=text, headers={"content-type": "application/json"})
            # FastAPI reads a JSON suffix as JSON too; the short way takes application/json only
            suffix = {"content-type": "application/vnd.famerec+json"}
            routed = client.post(path, content=text, headers=suffix)
            answers.append((direct, routed))
        charset = {"content-type": "application/json; charset=utf-8"}
        assert client.post("/recommend", json={"items": ["i1"]}, headers=charset).is_success
        assert client.post("/recommend/", json={"items": ["i1"]}).status_code == 307  # routed
    for direct, routed in answers:
        assert direct.status_code == routed.status_code
        assert direct.content == routed.content  # byte for byte: a request alone in its batch
        assert {**direct.headers, "date": ""} == {**routed.headers, "date": ""}
    assert [direct.status_code for direct, _ in answers] == [200, 200, 422, 422, 200, 422] + [
        422
    ] * 3
    assert answers[6][0].json()["detail"][0]["loc"] == ["body", "k"]
    # all valid requests (and only they) went the short way, the 422s of their own included
    assert app.state.answered_directly == {"/recommend": 5, "/recommend/batch": 2}


class Transport:
    """What CoalescedWrites hands on, recorded."""

    def __init__(self):
        self.writes, self.calls = [], []

    def write(self, data):
        self.writes.append(data)

    def close(self):
        self.calls.append("close")

    def abort(self):
        self.calls.append("abort")

    def write_eof(self):
        self.calls.append("write_eof")

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_writes_of_one_loop_turn_leave_together():
    loop = asyncio.new_event_loop()
    try:
        inner = Transport()
        transport = serving.CoalescedWrites(inner, loop)
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"")
        transport.writelines([bytearray(b'{"items"'), memoryview(b":[]}")])
        assert inner.writes == [] and transport.get_write_buffer_size() == 31
        loop.run_until_complete(asyncio.sleep(0))  # the loop's next turn
        assert inner.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"items":[]}']
        transport.write(b"last")
        transport.close()  # what is buffered goes first
        assert inner.writes[-1] == b"last" and inner.calls == ["close"]
        transport.write(b"end")
        transport.write_eof()
        assert inner.writes[-1] == b"end" and inner.calls[-1] == "write_eof"
        transport.write(b"dropped")
        transport.abort()
        loop.run_until_complete(asyncio.sleep(0))
        assert inner.writes[-1] == b"end" and inner.calls[-1] == "abort"
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # the transport's own
    finally:
        loop.close()


def test_an_answer_leaves_in_one_send(recommender):
    with serving_in_thread(create_app(recommender)) as client:
        host, port = str(client.base_url).removeprefix("http://").split(":")
        sent = []
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            body = b'{"items": ["i1", "i2"], "k": 3}'
            head = "POST /recommend HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            sock.sendall(head.encode() + f"content-length: {len(body)}\r\n\r\n".encode() + body)
            sent.append(sock.recv(65536))
            sock.setblocking(False)
            time.sleep(0.2)  # anything sent separately would be here by now
            with suppress(BlockingIOError):
                sent.append(sock.recv(65536))
    head, _, answer = sent[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and json.loads(answer)["used"] == 2
    assert len(sent) == 1  # head and body arrived together
