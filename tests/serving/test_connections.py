"""Connections the service keeps: timeouts for clients that keep it waiting, a cap below the
limit on open files, and logs that a burst of the same message cannot flood. Shown on real
sockets: raw ones for the clients that misbehave, HTTP for /healthz."""

from __future__ import annotations

import logging
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from famerec import serving
from famerec.errors import FamerecError
from famerec.serving import (
    RESERVED_DESCRIPTORS,
    ConnectionLimits,
    OncePerInterval,
    Server,
    address_of,
    fit_descriptor_limit,
    limit_repeated_logs,
    listen,
)
from tests.test_cli import assert_one_line_error, run_cli

resource = pytest.importorskip("resource")  # limits on open files: POSIX systems

HALF_HEADERS = b"GET /healthz HTTP/1.1\r\nhost: x\r\n"
HALF_BODY = (
    b"POST /recommend HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"content-length: 100\r\n\r\n" + b'{"items": ['
)
WHOLE_GET = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"


def connect(url: str, data: bytes = b"") -> socket.socket:
    """A raw connection to the service that has sent `data` and nothing more."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def watch(socks: list[socket.socket], start: float, limit: float) -> list[tuple[float, bytes]]:
    """For each socket, when (seconds after `start`) the service closed it, and what it sent
    before; a socket still open after `limit` seconds fails the test."""
    closed: dict[socket.socket, float] = {}
    received = {sock: b"" for sock in socks}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while len(closed) < len(socks):
            left = start + limit - time.monotonic()
            assert left > 0, f"{len(socks) - len(closed)} of {len(socks)} connections still open"
            for key, _ in selector.select(min(left, 0.5)):
                sock = key.fileobj
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    received[sock] += chunk
                else:
                    closed[sock] = time.monotonic() - start
                    selector.unregister(sock)
    return [(closed[sock], received[sock]) for sock in socks]


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


@contextmanager
def serving_with(app, limits: ConnectionLimits):
    """`app` served in a thread by famerec's server under `limits`: the server and its url."""
    sock = listen("127.0.0.1", 0)
    ready = threading.Event()
    server = Server(app, on_ready=ready.set, limits=limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        assert ready.wait(30)
        yield server, address_of(sock)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def release():
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture(scope="module")
def app(release):
    """A small service: /healthz, /recommend (its body's size), /wait (answered once `release`
    is set), /big (32 MiB)."""
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/recommend")
    async def recommend(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/wait")
    def wait() -> dict[str, bool]:
        return {"released": release.wait(20)}

    @app.get("/big")
    async def big() -> Response:
        return Response(b"x" * (32 << 20), media_type="application/octet-stream")

    return app


def test_idle_and_slow_connections_are_closed_after_their_timeouts(app):
    keep_alive, request = 0.5, 1.0
    with serving_with(app, ConnectionLimits(50, keep_alive, request)) as (server, url):
        start = time.monotonic()
        silent = connect(url)
        answered = connect(url, WHOLE_GET)  # answered at once, then idle
        half_headers = connect(url, HALF_HEADERS)
        half_body = connect(url, HALF_BODY)
        times = watch([silent, answered, half_headers, half_body], start, request + 5)
        wait_until(lambda: not server.connections.open)
    (silent_at, nothing), (answered_at, answer), (headers_at, late), (body_at, late_too) = times
    assert keep_alive - 0.05 <= silent_at < keep_alive + 3 and nothing == b""
    assert keep_alive - 0.05 <= answered_at < keep_alive + 3
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}')
    # a request has request seconds from its first byte: more than an idle connection gets
    for at, sent in ((headers_at, late), (body_at, late_too)):
        assert request - 0.05 <= at < request + 3
        assert sent.startswith(b"HTTP/1.1 408 ") and b"connection: close" in sent
    assert server.connections.replaced == server.connections.refused == 0


def test_headers_sent_a_byte_at_a_time_do_not_extend_the_request_timeout(app):
    request = 1.0
    with serving_with(app, ConnectionLimits(50, 0.5, request)) as (_, url):
        start = time.monotonic()
        sock = connect(url, b"GET /healthz HTTP/1.1\r\n")
        with pytest.raises(OSError):  # the service closes it, and a byte more fails
            for _ in range(50):
                time.sleep(0.1)
                sock.sendall(b"x")
        closed_at = time.monotonic() - start
        sock.close()
    assert request - 0.05 <= closed_at < request + 3


def test_at_the_cap_a_new_connection_takes_the_place_of_the_longest_idle(app):
    with serving_with(app, ConnectionLimits(3, 10, 10)) as (server, url):
        half = connect(url, HALF_HEADERS)  # the oldest, but still sending its request
        wait_until(lambda: len(server.connections.in_request) == 1)
        oldest_idle, idle = connect(url), connect(url)
        wait_until(lambda: len(server.connections.idle) == 2)
        start = time.monotonic()
        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.get("/healthz").json() == {"status": "ok"}  # at the cap
        [(closed_at, _)] = watch([oldest_idle], start, 5)
        assert closed_at < 2
        assert server.connections.replaced == 1 and server.connections.refused == 0
        assert len(server.connections.in_request) == 1  # the half-sent request stayed
        # the others are still open: nothing to read, no end of stream
        selector = selectors.DefaultSelector()
        for sock in (half, idle):
            selector.register(sock, selectors.EVENT_READ)
        assert selector.select(0.1) == []
        selector.close()
        half.close()
        idle.close()
        oldest_idle.close()


def test_at_the_cap_with_every_connection_answering_new_ones_get_503(app, release):
    release.clear()
    with serving_with(app, ConnectionLimits(2, 10, 10)) as (server, url):
        waiting = [connect(url, b"GET /wait HTTP/1.1\r\nhost: x\r\n\r\n") for _ in range(2)]
        connections = server.connections
        wait_until(lambda: len(connections.open) == 2)
        wait_until(lambda: not connections.idle and not connections.in_request)
        start = time.monotonic()
        refused = connect(url)
        [(closed_at, answer)] = watch([refused], start, 5)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"connection: close" in answer
        assert closed_at < 2 and connections.refused == 1 and connections.replaced == 0
        release.set()
        for sock in waiting:
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            sock.close()
        with httpx.Client(base_url=url, timeout=5) as client:  # room again
            assert client.get("/healthz").status_code == 200


def test_a_client_that_reads_nothing_of_its_answer_is_dropped(app):
    request = 1.0
    with serving_with(app, ConnectionLimits(50, 60, request)) as (server, url):
        host, port = url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        start = time.monotonic()
        sock.sendall(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        wait_until(lambda: server.connections.open, 5)
        # dropped once its client has taken nothing for `request` seconds, not kept for 60
        wait_until(lambda: not server.connections.open, request + 5)
        assert time.monotonic() - start >= request - 0.05
        sock.close()


# -- the acceptance test: `famerec serve` with more connections than it may open files --------


def test_serve_sheds_idle_and_slow_connections_and_keeps_answering(trained_runs):
    cap, keep_alive, request = 20, 1.0, 2.0
    files = cap + RESERVED_DESCRIPTORS  # the server's limit: just enough for the cap
    count = files + 60  # more connections than the server may open files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count + 100:
        pytest.skip(f"this process may open {soft} files, fewer than the test needs")

    def server_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    command = [sys.executable, "-m", "famerec", "serve", "--run", str(trained_runs["fame"])]
    command += ["--port", "0", "--max-connections", str(cap)]
    command += ["--timeout-keep-alive", str(keep_alive), "--timeout-request", str(request)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, preexec_fn=server_limit)
    said, socks = [], []
    reader = threading.Thread(target=lambda: said.extend(iter(process.stderr.readline, b"")))
    try:
        announcement = process.stderr.readline()
        said.append(announcement)
        match = re.search(rb" on (http://127\.0\.0\.1:\d+) ", announcement)
        assert match is not None, announcement
        url = match.group(1).decode()
        reader.start()
        start = time.monotonic()
        kinds = (b"", HALF_HEADERS, HALF_BODY, WHOLE_GET)
        socks = [connect(url, kinds[number % len(kinds)]) for number in range(count)]
        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            answer = client.post("/recommend", json={"items": ["i1", "i2"], "k": 3})
            assert answer.status_code == 200 and len(answer.json()["items"]) == 3
        closed = watch(socks, start, 30)  # every one of them is closed, none kept
        last = max(at for at, _ in closed)
        # those admitted last waited their whole timeouts; half-sent requests got 408
        assert last >= request - 0.05
        assert any(sent.startswith(b"HTTP/1.1 408 ") for _, sent in closed)
        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        for sock in socks:
            sock.close()
        process.terminate()
        process.wait(timeout=15)
        if reader.is_alive():
            reader.join(5)
        process.stderr.close()
    stderr = b"".join(said)
    assert len(stderr) < 4096, stderr[:4096]
    assert b"Too many open files" not in stderr
    # the cap is said once (and once more if all connections were being answered at a time)
    assert 1 <= stderr.count(b"connections open (--max-connections)") <= 2


# -- logs: one line per message and interval -------------------------------------------------


def record(message: str, *args, name: str = "asyncio") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, args, None)


def test_a_repeated_message_is_logged_once_per_interval_with_a_count():
    now = [100.0]
    limiter = OncePerInterval(interval=60, clock=lambda: now[0])
    accept = "socket.accept() out of system resource\nsocket: <fd=%d>"
    passed = [limiter.filter(record(accept, fd)) for fd in range(1000)]
    assert passed == [True] + [False] * 999  # the same first line: the same message
    assert limiter.filter(record("another message"))
    assert limiter.filter(record(accept, 1, name="uvicorn.error"))  # another logger
    now[0] += 61
    again = record(accept, 5)
    assert limiter.filter(again)
    assert again.getMessage().endswith("[and 999 more like it in the last 61 s]")
    assert not limiter.filter(record(accept, 6))


def test_the_filters_are_installed_once(app):
    limit_repeated_logs()
    with serving_with(app, ConnectionLimits()):
        pass
    for name in serving.REPEATED_LOGS:
        filters = logging.getLogger(name).filters
        assert sum(isinstance(each, OncePerInterval) for each in filters) == 1


# -- the cap and the limit on open files -----------------------------------------------------


@pytest.fixture
def open_files(monkeypatch):
    """The process's limit on open files, faked: [soft, hard]; setrlimit changes it."""
    limits = [1024, 1024]

    def setrlimit(which, values):
        assert which == resource.RLIMIT_NOFILE and values[1] == limits[1]
        if values[0] > limits[1]:
            raise ValueError("not allowed to raise maximum limit")
        limits[0] = values[0]

    monkeypatch.setattr(resource, "getrlimit", lambda which: tuple(limits))
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    return limits


def test_the_cap_fits_the_limit_on_open_files(open_files):
    room = 1024 - RESERVED_DESCRIPTORS
    assert fit_descriptor_limit(None) == room  # the default, lowered to fit
    assert fit_descriptor_limit(room) == room
    with pytest.raises(FamerecError, match=rf"--max-connections 1,000 .* give at most {room:,}"):
        fit_descriptor_limit(1000)
    open_files[1] = 4096  # the soft limit may be raised up to the hard one
    assert fit_descriptor_limit(None) == serving.DEFAULT_MAX_CONNECTIONS
    assert open_files[0] == serving.DEFAULT_MAX_CONNECTIONS + RESERVED_DESCRIPTORS
    open_files[:] = [100, 100]
    with pytest.raises(FamerecError, match="raise the limit"):
        fit_descriptor_limit(None)


def test_serve_passes_the_connection_options(trained_runs, capsys, monkeypatch):
    given = []

    class Stop:
        def __init__(self, app, on_ready=None, limits=None):
            given.append(limits)
            raise FamerecError("stop before serving")

    monkeypatch.setattr(serving.app, "Server", Stop)
    args = ["serve", "--run", str(trained_runs["fame"]), "--port", "0"]
    flags = ["--max-connections", "7", "--timeout-keep-alive", "2.5", "--timeout-request", "9"]
    code, _, err = run_cli([*args, *flags], capsys)
    assert_one_line_error(code, err, "stop before serving")
    run_cli(args, capsys)
    defaults = ConnectionLimits(fit_descriptor_limit(None))
    assert given == [ConnectionLimits(7, 2.5, 9.0), defaults]
