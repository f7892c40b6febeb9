"""API server throughput and latency through HTTPS, beside the raw SQLite write rate.

Starts a fresh `kubi server`, drives it with N concurrent clients, prints a table.
Reference: upstream SLOs (mutating and single-object read calls p99 <= 1 s, namespace
lists <= 5 s); Kubi aims at >= 1,000 creates/s, >= 3,000 GETs/s, p99 write < 50 ms.
Client and server share this machine's cores, so the numbers are a floor.

    .venv/bin/python bench/api.py [--connections 50] [--seconds 10]   (needs wrk)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.cluster import Cluster, start_cluster


def pod(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "bench", "n": name[-1]}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                     "command": ["sleep", "3600"],
                                     "resources": {"requests": {"cpu": "10m"}}}]}}


WRK_SCRIPT = """
local counter = 0
local threads = {}
function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end
request = function()
  counter = counter + 1
  local name = string.format("p%s-%d-%07d", RUN, thread_id, counter)
  if MODE == "create" then
    local body = string.format(BODY, name)
    return wrk.format("POST", BASE, {["Content-Type"] = "application/json",
                                     ["Authorization"] = AUTH}, body)
  elseif MODE == "patch" then
    local target = string.format("p0-1-%07d", (counter % EXISTING) + 1)
    local body = string.format('{"metadata":{"labels":{"u":"%d"}}}', counter)
    return wrk.format("PATCH", BASE .. "/" .. target,
                      {["Content-Type"] = "application/merge-patch+json",
                       ["Authorization"] = AUTH}, body)
  else
    local target = string.format("p0-1-%07d", (counter % EXISTING) + 1)
    return wrk.format("GET", BASE .. "/" .. target)
  end
end
"""


def wrk(cluster: Cluster, mode: str, seconds: int, connections: int, existing: int,
        tmp: Path, run: int = 0) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, errors) for one wrk run against the server.

    Creates in run N are named pN-<thread>-<n>; reads and patches target run 0's pods.
    """
    body = orjson.dumps(pod("%s")).decode().replace('"', '\\"')
    script = tmp / f"{mode}.lua"
    script.write_text(f'MODE = "{mode}"\nRUN = "{run}"\nBASE = "/api/v1/namespaces/default/pods"\n'
                      f'EXISTING = {max(existing, 1)}\nBODY = "{body}"\n'
                      f'AUTH = "Bearer {cluster.token}"\n' + WRK_SCRIPT)
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(script), "-H", f"Authorization: Bearer {cluster.token}",
                          cluster.url], capture_output=True, text=True, check=True).stdout
    rate = float(_wrk_field(r"Requests/sec:\s+([\d.]+)", out))
    p50 = _ms(_wrk_field(r"50%\s+([\d.]+\w+)", out))
    p99 = _ms(_wrk_field(r"99%\s+([\d.]+\w+)", out))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, p50, p99, int(errors.group(1)) if errors else 0


def _wrk_field(pattern: str, out: str) -> str:
    found = re.search(pattern, out)
    if found is None:
        raise RuntimeError(f"wrk output has no match for {pattern!r}:\n{out}")
    return found.group(1)


def _ms(text: str) -> float:
    number = re.match(r"[\d.]+", text)
    if number is None:
        raise ValueError(f"not a wrk latency: {text!r}")
    unit = text[number.end():]
    return float(number.group(0)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


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


def pod_count(cluster: Cluster) -> int:
    with cluster.http() as client:
        return len(client.get("/api/v1/namespaces/default/pods").json()["items"])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def watch_and_lists(cluster: Cluster, tmp: Path) -> list[str]:
    """Watch delivery (create sent -> event seen) and list latency at 1k and 10k pods."""
    rows: list[str] = []
    context = ssl.create_default_context(cafile=cluster.ca)
    async with httpx.AsyncClient(base_url=cluster.url, verify=context, timeout=120,
                                 headers={"Authorization": f"Bearer {cluster.token}"}) as client:
        base = "/api/v1/namespaces/watched/pods"
        await client.post("/api/v1/namespaces", content=orjson.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "watched"}}),
            headers={"content-type": "application/json"})
        rv = (await client.get(base)).json()["metadata"]["resourceVersion"]
        sent: dict[str, float] = {}
        delays: list[float] = []

        async def watch() -> None:
            async with client.stream("GET", base, params={"watch": "true",
                                                          "resourceVersion": rv}) as stream:
                async for line in stream.aiter_lines():
                    name = orjson.loads(line)["object"]["metadata"]["name"]
                    delays.append(time.perf_counter() - sent[name])
                    if len(delays) == 200:
                        return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        for i in range(200):
            name = f"w-{i}"
            sent[name] = time.perf_counter()
            await client.post(base, content=orjson.dumps(pod(name)),
                              headers={"content-type": "application/json"})
        await asyncio.wait_for(watcher, 60)
        delays.sort()
        rows.append(f"| watch delivery (create sent -> event) | 200 | - | "
                    f"{statistics.median(delays) * 1000:.1f} ms | {delays[197] * 1000:.1f} ms |")
        for size in (1000, 10000):
            took = []
            for _ in range(3):
                began = time.perf_counter()
                r = await client.get("/api/v1/namespaces/default/pods",
                                     params={"limit": str(size)})
                took.append(time.perf_counter() - began)
                got = len(r.json()["items"])
                assert got == size, f"listed {got} pods, wanted {size}: {r.text[:300]}"
            rows.append(f"| list {size} pods | 3 | - | {statistics.median(took) * 1000:.0f} ms "
                        f"| {max(took) * 1000:.0f} ms |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/api.py drives the server with wrk: apt-get install wrk")
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        raw = sqlite_rate(tmp / "raw.db")
        # The API alone: no controllers, so no service accounts for pods to run as.
        cluster = start_cluster(tmp / "kubi", "--disable-controller-manager",
                                "--disable-scheduler", "--disable-admission-plugins",
                                "ServiceAccount")
        try:
            time.sleep(2)
            idle = rss_mb(cluster.process.pid)
            rate, p50, p99, errs = wrk(cluster, "create", args.seconds, args.connections, 0, tmp)
            with cluster.http() as client:
                created = sum(1 for i in client.get("/api/v1/namespaces/default/pods").json()[
                    "items"] if i["metadata"]["name"].startswith("p0-1-"))
            rows.append(f"| create pod | {rate * args.seconds:,.0f} | {rate:,.0f}/s | "
                        f"{p50:.1f} ms | {p99:.1f} ms |" + (f" {errs} errors" if errs else ""))
            print(rows[-1], flush=True)
            for mode, label in (("get", "get pod"), ("patch", "update pod (merge patch)")):
                rate, p50, p99, errs = wrk(cluster, mode, args.seconds, args.connections,
                                           created, tmp)
                rows.append(f"| {label} | {rate * args.seconds:,.0f} | {rate:,.0f}/s | "
                            f"{p50:.1f} ms | {p99:.1f} ms |" + (f" {errs} errors" if errs else ""))
            run = 0
            while pod_count(cluster) < 10000:
                run += 1
                wrk(cluster, "create", 5, args.connections, 0, tmp, run)
            rows += asyncio.run(watch_and_lists(cluster, tmp))
            loaded = rss_mb(cluster.process.pid)
        finally:
            cluster.stop()
    print(f"kubi API benchmark: wrk, {args.connections} connections over HTTPS, client and "
          "server on the same 2 cores\n")
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
