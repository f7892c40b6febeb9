"""The storage seam: an etcd-like, revisioned key-value store (kine's `server.Backend`).

Every write gets the next revision of one global counter. Readers see a key's
latest value or its value as of a past revision, until compaction drops that
history. Watches stream every change in revision order with no gaps.

All methods are called from the API server's event loop thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["PUT", "DELETE"]
    kv: KeyValue  # for DELETE: the key's last value, mod_revision = the delete's revision
    prev_kv: KeyValue | None


class KeyExistsError(Exception):
    """create() of a key that is live."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key exists: {key}")
        self.key = key


class CompactedError(Exception):
    """A read or watch asked for history older than the compact revision."""

    def __init__(self, compact_revision: int, current_revision: int) -> None:
        super().__init__(
            f"required revision has been compacted (compact revision {compact_revision},"
            f" current revision {current_revision})"
        )
        self.compact_revision = compact_revision
        self.current_revision = current_revision


class FutureRevisionError(Exception):
    """A read asked for a revision the store has not reached yet."""

    def __init__(self, revision: int, current_revision: int) -> None:
        super().__init__(
            f"required revision {revision} is a future revision"
            f" (current revision {current_revision})"
        )
        self.revision = revision
        self.current_revision = current_revision


class WatchStream(Protocol):
    """What watch() returns: batches of events; aclose() stops it early."""

    def __aiter__(self) -> AsyncIterator[list[Event]]: ...

    async def __anext__(self) -> list[Event]: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        """(current revision, the key's kv as of `revision` (0 = latest) or None)."""
        ...

    async def list(
        self, prefix: str, start_key: str = "", limit: int = 0, revision: int = 0
    ) -> tuple[int, list[KeyValue], bool]:
        """(revision served, live kvs under prefix with key >= start_key sorted by key, more?)."""
        ...

    async def count(self, prefix: str) -> tuple[int, int]:
        """(current revision, number of live keys under prefix)."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """The new revision; KeyExistsError if the key is live."""
        ...

    async def update(
        self, key: str, value: bytes, revision: int
    ) -> tuple[int, KeyValue | None, bool]:
        """Compare-and-swap on mod_revision; on mismatch (rev, current kv or None, False)."""
        ...

    async def delete(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None, bool]:
        """revision 0 deletes unconditionally; returns the deleted kv; False if absent/mismatch."""
        ...

    def watch(self, prefix: str, start_revision: int) -> WatchStream:
        """Events with revision >= start_revision (0 = from now) for keys under prefix."""
        ...

    async def current_revision(self) -> int: ...

    async def compact(self, revision: int) -> int:
        """Drop history below `revision`; returns the current revision."""
        ...

    async def db_size(self) -> int: ...
