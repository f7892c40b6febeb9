"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection.

Several servers may run the same component; only the holder of the Lease acts.
The holder renews before `renew_deadline`; others take over once the Lease has
not been renewed for `lease_duration`. Writes are compare-and-swap on the
Lease's resourceVersion, so two candidates never both win.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.rest import Client

log = logging.getLogger("kubi.leaderelection")

LEASES = "leases.coordination.k8s.io"


class LeaderElector:
    def __init__(self, client: Client, name: str, identity: str, *,
                 namespace: str = "kube-system", lease_duration: float = 15.0,
                 renew_deadline: float = 10.0, retry_period: float = 2.0) -> None:
        self.client = client
        self.name = name
        self.identity = identity
        self.namespace = namespace
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = False

    def _spec(self, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": acquire_time, "renewTime": m.rfc3339_micro(m.now()),
                "leaseTransitions": transitions}

    async def try_acquire_or_renew(self) -> bool:
        now = m.now()
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except StatusError as err:
            if err.code != 404:
                raise
            try:
                await self.client.create(LEASES, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(m.rfc3339_micro(now), 0)})
                return True
            except StatusError as create_err:
                if create_err.code == 409:
                    return False
                raise
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity", "")
        renewed = spec.get("renewTime")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = (renewed is None or m.parse_time(renewed)
                   + datetime.timedelta(seconds=duration) < now)
        if holder and holder != self.identity and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        acquire = spec.get("acquireTime") or m.rfc3339_micro(now)
        if holder != self.identity:
            transitions += 1
            acquire = m.rfc3339_micro(now)
        lease["spec"] = self._spec(acquire, transitions)
        try:
            await self.client.update(LEASES, lease)
        except StatusError as err:
            if err.code == 409:
                return False
            raise
        return True

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign until elected, run `lead` while leading; stop leading if renewal fails."""
        while True:
            while not await self._attempt():
                await asyncio.sleep(self.retry_period)
            self.is_leader = True
            log.info("%s is now leader of %s", self.identity, self.name)
            task: asyncio.Task[None] = asyncio.get_running_loop().create_task(lead())
            try:
                await self._renew_until_lost(task)
            finally:
                self.is_leader = False
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except Exception as err:  # API unreachable: keep campaigning
            log.warning("leader election %s: %s", self.name, err)
            return False

    async def _renew_until_lost(self, task: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        last_renew = loop.time()
        while not task.done():
            await asyncio.sleep(self.retry_period)
            if await self._attempt():
                last_renew = loop.time()
            elif loop.time() - last_renew > self.renew_deadline:
                log.warning("%s lost the lease %s", self.identity, self.name)
                return
