"""Group commit: writes of one loop turn share a transaction; nothing is acknowledged or
watched before it is committed; a failed COMMIT fails every write of its group."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from kubi.storage import SQLiteBackend

pytestmark = pytest.mark.anyio


def committed_rows(path: Path) -> int:
    """Rows another connection sees: only committed ones."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM kine WHERE name LIKE '/g/%'").fetchone()[0])
    finally:
        db.close()


async def test_concurrent_writes_share_one_commit(tmp_path: Path) -> None:
    store = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0)
    await store.start()
    try:
        before = store._writes
        revisions = await asyncio.gather(*(store.create(f"/g/k{i}", b"v") for i in range(20)))
        assert sorted(revisions) == list(range(revisions[0], revisions[0] + 20))
        assert store._writes == before + 1  # one COMMIT for the twenty
        assert committed_rows(tmp_path / "state.db") == 20
    finally:
        await store.close()


async def test_a_write_is_committed_when_it_returns(tmp_path: Path) -> None:
    store = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0)
    await store.start()
    try:
        revision = await store.create("/g/a", b"1")
        assert committed_rows(tmp_path / "state.db") == 1
        _, kv, ok = await store.update("/g/a", b"2", revision)
        assert ok and kv is not None
        _, _, ok = await store.delete("/g/a", kv.mod_revision)
        assert ok
        assert committed_rows(tmp_path / "state.db") == 3
    finally:
        await store.close()


async def test_watchers_see_events_only_after_the_commit(tmp_path: Path) -> None:
    store = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0)
    await store.start()
    try:
        watch = store.watch("/g/", 0)
        write = asyncio.ensure_future(store.create("/g/x", b"v"))
        await asyncio.sleep(0)  # the INSERT ran; the COMMIT has not
        assert store._batch is not None and not watch._batches
        await write
        batch = await asyncio.wait_for(watch.__anext__(), 5)
        assert [e.kv.key for e in batch] == ["/g/x"]
        await watch.aclose()
    finally:
        await store.close()


async def test_a_failed_commit_fails_its_writes_and_announces_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteBackend(str(path), compact_interval=0)
    await store.start()
    try:
        kept = await store.create("/g/kept", b"v")
        watch = store.watch("/g/", 0)
        # Break the group's COMMIT: a deferred foreign key check fails only there.
        db = store._conn()
        db.execute("CREATE TABLE child (parent INTEGER REFERENCES kine(id) "
                   "DEFERRABLE INITIALLY DEFERRED)")
        db.execute("PRAGMA foreign_keys = ON")
        writes = [asyncio.ensure_future(store.create(f"/g/lost{i}", b"v")) for i in range(3)]
        await asyncio.sleep(0)
        db.execute("INSERT INTO child VALUES (-1)")
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert all(isinstance(r, sqlite3.IntegrityError) for r in results)
        assert committed_rows(path) == 1
        assert await store.current_revision() == kept
        db.execute("PRAGMA foreign_keys = OFF")
        # The store goes on: the next write takes the next revision, and the watch sees
        # it and nothing of the lost group.
        again = await store.create("/g/after", b"v")
        assert again == kept + 1
        batch = await asyncio.wait_for(watch.__anext__(), 5)
        assert [e.kv.key for e in batch] == ["/g/after"]
        await watch.aclose()
    finally:
        await store.close()


async def test_reads_never_return_a_write_that_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteBackend(str(path), compact_interval=0)
    await store.start()
    try:
        kept = await store.create("/g/kept", b"v")
        db = store._conn()
        db.execute("CREATE TABLE child (parent INTEGER REFERENCES kine(id) "
                   "DEFERRABLE INITIALLY DEFERRED)")
        db.execute("PRAGMA foreign_keys = ON")
        write = asyncio.ensure_future(store.create("/g/lost", b"v"))
        await asyncio.sleep(0)  # the INSERT ran in the open group; its COMMIT will fail
        db.execute("INSERT INTO child VALUES (-1)")
        assert store._batch is not None
        # A read made now waits for the group: it sees the state after the rollback.
        assert await store.get("/g/lost") == (kept, None)
        with pytest.raises(sqlite3.IntegrityError):
            await write
        # And so does each kind of read, each made while another doomed group is open.
        async def doomed_group() -> asyncio.Future[int]:
            doomed = asyncio.ensure_future(store.create("/g/lost", b"v"))
            await asyncio.sleep(0)
            db.execute("INSERT INTO child VALUES (-1)")  # rolled back with each group
            assert store._batch is not None
            return doomed

        async def fails(doomed: asyncio.Future[int]) -> None:
            with pytest.raises(sqlite3.IntegrityError):
                await doomed

        doomed = await doomed_group()
        revision, listed, _ = await store.list("/g/")
        await fails(doomed)
        assert revision == kept and [kv.key for kv in listed] == ["/g/kept"]
        doomed = await doomed_group()
        assert await store.count("/g/") == (kept, 1)
        await fails(doomed)
        doomed = await doomed_group()
        assert await store.current_revision() == kept
        await fails(doomed)
        db.execute("PRAGMA foreign_keys = OFF")
    finally:
        await store.close()


async def test_a_read_beside_a_write_returns_it_committed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SQLiteBackend(str(path), compact_interval=0)
    await store.start()
    try:
        write = asyncio.ensure_future(store.create("/g/new", b"v"))
        await asyncio.sleep(0)
        _, kv = await store.get("/g/new")
        # What the read returned, another process sees too: it was committed first.
        assert kv is not None and committed_rows(path) == 1
        assert await write == kv.mod_revision
    finally:
        await store.close()
