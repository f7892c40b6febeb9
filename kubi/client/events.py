"""Recording Events about objects, aggregated as client-go's recorder does.

A repeat of the same (object, type, reason, message) within the cache's life
bumps `count` and `lastTimestamp` on the existing Event instead of creating a
new one, so a crash-looping pod does not flood the store.
"""

from __future__ import annotations

import logging
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.rest import Client

log = logging.getLogger("kubi.events")

Obj = dict[str, Any]
NORMAL = "Normal"
WARNING = "Warning"
MAX_REMEMBERED = 4096


def reference(obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    ref = {"kind": obj.get("kind", ""), "apiVersion": obj.get("apiVersion", ""),
           "name": meta.get("name", ""), "uid": meta.get("uid", ""),
           "resourceVersion": meta.get("resourceVersion", "")}
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return ref


class EventRecorder:
    def __init__(self, client: Client, component: str, host: str = "") -> None:
        self.client = client
        self.component = component
        self.host = host
        self._seen: dict[tuple[str, str, str, str], tuple[str, str, int]] = {}

    async def event(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        """Record an event; failures are logged, never raised (events are best effort)."""
        try:
            await self._record(obj, event_type, reason, message)
        except Exception as err:
            log.warning("could not record event %s on %s: %s", reason,
                        (obj.get("metadata") or {}).get("name"), err)

    async def _record(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        ref = reference(obj)
        namespace = ref.get("namespace") or "default"
        now = m.rfc3339(m.now())
        key = (ref["uid"], event_type, reason, message)
        seen = self._seen.get(key)
        if seen is not None:
            name, ns, count = seen
            try:
                await self.client.patch("events", name, {
                    "count": count + 1, "lastTimestamp": now}, ns)
                self._seen[key] = (name, ns, count + 1)
                return
            except StatusError as err:
                if err.code != 404:
                    raise
        name = f"{ref['name']}.{m.random_suffix(16)}"
        source: Obj = {"component": self.component}
        if self.host:
            source["host"] = self.host
        await self.client.create("events", {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref, "reason": reason, "message": message, "type": event_type,
            "source": source, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": self.component, "reportingInstance": self.host,
        })
        if len(self._seen) >= MAX_REMEMBERED:
            self._seen.clear()
        self._seen[key] = (name, namespace, 1)
