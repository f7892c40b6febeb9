"""The SQLite backend: kine's append-only log table on one local file.

Each row of `kine` is one revision (`id`). A create appends a row with created=1;
an update appends a row whose prev_revision is the row it replaces; a delete
appends a tombstone (deleted=1) carrying the last value. The UNIQUE index on
(name, prev_revision) makes two updates of the same row impossible, so the
compare-and-swap holds even against another process writing the file. Along one
key's rows prev_revision grows with id, which lets that one index serve every
lookup.

One connection, used from the event loop thread: a commit costs ~100µs because
synchronous=NORMAL in WAL mode only writes to the OS page cache (durable
against `kill -9`, not against power loss). Checkpoints, which fsync, mostly
run on a helper thread with its own connection so the loop rarely waits on disk.

This process's writes feed watches directly (no polling); a watch that starts in
the past first replays the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from typing import Any

from kubi.storage.interface import (
    CompactedError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyValue,
)

log = logging.getLogger(__name__)

_Rows = list[Any]  # SQLiteBackend.list shadows the builtin inside the class

# kine keeps the compact revision in the prev_revision of this row.
COMPACT_REV_KEY = "compact_rev_key"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER,
    deleted INTEGER,
    create_revision INTEGER,
    prev_revision INTEGER,
    lease INTEGER,
    value BLOB,
    old_value BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine (name, prev_revision);
"""

_ROW = "id, name, created, deleted, create_revision, prev_revision, value"

# old_value stays NULL: an event's previous value is the row its prev_revision names,
# which compaction keeps for every event after the compact revision. Storing it
# again would double the log.
_INSERT = (
    "INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value)"
    " VALUES (?, ?, ?, ?, ?, 0, ?)"
)
# prev_revision grows along a key's rows, so the index's last entry is the latest row.
_LATEST = f"SELECT {_ROW} FROM kine WHERE name = ? ORDER BY prev_revision DESC LIMIT 1"
_LATEST_AT = (
    f"SELECT {_ROW} FROM kine WHERE name = ? AND id <= ? ORDER BY prev_revision DESC LIMIT 1"
)
# A row is the key's state as of revision R when no row up to R replaced it.
_UNREPLACED = (
    "NOT EXISTS (SELECT 1 FROM kine AS nxt WHERE nxt.name = kv.name"
    " AND nxt.prev_revision = kv.id AND nxt.id <= ?)"
)
_COMPACT_BATCH = (
    "DELETE FROM kine WHERE id IN ("
    " SELECT prev_revision FROM kine WHERE id > ? AND id <= ? AND prev_revision != 0"
    " AND name != 'compact_rev_key'"
    " UNION ALL SELECT id FROM kine WHERE id > ? AND id <= ? AND deleted != 0)"
)

_COMPACT_BATCH_REVISIONS = 1000  # one transaction each, so the loop is never held long
_REPLAY_PAGE = 1000  # rows per replay query of a watch that starts in the past
_VACUUM_STEP_PAGES = 512  # ~1 MiB, a few ms of the loop each
_CHECKPOINT_PERIOD = 0.02  # seconds between the helper thread's passive checkpoints
_PAGE_SIZE = 2048
_BUSY_TIMEOUT_MS = 10_000
_WAL_SIZE_LIMIT = 4 * 1024 * 1024  # the WAL is truncated back to this after a reset
# A key's latest row, as a get() just read it, serves the update() that usually follows
# (read-modify-write) for this long; the UNIQUE (name, prev_revision) index still decides
# the compare-and-swap, and compaction (which could remove a tombstone that would guard
# it) never reaches a revision this young.
_RECENT_ROW_SECONDS = 1.0
_RECENT_ROWS = 4096


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with prefix (None: no bound)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be stored; skip past them
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


def _key_range(prefix: str, start_key: str = "") -> tuple[str, list[Any]]:
    """SQL condition (on `kv.name`) and parameters for keys under prefix and >= start_key."""
    low = max(prefix, start_key)
    high = _prefix_end(prefix)
    if high is None:
        return "kv.name >= ? AND kv.name != 'compact_rev_key'", [low]
    return "kv.name >= ? AND kv.name < ? AND kv.name != 'compact_rev_key'", [low, high]


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be str, not {type(key).__name__}")
    if not key:
        raise ValueError("key must not be empty")
    if "\x00" in key:
        raise ValueError("key must not contain NUL")
    if key == COMPACT_REV_KEY:
        raise ValueError(f"key {COMPACT_REV_KEY!r} is reserved")
    return key


def _check_value(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    return value


def _check_revision(revision: object, name: str = "revision") -> int:
    if type(revision) is not int:
        raise TypeError(f"{name} must be int, not {type(revision).__name__}")
    if revision < 0:
        raise ValueError(f"{name} must not be negative, got {revision}")
    return revision


def _check_prefix(prefix: object, name: str = "prefix") -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"{name} must be str, not {type(prefix).__name__}")
    return prefix


def _kv_of(row: Any) -> KeyValue:
    """KeyValue of a row selected as _ROW (a create row's create_revision is its own id)."""
    rev = row[0]
    return KeyValue(row[1], row[6], rev if row[2] else row[4], rev)


def _event_of(row: Any) -> Event:
    """Event of a row selected by _log_rows: _ROW plus the previous row's value."""
    rev, name, created, deleted, create_rev, prev_rev, value, prev_value = row
    if created:
        return Event("PUT", KeyValue(name, value, rev, rev), None)
    prev = KeyValue(name, prev_value if prev_value is not None else b"", create_rev, prev_rev)
    return Event("DELETE" if deleted else "PUT", KeyValue(name, value, create_rev, rev), prev)


class _WatchHub:
    """Routes committed events to watches, indexed by prefix.

    A key matches a watch prefix that ends in "/" only at one of the key's own
    "/" boundaries, so routing an event costs a few dict lookups however many
    watches there are. Other prefixes (an exact key, a name stem) are checked
    one by one, or by the key's prefixes when they are many.
    """

    def __init__(self) -> None:
        # Weak references: a watch its consumer dropped without aclose() goes away,
        # and its prefix with it, when it is garbage collected.
        self._by_prefix: dict[str, set[weakref.ref[SQLiteWatch]]] = {}
        self._irregular: set[str] = set()

    def add(self, watch: SQLiteWatch) -> None:
        prefix = watch.prefix
        refs = self._by_prefix.get(prefix)
        if refs is None:
            refs = self._by_prefix[prefix] = set()
            if prefix and not prefix.endswith("/"):
                self._irregular.add(prefix)
        watch._ref = weakref.ref(watch, functools.partial(self._discard, prefix))
        refs.add(watch._ref)

    def remove(self, watch: SQLiteWatch) -> None:
        if watch._ref is not None:
            self._discard(watch.prefix, watch._ref)

    def _discard(self, prefix: str, ref: weakref.ref[SQLiteWatch]) -> None:
        refs = self._by_prefix.get(prefix)
        if refs is not None:
            refs.discard(ref)
            if not refs:
                del self._by_prefix[prefix]
                self._irregular.discard(prefix)

    def __bool__(self) -> bool:
        return bool(self._by_prefix)

    def all(self) -> list[SQLiteWatch]:
        watches = (ref() for refs in self._by_prefix.values() for ref in refs)
        return [w for w in watches if w is not None]

    def _prefixes_of(self, key: str) -> list[str]:
        by_prefix = self._by_prefix
        found = [""] if "" in by_prefix else []
        slash = key.find("/")
        while slash != -1:
            head = key[: slash + 1]
            if head in by_prefix:
                found.append(head)
            slash = key.find("/", slash + 1)
        irregular = self._irregular
        if irregular:
            if len(irregular) <= len(key):
                found.extend(p for p in irregular if key.startswith(p))
            else:
                found.extend(key[:n] for n in range(1, len(key) + 1) if key[:n] in irregular)
        return found

    def dispatch(self, events: list[Event]) -> None:
        if not self._by_prefix:
            return
        per_prefix: dict[str, list[Event]] = {}
        for event in events:
            for prefix in self._prefixes_of(event.kv.key):
                per_prefix.setdefault(prefix, []).append(event)
        for prefix, matched in per_prefix.items():
            for ref in list(self._by_prefix.get(prefix, ())):
                watch = ref()
                if watch is not None:
                    watch._deliver(matched)


class SQLiteWatch:
    """One watch: replays the log from its start revision, then follows live writes.

    It is registered for live events when created, so nothing committed after
    watch() returns can be missed. The backend holds it weakly: a consumer that
    drops it without aclose() does not leak it.
    """

    def __init__(self, backend: SQLiteBackend, prefix: str, live_from: int,
                 replay_from: int, replay_to: int) -> None:
        self._backend = backend
        self.prefix = prefix
        self._live_from = live_from  # live events below this are replayed (or unwanted)
        self._replay_next = replay_from
        self._replay_to = replay_to
        self._batches: deque[list[Event]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._ref: weakref.ref[SQLiteWatch] | None = None  # set by the hub

    def __aiter__(self) -> SQLiteWatch:
        return self

    async def __anext__(self) -> list[Event]:
        while not self._closed:
            if self._replay_next <= self._replay_to:
                replayed = self._replay_page()
                if replayed:
                    return replayed
                continue
            if self._batches:
                return self._take_batches()
            self._waiter = self._backend._loop_or_fail().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._batches.clear()
        self._backend._hub.remove(self)
        self._wake()

    def _replay_page(self) -> list[Event]:
        backend = self._backend
        if backend._compact_rev >= self._replay_next:
            self._close()  # compaction overtook the replay; the consumer must relist
            raise CompactedError(backend._compact_rev, backend._rev)
        rows = backend._log_rows(self.prefix, self._replay_next, self._replay_to, _REPLAY_PAGE)
        if len(rows) < _REPLAY_PAGE:
            self._replay_next = self._replay_to + 1
        else:
            self._replay_next = rows[-1][0] + 1
        return [_event_of(row) for row in rows]

    def _take_batches(self) -> list[Event]:
        batches = self._batches
        if len(batches) == 1:
            return list(batches.popleft())
        merged: list[Event] = []
        while batches:
            merged.extend(batches.popleft())
        return merged

    def _deliver(self, events: list[Event]) -> None:
        if self._closed:
            return
        if events[0].kv.mod_revision < self._live_from:
            events = [e for e in events if e.kv.mod_revision >= self._live_from]
            if not events:
                return
        self._live_from = events[-1].kv.mod_revision + 1
        self._batches.append(events)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class SQLiteBackend:
    """`Backend` on a SQLite file; see the module docstring for the design."""

    def __init__(self, path: str, compact_interval: float = 300.0,
                 compact_retain: int = 1000) -> None:
        if not isinstance(path, str) or not path:
            raise ValueError("path must be a non-empty file path")
        if path == ":memory:" or path.startswith("file:"):
            raise ValueError("path must name a file (WAL mode needs one)")
        if compact_interval < 0:
            raise ValueError("compact_interval must not be negative (0 disables it)")
        if compact_retain < 0:
            raise ValueError("compact_retain must not be negative")
        self.path = path
        self.compact_interval = compact_interval
        self.compact_retain = compact_retain
        self._db: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rev = 0
        self._compact_rev = 0
        self._hub = _WatchHub()
        self._recent: dict[str, tuple[float, Any]] = {}  # key -> (when read, latest row)
        self._pending: list[Event] = []
        self._flush_scheduled = False
        # The open group commit: writes of one loop iteration share one transaction,
        # and each writer waits for this future (the COMMIT) before it answers.
        self._batch: asyncio.Future[None] | None = None
        self._compact_lock = asyncio.Lock()
        self._compactor: asyncio.Task[None] | None = None
        self._writes = 0  # commits so far; the checkpoint thread sleeps while it is still
        self._checkpoint_idle = False  # that thread waits for _checkpoint_wake
        self._checkpoint_wake = threading.Event()
        self._checkpoint_lock = threading.Lock()
        self._checkpoint_stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._db is not None:
            raise RuntimeError("backend already started")
        self._loop = asyncio.get_running_loop()
        self._db = self._open()
        self._checkpoint_stop.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="kubi-sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()
        if self.compact_interval > 0:
            self._compactor = asyncio.create_task(self._compact_loop(), name="kubi-compactor")

    def _open(self) -> sqlite3.Connection:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             cached_statements=64)
        try:
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            # Both only take effect before the first table exists. 2 KiB pages write
            # fewer WAL bytes per commit than 4 KiB (~8k vs ~5.5k creates/s here).
            db.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(f"{self.path}: cannot use WAL mode (got {mode})")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
            db.execute("PRAGMA cache_size = -32768")  # 32 MiB
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute(
                "SELECT MAX(prev_revision) FROM kine WHERE name = ?", (COMPACT_REV_KEY,)
            ).fetchone()
            if row[0] is None:
                db.execute(_INSERT, (COMPACT_REV_KEY, 1, 0, 0, 0, b""))
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        self._compact_rev = row[0] or 0
        self._rev = self._stored_revision(db)
        return db

    @staticmethod
    def _stored_revision(db: sqlite3.Connection) -> int:
        # sqlite_sequence remembers the highest id ever used, even after compaction
        # deleted that row; MAX(id) covers a table made without AUTOINCREMENT.
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'kine'").fetchone()
        top = db.execute("SELECT MAX(id) FROM kine").fetchone()
        return max(seq[0] if seq else 0, top[0] or 0)

    async def close(self) -> None:
        if self._db is None:
            return
        self._commit()
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
            self._compactor = None
        for watch in self._hub.all():
            watch._close()
        self._pending = []
        self._checkpoint_stop.set()
        self._checkpoint_wake.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        db, self._db = self._db, None
        try:
            self._truncate_wal(db)
        finally:
            db.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("backend is not started (or already closed)")
        return self._db

    def _loop_or_fail(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("backend is not started")
        return self._loop

    # -- reads -----------------------------------------------------------------------------

    def _check_read_revision(self, revision: int) -> None:
        if revision > self._rev:
            raise FutureRevisionError(revision, self._rev)
        if revision < self._compact_rev:
            raise CompactedError(self._compact_rev, self._rev)

    def _latest_row(self, key: str, revision: int = 0) -> Any:
        db = self._conn()
        if revision:
            return db.execute(_LATEST_AT, (key, revision)).fetchone()
        return db.execute(_LATEST, (key,)).fetchone()

    async def _settled(self) -> None:
        """Reads wait for an open group commit: what they return must never be a write
        that could still roll back (one loop turn at most)."""
        batch = self._batch
        if batch is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(batch)

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        _check_key(key)
        await self._settled()
        if _check_revision(revision):
            self._check_read_revision(revision)
        row = self._latest_row(key, revision)
        if row is None or row[3]:
            return self._rev, None
        if not revision:
            self._remember(key, row)
        return self._rev, _kv_of(row)

    def _remember(self, key: str, row: Any) -> None:
        recent = self._recent
        recent.pop(key, None)
        recent[key] = (time.monotonic(), row)
        if len(recent) > _RECENT_ROWS:
            del recent[next(iter(recent))]  # the oldest

    def _latest_for_update(self, key: str, revision: int) -> Any:
        """The key's latest row, from the get() that just read it when it names `revision`."""
        found = self._recent.pop(key, None)
        if (found is not None and found[1][0] == revision
                and time.monotonic() - found[0] < _RECENT_ROW_SECONDS):
            return found[1]
        return self._latest_row(key)

    async def list(self, prefix: str, start_key: str = "", limit: int = 0, revision: int = 0
                   ) -> tuple[int, list[KeyValue], bool]:
        _check_prefix(prefix)
        _check_prefix(start_key, "start_key")
        _check_revision(limit, "limit")
        await self._settled()
        db = self._conn()
        if _check_revision(revision):
            self._check_read_revision(revision)
        served = revision or self._rev
        condition, params = _key_range(prefix, start_key)
        sql = (
            "SELECT kv.id, kv.name, kv.created, kv.create_revision, kv.value FROM kine AS kv"
            f" WHERE {condition} AND kv.id <= ? AND {_UNREPLACED} AND kv.deleted = 0"
            " ORDER BY kv.name"
        )
        params += [served, served]
        if limit:
            sql += " LIMIT ?"
            params.append(limit + 1)
        rows = db.execute(sql, params).fetchall()
        more = bool(limit) and len(rows) > limit
        if more:
            del rows[limit:]
        kvs = [KeyValue(r[1], r[4], r[0] if r[2] else r[3], r[0]) for r in rows]
        return served, kvs, more

    async def count(self, prefix: str) -> tuple[int, int]:
        _check_prefix(prefix)
        await self._settled()
        condition, params = _key_range(prefix)
        sql = (
            f"SELECT COUNT(*) FROM kine AS kv WHERE {condition} AND {_UNREPLACED}"
            " AND kv.deleted = 0"
        )
        params.append(self._rev)
        (number,) = self._conn().execute(sql, params).fetchone()
        return self._rev, number

    async def current_revision(self) -> int:
        self._conn()
        await self._settled()
        return self._rev

    async def db_size(self) -> int:
        db = self._conn()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        return int(pages * page_size)

    def _log_rows(self, prefix: str, first: int, last: int, limit: int) -> _Rows:
        """Rows with first <= id <= last for keys under prefix, in revision order."""
        condition, params = _key_range(prefix)
        # old_value first: rows written by kine itself carry it. NOT INDEXED keeps the
        # scan on the id range (a name-index scan would sort a prefix's whole history).
        sql = (
            "SELECT kv.id, kv.name, kv.created, kv.deleted, kv.create_revision,"
            " kv.prev_revision, kv.value, COALESCE(kv.old_value, prev.value)"
            " FROM kine AS kv NOT INDEXED"
            " LEFT JOIN kine AS prev ON kv.created = 0 AND prev.id = kv.prev_revision"
            f" WHERE kv.id >= ? AND kv.id <= ? AND {condition} ORDER BY kv.id LIMIT ?"
        )
        return self._conn().execute(sql, [first, last, *params, limit]).fetchall()

    # -- writes ----------------------------------------------------------------------------

    def _begin(self) -> None:
        """Join the open group commit, or open one that commits on the next loop turn."""
        if self._batch is None:
            db = self._conn()
            loop = self._loop_or_fail()
            db.execute("BEGIN IMMEDIATE")
            self._batch = loop.create_future()
            loop.call_soon(self._commit)

    def _commit(self) -> None:
        """COMMIT the group; its writers answer, and its events reach the watches, only now."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        db = self._conn()
        try:
            db.execute("COMMIT")
        except sqlite3.Error as err:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            # None of the group's writes happened: forget what they announced (rows
            # other processes committed, caught up meanwhile, stay).
            self._recent.clear()
            self._rev = self._stored_revision(db)
            self._pending = [e for e in self._pending if e.kv.mod_revision <= self._rev]
            batch.set_exception(err)
            batch.exception()  # each writer gets it; none must be logged as unretrieved
            return
        self._wrote()
        batch.set_result(None)
        self._flush()

    async def _durable(self) -> None:
        """Wait until the group holding this coroutine's write is committed."""
        batch = self._batch
        if batch is not None:
            # shield: one cancelled writer must not cancel the group's future for the rest.
            await asyncio.shield(batch)

    def _append(self, key: str, created: int, deleted: int, create_revision: int,
                prev_revision: int, value: bytes) -> int:
        self._begin()
        cursor = self._conn().execute(
            _INSERT, (key, created, deleted, create_revision, prev_revision, value)
        )
        revision = cursor.lastrowid
        assert revision is not None
        if revision != self._rev + 1:
            self._catch_up(revision - 1)  # another process wrote the file meanwhile
        self._rev = revision
        return revision

    def _catch_up(self, last: int) -> None:
        """Publish rows other processes appended, so watches see no gap."""
        first = self._rev + 1
        self._rev = max(self._rev, last)
        if self._hub and first <= last:
            for row in self._log_rows("", first, last, last - first + 1):
                self._publish(_event_of(row))

    def _resync(self) -> None:
        self._catch_up(self._stored_revision(self._conn()))

    def _publish(self, event: Event) -> None:
        if not self._hub:
            return
        self._pending.append(event)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop_or_fail().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._batch is not None:
            return  # not yet committed: _commit flushes
        events, self._pending = self._pending, []
        if events:
            self._hub.dispatch(events)

    async def create(self, key: str, value: bytes) -> int:
        _check_key(key)
        _check_value(value)
        row = self._latest_row(key)
        if row is not None and not row[3]:
            raise KeyExistsError(key)
        prev_revision = row[0] if row is not None else 0
        try:
            revision = self._append(key, 1, 0, 0, prev_revision, value)
        except sqlite3.IntegrityError:
            self._resync()
            raise KeyExistsError(key) from None
        self._publish(Event("PUT", KeyValue(key, value, revision, revision), None))
        await self._durable()
        return revision

    async def update(self, key: str, value: bytes, revision: int
                     ) -> tuple[int, KeyValue | None, bool]:
        _check_key(key)
        _check_value(value)
        _check_revision(revision)
        row = self._latest_for_update(key, revision)
        if row is None or row[3]:
            return self._rev, None, False
        prev = _kv_of(row)
        if prev.mod_revision != revision:
            return self._rev, prev, False
        try:
            new_revision = self._append(key, 0, 0, prev.create_revision, prev.mod_revision,
                                        value)
        except sqlite3.IntegrityError:  # another process updated it first
            self._resync()
            _, current = await self.get(key)
            return self._rev, current, False
        kv = KeyValue(key, value, prev.create_revision, new_revision)
        self._publish(Event("PUT", kv, prev))
        await self._durable()
        return new_revision, kv, True

    async def delete(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None, bool]:
        _check_key(key)
        _check_revision(revision)
        row = self._latest_for_update(key, revision) if revision else self._latest_row(key)
        self._recent.pop(key, None)
        if row is None or row[3]:
            return self._rev, None, False
        prev = _kv_of(row)
        if revision and prev.mod_revision != revision:
            return self._rev, prev, False
        try:
            # The tombstone keeps the last value, as kine's does.
            new_revision = self._append(key, 0, 1, prev.create_revision, prev.mod_revision,
                                        prev.value)
        except sqlite3.IntegrityError:
            self._resync()
            _, current = await self.get(key)
            return self._rev, current, False
        tombstone = KeyValue(key, prev.value, prev.create_revision, new_revision)
        self._publish(Event("DELETE", tombstone, prev))
        await self._durable()
        return new_revision, prev, True

    # -- watch -----------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> SQLiteWatch:
        _check_prefix(prefix)
        _check_revision(start_revision, "start_revision")
        self._conn()
        current = self._rev
        if start_revision == 0:
            start_revision = current + 1
        elif start_revision <= self._compact_rev:
            raise CompactedError(self._compact_rev, current)
        # Events already committed but not yet dispatched are covered by the replay.
        live_from = max(start_revision, current + 1)
        watch = SQLiteWatch(self, prefix, live_from, start_revision, current)
        self._hub.add(watch)
        return watch

    # -- compaction ------------------------------------------------------------------------

    async def compact(self, revision: int) -> int:
        _check_revision(revision)
        db = self._conn()
        if revision > self._rev:
            raise FutureRevisionError(revision, self._rev)
        async with self._compact_lock:
            if revision <= self._compact_rev:
                return self._rev
            self._recent.clear()
            done = self._compact_rev
            while done < revision:
                upto = min(done + _COMPACT_BATCH_REVISIONS, revision)
                self._compact_batch(db, done, upto)
                done = upto
                await asyncio.sleep(0)
            await self._reclaim_space(db)
        return self._rev

    def _compact_batch(self, db: sqlite3.Connection, after: int, upto: int) -> None:
        self._commit()  # its own transaction: the open group goes first
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_COMPACT_BATCH, (after, upto, after, upto))
            db.execute("UPDATE kine SET prev_revision = ? WHERE name = ?", (upto, COMPACT_REV_KEY))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._compact_rev = upto
        self._wrote()

    async def _reclaim_space(self, db: sqlite3.Connection) -> None:
        (free,) = db.execute("PRAGMA freelist_count").fetchone()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (auto_vacuum,) = db.execute("PRAGMA auto_vacuum").fetchone()
        # Keep some free pages: the next interval's writes reuse them instead of
        # growing the file right back.
        excess = free - max(256, pages // 8)
        while auto_vacuum == 2 and excess > 0 and self._db is db:
            step = min(excess, _VACUUM_STEP_PAGES)
            # execute() would step the pragma once, freeing a single page.
            self._commit()  # executescript would commit the open group behind its back
            db.executescript(f"PRAGMA incremental_vacuum({step})")
            excess -= step
            await asyncio.sleep(0)
        if self._db is db:
            self._truncate_wal(db)

    def _truncate_wal(self, db: sqlite3.Connection) -> None:
        # TRUNCATE waits for readers; another process's long read must not hold the
        # loop for the whole busy timeout, so give up quickly (next round retries).
        if db is self._db:
            self._commit()
        with self._checkpoint_lock:
            db.execute("PRAGMA busy_timeout = 100")
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")

    async def _compact_loop(self) -> None:
        # As the apiserver asks etcd: each round compacts to the revision that was
        # current one interval earlier, keeping at least compact_retain revisions.
        target = self._rev
        while True:
            await asyncio.sleep(self.compact_interval)
            goal = min(target, self._rev - self.compact_retain)
            target = self._rev
            if goal <= self._compact_rev:
                continue
            try:
                await self.compact(goal)
            except Exception:
                log.exception("compaction to revision %d failed", goal)

    def _wrote(self) -> None:
        self._writes += 1
        if self._checkpoint_idle:
            self._checkpoint_idle = False
            self._checkpoint_wake.set()

    def _checkpoint_loop(self) -> None:
        """Helper thread: copy the WAL back into the database off the event loop."""
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            log.exception("checkpoint thread cannot open %s", self.path)
            return
        seen = self._writes
        stop = self._checkpoint_stop
        try:
            while not stop.is_set():
                if self._writes == seen:
                    # Idle: sleep until the next commit rather than polling.
                    self._checkpoint_idle = True
                    if self._writes == seen:
                        self._checkpoint_wake.wait()
                    self._checkpoint_idle = False
                    self._checkpoint_wake.clear()
                    continue
                if stop.wait(_CHECKPOINT_PERIOD) or not self._checkpoint_lock.acquire(False):
                    continue
                try:
                    seen = self._writes
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    log.exception("background checkpoint failed")
                finally:
                    self._checkpoint_lock.release()
        finally:
            db.close()
