"""Durability: restart keeps everything; kill -9 loses no acknowledged write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubi.storage import KeyValue, SQLiteBackend

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


async def test_restart_keeps_data_revisions_and_compact_revision(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SQLiteBackend(path, compact_interval=0)
    await store.start()
    a = await store.create("/r/a", b"1")
    a, _, _ = await store.update("/r/a", b"2", a)
    b = await store.create("/r/b", b"x")
    compacted = await store.current_revision()
    await store.compact(compacted)
    # The newest row is a tombstone; compaction below it keeps the revision anyway.
    top, _, _ = await store.delete("/r/b")
    await store.compact(top)
    listed = await store.list("/r/")
    await store.close()

    store = SQLiteBackend(path, compact_interval=0)
    await store.start()
    try:
        assert await store.current_revision() == top
        assert await store.list("/r/") == listed
        assert (await store.get("/r/a"))[1] == KeyValue("/r/a", b"2", 2, a)
        assert store._compact_rev == top
        assert await store.create("/r/c", b"") == top + 1  # no revision is ever reused
        assert b < top
    finally:
        await store.close()


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.storage._writer", path],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    acked: list[tuple[str, int, int]] = []
    deadline = time.monotonic() + 60
    try:
        # Kill it mid-burst, while it is still writing as fast as it can.
        while len(acked) < 3000 and time.monotonic() < deadline:
            line = child.stdout.readline().decode()
            if not line:
                break
            key, rev, i = line.split()
            acked.append((key, int(rev), int(i)))
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read().decode()
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    for line in rest.split("\n")[:-1]:  # the last piece may be cut mid-line
        key, rev, i = line.split()
        acked.append((key, int(rev), int(i)))
    assert len(acked) >= 3000

    store = SQLiteBackend(path, compact_interval=0)
    await store.start()
    try:
        current = await store.current_revision()
        assert current >= acked[-1][1]
        for acked_key, acked_rev, step in acked:
            _, kv = await store.get(acked_key, acked_rev)
            assert kv is not None and kv.mod_revision == acked_rev, (acked_key, acked_rev)
            assert kv.value == f"{acked_key}@{step}".encode()
        # The reopened store carries on from where the killed one stopped.
        assert await store.create("/r/after", b"") == current + 1
    finally:
        await store.close()
