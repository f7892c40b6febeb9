"""The shape every controller shares: informers feed keys into a work queue, workers
reconcile one key at a time, failures come back with back-off.

A controller module defines a `Controller` subclass with a `name`, sets up its
informers and handlers in `__init__`, and implements `reconcile(key)`, which
returns None when done or a number of seconds after which to look again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kubi.api.errors import StatusError
from kubi.client.events import EventRecorder
from kubi.client.informer import InformerFactory, key_of
from kubi.client.rest import Client
from kubi.client.workqueue import ShutDown, WorkQueue
from kubi.util.aio import cancel_and_wait

log = logging.getLogger("kubi.controllers")

Obj = dict[str, Any]
MAX_RETRIES_LOGGED = 5


@dataclass
class ControllerOptions:
    """Knobs upstream exposes as kube-controller-manager flags."""

    workers: int = 2
    node_monitor_grace_period: float = 40.0
    pod_eviction_timeout: float = 300.0
    terminated_pod_gc_threshold: int = 12500
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ControllerContext:
    client: Client
    informers: InformerFactory
    options: ControllerOptions = field(default_factory=ControllerOptions)

    def recorder(self, component: str) -> EventRecorder:
        return EventRecorder(self.client, component)


class Controller:
    name: ClassVar[str] = ""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.queue = WorkQueue()
        self.recorder = ctx.recorder(self.name)
        self.workers = ctx.options.workers

    # -- enqueueing helpers for informer handlers ------------------------------------

    def enqueue(self, obj: Obj) -> None:
        self.queue.add(key_of(obj))

    def enqueue_key(self, key: str) -> None:
        self.queue.add(key)

    # -- the loop ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        raise NotImplementedError

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                again = await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                retries = self.queue.retries(key)
                level = logging.WARNING if retries < MAX_RETRIES_LOGGED else logging.DEBUG
                if isinstance(err, StatusError) and err.code == 409:
                    level = logging.DEBUG  # a stale cache: the retry sees the new object
                log.log(level, "%s: error syncing %r: %s", self.name, key, err,
                        exc_info=not isinstance(err, StatusError))
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
                if again is not None:
                    self.queue.add_after(key, again)
            finally:
                self.queue.done(key)

    async def run(self) -> None:
        """Wait for the caches, then work until cancelled."""
        await self.ctx.informers.wait_synced()
        workers = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            self.queue.shutdown()
            await cancel_and_wait(workers)
