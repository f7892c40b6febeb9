"""Revisioned key-value storage for the API server (see `interface`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from kubi.storage.interface import (
    Backend,
    CompactedError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyValue,
    WatchStream,
)
from kubi.storage.sqlite import SQLiteBackend

__all__ = [
    "Backend",
    "CompactedError",
    "Event",
    "FutureRevisionError",
    "KeyExistsError",
    "KeyValue",
    "SQLiteBackend",
    "WatchStream",
    "open_backend",
    "register_driver",
]

# (location after "scheme://", options from the query string and keyword arguments)
DriverFactory = Callable[[str, dict[str, Any]], Backend]
_drivers: dict[str, DriverFactory] = {}


def register_driver(scheme: str, factory: DriverFactory) -> None:
    """Make open_backend() accept `scheme://...` URLs (kine's drivers.Register)."""
    _drivers[scheme] = factory


def open_backend(url: str, **options: Any) -> Backend:
    """A backend for a storage URL; call `await backend.start()` before use.

    `sqlite:///abs/path/state.db` (three slashes, absolute path; four also work)
    or `sqlite://relative/state.db`. Options (`compact_interval`, `compact_retain`)
    come as query parameters (`?compact_interval=300`) or keyword arguments,
    the keyword winning.
    """
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(f"storage URL {url!r} has no scheme (expected e.g. sqlite:///path)")
    factory = _drivers.get(scheme)
    if factory is None:
        known = ", ".join(sorted(_drivers))
        raise ValueError(f"storage URL {url!r}: unknown scheme {scheme!r} (supported: {known})")
    parts = urlsplit(url)
    location = parts.netloc + parts.path
    if location.startswith("//"):  # sqlite:////abs/path, SQLAlchemy's spelling
        location = "/" + location.lstrip("/")
    merged: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(options)
    return factory(location, merged)


def _sqlite_driver(location: str, options: dict[str, Any]) -> Backend:
    if not location:
        raise ValueError("sqlite storage URL needs a file path, e.g. sqlite:///var/lib/state.db")
    unknown = set(options) - {"compact_interval", "compact_retain"}
    if unknown:
        raise ValueError(f"sqlite storage URL: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        interval = float(options.get("compact_interval", 300.0))
        retain = int(options.get("compact_retain", 1000))
    except ValueError as error:
        raise ValueError(f"sqlite storage URL: bad option value: {error}") from None
    return SQLiteBackend(location, compact_interval=interval, compact_retain=retain)


register_driver("sqlite", _sqlite_driver)
