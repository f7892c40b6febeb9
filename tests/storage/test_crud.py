"""Reads and writes: revisions, compare-and-swap, listing, past revisions, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubi.storage import (
    CompactedError,
    FutureRevisionError,
    KeyExistsError,
    KeyValue,
    SQLiteBackend,
    open_backend,
)
from kubi.storage.sqlite import _prefix_end

pytestmark = pytest.mark.anyio


async def test_fresh_store_starts_at_revision_one(backend: SQLiteBackend) -> None:
    assert await backend.current_revision() == 1
    assert await backend.list("") == (1, [], False)
    assert await backend.count("") == (1, 0)


async def test_create_and_get(backend: SQLiteBackend) -> None:
    rev = await backend.create("/registry/pods/default/a", b'{"a":1}')
    assert rev == 2
    assert await backend.get("/registry/pods/default/a") == (
        2, KeyValue("/registry/pods/default/a", b'{"a":1}', 2, 2))
    assert await backend.create("/registry/pods/default/b", b"") == 3
    _, kv = await backend.get("/registry/pods/default/b")
    assert kv is not None and kv.value == b""
    assert await backend.get("/registry/pods/default/missing") == (3, None)


async def test_create_of_a_live_key_raises_and_changes_nothing(backend: SQLiteBackend) -> None:
    await backend.create("/k", b"1")
    with pytest.raises(KeyExistsError) as info:
        await backend.create("/k", b"2")
    assert info.value.key == "/k"
    assert await backend.current_revision() == 2
    assert await backend.get("/k") == (2, KeyValue("/k", b"1", 2, 2))


async def test_create_after_delete_starts_a_new_life(backend: SQLiteBackend) -> None:
    await backend.create("/k", b"1")
    await backend.delete("/k")
    rev = await backend.create("/k", b"2")
    assert rev == 4
    assert await backend.get("/k") == (4, KeyValue("/k", b"2", 4, 4))


async def test_update_is_compare_and_swap(backend: SQLiteBackend) -> None:
    created = await backend.create("/k", b"1")
    rev, kv, ok = await backend.update("/k", b"2", created)
    assert (rev, kv, ok) == (3, KeyValue("/k", b"2", created, 3), True)
    # A second writer holding the old revision loses and learns the current value.
    rev, kv, ok = await backend.update("/k", b"stale", created)
    assert (rev, kv, ok) == (3, KeyValue("/k", b"2", created, 3), False)
    assert await backend.get("/k") == (3, KeyValue("/k", b"2", created, 3))
    # Revision 0 is not a wildcard for update.
    assert (await backend.update("/k", b"x", 0))[2] is False


async def test_update_of_absent_or_deleted_key_fails(backend: SQLiteBackend) -> None:
    assert await backend.update("/nope", b"1", 1) == (1, None, False)
    created = await backend.create("/k", b"1")
    await backend.delete("/k")
    assert await backend.update("/k", b"2", created) == (3, None, False)
    assert await backend.current_revision() == 3


async def test_delete(backend: SQLiteBackend) -> None:
    created = await backend.create("/k", b"1")
    updated, _, _ = await backend.update("/k", b"2", created)
    # Conditional delete with a stale revision fails and returns the current kv.
    assert await backend.delete("/k", created) == (
        updated, KeyValue("/k", b"2", created, updated), False)
    rev, kv, ok = await backend.delete("/k", updated)
    assert (rev, kv, ok) == (updated + 1, KeyValue("/k", b"2", created, updated), True)
    assert await backend.get("/k") == (rev, None)
    assert await backend.delete("/k") == (rev, None, False)
    assert await backend.delete("/never") == (rev, None, False)


async def test_unconditional_delete(backend: SQLiteBackend) -> None:
    await backend.create("/k", b"1")
    rev, kv, ok = await backend.delete("/k")
    assert ok and rev == 3 and kv == KeyValue("/k", b"1", 2, 2)


async def _fill(backend: SQLiteBackend, keys: list[str]) -> dict[str, int]:
    return {key: await backend.create(key, key.encode()) for key in keys}


async def test_list_prefix_order_and_deleted_keys(backend: SQLiteBackend) -> None:
    await _fill(backend, ["/r/pods/b", "/r/pods/a", "/r/podsx/c", "/r/pod", "/r/pods/c"])
    await backend.delete("/r/pods/c")
    rev, kvs, more = await backend.list("/r/pods/")
    assert rev == await backend.current_revision()
    assert [kv.key for kv in kvs] == ["/r/pods/a", "/r/pods/b"]
    assert kvs[0] == KeyValue("/r/pods/a", b"/r/pods/a", 3, 3)
    assert not more
    assert [kv.key for kv in (await backend.list("/r/pod"))[1]] == [
        "/r/pod", "/r/pods/a", "/r/pods/b", "/r/podsx/c"]
    assert await backend.count("/r/pods/") == (rev, 2)
    assert await backend.count("/r/") == (rev, 4)
    assert await backend.count("/nothing/") == (rev, 0)


async def test_list_shows_latest_value(backend: SQLiteBackend) -> None:
    rev = await backend.create("/r/a", b"1")
    rev, _, _ = await backend.update("/r/a", b"2", rev)
    rev, _, _ = await backend.update("/r/a", b"3", rev)
    assert (await backend.list("/r/"))[1] == [KeyValue("/r/a", b"3", 2, rev)]


async def test_list_pagination(backend: SQLiteBackend) -> None:
    keys = [f"/r/k{i:03}" for i in range(25)]
    await _fill(backend, keys)
    await backend.create("/s/after", b"")
    seen: list[str] = []
    start = ""
    while True:
        _, kvs, more = await backend.list("/r/", start_key=start, limit=10)
        assert len(kvs) <= 10
        seen += [kv.key for kv in kvs]
        if not more:
            break
        start = kvs[-1].key + "\x00"  # just past the last key, as the API server pages
    assert seen == keys
    # The last full page says there is no more when nothing follows.
    _, kvs, more = await backend.list("/r/", start_key="/r/k015", limit=10)
    assert len(kvs) == 10 and not more
    _, kvs, more = await backend.list("/r/", limit=25)
    assert len(kvs) == 25 and not more
    _, kvs, more = await backend.list("/r/", limit=24)
    assert len(kvs) == 24 and more
    # start_key outside the prefix: before it means from the start, after it means nothing.
    assert len((await backend.list("/r/", start_key="/a"))[1]) == 25
    assert (await backend.list("/r/", start_key="/t"))[1] == []


async def test_get_and_list_at_a_past_revision(backend: SQLiteBackend) -> None:
    a1 = await backend.create("/r/a", b"a1")
    b1 = await backend.create("/r/b", b"b1")
    a2, _, _ = await backend.update("/r/a", b"a2", a1)
    b_gone, _, _ = await backend.delete("/r/b")
    c1 = await backend.create("/r/c", b"c1")
    assert await backend.get("/r/a", a1) == (c1, KeyValue("/r/a", b"a1", a1, a1))
    assert await backend.get("/r/a", b1) == (c1, KeyValue("/r/a", b"a1", a1, a1))
    assert await backend.get("/r/a", a2) == (c1, KeyValue("/r/a", b"a2", a1, a2))
    assert await backend.get("/r/a", 1) == (c1, None)
    assert await backend.get("/r/b", b_gone) == (c1, None)

    def view(kvs: list[KeyValue]) -> list[tuple[str, bytes]]:
        return [(kv.key, kv.value) for kv in kvs]

    rev, kvs, _ = await backend.list("/r/", revision=b1)
    assert rev == b1 and view(kvs) == [("/r/a", b"a1"), ("/r/b", b"b1")]
    assert view((await backend.list("/r/", revision=a2))[1]) == [("/r/a", b"a2"), ("/r/b", b"b1")]
    assert view((await backend.list("/r/", revision=b_gone))[1]) == [("/r/a", b"a2")]
    rev, kvs, more = await backend.list("/r/", limit=1, revision=a2)
    assert view(kvs) == [("/r/a", b"a2")] and more
    assert view((await backend.list("/r/", revision=c1))[1]) == [
        ("/r/a", b"a2"), ("/r/c", b"c1")]


async def test_future_and_compacted_revisions(backend: SQLiteBackend) -> None:
    first = await backend.create("/r/a", b"1")
    rev, _, _ = await backend.update("/r/a", b"2", first)
    with pytest.raises(FutureRevisionError):
        await backend.get("/r/a", rev + 1)
    with pytest.raises(FutureRevisionError):
        await backend.list("/r/", revision=rev + 1)
    await backend.compact(rev)
    with pytest.raises(CompactedError) as info:
        await backend.get("/r/a", first)
    assert (info.value.compact_revision, info.value.current_revision) == (rev, rev)
    with pytest.raises(CompactedError):
        await backend.list("/r/", revision=first)
    # The compact revision itself is still readable.
    assert (await backend.get("/r/a", rev))[1] == KeyValue("/r/a", b"2", first, rev)


@pytest.mark.parametrize(("call", "args", "error"), [
    ("create", (b"/k", b"v"), TypeError),
    ("create", ("", b"v"), ValueError),
    ("create", ("/k\x00x", b"v"), ValueError),
    ("create", ("compact_rev_key", b"v"), ValueError),
    ("create", ("/k", "text"), TypeError),
    ("create", ("/k", None), TypeError),
    ("update", ("/k", b"v", -1), ValueError),
    ("update", ("/k", b"v", "2"), TypeError),
    ("update", ("/k", bytearray(b"v"), 2), TypeError),
    ("delete", ("/k", -5), ValueError),
    ("get", ("/k", -1), ValueError),
    ("get", (None,), TypeError),
    ("list", ("/", "", -1), ValueError),
    ("list", (1,), TypeError),
    ("list", ("/", None), TypeError),
    ("list", ("/", "", 0, 1.5), TypeError),
    ("count", (None,), TypeError),
    ("compact", (-1,), ValueError),
    ("compact", (10**9,), FutureRevisionError),
])
async def test_bad_input_is_rejected_without_change(
        backend: SQLiteBackend, call: str, args: tuple[Any, ...], error: type[Exception]) -> None:
    await backend.create("/k", b"orig")
    before = await backend.list("")
    with pytest.raises(error):
        await getattr(backend, call)(*args)
    assert await backend.list("") == before


def test_bad_watch_arguments(tmp_path: Path) -> None:
    store = SQLiteBackend(str(tmp_path / "s.db"))
    with pytest.raises(RuntimeError, match="not started"):
        store.watch("/", 0)


async def test_calls_before_start_and_after_close_fail(tmp_path: Path) -> None:
    store = SQLiteBackend(str(tmp_path / "s.db"), compact_interval=0)
    with pytest.raises(RuntimeError, match="not started"):
        await store.get("/k")
    await store.start()
    with pytest.raises(RuntimeError, match="already started"):
        await store.start()
    with pytest.raises(TypeError):
        store.watch("/", "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.watch("/", -1)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(RuntimeError):
        await store.create("/k", b"")


@pytest.mark.parametrize(("path", "kwargs"), [
    ("", {}), (":memory:", {}), ("/x.db", {"compact_interval": -1}),
    ("/x.db", {"compact_retain": -1}),
])
def test_bad_constructor_arguments(path: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SQLiteBackend(path, **kwargs)


def test_prefix_end() -> None:
    assert _prefix_end("") is None
    assert _prefix_end("/a/") == "/a0"
    assert _prefix_end("a\U0010ffff") == "b"
    assert _prefix_end("\U0010ffff") is None
    assert _prefix_end("a\ud7ff") == "a\ue000"


async def test_non_ascii_and_extreme_keys(backend: SQLiteBackend) -> None:
    keys = ["/u/é", "/u/z", "/u/\U0010ffff", "/u/\U0010ffff\U0010ffff", "/v"]
    await _fill(backend, keys)
    assert [kv.key for kv in (await backend.list("/u/"))[1]] == sorted(keys[:4])
    assert [kv.key for kv in (await backend.list("/u/\U0010ffff"))[1]] == keys[2:4]


def test_open_backend_urls(tmp_path: Path) -> None:
    store = open_backend(f"sqlite://{tmp_path}/state.db?compact_interval=5&compact_retain=7")
    assert isinstance(store, SQLiteBackend)
    assert (store.path, store.compact_interval, store.compact_retain) == (
        f"{tmp_path}/state.db", 5.0, 7)
    store = open_backend("sqlite:///var/lib/kubi/state.db", compact_interval=1.5)
    assert isinstance(store, SQLiteBackend)
    assert (store.path, store.compact_interval) == ("/var/lib/kubi/state.db", 1.5)
    store = open_backend(f"sqlite:///{tmp_path}/state.db")  # four slashes
    assert isinstance(store, SQLiteBackend) and store.path == f"{tmp_path}/state.db"
    store = open_backend("sqlite://data/state.db")
    assert isinstance(store, SQLiteBackend) and store.path == "data/state.db"


@pytest.mark.parametrize(("url", "message"), [
    ("/var/lib/state.db", "no scheme"),
    ("etcd://127.0.0.1:2379", "unknown scheme 'etcd'"),
    ("sqlite://", "needs a file path"),
    ("sqlite:///x.db?journal=delete", "unknown option"),
    ("sqlite:///x.db?compact_interval=soon", "bad option value"),
])
def test_open_backend_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_backend(url)
