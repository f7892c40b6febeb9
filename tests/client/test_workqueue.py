from __future__ import annotations

import asyncio

import pytest

from kubi.client.workqueue import ShutDown, WorkQueue


def test_a_key_is_queued_once_and_never_processed_twice_at_once() -> None:
    async def scenario() -> None:
        q = WorkQueue()
        q.add("a")
        q.add("a")
        q.add("b")
        assert len(q) == 2
        first = await q.get()
        assert first == "a"
        q.add("a")  # dirty while processing: not handed to a second worker
        second = await q.get()
        assert second == "b"
        assert len(q) == 0
        q.done("a")  # now it comes back
        assert await q.get() == "a"
        q.done("a")
        q.done("b")
        assert len(q) == 0

    asyncio.run(scenario())


def test_rate_limited_backoff_grows_and_forget_resets() -> None:
    async def scenario() -> None:
        q = WorkQueue(base_delay=0.01)
        q.add_rate_limited("k")
        q.add_rate_limited("k")
        assert q.retries("k") == 2
        assert await asyncio.wait_for(q.get(), 5) == "k"
        q.done("k")
        q.forget("k")
        assert q.retries("k") == 0

    asyncio.run(scenario())


def test_add_after_keeps_the_earliest_wakeup_and_shutdown_stops_workers() -> None:
    async def scenario() -> None:
        q = WorkQueue()
        q.add_after("x", 3600)
        q.add_after("x", 0.01)
        assert await asyncio.wait_for(q.get(), 5) == "x"
        q.done("x")
        q.shutdown()
        with pytest.raises(ShutDown):
            await asyncio.wait_for(q.get(), 5)

    asyncio.run(scenario())
