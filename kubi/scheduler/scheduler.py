"""kube-scheduler: take pending pods addressed to us, pick nodes, bind.

One loop pops pods in queue order and runs the (synchronous, CPU-bound) scheduling
cycle; the chosen node is assumed in the cache at once and the Binding is written
in a background task, up to `parallelism` at a time (upstream's binding cycle).
Failures set PodScheduled=False on the pod (status subresource) and record a
FailedScheduling event; successes record a Scheduled event. Events go through a
bounded buffer that drops when full, as client-go's broadcaster does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.events import NORMAL, WARNING, EventRecorder
from kubi.client.informer import InformerFactory, key_of
from kubi.client.rest import Client
from kubi.scheduler.cache import Cache
from kubi.scheduler.framework import (
    ASSIGNED_POD_ADD,
    ASSIGNED_POD_DELETE,
    ASSIGNED_POD_UPDATE,
    NAMESPACE_CHANGE,
    NODE_ADD,
    NODE_DELETE,
    PV_CHANGE,
    PVC_CHANGE,
    STORAGE_CLASS_CHANGE,
    FitError,
    Framework,
    NoNodesAvailable,
    Obj,
    PodInfo,
)
from kubi.scheduler.plugins import default_plugins
from kubi.scheduler.queue import QueuedPod, SchedulingQueue
from kubi.util.aio import cancel_and_wait

log = logging.getLogger("kubi.scheduler")

DEFAULT_SCHEDULER_NAME = "default-scheduler"
MAX_QUEUED_EVENTS = 1000
MAX_MESSAGE_LENGTH = 1024  # upstream truncates event messages


def _terminal(obj: Obj) -> bool:
    return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class EventSink:
    """Events written in the background; when more than `limit` wait, new ones are dropped
    (client-go's broadcaster queue). While `busy()` (pods waiting to be scheduled) it writes
    at most `busy_rate` a second, so events cannot slow scheduling: they share its CPU."""

    def __init__(self, recorder: EventRecorder, limit: int = MAX_QUEUED_EVENTS,
                 busy: Callable[[], bool] = lambda: False, busy_rate: float = 50.0) -> None:
        self.recorder = recorder
        self.queue: asyncio.Queue[tuple[Obj, str, str, str]] = asyncio.Queue(limit)
        self.dropped = 0
        self.busy = busy
        self.busy_rate = busy_rate

    def emit(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        try:
            self.queue.put_nowait((obj, event_type, reason, message[:MAX_MESSAGE_LENGTH]))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        while True:
            obj, event_type, reason, message = await self.queue.get()
            await self.recorder.event(obj, event_type, reason, message)
            if self.busy():
                await asyncio.sleep(1 / self.busy_rate)


class Scheduler:
    def __init__(self, client: Client, *, scheduler_name: str = DEFAULT_SCHEDULER_NAME,
                 parallelism: int = 16, seed: int | None = None,
                 percentage_of_nodes_to_score: int = 0) -> None:
        self.client = client
        self.scheduler_name = scheduler_name
        self.parallelism = max(1, parallelism)
        self.cache = Cache()
        self.plugins = default_plugins(self.cache, client)
        self.framework = Framework(self.cache, self.plugins, seed=seed,
                                   percentage_of_nodes_to_score=percentage_of_nodes_to_score)
        self.queue = SchedulingQueue({p.name: p.events for p in self.plugins})
        self.events = EventSink(EventRecorder(client, scheduler_name),
                                busy=lambda: self.queue.active_count() > 0)
        self.scheduled = 0  # pods bound
        self.attempts_failed = 0
        self._binds: set[asyncio.Task[None]] = set()
        self._bind_slots: asyncio.Semaphore | None = None

        self.informers = InformerFactory(client)
        self.nodes = self.informers.informer("nodes")
        self.pods = self.informers.informer("pods")
        self.claims = self.informers.informer("persistentvolumeclaims")
        self.volumes = self.informers.informer("persistentvolumes")
        self.classes = self.informers.informer("storageclasses.storage.k8s.io")
        self.namespaces = self.informers.informer("namespaces")
        self.nodes.add_handlers(self._node_added, self._node_updated, self._node_deleted)
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)
        for informer, event in ((self.claims, PVC_CHANGE), (self.volumes, PV_CHANGE),
                                (self.classes, STORAGE_CLASS_CHANGE)):
            informer.add_handlers(self._mover(event), self._updated_mover(event),
                                  self._mover(event))
        self.namespaces.add_handlers(self._namespace_changed,
                                     lambda _old, new: self._namespace_changed(new),
                                     self._namespace_deleted)
        self.cache.listers.update({
            "persistentvolumeclaims": self.claims.cache.get,
            "persistentvolumes": self.volumes.cache.get,
            "storageclasses": self.classes.cache.get,
        })
        self.cache.lists["persistentvolumes"] = self.volumes.cache.list

    # -- informer handlers ------------------------------------------------------------------

    def _move(self, event: str) -> None:
        self.queue.move_all(event)

    def _mover(self, event: str) -> Callable[[Obj], None]:
        return lambda _obj: self._move(event)

    def _updated_mover(self, event: str) -> Callable[[Obj, Obj], None]:
        return lambda _old, _new: self._move(event)

    def _node_added(self, node: Obj) -> None:
        self.cache.set_node(node)
        self.queue.move_all(NODE_ADD)

    def _node_updated(self, old: Obj, node: Obj) -> None:
        for event in self.cache.set_node(node):
            self.queue.move_all(event)

    def _node_deleted(self, node: Obj) -> None:
        self.cache.remove_node(node["metadata"]["name"])
        self.queue.move_all(NODE_DELETE)

    def _namespace_changed(self, namespace: Obj) -> None:
        meta = namespace.get("metadata") or {}
        self.cache.namespaces[meta.get("name", "")] = meta.get("labels") or {}
        self.queue.move_all(NAMESPACE_CHANGE)

    def _namespace_deleted(self, namespace: Obj) -> None:
        self.cache.namespaces.pop((namespace.get("metadata") or {}).get("name", ""), None)

    def _responsible(self, obj: Obj) -> bool:
        spec = obj.get("spec") or {}
        return ((spec.get("schedulerName") or DEFAULT_SCHEDULER_NAME) == self.scheduler_name
                and not _terminal(obj))

    def _pod_added(self, obj: Obj) -> None:
        if (obj.get("spec") or {}).get("nodeName"):
            if _terminal(obj):
                return
            self.queue.delete(key_of(obj))
            self.cache.add_pod(obj)
            self.queue.move_all(ASSIGNED_POD_ADD)
        elif self._responsible(obj):
            self.queue.add(PodInfo(obj))

    def _pod_updated(self, old: Obj, obj: Obj) -> None:
        key = key_of(obj)
        if (obj.get("spec") or {}).get("nodeName"):
            if _terminal(obj):
                if self.cache.remove_pod(key) is not None:
                    self.queue.move_all(ASSIGNED_POD_DELETE)
                return
            newly_bound = not (old.get("spec") or {}).get("nodeName")
            if newly_bound:
                self.queue.delete(key)
            if self.cache.confirm_pod(obj):
                self.queue.move_all(ASSIGNED_POD_ADD)
                return
            before = self.cache.pods.get(key)
            after = self.cache.add_pod(obj)
            if before is None or newly_bound:
                self.queue.move_all(ASSIGNED_POD_ADD)
            elif before.labels != after.labels or \
                    before.requests.signature() != after.requests.signature():
                self.queue.move_all(ASSIGNED_POD_UPDATE)
        elif self._responsible(obj):
            self.queue.update(PodInfo(obj))
        else:
            self.queue.delete(key)

    def _pod_deleted(self, obj: Obj) -> None:
        key = key_of(obj)
        if self.cache.remove_pod(key) is not None:
            self.queue.move_all(ASSIGNED_POD_DELETE)
        self.queue.delete(key)

    # -- scheduling --------------------------------------------------------------------------

    async def run(self) -> None:
        self.informers.start()
        await self.informers.wait_synced()
        self._bind_slots = asyncio.Semaphore(self.parallelism)
        helpers = [asyncio.create_task(self.queue.run_flusher()),
                   asyncio.create_task(self.events.run())]
        log.info("scheduler %s running over %d nodes", self.scheduler_name,
                 len(self.cache.node_list()))
        try:
            while True:
                entry = await self.queue.pop()
                await self.schedule_one(entry)
        finally:
            await cancel_and_wait([*helpers, *self._binds])
            await self.informers.stop()

    async def schedule_one(self, entry: QueuedPod) -> None:
        pod = entry.pod
        key = pod.key
        current = self.pods.cache.get(key)
        if (current is None or entry.deleted or (current.get("spec") or {}).get("nodeName")
                or "deletionTimestamp" in (current.get("metadata") or {})
                or key in self.cache.pods):
            self.queue.done(key)  # gone, bound elsewhere or being deleted: nothing to do
            return
        cycle = self.queue.scheduling_cycle
        try:
            node_name, state = self.framework.schedule(pod)
        except FitError as err:
            rejectors = err.diagnosis.unschedulable_plugins
            self._failed(entry, "Unschedulable", err.message(),
                         lambda: self.queue.requeue_unschedulable(entry, rejectors, cycle))
            return
        except NoNodesAvailable as err:
            self._failed(entry, "Unschedulable", str(err),
                         lambda: self.queue.requeue_unschedulable(entry, set(), cycle))
            return
        except Exception as err:
            log.exception("scheduling %s failed", key)
            self._failed(entry, "SchedulerError", str(err),
                         lambda: self.queue.requeue_backoff(entry))
            return
        self.cache.assume_pod(pod, node_name)
        assert self._bind_slots is not None
        await self._bind_slots.acquire()
        task = asyncio.create_task(self._bind(entry, node_name, state))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    async def _bind(self, entry: QueuedPod, node_name: str, state: Any) -> None:
        pod = entry.pod
        try:
            for plugin in self.plugins:
                await plugin.pre_bind(state, pod, node_name)
            await self.client.post("pods", pod.name, "binding", {
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
            }, pod.namespace)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.cache.forget_pod(pod.key)
            self.queue.move_all(ASSIGNED_POD_DELETE)
            if isinstance(err, StatusError) and err.code == 404:
                self.queue.done(pod.key)
                return
            log.warning("binding %s to %s failed: %s", pod.key, node_name, err)
            self._failed(entry, "SchedulerError",
                         f"running Bind plugin \"DefaultBinder\": {err}",
                         lambda: self.queue.requeue_backoff(entry))
        else:
            self.scheduled += 1
            self.queue.done(pod.key)
            self.events.emit(pod.obj, NORMAL, "Scheduled",
                             f"Successfully assigned {pod.namespace}/{pod.name} to {node_name}")
        finally:
            assert self._bind_slots is not None
            self._bind_slots.release()

    def _failed(self, entry: QueuedPod, reason: str, message: str,
                requeue: Callable[[], None]) -> None:
        """Upstream handleSchedulingFailure: requeue, record the event, set the condition."""
        self.attempts_failed += 1
        key = entry.pod.key
        current = self.pods.cache.get(key)
        if current is None or (current.get("spec") or {}).get("nodeName"):
            self.queue.done(key)  # deleted or bound meanwhile: nothing to retry
            return
        requeue()
        self.events.emit(current, WARNING, "FailedScheduling", message)
        condition = next((c for c in (current.get("status") or {}).get("conditions") or []
                          if c.get("type") == "PodScheduled"), None)
        if condition is not None and condition.get("status") == "False" and \
                condition.get("reason") == reason and condition.get("message") == message:
            return  # already says so
        task = asyncio.create_task(self._set_condition(current, reason, message, condition))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    async def _set_condition(self, pod: Obj, reason: str, message: str,
                             existing: Obj | None) -> None:
        meta = pod["metadata"]
        transition = (existing.get("lastTransitionTime")
                      if existing is not None and existing.get("status") == "False"
                      else None) or m.rfc3339(m.now())
        patch = {"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "lastProbeTime": None,
            "lastTransitionTime": transition, "reason": reason, "message": message}]}}
        try:
            await self.client.patch("pods", meta["name"], patch, meta.get("namespace", ""),
                                    patch_type="strategic", subresource="status")
        except StatusError as err:
            if err.code != 404:
                log.warning("could not update the condition of %s: %s", key_of(pod), err)


async def run_scheduler(client: Client, *, scheduler_name: str = DEFAULT_SCHEDULER_NAME,
                        parallelism: int = 16) -> None:
    """Run a scheduler until cancelled."""
    await Scheduler(client, scheduler_name=scheduler_name, parallelism=parallelism).run()


async def run_with_leader_election(client: Client, *,
                                   scheduler_name: str = DEFAULT_SCHEDULER_NAME) -> None:
    """Schedule only while holding the `kube-scheduler` Lease (one active per cluster)."""
    import socket
    import uuid

    from kubi.client.leaderelection import LeaderElector

    identity = f"{socket.gethostname()}_{uuid.uuid4()}"
    elector = LeaderElector(client, "kube-scheduler", identity)
    await elector.run(lambda: run_scheduler(client, scheduler_name=scheduler_name))
