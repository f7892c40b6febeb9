"""Watches: from now, from the past, prefixes, ordering without gaps, ends."""

from __future__ import annotations

import asyncio
import gc
import random
from pathlib import Path

import pytest

from kubi.storage import CompactedError, Event, KeyValue, SQLiteBackend
from kubi.storage.sqlite import SQLiteWatch

pytestmark = pytest.mark.anyio


async def collect(watch: SQLiteWatch, until_revision: int, timeout: float = 10.0) -> list[Event]:
    """Events from watch until one at or past until_revision."""
    events: list[Event] = []

    async def run() -> None:
        async for batch in watch:
            assert batch, "a watch never yields an empty batch"
            events.extend(batch)
            if events[-1].kv.mod_revision >= until_revision:
                return

    await asyncio.wait_for(run(), timeout)
    return events


def revisions(events: list[Event]) -> list[int]:
    return [e.kv.mod_revision for e in events]


async def test_watch_from_now_sees_puts_updates_and_deletes(backend: SQLiteBackend) -> None:
    await backend.create("/r/before", b"0")
    watch = backend.watch("/r/", 0)
    created = await backend.create("/r/a", b"1")
    updated, _, _ = await backend.update("/r/a", b"2", created)
    deleted, _, _ = await backend.delete("/r/a")
    events = await collect(watch, deleted)
    assert events == [
        Event("PUT", KeyValue("/r/a", b"1", created, created), None),
        Event("PUT", KeyValue("/r/a", b"2", created, updated),
              KeyValue("/r/a", b"1", created, created)),
        Event("DELETE", KeyValue("/r/a", b"2", created, deleted),
              KeyValue("/r/a", b"2", created, updated)),
    ]


async def test_failed_writes_make_no_events(backend: SQLiteBackend) -> None:
    rev = await backend.create("/r/a", b"1")
    watch = backend.watch("/r/", 0)
    await backend.update("/r/a", b"x", rev + 100)
    await backend.delete("/r/a", rev + 100)
    await backend.delete("/r/missing")
    with pytest.raises(Exception):  # noqa: B017 - KeyExistsError, any failure will do
        await backend.create("/r/a", b"again")
    last = await backend.create("/r/b", b"")
    assert revisions(await collect(watch, last)) == [last]


async def test_watch_from_the_past_replays_then_follows(backend: SQLiteBackend) -> None:
    first = await backend.create("/r/a", b"1")
    second, _, _ = await backend.update("/r/a", b"2", first)
    gone, _, _ = await backend.delete("/r/a")
    watch = backend.watch("/r/", second)
    later = await backend.create("/r/b", b"3")
    events = await collect(watch, later)
    assert revisions(events) == [second, gone, later]
    assert events[0] == Event("PUT", KeyValue("/r/a", b"2", first, second),
                              KeyValue("/r/a", b"1", first, first))
    assert events[1].type == "DELETE" and events[1].kv.value == b"2"
    assert events[1].prev_kv == KeyValue("/r/a", b"2", first, second)
    assert events[2].prev_kv is None


async def test_long_replay_pages_and_live_events_join_without_gap(
        backend: SQLiteBackend) -> None:
    start = await backend.current_revision() + 1
    for i in range(2500):  # more than one replay page
        await backend.create(f"/r/k{i}", b"v")
    watch = backend.watch("/r/", start)
    tail = [await backend.create(f"/r/t{i}", b"v") for i in range(5)]
    events = await collect(watch, tail[-1])
    assert revisions(events) == list(range(start, tail[-1] + 1))


async def test_future_start_revision_skips_earlier_events(backend: SQLiteBackend) -> None:
    now = await backend.current_revision()
    watch = backend.watch("/", now + 3)
    for i in range(5):
        await backend.create(f"/k{i}", b"")
    assert revisions(await collect(watch, now + 5)) == [now + 3, now + 4, now + 5]


async def test_prefix_filtering(backend: SQLiteBackend) -> None:
    watches = {prefix: backend.watch(prefix, 0) for prefix in
               ["", "/r/", "/r/pods/", "/r/pods/ns/p1", "/r/pods/n", "/x/"]}
    keys = ["/r/pods/ns/p1", "/r/pods/ns/p10", "/r/podsx/a", "/r/pods/other/p1", "/s/a",
            "compact_rev"]
    revs = {key: await backend.create(key, b"") for key in keys}
    end = await backend.create("/end", b"")

    def expect(prefix: str) -> list[str]:
        return [k for k in keys if k.startswith(prefix)]

    for prefix, watch in watches.items():
        if prefix == "/x/":
            continue
        wanted = expect(prefix)
        events = await collect(watch, revs[wanted[-1]] if prefix else end)
        got = [e.kv.key for e in events]
        assert got == wanted + (["/end"] if prefix == "" else []), prefix
    # Nothing at all arrives for a prefix without writes.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(watches["/x/"].__anext__(), 0.2)


async def test_many_exact_key_watches(backend: SQLiteBackend) -> None:
    """More odd prefixes than key characters switches the lookup strategy."""
    watches = [backend.watch(f"/r/key{i}", 0) for i in range(200)]
    await backend.create("/r/key7", b"")
    rev = await backend.create("/r/key12", b"")
    assert [e.kv.key for e in await collect(watches[7], rev - 1)] == ["/r/key7"]
    assert [e.kv.key for e in await collect(watches[1], rev)] == ["/r/key12"]
    assert [e.kv.key for e in await collect(watches[12], rev)] == ["/r/key12"]


async def test_thousands_of_watchers_each_get_their_events(backend: SQLiteBackend) -> None:
    watches = [backend.watch(f"/r/ns{i % 500}/", 0) for i in range(3000)]
    revs = [await backend.create(f"/r/ns{i}/obj", b"") for i in range(500)]
    for i, watch in enumerate(watches):
        events = await collect(watch, revs[i % 500])
        assert [e.kv.key for e in events] == [f"/r/ns{i % 500}/obj"]


async def test_ordering_with_concurrent_writers(backend: SQLiteBackend) -> None:
    start = await backend.current_revision() + 1
    all_watch = backend.watch("", 0)
    half_watch = backend.watch("/r/w1/", 0)
    rng = random.Random(7)

    async def writer(n: int) -> None:
        live: dict[str, int] = {}
        for i in range(300):
            key = f"/r/w{n}/k{rng.randrange(20)}"
            if key in live and rng.random() < 0.3:
                _, _, ok = await backend.delete(key, live.pop(key))
                assert ok
            elif key in live:
                rev, _, ok = await backend.update(key, f"{i}".encode(), live[key])
                assert ok
                live[key] = rev
            else:
                live[key] = await backend.create(key, f"{i}".encode())
            if i % 7 == 0:
                await asyncio.sleep(0)

    async def late_watcher() -> SQLiteWatch:
        """A watch opened mid-burst, starting a little in the past."""
        await asyncio.sleep(0.01)
        mid = await backend.current_revision()
        assert mid > start + 50, "the writers should be under way"
        return backend.watch("", mid - 50)

    late = asyncio.create_task(late_watcher())
    await asyncio.gather(*(writer(n) for n in range(4)))
    end = await backend.create("/end", b"")

    events = await collect(all_watch, end)
    assert revisions(events) == list(range(start, end + 1))
    late_events = await collect(await late, end)
    first = late_events[0].kv.mod_revision
    assert revisions(late_events) == list(range(first, end + 1))
    assert late_events == events[first - start:]
    w1 = [e for e in events if e.kv.key.startswith("/r/w1/")]
    assert await collect(half_watch, w1[-1].kv.mod_revision) == w1
    # Replaying the whole history from the log gives exactly what was streamed live.
    replayed = await collect(backend.watch("", start), end)
    assert replayed == events


async def test_watch_at_or_below_compact_revision_is_refused(backend: SQLiteBackend) -> None:
    rev = await backend.create("/r/a", b"1")
    rev, _, _ = await backend.update("/r/a", b"2", rev)
    top = await backend.create("/r/b", b"")
    await backend.compact(rev)
    with pytest.raises(CompactedError) as info:
        backend.watch("/r/", rev)
    assert info.value.compact_revision == rev
    with pytest.raises(CompactedError):
        backend.watch("/r/", 1)
    assert revisions(await collect(backend.watch("/r/", rev + 1), top)) == [top]


async def test_compaction_overtaking_a_replay_ends_it(backend: SQLiteBackend) -> None:
    start = await backend.current_revision() + 1
    for i in range(1500):
        await backend.create("/r/k", b"x") if i == 0 else await backend.update(
            "/r/k", b"x", await backend.current_revision())
    watch = backend.watch("/r/", start)
    first_page = await watch.__anext__()
    assert first_page[0].kv.mod_revision == start
    await backend.compact(await backend.current_revision())
    with pytest.raises(CompactedError):
        await watch.__anext__()
    with pytest.raises(StopAsyncIteration):
        await watch.__anext__()


async def test_close_ends_watches(tmp_path: Path) -> None:
    store = SQLiteBackend(str(tmp_path / "s.db"), compact_interval=0)
    await store.start()
    watch = store.watch("/", 0)
    waiting = asyncio.create_task(collect(watch, 10**9))
    await asyncio.sleep(0.01)
    await store.close()
    assert await waiting == []


async def test_aclose_and_abandoned_watches_are_forgotten(backend: SQLiteBackend) -> None:
    watch = backend.watch("/r/", 0)
    waiting = asyncio.create_task(watch.__anext__())
    await asyncio.sleep(0)
    await watch.aclose()
    with pytest.raises(StopAsyncIteration):
        await waiting
    assert backend._hub.all() == []
    abandoned = backend.watch("/r/", 0)
    await backend.create("/r/x", b"")
    assert backend._hub.all() == [abandoned]
    del abandoned
    gc.collect()
    assert backend._hub.all() == []
    assert not backend._hub  # its prefix is forgotten too
    odd = [backend.watch(f"/r/key-{i}", 0) for i in range(10)]
    assert len(backend._hub._irregular) == 10
    del odd
    gc.collect()
    assert backend._hub._irregular == set()
    await backend.create("/r/y", b"")  # dispatching to no one is fine
    await asyncio.sleep(0)


async def test_writes_by_another_process_reach_watchers_in_order(
        backend: SQLiteBackend, tmp_path: Path) -> None:
    other = SQLiteBackend(backend.path, compact_interval=0)
    await other.start()
    try:
        watch = backend.watch("/r/", 0)
        mine = await backend.create("/r/mine", b"")
        theirs = await other.create("/r/theirs", b"")
        after = await backend.create("/r/after", b"")
        assert (mine, theirs, after) == (mine, mine + 1, mine + 2)
        events = await collect(watch, after)
        assert [e.kv.key for e in events] == ["/r/mine", "/r/theirs", "/r/after"]
        # Compare-and-swap holds across processes.
        _, _, ok = await other.update("/r/mine", b"theirs", mine)
        assert ok
        _, kv, ok = await backend.update("/r/mine", b"mine", mine)
        assert not ok and kv is not None and kv.value == b"theirs"
    finally:
        await other.close()
