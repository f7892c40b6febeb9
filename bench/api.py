"""API server throughput and latency through HTTPS, beside the raw SQLite write rate.

Starts a fresh `kubi server`, drives it with N concurrent clients, prints a table.
Reference: upstream SLOs (mutating and single-object read calls p99 <= 1 s, namespace
lists <= 5 s); Kubi aims at >= 1,000 creates/s, >= 3,000 GETs/s, p99 write < 50 ms.
Client and server share this machine's cores, so the numbers are a floor.

    .venv/bin/python bench/api.py [--clients 50] [--pods 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.cluster import Cluster, start_cluster  # noqa: E402


def pod(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "bench", "n": name[-1]}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                     "command": ["sleep", "3600"],
                                     "resources": {"requests": {"cpu": "10m"}}}]}}


async def run_many(clients: int, count: int,
                   op: Callable[[httpx.AsyncClient, int], Awaitable[None]],
                   client: httpx.AsyncClient) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(count))

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            await op(client, i)
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - began, latencies


def row(name: str, count: int, elapsed: float, latencies: list[float]) -> str:
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000 if lat else 0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0
    return f"| {name} | {count} | {count / elapsed:,.0f}/s | {p50:.1f} ms | {p99:.1f} ms |"


def sqlite_rate(path: Path, count: int = 5000) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE kv (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, value BLOB)")
    value = orjson.dumps(pod("x")) * 2
    began = time.perf_counter()
    for i in range(count):
        db.execute("INSERT INTO kv (name, value) VALUES (?, ?)", (f"/registry/pods/{i}", value))
    elapsed = time.perf_counter() - began
    db.close()
    return count / elapsed


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def bench(cluster: Cluster, clients: int, pods: int) -> list[str]:
    rows: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=cluster.url, verify=cluster.ca, limits=limits,
                                 headers={"Authorization": f"Bearer {cluster.token}"},
                                 timeout=60) as client:
        base = "/api/v1/namespaces/default/pods"

        async def create(c: httpx.AsyncClient, i: int) -> None:
            r = await c.post(base, content=orjson.dumps(pod(f"p-{i:06d}")),
                             headers={"content-type": "application/json"})
            assert r.status_code == 201, r.text

        async def get(c: httpx.AsyncClient, i: int) -> None:
            r = await c.get(f"{base}/p-{i % pods:06d}")
            assert r.status_code == 200, r.text

        async def update(c: httpx.AsyncClient, i: int) -> None:
            r = await c.patch(f"{base}/p-{i % pods:06d}",
                              content=orjson.dumps({"metadata": {"labels": {"u": str(i)}}}),
                              headers={"content-type": "application/merge-patch+json"})
            assert r.status_code == 200, r.text

        # Watch delivery: time from a create's answer to its event on an open watch.
        seen: dict[str, float] = {}
        list_rv = (await client.get(base, params={"limit": "1"})).json()["metadata"][
            "resourceVersion"]

        async def watch() -> None:
            async with client.stream("GET", base, params={
                    "watch": "true", "resourceVersion": list_rv}) as stream:
                async for line in stream.aiter_lines():
                    event = orjson.loads(line)
                    if event["type"] == "ADDED":
                        seen[event["object"]["metadata"]["name"]] = time.perf_counter()
                        if len(seen) >= pods:
                            return

        watcher = asyncio.create_task(watch())
        acked: dict[str, float] = {}

        async def create_acked(c: httpx.AsyncClient, i: int) -> None:
            await create(c, i)
            acked[f"p-{i:06d}"] = time.perf_counter()

        elapsed, lat = await run_many(clients, pods, create_acked, client)
        rows.append(row("create pod", pods, elapsed, lat))
        await asyncio.wait_for(watcher, 120)
        delays = [seen[n] - acked[n] for n in acked if n in seen]
        rows.append(f"| watch delivery | {len(delays)} | - | "
                    f"{statistics.median(delays) * 1000:.1f} ms | "
                    f"{sorted(delays)[int(len(delays) * 0.99)] * 1000:.1f} ms |")
        elapsed, lat = await run_many(clients, pods * 2, get, client)
        rows.append(row("get pod", pods * 2, elapsed, lat))
        elapsed, lat = await run_many(clients, pods, update, client)
        rows.append(row("update pod (merge patch)", pods, elapsed, lat))
        for size in (1000, 10000):
            if size > pods:
                await run_many(clients, size - pods, lambda c, i: create(c, pods + i), client)
                pods = size
            began = time.perf_counter()
            r = await client.get(base)
            took = time.perf_counter() - began
            assert len(r.json()["items"]) >= size
            rows.append(f"| list {size} pods | 1 | - | {took * 1000:.0f} ms | - |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--pods", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = sqlite_rate(Path(tmp) / "raw.db")
        cluster = start_cluster(Path(tmp) / "kubi")
        try:
            time.sleep(1)
            idle = rss_mb(cluster.process.pid)
            rows = asyncio.run(bench(cluster, args.clients, args.pods))
            loaded = rss_mb(cluster.process.pid)
        finally:
            cluster.stop()
    print(f"kubi API benchmark: {args.clients} concurrent clients over HTTPS (one host)\n")
    print("| operation | count | throughput | p50 | p99 |")
    print("| --- | --- | --- | --- | --- |")
    for line in rows:
        print(line)
    print(f"| raw SQLite insert (WAL, one txn each) | 5000 | {raw:,.0f}/s | - | - |")
    print(f"\nserver RSS: {idle:.0f} MB idle, {loaded:.0f} MB after the run")
    print("reference: upstream SLO p99 <= 1 s for single-object calls; Kubi's aim: >= 1,000 "
          "creates/s, >= 3,000 GETs/s, p99 write < 50 ms, 10k list < 1 s, RSS < 150 MB idle")


if __name__ == "__main__":
    main()
