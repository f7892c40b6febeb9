"""Lease churn: continuous updates with compaction every second stay in bounded space."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from kubi.storage import SQLiteBackend

pytestmark = pytest.mark.anyio

LEASES = 1000
SECONDS = float(os.environ.get("KUBI_CHURN_SECONDS", "20"))
RATE = 2500  # updates per second: each lease renewed every 0.4 s
VALUE_SIZE = 600  # about a Lease object as JSON
BOUND = 16 * 1024 * 1024


def on_disk(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


async def test_lease_churn_stays_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                         ) -> None:
    caplog.set_level(logging.WARNING, logger="kubi.storage")
    path = str(tmp_path / "state.db")
    store = SQLiteBackend(path, compact_interval=1.0)
    await store.start()
    try:
        keys = [f"/registry/leases/kube-node-lease/node-{i:04}" for i in range(LEASES)]
        revisions = {key: await store.create(key, b"0" * VALUE_SIZE) for key in keys}
        watch = store.watch("/registry/leases/", 0)  # a consumer that keeps up
        seen = 0

        async def consume() -> None:
            nonlocal seen
            async for batch in watch:
                seen += len(batch)

        consumer = asyncio.create_task(consume())
        updates = written = largest = 0
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < SECONDS:
            for key in keys[updates % LEASES: updates % LEASES + 100]:
                value = f"{updates:0{VALUE_SIZE}}".encode()
                rev, _, ok = await store.update(key, value, revisions[key])
                assert ok, key
                revisions[key] = rev
                updates += 1
                written += 2 * VALUE_SIZE  # every row carries the value and the old one
            largest = max(largest, on_disk(path))
            await asyncio.sleep(max(0.0, updates / RATE - elapsed))
        await asyncio.sleep(0.1)
        consumer.cancel()

        assert largest < BOUND, f"database + WAL reached {largest} bytes"
        # Without compaction the file would have grown well past the bound.
        assert written > 2 * BOUND or SECONDS < 20, (written, updates)
        assert store._compact_rev > await store.current_revision() - 2 * RATE * 2
        assert seen == updates
        for key in keys[:10]:
            assert (await store.get(key))[1] is not None
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        print(f"\n{updates} updates in {SECONDS:.0f}s, largest db+wal {largest / 2**20:.1f} MiB,"
              f" final {on_disk(path) / 2**20:.1f} MiB")
    finally:
        await store.close()
