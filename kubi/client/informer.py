"""Informers: a local cache of one resource kept current by list + watch.

As client-go's shared informer: list, then watch from the list's
resourceVersion; re-watch from the last seen version when a watch ends; relist
(and reconcile the cache, emitting the differences) when the server says the
version is gone (410). Handlers only see events; they must not mutate objects.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from kubi.api.errors import StatusError
from kubi.api.resources import ResourceInfo
from kubi.client.rest import Client, resource

log = logging.getLogger("kubi.informer")

Obj = dict[str, Any]
AddHandler = Callable[[Obj], None]
UpdateHandler = Callable[[Obj, Obj], None]
DeleteHandler = Callable[[Obj], None]
IndexFunc = Callable[[Obj], list[str]]


def key_of(obj: Obj) -> str:
    """`namespace/name`, or `name` for cluster-scoped objects (client-go's MetaNamespaceKey)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def split_key(key: str) -> tuple[str, str]:
    namespace, _, name = key.rpartition("/")
    return namespace, name


def namespace_index(obj: Obj) -> list[str]:
    return [(obj.get("metadata") or {}).get("namespace", "")]


class Cache:
    """Objects by key, plus named secondary indexes."""

    def __init__(self) -> None:
        self._items: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFunc] = {"namespace": namespace_index}
        self._indexes: dict[str, dict[str, set[str]]] = {"namespace": {}}
        # Each key's index values as last computed, so an update whose values did not
        # change (most do not) touches no index, and a removal computes nothing.
        self._values: dict[str, dict[str, list[str]]] = {}

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        if self._indexers.get(name) is func:
            return  # shared informers: several controllers may ask for the same index
        self._indexers[name] = func
        index: dict[str, set[str]] = {}
        for key, obj in self._items.items():
            values = func(obj)
            self._values[key][name] = values
            for value in values:
                index.setdefault(value, set()).add(key)
        self._indexes[name] = index

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def get_by_name(self, namespace: str, name: str) -> Obj | None:
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str = "") -> builtins.list[Obj]:
        if not namespace:
            return list(self._items.values())
        return self.by_index("namespace", namespace)

    def keys(self) -> builtins.list[str]:
        return builtins.list(self._items)

    def by_index(self, name: str, value: str) -> builtins.list[Obj]:
        keys = self._indexes[name].get(value, set())
        return [self._items[k] for k in keys if k in self._items]

    def index_size(self, name: str, value: str) -> int:
        return len(self._indexes[name].get(value, ()))

    def _unindex_values(self, key: str, name: str, values: builtins.list[str]) -> None:
        index = self._indexes[name]
        for value in values:
            bucket = index.get(value)
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del index[value]

    def put(self, obj: Obj) -> Obj | None:
        key = key_of(obj)
        old = self._items.get(key)
        self._items[key] = obj
        old_values = self._values.get(key) if old is not None else None
        new_values: dict[str, builtins.list[str]] = {}
        for name, func in self._indexers.items():
            values = new_values[name] = func(obj)
            if old_values is not None:
                previous = old_values[name]
                if previous == values:
                    continue
                self._unindex_values(key, name, previous)
            index = self._indexes[name]
            for value in values:
                bucket = index.get(value)
                if bucket is None:
                    index[value] = {key}
                else:
                    bucket.add(key)
        self._values[key] = new_values
        return old

    def remove(self, key: str) -> Obj | None:
        old = self._items.pop(key, None)
        if old is not None:
            for name, values in self._values.pop(key).items():
                self._unindex_values(key, name, values)
        return old


class Informer:
    def __init__(self, client: Client, res: ResourceInfo | str, namespace: str = "", *,
                 label_selector: str = "", field_selector: str = "",
                 resync: float = 0.0) -> None:
        self.client = client
        self.info = res if isinstance(res, ResourceInfo) else resource(res)
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync = resync
        self.cache = Cache()
        self._on_add: list[AddHandler] = []
        self._on_update: list[UpdateHandler] = []
        self._on_delete: list[DeleteHandler] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_resource_version = ""

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def add_handlers(self, on_add: AddHandler | None = None,
                     on_update: UpdateHandler | None = None,
                     on_delete: DeleteHandler | None = None) -> None:
        if on_add:
            self._on_add.append(on_add)
        if on_update:
            self._on_update.append(on_update)
        if on_delete:
            self._on_delete.append(on_delete)

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- event fan-out ------------------------------------------------------------

    def _emit_add(self, obj: Obj) -> None:
        for handler in self._on_add:
            self._safely(handler, obj)

    def _emit_update(self, old: Obj, new: Obj) -> None:
        for handler in self._on_update:
            self._safely(handler, old, new)

    def _emit_delete(self, obj: Obj) -> None:
        for handler in self._on_delete:
            self._safely(handler, obj)

    @staticmethod
    def _safely(handler: Callable[..., None], *args: Obj) -> None:
        try:
            handler(*args)
        except Exception:  # one bad handler must not stop the informer
            log.exception("informer handler failed")

    # -- list + watch ---------------------------------------------------------------

    async def _relist(self) -> None:
        items, rv = await self.client.list_all(self.info, self.namespace,
                                               label_selector=self.label_selector,
                                               field_selector=self.field_selector)
        seen = set()
        for obj in items:
            key = key_of(obj)
            seen.add(key)
            old = self.cache.put(obj)
            if old is None:
                self._emit_add(obj)
            elif old["metadata"].get("resourceVersion") != obj["metadata"].get(
                    "resourceVersion"):
                self._emit_update(old, obj)
        for key in self.cache.keys():  # noqa: SIM118 - a Cache, not a dict
            if key not in seen:
                gone = self.cache.remove(key)
                if gone is not None:
                    self._emit_delete(gone)
        self.last_resource_version = rv
        self._synced.set()

    async def _watch(self) -> None:
        timeout = random.randint(300, 600)
        async for kind, obj in self.client.watch(
                self.info, self.namespace, resource_version=self.last_resource_version,
                label_selector=self.label_selector, field_selector=self.field_selector,
                timeout_seconds=timeout):
            rv = (obj.get("metadata") or {}).get("resourceVersion", "")
            if kind == "BOOKMARK":
                self.last_resource_version = rv or self.last_resource_version
                continue
            if kind in ("ADDED", "MODIFIED"):
                old = self.cache.put(obj)
                if old is None:
                    self._emit_add(obj)
                else:
                    self._emit_update(old, obj)
            elif kind == "DELETED":
                self.cache.remove(key_of(obj))
                self._emit_delete(obj)
            if rv:
                self.last_resource_version = rv

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            for obj in self.cache.list():
                self._emit_update(obj, obj)

    async def run(self) -> None:
        backoff = 0.1
        resync = (asyncio.get_running_loop().create_task(self._resync_loop())
                  if self.resync else None)
        try:
            need_list = True
            while True:
                try:
                    if need_list:
                        await self._relist()
                        need_list = False
                    await self._watch()
                    backoff = 0.1
                except StatusError as err:
                    if err.code == 410:
                        need_list = True
                        continue
                    log.warning("watch of %s failed: %s", self.info.plural, err)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30)
                except Exception as err:  # connection and transport errors: retry
                    log.warning("watch of %s lost: %r", self.info.plural, err)
                    need_list = need_list or not self.last_resource_version
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30)
        finally:
            if resync is not None:
                resync.cancel()


class InformerFactory:
    """One shared informer per (resource, namespace, selectors): controllers share caches."""

    def __init__(self, client: Client, resync: float = 0.0) -> None:
        self.client = client
        self.resync = resync
        self._informers: dict[tuple[str, str, str, str], Informer] = {}

    def informer(self, res: ResourceInfo | str, namespace: str = "", *,
                 label_selector: str = "", field_selector: str = "") -> Informer:
        info = res if isinstance(res, ResourceInfo) else resource(res)
        key = (f"{info.api_version}/{info.plural}", namespace, label_selector, field_selector)
        found = self._informers.get(key)
        if found is None:
            found = Informer(self.client, info, namespace, label_selector=label_selector,
                             field_selector=field_selector, resync=self.resync)
            self._informers[key] = found
        return found

    def start(self) -> None:
        for informer in self._informers.values():
            informer.start()

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.wait_synced() for i in self._informers.values()))

    async def stop(self) -> None:
        for informer in self._informers.values():
            await informer.stop()
