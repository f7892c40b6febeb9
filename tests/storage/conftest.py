from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubi.storage import SQLiteBackend


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SQLiteBackend]:
    """A started backend with automatic compaction off (tests compact explicitly)."""
    store = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0)
    await store.start()
    yield store
    await store.close()
