"""The kubelet's Summary API (`/stats/summary`, stats.k8s.io/v1alpha1) and resource
metrics (`/metrics/resource`), measured from cgroups and /proc.

What is measured, and where from:
- node: CPU from /proc/stat, memory from /proc/meminfo and /proc/vmstat (the machine as
  a whole), the file system holding the agent's data directory (statvfs);
- the "pods" system container: the cgroup all pods live under (when known);
- each pod: its cgroup (the parent of its containers' cgroups), its network namespace's
  interfaces (/proc/PID/net/dev of one of its processes);
- each running container: its cgroup, found from its process (/proc/PID/cgroup).

CPU is cpuacct.usage (v1) or cpu.stat usage_usec (v2); usageNanoCores is the rate since
the previous sample of the same cgroup (a fresh one is taken 100 ms later when there is
none). Memory working set is usage minus inactive file pages, as cAdvisor computes it;
availableBytes only when a limit is set. What cannot be measured is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubi.kubelet.runtime import cgroups
from kubi.kubelet.runtime.interface import (
    ContainerState,
    ContainerStatus,
    PodSandboxStatus,
    RuntimeService,
    RuntimeServiceError,
    SandboxState,
)

Obj = dict[str, Any]

LABEL_CONTAINER = "io.kubernetes.container.name"
# A rate needs two samples at least this far apart (seconds).
MIN_RATE_WINDOW = 0.05
FRESH_SAMPLE_DELAY = 0.1
NODE_KEY = "/"
UNLIMITED = 1 << 62


def _read(path: Path | str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _key_values(text: str) -> dict[str, int]:
    """`name value` lines (memory.stat, cpu.stat, /proc/vmstat) as a dict."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            values[parts[0].rstrip(":")] = int(parts[1])
    return values


def _timestamp(moment: datetime.datetime | None = None) -> str:
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds_precision(rfc3339: str) -> str:
    """A runtime timestamp (RFC 3339, maybe with nanoseconds) as metav1.Time prints it."""
    return f"{rfc3339[:19]}Z" if len(rfc3339) >= 19 else rfc3339


# -- raw measurements -------------------------------------------------------------------------


@dataclass
class Usage:
    """One cgroup's (or the node's) counters; None: not measurable here."""

    cpu_ns: int | None = None
    memory_usage: int | None = None
    working_set: int | None = None
    rss: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    memory_limit: int | None = None


def cgroup_usage(cgroup_path: str) -> Usage:
    """CPU and memory counters of a cgroup (absolute path within the hierarchies)."""
    usage = Usage()
    cpuacct = cgroups.controller_dir(cgroup_path, "cpuacct")
    if cpuacct is not None and (text := _read(cpuacct / "cpuacct.usage").strip()).isdigit():
        usage.cpu_ns = int(text)
    else:
        cpu = cgroups.controller_dir(cgroup_path, "cpu")
        stat = _key_values(_read(cpu / "cpu.stat")) if cpu is not None else {}
        if "usage_usec" in stat:
            usage.cpu_ns = stat["usage_usec"] * 1000
    memory = cgroups.controller_dir(cgroup_path, "memory")
    if memory is None:
        return usage
    stat = _key_values(_read(memory / "memory.stat"))
    v1 = (memory / "memory.usage_in_bytes").exists()
    current = _read(memory / ("memory.usage_in_bytes" if v1 else "memory.current")).strip()
    if current.isdigit():
        usage.memory_usage = int(current)
        inactive = stat.get("total_inactive_file" if v1 else "inactive_file", 0)
        usage.working_set = max(usage.memory_usage - inactive, 0)
    if v1:
        usage.rss = stat.get("total_rss")
        usage.page_faults = stat.get("total_pgfault")
        usage.major_page_faults = stat.get("total_pgmajfault")
    else:
        usage.rss = stat.get("anon")
        usage.page_faults = stat.get("pgfault")
        usage.major_page_faults = stat.get("pgmajfault")
    usage.memory_limit = cgroups.memory_limit(cgroup_path)
    return usage


def node_usage(proc: Path = Path("/proc")) -> Usage:
    """The machine's CPU time and memory, from /proc."""
    usage = Usage()
    for line in _read(proc / "stat").splitlines():
        if line.startswith("cpu "):
            ticks = [int(v) for v in line.split()[1:]]
            # user nice system idle iowait irq softirq steal: all but idle and iowait
            busy = sum(ticks[i] for i in (0, 1, 2, 5, 6, 7) if i < len(ticks))
            usage.cpu_ns = busy * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
            break
    meminfo = _key_values(_read(proc / "meminfo").replace(" kB", ""))
    if "MemTotal" in meminfo and "MemFree" in meminfo:
        total = meminfo["MemTotal"] * 1024
        usage.memory_usage = total - meminfo["MemFree"] * 1024
        usage.working_set = max(usage.memory_usage - meminfo.get("Inactive(file)", 0) * 1024, 0)
        if "AnonPages" in meminfo:
            usage.rss = meminfo["AnonPages"] * 1024
        usage.memory_limit = total
    vmstat = _key_values(_read(proc / "vmstat"))
    usage.page_faults = vmstat.get("pgfault")
    usage.major_page_faults = vmstat.get("pgmajfault")
    return usage


def boot_time(proc: Path = Path("/proc")) -> datetime.datetime | None:
    for line in _read(proc / "stat").splitlines():
        if line.startswith("btime "):
            return datetime.datetime.fromtimestamp(int(line.split()[1]), datetime.UTC)
    return None


def process_cgroup(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The cgroup of a process: its memory hierarchy's path (v1), else the unified one."""
    unified: str | None = None
    for line in _read(proc / str(pid) / "cgroup").splitlines():
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if "memory" in controllers.split(","):
            return path
        if controllers == "":
            unified = path
    return unified


def interfaces(pid: int, proc: Path = Path("/proc")) -> list[Obj]:
    """The interfaces of a process's network namespace, without loopback."""
    found: list[Obj] = []
    for line in _read(proc / str(pid) / "net" / "dev").splitlines()[2:]:
        name, _, counters = line.partition(":")
        values = counters.split()
        if name.strip() == "lo" or len(values) < 11:
            continue
        found.append({"name": name.strip(), "rxBytes": int(values[0]),
                      "rxErrors": int(values[2]), "txBytes": int(values[8]),
                      "txErrors": int(values[10])})
    return found


def filesystem(path: Path) -> Obj | None:
    """FsStats of the file system holding `path`."""
    try:
        vfs = os.statvfs(path)
    except OSError:
        return None
    return {"time": _timestamp(), "availableBytes": vfs.f_bavail * vfs.f_frsize,
            "capacityBytes": vfs.f_blocks * vfs.f_frsize,
            "usedBytes": (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize,
            "inodesFree": vfs.f_ffree, "inodes": vfs.f_files,
            "inodesUsed": vfs.f_files - vfs.f_ffree}


# -- the summary ------------------------------------------------------------------------------


@dataclass
class _Container:
    status: ContainerStatus
    cgroup: str | None


@dataclass
class _Pod:
    sandbox: PodSandboxStatus
    containers: list[_Container] = field(default_factory=list)

    @property
    def cgroup(self) -> str | None:
        """The pod's cgroup: the common parent of its containers' cgroups."""
        parents = {c.cgroup.rstrip("/").rsplit("/", 1)[0] for c in self.containers
                   if c.cgroup and c.cgroup.strip("/")}
        return parents.pop() if len(parents) == 1 else None


class StatsProvider:
    """Builds Summary objects; keeps the previous CPU sample of each cgroup for rates.

    `pods_cgroup`: the cgroup all pods live under (the "pods" system container), when
    known; `root_dir`: a directory on the node's file system (the agent's data dir)."""

    def __init__(self, runtime: RuntimeService, node_name: str, pods_cgroup: str = "",
                 root_dir: Path | None = None, proc: Path = Path("/proc")) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self.pods_cgroup = pods_cgroup
        self.root_dir = root_dir
        self.proc = proc
        self._previous: dict[str, tuple[float, int]] = {}

    async def _pods(self) -> list[_Pod]:
        pods: list[_Pod] = []
        for sandbox in await self.runtime.list_pod_sandbox(SandboxState.READY):
            pod = _Pod(sandbox)
            try:
                running = await self.runtime.list_containers(sandbox_id=sandbox.id,
                                                             state=ContainerState.RUNNING)
            except RuntimeServiceError:
                running = []
            for container in running:
                if container.state != ContainerState.RUNNING:
                    continue
                status = container
                if not status.pid:
                    with contextlib.suppress(RuntimeServiceError):
                        status = await self.runtime.container_status(container.id)
                cgroup = process_cgroup(status.pid, self.proc) if status.pid else None
                pod.containers.append(_Container(status, cgroup))
            pods.append(pod)
        return pods

    def _measure(self, pods: list[_Pod]) -> dict[str, Usage]:
        measured: dict[str, Usage] = {NODE_KEY: node_usage(self.proc)}
        if self.pods_cgroup and cgroups.exists(self.pods_cgroup):
            measured[self.pods_cgroup] = cgroup_usage(self.pods_cgroup)
        for pod in pods:
            if pod.cgroup:
                measured[pod.cgroup] = cgroup_usage(pod.cgroup)
            for container in pod.containers:
                if container.cgroup:
                    measured[container.cgroup] = cgroup_usage(container.cgroup)
        return measured

    async def _sample(self, pods: list[_Pod]) -> tuple[dict[str, Usage], dict[str, int]]:
        """Current counters, and CPU rates (nanocores) by cgroup key."""
        now, measured = time.monotonic(), self._measure(pods)
        stale = [key for key, usage in measured.items() if usage.cpu_ns is not None and (
            key not in self._previous or now - self._previous[key][0] < MIN_RATE_WINDOW)]
        if stale:  # no usable previous sample: take one now and measure again shortly
            for key in stale:
                cpu = measured[key].cpu_ns
                assert cpu is not None
                self._previous[key] = (now, cpu)
            await asyncio.sleep(FRESH_SAMPLE_DELAY)
            now, measured = time.monotonic(), self._measure(pods)
        rates: dict[str, int] = {}
        for key, usage in measured.items():
            if usage.cpu_ns is None:
                continue
            before = self._previous.get(key)
            if before is not None and now > before[0] and usage.cpu_ns >= before[1]:
                rates[key] = int((usage.cpu_ns - before[1]) / (now - before[0]))
            self._previous[key] = (now, usage.cpu_ns)
        for key in set(self._previous) - set(measured):  # cgroups that went away
            del self._previous[key]
        return measured, rates

    async def summary(self, only_cpu_and_memory: bool = False) -> Obj:
        """The Summary object (stats.k8s.io/v1alpha1), as the kubelet's /stats/summary."""
        pods = await self._pods()
        measured, rates = await self._sample(pods)
        stamp = _timestamp()

        def cpu(key: str) -> Obj | None:
            usage = measured.get(key)
            if usage is None or usage.cpu_ns is None:
                return None
            out: Obj = {"time": stamp}
            if key in rates:
                out["usageNanoCores"] = rates[key]
            out["usageCoreNanoSeconds"] = usage.cpu_ns
            return out

        def memory(key: str) -> Obj | None:
            usage = measured.get(key)
            if usage is None or usage.memory_usage is None:
                return None
            out: Obj = {"time": stamp}
            if usage.memory_limit is not None and usage.memory_limit < UNLIMITED \
                    and usage.working_set is not None:
                out["availableBytes"] = max(usage.memory_limit - usage.working_set, 0)
            out["usageBytes"] = usage.memory_usage
            for name, value in (("workingSetBytes", usage.working_set), ("rssBytes", usage.rss),
                                ("pageFaults", usage.page_faults),
                                ("majorPageFaults", usage.major_page_faults)):
                if value is not None:
                    out[name] = value
            return out

        def with_usage(base: Obj, key: str | None) -> Obj:
            if key:
                for name, value in (("cpu", cpu(key)), ("memory", memory(key))):
                    if value is not None:
                        base[name] = value
            return base

        node: Obj = {"nodeName": self.node_name}
        if self.pods_cgroup in measured:
            started = self._cgroup_start(self.pods_cgroup)
            node["systemContainers"] = [with_usage(
                {"name": "pods", **({"startTime": started} if started else {})},
                self.pods_cgroup)]
        booted = boot_time(self.proc)
        if booted is not None:
            node["startTime"] = _timestamp(booted)
        with_usage(node, NODE_KEY)
        if not only_cpu_and_memory and self.root_dir is not None:
            fs = filesystem(self.root_dir)
            if fs is not None:
                node["fs"] = fs
        return {"node": node, "pods": [self._pod_stats(pod, stamp, with_usage,
                                                       only_cpu_and_memory) for pod in pods]}

    def _cgroup_start(self, cgroup_path: str) -> str:
        for directory in cgroups.directories(cgroup_path):
            with contextlib.suppress(OSError):
                return _timestamp(datetime.datetime.fromtimestamp(directory.stat().st_mtime,
                                                                  datetime.UTC))
        return ""

    def _pod_stats(self, pod: _Pod, stamp: str, with_usage: Any,
                   only_cpu_and_memory: bool) -> Obj:
        config = pod.sandbox.config
        containers = [with_usage({"name": c.status.labels.get(LABEL_CONTAINER)
                                  or c.status.name,
                                  "startTime": _seconds_precision(c.status.started_at
                                                                  or c.status.created_at)},
                                 c.cgroup) for c in pod.containers]
        stats: Obj = {"podRef": {"name": config.name, "namespace": config.namespace,
                                 "uid": config.uid},
                      "startTime": _seconds_precision(pod.sandbox.created_at),
                      "containers": containers}
        with_usage(stats, pod.cgroup)
        pid = next((c.status.pid for c in pod.containers if c.status.pid), 0)
        if pid and not only_cpu_and_memory and not config.host_network:
            found = interfaces(pid, self.proc)
            default = next((i for i in found if i["name"] == "eth0"), found[0] if found else None)
            if default is not None:
                stats["network"] = {"time": stamp, **default, "interfaces": found}
        return stats


# -- resource metrics (Prometheus text), as the kubelet's /metrics/resource ------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return f"{{{text}}}" if text else ""


def resource_metrics(summary: Obj) -> str:
    """The kubelet's resource metrics (what metrics-server scrapes) from a summary."""
    stamp_ms = int(time.time() * 1000)
    families: dict[str, tuple[str, str, list[str]]] = {
        "container_cpu_usage_seconds_total": (
            "counter", "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
            []),
        "container_memory_working_set_bytes": (
            "gauge", "[STABLE] Current working set of the container in bytes", []),
        "container_start_time_seconds": (
            "gauge", "[STABLE] Start time of the container since unix epoch in seconds", []),
        "node_cpu_usage_seconds_total": (
            "counter", "[STABLE] Cumulative cpu time consumed by the node in core-seconds", []),
        "node_memory_working_set_bytes": (
            "gauge", "[STABLE] Current working set of the node in bytes", []),
        "pod_cpu_usage_seconds_total": (
            "counter", "[STABLE] Cumulative cpu time consumed by the pod in core-seconds", []),
        "pod_memory_working_set_bytes": (
            "gauge", "[STABLE] Current working set of the pod in bytes", []),
        "resource_scrape_error": (
            "gauge", "[STABLE] 1 if there was an error while getting container metrics, 0 "
                     "otherwise", []),
    }

    def add(name: str, labels: list[tuple[str, str]], value: float | int | None) -> None:
        if value is not None:
            families[name][2].append(f"{name}{_labels(labels)} {value} {stamp_ms}")

    def seconds(cpu: Obj | None) -> float | None:
        ns = (cpu or {}).get("usageCoreNanoSeconds")
        return ns / 1e9 if ns is not None else None

    node = summary.get("node") or {}
    add("node_cpu_usage_seconds_total", [], seconds(node.get("cpu")))
    add("node_memory_working_set_bytes", [], (node.get("memory") or {}).get("workingSetBytes"))
    for pod in summary.get("pods") or []:
        ref = pod["podRef"]
        pod_labels = [("namespace", ref["namespace"]), ("pod", ref["name"])]
        add("pod_cpu_usage_seconds_total", pod_labels, seconds(pod.get("cpu")))
        add("pod_memory_working_set_bytes", pod_labels,
            (pod.get("memory") or {}).get("workingSetBytes"))
        for container in pod.get("containers") or []:
            labels = [("container", container["name"]), *pod_labels]
            add("container_cpu_usage_seconds_total", labels, seconds(container.get("cpu")))
            add("container_memory_working_set_bytes", labels,
                (container.get("memory") or {}).get("workingSetBytes"))
            started = container.get("startTime")
            if started:
                moment = datetime.datetime.fromisoformat(started.replace("Z", "+00:00"))
                add("container_start_time_seconds", labels, int(moment.timestamp()))
    families["resource_scrape_error"][2].append("resource_scrape_error 0")
    lines: list[str] = []
    for name, (kind, help_text, samples) in families.items():
        if samples:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n"
