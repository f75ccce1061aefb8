"""Latency and throughput of recommendations, in-process and over HTTP, plus the ANN index.

    famerec train --model fame --pretrain --dataset beauty --out runs/fame-beauty
    python benchmarks/serving.py --run runs/fame-beauty [--seconds 30] [--clients 8]
    python benchmarks/serving.py --run runs/fame-beauty --worst-case   # only the largest request

Requests use real Beauty histories (every user's sequence without its last item), top-10.
`--worst-case` sends the largest batch the service accepts and reports its time, the server's
peak memory (Linux: VmHWM of the server process) and how /healthz answered meanwhile.
"""

from __future__ import annotations

import argparse
import json
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


def load_test(base: str, sequences: list[list], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(offset: int) -> None:
        nonlocal errors
        own, own_errors = [], 0
        with httpx.Client(base_url=base, timeout=10) as http:
            n = offset
            while time.monotonic() < stop:
                body = {"items": sequences[n % len(sequences)], "k": 10}
                started = time.perf_counter()
                try:
                    ok = http.post("/recommend", json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                own.append(time.perf_counter() - started)
                own_errors += not ok
                n += clients
        with lock:
            latencies.extend(own)
            errors += own_errors

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "throughput": len(latencies) / elapsed,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished run directory")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
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
    for sequence in sequences[:20]:  # warm-up
        rec.recommend(sequence, k=10)
    single = [timed(rec.recommend, s, k=10) for s in sequences]
    explain = [timed(rec.explain, s, k=10) for s in sequences[:200]]
    batch_seconds = min(timed(rec.recommend_batch, sequences[:1000], k=10) for _ in range(3))

    process, base = start_server(args.run)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            for sequence in sequences[:20]:
                http.post("/recommend", json={"items": sequence, "k": 10})
            http_single = [
                timed(http.post, "/recommend", json={"items": s, "k": 10}) for s in sequences
            ]
        load = load_test(base, sequences, args.clients, args.seconds)
        alive = httpx.get(base + "/healthz", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)

    shape = f"{rec.config.model.num_heads} heads"
    if rec.model_name == "fame":
        shape += f", {rec.config.model.num_experts} experts"
    print(
        f"Run: {args.run} ({rec.model_name}, {rec.num_items:,} items, {shape}); "
        "requests are real user histories, top-10."
    )
    print()
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
    print(
        f"| HTTP POST /recommend, 1 client ({len(http_single)} requests) | "
        f"{percentile(http_single, 50):.2f} | {percentile(http_single, 99):.2f} | "
        f"{len(http_single) / sum(http_single):,.0f} req/s |"
    )
    print(
        f"| HTTP POST /recommend, {args.clients} concurrent clients, {load['seconds']:.0f} s "
        f"({load['requests']:,} requests, {load['errors']} errors) | {load['p50']:.2f} | "
        f"{load['p99']:.2f} | {load['throughput']:,.0f} req/s |"
    )
    print(f"\nService still healthy after the load test: {alive}.")

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
