"""The HTTP service, started for real on a free local port and spoken to over HTTP."""

import json
import re
import select
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from famerec import serving
from famerec.recommender import Recommender
from famerec.serving import Server, address_of, create_app, listen, validation_details
from tests.test_cli import assert_one_line_error, run_cli


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
    monkeypatch.setattr(serving, "SCORES_PER_CHUNK", 3 * (recommender.num_items + 1))
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
