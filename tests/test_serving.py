"""The HTTP service, started for real on a free local port and spoken to over HTTP."""

import socket
import subprocess
import sys
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_runs):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "famerec",
            "serve",
            "--run",
            str(trained_runs["fame"]),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server did not start: " + process.stderr.read())
        time.sleep(0.2)
    yield httpx.Client(base_url=base, timeout=10)
    process.terminate()
    process.wait(timeout=10)


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
