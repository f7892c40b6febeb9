"""Child process for the kill -9 test: writes as fast as it can, printing each ack.

Usage: python -m tests.storage._writer PATH. Prints "key revision" after every
acknowledged write; alternates creates of new keys with updates of old ones.
"""

from __future__ import annotations

import asyncio
import sys

from kubi.storage import SQLiteBackend


async def burst(path: str) -> None:
    store = SQLiteBackend(path, compact_interval=0)
    await store.start()
    out = sys.stdout
    revisions: dict[str, int] = {}
    created: list[str] = []
    for i in range(1_000_000):
        if i % 3 == 2:
            key = created[(i // 3) % len(created)]
            rev, _, ok = await store.update(key, f"{key}@{i}".encode(), revisions[key])
            assert ok
        else:
            key = f"/r/k{i}"
            rev = await store.create(key, f"{key}@{i}".encode())
            created.append(key)
        revisions[key] = rev
        out.write(f"{key} {rev} {i}\n")
        out.flush()


if __name__ == "__main__":
    asyncio.run(burst(sys.argv[1]))
