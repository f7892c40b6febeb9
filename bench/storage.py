"""Storage benchmark: `python bench/storage.py [--n 10000] [--uvloop]`.

Prints one table: rates of the SQLite backend's operations from a single
asyncio task, and, as the yardstick for this machine, the raw rate of
autocommitted sqlite3 INSERTs in WAL mode measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubi.storage import SQLiteBackend

VALUE = os.urandom(1024).hex().encode()  # ~2 KB, a typical Pod as JSON


class RawInserts:
    """Autocommitted INSERTs of the same value into a bare table: the disk's pace."""

    def __init__(self, directory: str) -> None:
        self.db = sqlite3.connect(os.path.join(directory, "raw.db"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value BLOB)")
        self.count = 0
        self.elapsed = 0.0

    def run(self, n: int) -> None:
        started = time.perf_counter()
        for i in range(n):
            self.db.execute("INSERT INTO t (name, value) VALUES (?, ?)", (f"/k{i}", VALUE))
        self.elapsed += time.perf_counter() - started
        self.count += n


async def rate(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for i in range(n):
        await op(i)
    return n / (time.perf_counter() - started)


async def run(directory: str, n: int) -> list[tuple[str, str]]:
    store = SQLiteBackend(os.path.join(directory, "state.db"), compact_interval=0)
    await store.start()
    results: list[tuple[str, str]] = []
    try:
        keys = [f"/registry/pods/bench/pod-{i:06}" for i in range(n)]
        revisions: dict[str, int] = {}

        async def create(i: int) -> None:
            revisions[keys[i]] = await store.create(keys[i], VALUE)

        async def update(i: int) -> None:
            key = keys[i]
            revisions[key], _, ok = await store.update(key, VALUE, revisions[key])
            assert ok

        # Creates alternate with raw inserts in slices, so a busy neighbour on this
        # machine slows both alike and the ratio stays meaningful.
        raw = RawInserts(directory)
        creating = 0.0
        slices = 10
        for part in range(slices):
            raw.run(n // slices)
            started = time.perf_counter()
            for i in range(part * n // slices, (part + 1) * n // slices):
                await create(i)
            creating += time.perf_counter() - started
        raw.db.close()
        results.append(("create (2 KB value)", f"{n / creating:,.0f} /s"))
        results.append(("get", f"{await rate(n, lambda i: store.get(keys[i])):,.0f} /s"))
        results.append(("update (CAS)", f"{await rate(n, update):,.0f} /s"))
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            _, kvs, _ = await store.list("/registry/pods/bench/")
            timings.append(time.perf_counter() - started)
            assert len(kvs) == n
        results.append((f"list of {n:,} keys (best of 5)", f"{min(timings) * 1000:,.0f} ms"))
        started = time.perf_counter()
        _, kvs, _ = await store.list("/registry/pods/bench/", limit=500)
        results.append(("list page of 500", f"{(time.perf_counter() - started) * 1000:,.1f} ms"))
        started = time.perf_counter()
        await store.count("/registry/pods/")
        results.append(("count", f"{(time.perf_counter() - started) * 1000:,.1f} ms"))

        watches = [store.watch(f"/registry/pods/ns{i}/", 0) for i in range(1000)]
        watches.append(store.watch("/registry/pods/", 0))
        started = time.perf_counter()
        for i in range(n):
            await store.create(f"/registry/pods/ns{i % 1000}/p{i}", VALUE)
        last = await store.current_revision()
        seen = 0
        while seen < n:
            seen += len(await watches[-1].__anext__())
        elapsed = time.perf_counter() - started
        assert (await watches[0].__anext__())[-1].kv.mod_revision <= last
        results.append(("create with 1,001 watchers", f"{n / elapsed:,.0f} /s"))
        results.append(("database size", f"{await store.db_size() / 2**20:,.1f} MiB"))
        results.append(("raw sqlite3 INSERT (alongside creates)",
                        f"{raw.count / raw.elapsed:,.0f} /s"))
    finally:
        await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="keys per phase")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    with tempfile.TemporaryDirectory(prefix="kubi-bench-") as directory:
        results = asyncio.run(run(directory, args.n))
    width = max(len(name) for name, _ in results)
    print(f"{'operation':<{width}}  result")
    print(f"{'-' * width}  ------")
    for name, value in results:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
