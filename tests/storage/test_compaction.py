"""Compaction: what it drops, what it keeps, automatic rounds, space reclaimed."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from kubi.storage import CompactedError, FutureRevisionError, KeyValue, SQLiteBackend

pytestmark = pytest.mark.anyio


def rows(path: str) -> list[tuple[int, str, int]]:
    """(id, name, deleted) of every row, read through a separate connection."""
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT id, name, deleted FROM kine ORDER BY id"))


async def test_compaction_drops_history_and_keeps_live_keys(backend: SQLiteBackend) -> None:
    a = await backend.create("/r/a", b"a1")
    a, _, _ = await backend.update("/r/a", b"a2", a)
    a, _, _ = await backend.update("/r/a", b"a3", a)
    b = await backend.create("/r/b", b"b1")
    await backend.delete("/r/b")
    c = await backend.create("/r/c", b"c1")  # never updated: its only row must stay
    target = await backend.current_revision()
    a_after, _, _ = await backend.update("/r/a", b"a4", a)  # after the target: kept
    before = await backend.list("/r/", revision=target)

    assert await backend.compact(target) == a_after
    assert rows(backend.path) == [
        (1, "compact_rev_key", 0), (a, "/r/a", 0), (c, "/r/c", 0), (a_after, "/r/a", 0)]
    assert await backend.list("/r/", revision=target) == before
    assert (await backend.list("/r/"))[1] == [
        KeyValue("/r/a", b"a4", 2, a_after), KeyValue("/r/c", b"c1", c, c)]
    assert (await backend.get("/r/a", target))[1] == KeyValue("/r/a", b"a3", 2, a)
    with pytest.raises(CompactedError):
        await backend.get("/r/a", target - 1)
    # A key whose history was compacted away can be created again.
    assert (await backend.get("/r/b"))[1] is None
    again = await backend.create("/r/b", b"b2")
    assert (await backend.get("/r/b"))[1] == KeyValue("/r/b", b"b2", again, again)
    assert b < again


async def test_compact_edge_cases(backend: SQLiteBackend) -> None:
    rev = await backend.create("/r/a", b"")
    with pytest.raises(FutureRevisionError):
        await backend.compact(rev + 1)
    assert await backend.compact(rev) == rev
    assert await backend.compact(rev) == rev  # again: nothing to do
    assert await backend.compact(1) == rev  # older than the compact revision: nothing to do
    with pytest.raises(CompactedError):
        await backend.get("/r/a", rev - 1)


async def test_compaction_in_many_batches(backend: SQLiteBackend) -> None:
    rev = await backend.create("/r/k", b"0")
    for i in range(2500):  # spans several compaction transactions
        rev, _, _ = await backend.update("/r/k", str(i).encode(), rev)
    await backend.create("/r/other", b"")
    await backend.compact(rev)
    assert [r[1] for r in rows(backend.path)] == ["compact_rev_key", "/r/k", "/r/other"]
    assert (await backend.get("/r/k"))[1] == KeyValue("/r/k", b"2499", 2, rev)


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


async def test_automatic_compaction(tmp_path: Path) -> None:
    store = SQLiteBackend(str(tmp_path / "s.db"), compact_interval=0.1, compact_retain=5)
    await store.start()
    try:
        rev = await store.create("/r/k", b"")
        for _ in range(20):
            rev, _, _ = await store.update("/r/k", b"", rev)
        # Rounds catch up with the revision of one round earlier, minus compact_retain.
        await eventually(lambda: store._compact_rev == rev - 5)
        with pytest.raises(CompactedError):
            await store.get("/r/k", rev - 6)
        assert (await store.get("/r/k", rev - 5))[1] is not None
        for _ in range(3):
            rev, _, _ = await store.update("/r/k", b"", rev)
        await eventually(lambda: store._compact_rev == rev - 5)
        await asyncio.sleep(0.3)  # more rounds never eat into the retained revisions
        assert store._compact_rev == rev - 5
    finally:
        await store.close()


async def test_compaction_reclaims_file_space(backend: SQLiteBackend) -> None:
    big = b"x" * 4000
    rev = await backend.create("/r/k", big)
    for _ in range(2000):
        rev, _, _ = await backend.update("/r/k", big, rev)
    grown = await backend.db_size()
    assert grown > 8_000_000  # every version holds the value and the previous one
    await backend.compact(rev)
    shrunk = await backend.db_size()
    assert shrunk < grown / 5
    assert Path(backend.path + "-wal").stat().st_size == 0  # truncated by the checkpoint
    with sqlite3.connect(backend.path) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # INCREMENTAL
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
