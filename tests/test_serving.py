"""The HTTP service, started for real on a free local port and spoken to over HTTP."""

import re
import socket
import subprocess
import sys
from dataclasses import dataclass

import httpx
import pytest

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


# -- the server announces itself only when it serves; bad options are one line ---------------


def test_serve_announces_itself_only_once_it_serves(service, trained_runs):
    assert service.announcement == (
        f"famerec: serving {trained_runs['fame']} on {service.url} (API docs at {service.url}/docs)"
    )
    assert service.first_health == 200


@pytest.mark.parametrize(
    "options, words",
    [
        (["--port", "70000"], ["--port must be between 0 and 65535", "70000"]),
        (["--port", "-1"], ["--port must be between 0 and 65535", "-1"]),
        (["--device", "tpu"], ["--device must be cpu, cuda", "'tpu'"]),
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
