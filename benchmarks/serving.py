"""Latency and throughput of recommendations, in-process and over HTTP, plus the ANN index.

    famerec train --model fame --pretrain --dataset beauty --out runs/fame-beauty
    python benchmarks/serving.py --run runs/fame-beauty [--seconds 30] [--clients 1,4,8,16]
    python benchmarks/serving.py --run runs/fame-beauty --http-only --repeats 3
    python benchmarks/serving.py --run runs/fame-beauty --worst-case   # only the largest request

Requests use real Beauty histories (every user's sequence without its last item), top-10.
The HTTP load test runs `famerec serve` with the micro-batcher off (`--batch-wait-ms 0`) and
on (each wait of `--batch-wait-ms`, default 0.5,2), and sends each the same closed-loop load
of 1, 4, 8 and 16 clients (`--clients`): each client is a thread with one keep-alive
connection that sends its next request as soon as it has the answer. `--repeats N` runs it
all N times, in reversed order every other time, and reports ranges. Each row also gives the
CPU time per request of the server process and of the load generator (Linux: /proc), which
says where the time goes when the cores are shared. `--worst-case` sends the
largest batch the service accepts and reports its time, the server's peak memory (Linux:
VmHWM of the server process) and how /healthz answered meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

import famerec
from famerec.serving import MAX_BATCH, MAX_BATCH_ITEMS, MAX_BATCH_RESULTS, MAX_ITEMS, MAX_K


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def histories(rec, count: int, seed: int = 0) -> list[list]:
    rng = np.random.default_rng(seed)
    users = rng.choice(rec.data.num_users, size=count, replace=count > rec.data.num_users)
    return [[rec.item_ids[i - 1] for i in rec.data.sequence(u)[:-1]] for u in users]


def timed(function, *args, **kwargs) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: str, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "famerec", "serve", "--run", run, "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


class Connection:
    """A minimal HTTP/1.1 keep-alive client for the load test. httpx spends about 0.5 ms of
    Python per request (this one 0.03 ms), and the clients' threads share one interpreter lock
    and the server's 2 cores: with httpx the load test would measure its clients."""

    def __init__(self, base: str):
        host, port = base.removeprefix("http://").rsplit(":", 1)
        self.host = host
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body) of a POST with a JSON body."""
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.lower().split(b":", 1) for line in lines[1:])
        length = int(fields[b"content-length"])
        self.buffer = rest
        while len(self.buffer) < length:
            self._receive()
        answer, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), answer

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (Linux: /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_test(
    base: str, sequences: list[list], clients: int, seconds: float, server_pid: int | None = None
) -> dict:
    """`clients` threads, each with its own connection, send top-10 requests for `seconds`.
    With `server_pid` (Linux), also the server's and the clients' CPU time per request."""
    bodies = [json.dumps({"items": sequence, "k": 10}).encode() for sequence in sequences]
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(offset: int) -> None:
        nonlocal errors
        own, own_errors = [], 0
        connection = Connection(base)
        n = offset
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                ok = connection.post("/recommend", bodies[n % len(bodies)])[0] == 200
            except OSError:  # a reset, a timeout: count it and reconnect
                ok = False
                connection.close()
                connection = Connection(base)
            own.append(time.perf_counter() - started)
            own_errors += not ok
            n += clients
        connection.close()
        with lock:
            latencies.extend(own)
            errors += own_errors

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    server_cpu = cpu_seconds(server_pid) if server_pid is not None else 0.0
    client_cpu = time.process_time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    result = {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "throughput": len(latencies) / elapsed,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }
    if server_pid is not None:
        result["server_us"] = (cpu_seconds(server_pid) - server_cpu) / len(latencies) * 1e6
        result["client_us"] = (time.process_time() - client_cpu) / len(latencies) * 1e6
    return result


def sweep(
    run: str,
    sequences: list[list],
    client_counts: list[int],
    seconds: float,
    repeats: int,
    waits: list[float],
) -> tuple[dict, list[bool]]:
    """Load tests of the service with the batcher off and on (each wait): {(batcher, clients):
    [result per repeat]}, and whether each service still answered /healthz afterwards."""
    modes = {"off": "0", **{f"on, {wait:g} ms wait": f"{wait:g}" for wait in waits}}
    results: dict[tuple[str, int], list[dict]] = {}
    healthy = []
    for repeat in range(repeats):
        order = list(modes) if repeat % 2 == 0 else list(modes)[::-1]
        for mode in order:
            process, base = start_server(run, "--batch-wait-ms", modes[mode])
            try:
                warm_up = Connection(base)
                for sequence in sequences[:50]:
                    warm_up.post("/recommend", json.dumps({"items": sequence}).encode())
                warm_up.close()
                for clients in client_counts:
                    result = load_test(base, sequences, clients, seconds, process.pid)
                    result["load"] = os.getloadavg()[0]
                    results.setdefault((mode, clients), []).append(result)
                    print(
                        f"  batcher {mode}, {clients:2d} clients: {result['throughput']:,.0f} "
                        f"req/s, p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
                        f"{result['errors']} errors, CPU per request: server "
                        f"{result['server_us']:.0f} us, clients {result['client_us']:.0f} us, "
                        f"load average {result['load']:.1f}",
                        file=sys.stderr,
                    )
                healthy.append(httpx.get(base + "/healthz", timeout=5).status_code == 200)
            finally:
                process.terminate()
                process.wait(timeout=10)
    return results, healthy


def spread(values: list[float], digits: int = 0) -> str:
    """'median (min-max)' of repeated measurements, or the one value."""
    text = [f"{value:,.{digits}f}" for value in (np.median(values), min(values), max(values))]
    return text[0] if len(values) == 1 else f"{text[0]} ({text[1]}-{text[2]})"


def print_sweep(results: dict, client_counts: list[int], seconds: float) -> None:
    repeats = len(next(iter(results.values())))
    modes = list(dict.fromkeys(mode for mode, _ in results))
    base = np.median([r["throughput"] for r in results[("off", client_counts[0])]])
    runs = f"median (min-max) of {repeats} runs" if repeats > 1 else "one run"
    print(
        f"HTTP POST /recommend, top-10, {seconds:g} s per row, closed loop, {runs}; the batcher "
        "off is `--batch-wait-ms 0`, on is `--batch-wait-ms WAIT`. CPU per request: user + "
        "system time of the server process (all its threads) and of the load generator's "
        "process, over the row's requests."
    )
    print()
    print(
        f"| batcher | clients | requests | errors | throughput (req/s) | vs batcher off, "
        f"{client_counts[0]} client{'s' if client_counts[0] > 1 else ''} | p50 (ms) | p99 (ms) "
        "| server CPU / request (us) | clients' CPU / request (us) | load average |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for clients in client_counts:
        for mode in modes:
            rows = results[(mode, clients)]
            throughput = [r["throughput"] for r in rows]
            print(
                f"| {mode} | {clients} | {sum(r['requests'] for r in rows):,} "
                f"| {sum(r['errors'] for r in rows)} | {spread(throughput)} "
                f"| {np.median(throughput) / base:.1f}x | {spread([r['p50'] for r in rows], 2)} "
                f"| {spread([r['p99'] for r in rows], 2)} "
                f"| {spread([r['server_us'] for r in rows])} "
                f"| {spread([r['client_us'] for r in rows])} "
                f"| {spread([r['load'] for r in rows], 1)} |"
            )


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (Linux only)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/PID/status")


def worst_case(run: str, rec, sequences: int, items: int, k: int, body_bytes: int | None) -> None:
    """Time one largest-allowed batch request over HTTP while a second client polls /healthz."""
    catalog = rec.item_ids  # distinct known items: every one is looked up and excluded
    batch = [
        [catalog[(row * items + i) % len(catalog)] for i in range(items)]
        for row in range(sequences)
    ]
    body = json.dumps({"sequences": batch, "k": k}).encode()
    options = ("--max-body-bytes", str(body_bytes)) if body_bytes else ()
    process, base = start_server(run, *options)
    probes: list[float] = []
    failed_probes = 0
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            http.post("/recommend/batch", json={"sequences": batch[:10], "k": 10})  # warm-up
            before = peak_rss_mib(process.pid)
            done = threading.Event()

            def probe() -> None:
                nonlocal failed_probes
                with httpx.Client(base_url=base, timeout=120) as prober:
                    while not done.is_set():
                        try:
                            probes.append(timed(prober.get, "/healthz"))
                        except httpx.TransportError:
                            failed_probes += 1
                        time.sleep(0.05)

            prober = threading.Thread(target=probe)
            started = time.perf_counter()
            prober.start()
            response = http.post(
                "/recommend/batch", content=body, headers={"content-type": "application/json"}
            )
            seconds = time.perf_counter() - started
            done.set()
            prober.join()
            after = peak_rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(
        f"Run: {run} ({rec.model_name}, {rec.num_items:,} items). One POST /recommend/batch of "
        f"{sequences:,} sequences x {items:,} distinct known items, k = {k:,}: "
        f"{len(body) / 2**20:.1f} MiB request, {len(response.content) / 2**20:.1f} MiB answer "
        f"(status {response.status_code})."
    )
    print()
    print(
        "| request (s) | server peak RSS before / after (MiB) | /healthz probes (failed) "
        "| slowest (ms) |"
    )
    print("| ---: | ---: | ---: | ---: |")
    slowest = max(probes) * 1000 if probes else float("nan")
    print(
        f"| {seconds:.2f} | {before:,.0f} / {after:,.0f} | {len(probes)} ({failed_probes}) "
        f"| {slowest:,.0f} |"
    )


def in_process(rec, sequences: list[list]) -> None:
    for sequence in sequences[:20]:  # warm-up
        rec.recommend(sequence, k=10)
    single = [timed(rec.recommend, s, k=10) for s in sequences]
    explain = [timed(rec.explain, s, k=10) for s in sequences[:200]]
    batch_seconds = min(timed(rec.recommend_batch, sequences[:1000], k=10) for _ in range(3))
    print("| measurement | p50 (ms) | p99 (ms) | throughput |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| in-process `recommend` (1 sequence, {len(single)} requests) | "
        f"{percentile(single, 50):.2f} | {percentile(single, 99):.2f} | "
        f"{len(single) / sum(single):,.0f} req/s |"
    )
    print(
        f"| in-process `explain` (1 sequence, {len(explain)} requests) | "
        f"{percentile(explain, 50):.2f} | {percentile(explain, 99):.2f} | "
        f"{len(explain) / sum(explain):,.0f} req/s |"
    )
    print(
        f"| in-process `recommend_batch` (1,000 sequences, best of 3) | "
        f"{batch_seconds * 1000:.0f} (whole batch) | | {1000 / batch_seconds:,.0f} seq/s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished run directory")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--clients",
        type=lambda text: [int(count) for count in text.split(",")],
        default=[1, 4, 8, 16],
        help="concurrent clients of the load tests, comma-separated (default: 1,4,8,16)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of the whole load test")
    parser.add_argument(
        "--batch-wait-ms",
        type=lambda text: [float(wait) for wait in text.split(",")],
        default=[0.5, 2.0],
        help="the batcher's waits to measure, comma-separated (default: 0.5,2)",
    )
    parser.add_argument("--http-only", action="store_true", help="only the HTTP load test")
    parser.add_argument("--requests", type=int, default=1000, help="single requests to time")
    parser.add_argument("--worst-case", action="store_true", help="only the largest request")
    parser.add_argument("--worst-sequences", type=int, help="default: the most allowed")
    parser.add_argument("--worst-items", type=int, help="per sequence; default: the most allowed")
    parser.add_argument("--worst-k", type=int, help="default: the largest allowed")
    parser.add_argument("--worst-body-bytes", type=int, help="serve --max-body-bytes")
    args = parser.parse_args()

    rec = famerec.load(args.run)
    if args.worst_case:
        sequences = args.worst_sequences or MAX_BATCH
        items = args.worst_items or min(MAX_ITEMS, MAX_BATCH_ITEMS // sequences)
        k = args.worst_k or min(MAX_K, MAX_BATCH_RESULTS // sequences)
        worst_case(args.run, rec, sequences, items, k, args.worst_body_bytes)
        return
    sequences = histories(rec, args.requests)
    shape = f"{rec.config.model.num_heads} heads"
    if rec.model_name == "fame":
        shape += f", {rec.config.options.num_experts} experts"
    print(
        f"Run: {args.run} ({rec.model_name}, {rec.num_items:,} items, {shape}); "
        "requests are real user histories, top-10."
    )
    print()
    if not args.http_only:
        in_process(rec, sequences)
        print()
    results, healthy = sweep(
        args.run, sequences, args.clients, args.seconds, args.repeats, args.batch_wait_ms
    )
    print_sweep(results, args.clients, args.seconds)
    print(f"\nEach service still healthy after its load tests: {all(healthy)}.")
    if args.http_only:
        return

    try:
        from famerec.ann import build_index, recall_at_k
    except ImportError:
        return
    queries = rec.query_vectors(sequences)
    started = time.perf_counter()
    index = build_index(rec, kind="hnsw")
    build_seconds = time.perf_counter() - started
    recall = recall_at_k(index, queries, k=10)
    items = rec.item_vectors()
    exact_seconds = min(
        timed(lambda: np.argpartition(-(queries @ items.T), 10, axis=1)) for _ in range(3)
    )
    ann_seconds = min(timed(index.search, queries, 10) for _ in range(3))
    one_ann = [timed(index.search, queries[i : i + 1], 10) for i in range(len(queries))]
    one_exact = [
        timed(lambda q: np.argpartition(-(q @ items.T), 10, axis=1), queries[i : i + 1])
        for i in range(len(queries))
    ]
    print()
    print(
        f"ANN (faiss HNSW, M=32, efSearch=128, built in {build_seconds:.2f} s) over "
        f"{rec.num_items:,} item vectors, {len(queries):,} query vectors:"
    )
    print()
    print("| search | recall@10 vs exact | batch of queries (ms) | one query p50 (ms) |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| exact (numpy matmul + argpartition) | 1.000 | {exact_seconds * 1000:.1f} | "
        f"{percentile(one_exact, 50):.3f} |"
    )
    print(
        f"| faiss HNSW | {recall:.3f} | {ann_seconds * 1000:.1f} | {percentile(one_ann, 50):.3f} |"
    )


if __name__ == "__main__":
    main()
