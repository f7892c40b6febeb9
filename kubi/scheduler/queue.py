"""The scheduling queue (upstream internal/queue/scheduling_queue.go, simplified).

- activeQ: pods ready to be tried, highest priority first, then oldest.
- backoffQ: pods that failed, each waiting out its own exponential back-off
  (1 s doubling to 10 s per attempt) before returning to activeQ.
- unschedulable: pods no node fits, parked until a cluster event that one of the
  plugins which rejected them cares about (a node added, a pod deleted, ...), or
  five minutes pass. A pod whose attempt overlapped such an event goes to backoffQ
  instead, so the event is not missed.
- Pods with scheduling gates wait (gated) until an update removes the gates.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kubi.scheduler.framework import UNSCHEDULABLE_TIMEOUT, PodInfo

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 10.0
MAX_UNSCHEDULABLE_DURATION = 300.0


@dataclass(eq=False)
class QueuedPod:
    pod: PodInfo
    seq: int
    timestamp: float  # when it last entered the queue (back-off is counted from here)
    attempts: int = 0
    unschedulable_plugins: set[str] = field(default_factory=set)
    gated: bool = False
    deleted: bool = False  # deleted while being scheduled


def _sort_key(entry: QueuedPod) -> tuple[int, str, int]:
    return (-entry.pod.priority, entry.pod.creation, entry.seq)


def _is_gated(pod: PodInfo) -> bool:
    return bool(pod.spec.get("schedulingGates"))


def _scheduling_relevant_change(old: PodInfo, new: PodInfo) -> bool:
    """Upstream isPodUpdated: anything but status and bookkeeping changed."""
    old_meta = old.obj.get("metadata") or {}
    new_meta = new.obj.get("metadata") or {}
    return (old.spec != new.spec or old.labels != new.labels
            or old_meta.get("annotations") != new_meta.get("annotations"))


class SchedulingQueue:
    def __init__(self, interest: Mapping[str, frozenset[str]], *,
                 initial_backoff: float = INITIAL_BACKOFF, max_backoff: float = MAX_BACKOFF,
                 max_unschedulable: float = MAX_UNSCHEDULABLE_DURATION,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interest = interest  # plugin name -> cluster events that may help its rejects
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_unschedulable = max_unschedulable
        self.clock = clock
        self._seq = itertools.count()
        self._active: dict[str, QueuedPod] = {}
        self._active_heap: list[tuple[tuple[int, str, int], str]] = []
        self._backoff: dict[str, QueuedPod] = {}
        self._backoff_heap: list[tuple[float, int, str]] = []
        self._unschedulable: dict[str, QueuedPod] = {}
        self._rejections: dict[str, int] = {}  # plugin -> parked pods it rejected
        self._in_flight: dict[str, QueuedPod] = {}
        self._ready = asyncio.Event()
        self.scheduling_cycle = 0
        self.move_request_cycle = -1

    # -- inspection ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._active) + len(self._backoff) + len(self._unschedulable)

    def active_count(self) -> int:
        return len(self._active)

    def where(self, key: str) -> str:
        for name, store in (("active", self._active), ("backoff", self._backoff),
                            ("unschedulable", self._unschedulable),
                            ("in-flight", self._in_flight)):
            if key in store:
                return name
        return ""

    def pending(self) -> dict[str, list[str]]:
        return {"active": sorted(self._active), "backoff": sorted(self._backoff),
                "unschedulable": sorted(self._unschedulable)}

    # -- the three queues ---------------------------------------------------------------

    def _push_active(self, entry: QueuedPod) -> None:
        key = entry.pod.key
        self._active[key] = entry
        heapq.heappush(self._active_heap, (_sort_key(entry), key))
        self._ready.set()

    def _backoff_until(self, entry: QueuedPod) -> float:
        duration = self.initial_backoff * (2 ** max(entry.attempts - 1, 0))
        return entry.timestamp + min(duration, self.max_backoff)

    def _push_backoff(self, entry: QueuedPod) -> None:
        key = entry.pod.key
        self._backoff[key] = entry
        heapq.heappush(self._backoff_heap, (self._backoff_until(entry), entry.seq, key))

    def _park(self, entry: QueuedPod) -> None:
        self._unschedulable[entry.pod.key] = entry
        for plugin in entry.unschedulable_plugins:
            self._rejections[plugin] = self._rejections.get(plugin, 0) + 1

    def _unpark(self, key: str) -> QueuedPod | None:
        entry = self._unschedulable.pop(key, None)
        if entry is not None:
            for plugin in entry.unschedulable_plugins:
                self._rejections[plugin] -= 1
        return entry

    def _remove(self, key: str) -> QueuedPod | None:
        entry = self._active.pop(key, None) or self._backoff.pop(key, None)
        return entry or self._unpark(key)

    def _reactivate(self, entry: QueuedPod) -> None:
        """Back to activeQ, or to backoffQ while its back-off lasts."""
        if entry.attempts and self._backoff_until(entry) > self.clock():
            self._push_backoff(entry)
        else:
            self._push_active(entry)

    # -- informer events about pending pods -----------------------------------------------

    def add(self, pod: PodInfo) -> None:
        key = pod.key
        if key in self._in_flight:
            self._in_flight[key].pod = pod
            return
        existing = self._remove(key)
        entry = existing or QueuedPod(pod, next(self._seq), self.clock())
        entry.pod = pod
        entry.gated = _is_gated(pod)
        if entry.gated:
            entry.unschedulable_plugins = set()
            self._park(entry)
        else:
            self._push_active(entry) if existing is None else self._reactivate(entry)

    def update(self, pod: PodInfo) -> None:
        key = pod.key
        flight = self._in_flight.get(key)
        if flight is not None:
            flight.pod = pod
            return
        if key in self._active:
            entry = self._active[key]
            if entry.pod.priority != pod.priority:
                del self._active[key]
                entry.pod = pod
                entry.seq = next(self._seq)
                self._push_active(entry)
            else:
                entry.pod = pod
            return
        if key in self._backoff:
            self._backoff[key].pod = pod
            return
        parked = self._unschedulable.get(key)
        if parked is None:
            self.add(pod)
            return
        old = parked.pod
        if parked.gated:
            if not _is_gated(pod):
                self._unpark(key)
                parked.pod = pod
                parked.gated = False
                self._push_active(parked)
            else:
                parked.pod = pod
            return
        if _scheduling_relevant_change(old, pod):
            self._unpark(key)
            parked.pod = pod
            self._reactivate(parked)
        else:
            parked.pod = pod

    def delete(self, key: str) -> None:
        self._remove(key)
        flight = self._in_flight.get(key)
        if flight is not None:
            flight.deleted = True

    # -- the scheduling loop ---------------------------------------------------------------

    def _pop_ready(self) -> QueuedPod | None:
        heap = self._active_heap
        while heap:
            sort_key, key = heapq.heappop(heap)
            entry = self._active.get(key)
            if entry is None or _sort_key(entry) != sort_key:
                continue  # stale: removed or re-queued since
            del self._active[key]
            entry.attempts += 1
            self.scheduling_cycle += 1
            self._in_flight[key] = entry
            return entry
        self._ready.clear()
        return None

    async def pop(self) -> QueuedPod:
        """The next pod to schedule; waits while activeQ is empty."""
        while True:
            entry = self._pop_ready()
            if entry is not None:
                return entry
            await self._ready.wait()

    def try_pop(self) -> QueuedPod | None:
        return self._pop_ready()

    def done(self, key: str) -> None:
        """The attempt for `key` is over (bound, or requeued by a failure handler)."""
        self._in_flight.pop(key, None)

    def requeue_unschedulable(self, entry: QueuedPod, plugins: set[str],
                              pod_cycle: int) -> None:
        """No node fits: park it, unless an event since its cycle began may have helped."""
        key = entry.pod.key
        self._in_flight.pop(key, None)
        if entry.deleted or key in self._active or key in self._backoff \
                or key in self._unschedulable:
            return
        entry.timestamp = self.clock()
        entry.unschedulable_plugins = set(plugins)
        if self.move_request_cycle >= pod_cycle or not plugins:
            self._push_backoff(entry)
        else:
            self._park(entry)

    def requeue_backoff(self, entry: QueuedPod) -> None:
        """An error (not a verdict): try again after the back-off."""
        key = entry.pod.key
        self._in_flight.pop(key, None)
        if entry.deleted or key in self._active or key in self._backoff \
                or key in self._unschedulable:
            return
        entry.timestamp = self.clock()
        entry.unschedulable_plugins = set()
        self._push_backoff(entry)

    # -- cluster events ---------------------------------------------------------------------

    def move_all(self, event: str) -> int:
        """A cluster event: parked pods that one of their rejecting plugins cares about move
        to activeQ (or backoffQ while backing off). Returns how many moved."""
        self.move_request_cycle = self.scheduling_cycle
        if not self._unschedulable:
            return 0
        interested = {p for p, events in self.interest.items() if event in events}
        if event != UNSCHEDULABLE_TIMEOUT and not any(
                self._rejections.get(p, 0) for p in interested) and all(
                entry.unschedulable_plugins or entry.gated
                for entry in self._unschedulable.values()):
            return 0
        moved = 0
        for key, entry in list(self._unschedulable.items()):
            if entry.gated:
                continue
            if entry.unschedulable_plugins and event != UNSCHEDULABLE_TIMEOUT \
                    and not entry.unschedulable_plugins & interested:
                continue
            self._unpark(key)
            self._reactivate(entry)
            moved += 1
        return moved

    def flush(self) -> float:
        """Move finished back-offs to activeQ and long-parked pods back; returns seconds
        until the next back-off ends (at most one)."""
        now = self.clock()
        heap = self._backoff_heap
        while heap and heap[0][0] <= now:
            _until, seq, key = heapq.heappop(heap)
            entry = self._backoff.get(key)
            if entry is None or entry.seq != seq or self._backoff_until(entry) > now:
                if entry is not None and entry.seq == seq:
                    heapq.heappush(heap, (self._backoff_until(entry), seq, key))
                continue
            del self._backoff[key]
            self._push_active(entry)
        stale = [k for k, e in self._unschedulable.items()
                 if not e.gated and now - e.timestamp > self.max_unschedulable]
        for key in stale:
            entry = self._unpark(key)
            if entry is not None:
                self._reactivate(entry)
        wait = heap[0][0] - now if heap else 1.0
        return max(min(wait, 1.0), 0.01)

    async def run_flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush())
