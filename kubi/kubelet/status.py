"""Node and pod status exactly as a kubelet writes them, as pure functions over JSON dicts.

Shared by the simulated nodes and the real node agent: whatever runs the pods decides
*what* happened (started, exited with a code, ready or not); these helpers decide how
that looks on the wire (reasons, messages, condition order, timestamps). Semantics follow
upstream's pkg/kubelet/nodestatus/setters.go, pkg/kubelet/status/generate.go and
kubelet_pods.go (generateAPIPodStatus, getPhase).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubi.api import meta as m

Obj = dict[str, Any]

KUBELET_PORT = 10250
# Node conditions in the order the kubelet's setters add them.
NODE_CONDITION_TYPES = ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")
_HEALTHY_NODE_CONDITIONS = {
    "MemoryPressure": ("False", "KubeletHasSufficientMemory",
                       "kubelet has sufficient memory available"),
    "DiskPressure": ("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    "Ready": ("True", "KubeletReady", "kubelet is posting ready status"),
}
_PRESSURE_NODE_CONDITIONS = {
    "MemoryPressure": ("True", "KubeletHasInsufficientMemory",
                       "kubelet has insufficient memory available"),
    "DiskPressure": ("True", "KubeletHasDiskPressure", "kubelet has disk pressure"),
    "PIDPressure": ("True", "KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
}


def now_time() -> str:
    return m.rfc3339(m.now())


# -- node ------------------------------------------------------------------------------


@dataclass
class NodeFacts:
    """What a kubelet knows about its machine; everything the node status is made of."""

    name: str
    internal_ip: str
    cpu: str = "32"
    memory: str = "256Gi"
    pods: int = 110
    ephemeral_storage: str = "100Gi"
    architecture: str = "amd64"
    operating_system: str = "linux"
    os_image: str = ""
    kernel_version: str = ""
    kubelet_version: str = "v1.32.0"
    kube_proxy_version: str = ""
    container_runtime_version: str = ""
    machine_id: str = ""
    system_uuid: str = ""
    boot_id: str = ""
    # Resources the kubelet keeps for the system (upstream kube/system-reserved + eviction).
    reserved: dict[str, str] = field(default_factory=dict)
    # Conditions that are not healthy: type -> error message (Ready) or True (pressures).
    not_ready_reason: str = ""
    pressure: frozenset[str] = frozenset()

    def capacity(self) -> Obj:
        return {"cpu": self.cpu, "ephemeral-storage": self.ephemeral_storage,
                "hugepages-1Gi": "0", "hugepages-2Mi": "0", "memory": self.memory,
                "pods": str(self.pods)}

    def allocatable(self) -> Obj:
        allocatable = self.capacity()
        allocatable.update(self.reserved)
        return allocatable


def node_conditions(facts: NodeFacts, previous: list[Obj] | None = None,
                    heartbeat: str | None = None) -> list[Obj]:
    """MemoryPressure, DiskPressure, PIDPressure, Ready, heartbeat now; a condition's
    lastTransitionTime moves only when its status changes (as upstream's setters)."""
    stamp = heartbeat or now_time()
    old = {c.get("type"): c for c in previous or [] if isinstance(c, dict)}
    conditions = []
    for condition_type in NODE_CONDITION_TYPES:
        status, reason, message = _HEALTHY_NODE_CONDITIONS[condition_type]
        if condition_type in facts.pressure and condition_type in _PRESSURE_NODE_CONDITIONS:
            status, reason, message = _PRESSURE_NODE_CONDITIONS[condition_type]
        if condition_type == "Ready" and facts.not_ready_reason:
            status, reason, message = "False", "KubeletNotReady", facts.not_ready_reason
        before = old.get(condition_type) or {}
        transition = (before.get("lastTransitionTime") if before.get("status") == status
                      else None) or stamp
        conditions.append({"type": condition_type, "status": status,
                           "lastHeartbeatTime": stamp, "lastTransitionTime": transition,
                           "reason": reason, "message": message})
    # Conditions other components own (NetworkUnavailable) are kept as they are.
    conditions.extend(c for t, c in old.items() if t not in NODE_CONDITION_TYPES)
    return conditions


def node_status(facts: NodeFacts, previous: Obj | None = None,
                heartbeat: str | None = None) -> Obj:
    """The whole node status a kubelet posts."""
    previous = previous or {}
    return {
        "capacity": facts.capacity(),
        "allocatable": facts.allocatable(),
        "conditions": node_conditions(facts, previous.get("conditions"), heartbeat),
        "addresses": [{"type": "InternalIP", "address": facts.internal_ip},
                      {"type": "Hostname", "address": facts.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {
            "machineID": facts.machine_id, "systemUUID": facts.system_uuid,
            "bootID": facts.boot_id, "kernelVersion": facts.kernel_version,
            "osImage": facts.os_image,
            "containerRuntimeVersion": facts.container_runtime_version,
            "kubeletVersion": facts.kubelet_version,
            "kubeProxyVersion": facts.kube_proxy_version,
            "operatingSystem": facts.operating_system, "architecture": facts.architecture,
        },
        **({"images": previous["images"]} if previous.get("images") else {}),
    }


def node_labels(facts: NodeFacts) -> dict[str, str]:
    """The well-known labels a kubelet sets on its Node."""
    return {"beta.kubernetes.io/arch": facts.architecture,
            "beta.kubernetes.io/os": facts.operating_system,
            "kubernetes.io/arch": facts.architecture,
            "kubernetes.io/hostname": facts.name,
            "kubernetes.io/os": facts.operating_system}


def node_status_changed(old: Obj, new: Obj) -> bool:
    """Upstream's nodeStatusHasChanged: differences beyond heartbeat times."""
    def strip(status: Obj) -> Obj:
        copied = dict(status)
        copied["conditions"] = sorted(
            ({k: v for k, v in c.items() if k != "lastHeartbeatTime"}
             for c in status.get("conditions") or []), key=lambda c: str(c.get("type")))
        return copied

    return strip(old) != strip(new)


def node_lease(node: Obj, duration_seconds: int = 40, renew_time: str | None = None) -> Obj:
    """The kube-node-lease Lease of `node`, owned by the Node as the kubelet sets it up."""
    meta = node.get("metadata") or {}
    name = str(meta.get("name"))
    lease: Obj = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": duration_seconds,
                 "renewTime": renew_time or m.rfc3339_micro(m.now())},
    }
    if meta.get("uid"):
        lease["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": name, "uid": meta["uid"]}]
    return lease


# -- pod --------------------------------------------------------------------------------


@dataclass
class ContainerRun:
    """What happened to one container, as the runtime reports it.

    `started_at` None means not started yet (waiting `waiting_reason`); `exit_code` set
    means it has terminated; `last_exit` is the previous instance's termination."""

    name: str
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    ready: bool = False
    restart_count: int = 0
    container_id: str = ""
    last_exit: Obj | None = None


def normalize_image(image: str) -> str:
    """How a CRI runtime reports an image reference: `nginx` -> `docker.io/library/nginx:latest`."""
    name, _, digest = image.partition("@")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}" if rest else f"docker.io/library/{name}"
    if digest:
        return f"{name}@{digest}"
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def image_id(image: str) -> str:
    """A stable repo digest for an image (runtimes report `repo@sha256:...`)."""
    normalized = normalize_image(image)
    if "@" in normalized:
        return normalized
    repo = normalized.rsplit(":", 1)[0]
    return f"{repo}@sha256:{hashlib.sha256(normalized.encode()).hexdigest()}"


def container_id(runtime: str, pod_uid: str, name: str, attempt: int) -> str:
    """`<runtime>://<64 hex>`, stable for one instance of one container."""
    digest = hashlib.sha256(f"{pod_uid}/{name}/{attempt}".encode()).hexdigest()
    return f"{runtime}://{digest}"


def terminated_state(exit_code: int, started_at: str, finished_at: str, cid: str,
                     reason: str | None = None) -> Obj:
    state: Obj = {"exitCode": exit_code,
                  "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                  "startedAt": started_at, "finishedAt": finished_at}
    if cid:
        state["containerID"] = cid
    return state


def container_status(spec: Obj, run: ContainerRun, *, init: bool = False) -> Obj:
    """One entry of containerStatuses / initContainerStatuses."""
    image = str(spec.get("image") or "")
    status: Obj = {"name": run.name}
    if run.exit_code is not None and run.started_at:
        status["state"] = {"terminated": terminated_state(
            run.exit_code, run.started_at, run.finished_at or run.started_at,
            run.container_id)}
    elif run.started_at:
        status["state"] = {"running": {"startedAt": run.started_at}}
    else:
        waiting: Obj = {"reason": run.waiting_reason}
        if run.waiting_message:
            waiting["message"] = run.waiting_message
        status["state"] = {"waiting": waiting}
    status["lastState"] = {"terminated": run.last_exit} if run.last_exit else {}
    # A completed init container counts as ready; a running one is ready only as a sidecar.
    status["ready"] = bool(run.ready)
    status["restartCount"] = run.restart_count
    status["image"] = normalize_image(image) if image else ""
    status["imageID"] = image_id(image) if run.container_id and image else ""
    if run.container_id:
        status["containerID"] = run.container_id
    status["started"] = bool(run.started_at) and run.exit_code is None
    mounts = [{"name": v.get("name"), "mountPath": v.get("mountPath"),
               **({"readOnly": True, "recursiveReadOnly": "Disabled"}
                  if v.get("readOnly") else {})}
              for v in spec.get("volumeMounts") or [] if isinstance(v, dict)]
    if mounts:
        status["volumeMounts"] = mounts
    del init  # same shape for both lists
    return status


def _condition(condition_type: str, status: str, previous: dict[str, Obj], stamp: str,
               reason: str = "", message: str = "") -> Obj:
    before = previous.get(condition_type) or {}
    transition = before.get("lastTransitionTime") if before.get("status") == status else None
    condition: Obj = {"type": condition_type, "status": status, "lastProbeTime": None,
                      "lastTransitionTime": transition or stamp}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def pod_phase(pod: Obj, init_runs: list[ContainerRun], runs: list[ContainerRun]) -> str:
    """Upstream's getPhase over the container states, given the restart policy."""
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    sidecars = _sidecar_names(pod)
    for init in init_runs:
        if init.name in sidecars:
            continue
        if init.exit_code is None:
            return "Pending"
        if init.exit_code != 0 and policy == "Never":
            return "Failed"
    running = waiting = succeeded = failed = 0
    for run in runs:
        if run.exit_code is None and run.started_at:
            running += 1
        elif run.exit_code is None:
            # A container waiting to restart has run before: the pod is still Running.
            if run.last_exit is not None:
                running += 1
            else:
                waiting += 1
        elif run.exit_code == 0:
            succeeded += 1
        else:
            failed += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if not runs:
        return "Pending"
    if policy == "Always":
        return "Running"  # exited containers are about to restart
    if failed and policy == "Never":
        return "Failed"
    if failed:
        return "Running"  # OnFailure: the failed ones restart
    return "Succeeded"


def _sidecar_names(pod: Obj) -> set[str]:
    return {str(c.get("name")) for c in (pod.get("spec") or {}).get("initContainers") or []
            if isinstance(c, dict) and c.get("restartPolicy") == "Always"}


def pod_status(pod: Obj, init_runs: list[ContainerRun], runs: list[ContainerRun], *,
               host_ip: str, pod_ip: str, start_time: str | None = None,
               sandbox_ready: bool = True, now: str | None = None) -> Obj:
    """The pod status a kubelet would post: phase, the five conditions, IPs, container
    statuses. Fields the kubelet does not own (qosClass, nominatedNodeName, resize…) are
    kept from the current status, as are unchanged conditions' lastTransitionTime."""
    stamp = now or now_time()
    spec = pod.get("spec") or {}
    old: Obj = pod.get("status") or {}
    previous = {str(c.get("type")): c for c in old.get("conditions") or []
                if isinstance(c, dict)}
    phase = pod_phase(pod, init_runs, runs)
    terminal = phase in ("Succeeded", "Failed")
    sidecars = _sidecar_names(pod)

    conditions = [_condition("PodReadyToStartContainers",
                             "True" if sandbox_ready and not terminal else "False",
                             previous, stamp)]
    pending_init = [r.name for r in init_runs
                    if (r.exit_code != 0 if r.name not in sidecars else not r.started_at)]
    if terminal and not pending_init:
        conditions.append(_condition("Initialized", "True", previous, stamp, "PodCompleted"))
    elif pending_init:
        conditions.append(_condition(
            "Initialized", "False", previous, stamp, "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending_init)}]"))
    else:
        conditions.append(_condition("Initialized", "True", previous, stamp))
    unready = [r.name for r in [*(r for r in init_runs if r.name in sidecars), *runs]
               if not r.ready]
    if terminal:
        ready_args: tuple[str, str, str] = ("False", "PodCompleted", "")
    elif pending_init:
        ready_args = ("False", "ContainersNotReady",
                      f"containers with incomplete status: [{' '.join(pending_init)}]")
    elif unready:
        ready_args = ("False", "ContainersNotReady",
                      f"containers with unready status: [{' '.join(unready)}]")
    else:
        ready_args = ("True", "", "")
    conditions.append(_condition("Ready", ready_args[0], previous, stamp, *ready_args[1:]))
    conditions.append(_condition("ContainersReady", ready_args[0], previous, stamp,
                                 *ready_args[1:]))
    scheduled = previous.get("PodScheduled")
    conditions.append(dict(scheduled) if scheduled and scheduled.get("status") == "True"
                      else _condition("PodScheduled", "True", previous, stamp))
    # Conditions other writers own (DisruptionTarget, readiness gates) stay as they are.
    conditions.extend(c for t, c in previous.items() if t not in {
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
        "PodScheduled"})

    status: Obj = {"phase": phase, "conditions": conditions, "hostIP": host_ip,
                   "hostIPs": [{"ip": host_ip}]}
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    status["startTime"] = old.get("startTime") or start_time or stamp
    init_specs = {str(c.get("name")): c for c in spec.get("initContainers") or []}
    specs = {str(c.get("name")): c for c in spec.get("containers") or []}
    if init_runs:
        status["initContainerStatuses"] = [
            container_status(init_specs.get(r.name, {}), r, init=True) for r in init_runs]
    status["containerStatuses"] = [container_status(specs.get(r.name, {}), r) for r in runs]
    for kept in ("qosClass", "nominatedNodeName", "resize", "ephemeralContainerStatuses",
                 "reason", "message"):
        if kept in old:
            status[kept] = old[kept]
    return status


def container_names(pod: Obj, group: str = "containers") -> Iterable[str]:
    return [str(c.get("name")) for c in (pod.get("spec") or {}).get(group) or []
            if isinstance(c, dict)]


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return m.parse_time(value)
    except ValueError:
        return None
