"""Pieces of the scheduler on their own: quantities, requests, the fit message, the queue."""

from __future__ import annotations

import asyncio

import pytest

from kubi.scheduler.framework import (
    Diagnosis as D,
)
from kubi.scheduler.framework import (
    FitError,
    PodInfo,
    num_feasible_nodes_to_find,
    pod_requests,
    quantity_milli,
    quantity_value,
    unresolvable,
    unschedulable,
)
from kubi.scheduler.queue import SchedulingQueue


def pod(name: str, priority: int = 0, created: str = "2024-01-01T00:00:00Z",
        **spec: object) -> PodInfo:
    return PodInfo({"metadata": {"name": name, "namespace": "default",
                                 "creationTimestamp": created},
                    "spec": {"priority": priority, "containers": [{"name": "c"}], **spec}})


def test_quantities_round_up_and_reject_garbage() -> None:
    assert quantity_milli("100m") == 100
    assert quantity_milli("1.5") == 1500
    assert quantity_milli("0.0001") == 1  # rounded up, as resource.Quantity.MilliValue
    assert quantity_value("1Gi") == 1 << 30
    assert quantity_value("1e3") == 1000
    assert quantity_value("1E") == 10**18
    with pytest.raises(ValueError):
        quantity_value("12 apples")


def test_pod_requests_take_max_of_init_containers_plus_overhead() -> None:
    spec = {"containers": [{"resources": {"requests": {"cpu": "100m", "memory": "1Mi"}}},
                           {"resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "500m"}}},
                               {"restartPolicy": "Always",
                                "resources": {"requests": {"cpu": "50m"}}}],
            "overhead": {"cpu": "10m"}}
    requests = pod_requests(spec)
    # containers 300m + sidecar 50m = 350m < init 500m; plus 10m overhead.
    assert (requests.cpu, requests.memory) == (510, 1 << 20)
    non_zero = pod_requests({"containers": [{}]}, non_zero=True)
    assert (non_zero.cpu, non_zero.memory) == (100, 200 * 1024 * 1024)


def test_fit_error_message_shape() -> None:
    statuses = {"a": unschedulable("Insufficient cpu", "Insufficient memory"),
                "b": unresolvable("node(s) had untolerated taint {k: v}"),
                "c": unresolvable("node(s) had untolerated taint {k: v}")}
    error = FitError(pod("p"), 3, D(node_statuses=statuses),
                     "preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
                     "scheduling.")
    assert str(error) == (
        "0/3 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 2 node(s) had "
        "untolerated taint {k: v}. preemption: 0/3 nodes are available: 3 Preemption is not "
        "helpful for scheduling.")
    prefilter = FitError(pod("p"), 2, D(pre_filter_message='persistentvolumeclaim "x" not '
                                        'found'), "")
    assert str(prefilter) == '0/2 nodes are available: persistentvolumeclaim "x" not found.'


def test_nodes_to_score_is_adaptive() -> None:
    assert num_feasible_nodes_to_find(50) == 50
    assert num_feasible_nodes_to_find(1000) == 420  # 50% - 1000/125
    assert num_feasible_nodes_to_find(5000) == 500  # 10%
    assert num_feasible_nodes_to_find(100_000) == 5000  # floor of 5%
    assert num_feasible_nodes_to_find(150) == 100  # at least 100


def test_queue_orders_by_priority_then_age_and_backs_off() -> None:
    async def scenario() -> None:
        now = [0.0]
        queue = SchedulingQueue({"NodeResourcesFit": frozenset({"NodeAdd"})},
                                clock=lambda: now[0])
        queue.add(pod("young", created="2024-01-02T00:00:00Z"))
        queue.add(pod("old", created="2024-01-01T00:00:00Z"))
        queue.add(pod("urgent", priority=100, created="2024-01-03T00:00:00Z"))
        order = [(await queue.pop()).pod.name for _ in range(3)]
        assert order == ["urgent", "old", "young"]
        # "old" was rejected by NodeResourcesFit: parked until a node is added.
        entry = queue._in_flight["default/old"]
        queue.requeue_unschedulable(entry, {"NodeResourcesFit"}, queue.scheduling_cycle + 1)
        assert queue.where("default/old") == "unschedulable"
        assert queue.move_all("AssignedPodAdd") == 0  # not an event that helps
        assert queue.move_all("NodeAdd") == 1
        assert queue.where("default/old") == "backoff"  # first back-off is 1 s
        now[0] = 0.5
        queue.flush()
        assert queue.where("default/old") == "backoff"
        now[0] = 1.01
        queue.flush()
        assert queue.where("default/old") == "active"
        # Second failure: 2 s back-off; back-off is capped at 10 s.
        second = await queue.pop()
        assert second.attempts == 2
        queue.requeue_backoff(second)
        now[0] = 2.5
        queue.flush()
        assert queue.where("default/old") == "backoff"
        now[0] = 3.02
        queue.flush()
        assert queue.where("default/old") == "active"
        queue.delete("default/old")
        assert queue.where("default/old") == ""
        # Gated pods wait for their gates to go.
        queue.add(pod("gated", schedulingGates=[{"name": "wait"}]))
        assert queue.where("default/gated") == "unschedulable"
        assert queue.move_all("NodeAdd") == 0
        queue.update(pod("gated"))
        assert queue.where("default/gated") == "active"
    asyncio.run(scenario())
