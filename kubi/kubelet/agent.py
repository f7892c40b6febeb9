"""The node agent: a kubelet over the CRI-shaped runtime (runc) and the image store.

`run_agent(client, config)` registers the Node (capacity from this machine, addresses,
nodeInfo, podCIDR), keeps its Lease renewed and its status posted, watches the pods
bound to it (field selector spec.nodeName=NAME) and hands each one to a pod worker
(pods.py). Cancelling it stops the agent but leaves the containers running: a new agent
over the same data directory adopts them. Sandboxes of pods that no longer exist are
removed, and so are local-path volume directories whose PersistentVolume went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import platform
import shutil
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubi.api import meta as m
from kubi.client.events import EventRecorder
from kubi.client.informer import Informer
from kubi.client.rest import Client
from kubi.kubelet import status as st
from kubi.kubelet.configz import kubelet_configuration
from kubi.kubelet.heartbeat import post_node_status, register_node, renew_node_lease
from kubi.kubelet.imagegc import ImageGCPolicy, run_image_gc
from kubi.kubelet.images import ImageStore, load_registries
from kubi.kubelet.pods import (
    LABEL_POD_UID,
    Backoff,
    PodContext,
    PodWorker,
    StartSlots,
    remove_pod_resources,
)
from kubi.kubelet.runtime.interface import RuntimeService
from kubi.kubelet.server import (
    KubeletServer,
    RunningServer,
    label_resolvers,
    self_signed_certificate,
    serve,
)
from kubi.kubelet.volumes import VolumeManager

log = logging.getLogger("kubi.kubelet.agent")

Obj = dict[str, Any]

KUBELET_VERSION = "v1.32.0+kubi"
STORAGE_DIR = "storage"  # DATA_DIR/storage: local-path volumes of this node
# Pods in the runtime's costly calls at once, per CPU: those calls mostly wait for the
# processes they start (runc, the shim, ip), so two per CPU keep the CPUs busy.
START_SLOTS_PER_CPU = 2


@dataclass
class AgentConfig:
    """Everything the agent needs; only `node_name` and `data_dir` are required."""

    node_name: str
    data_dir: Path
    node_ip: str = ""  # "": the first global IPv4 address of this machine
    pod_cidr: str = ""  # "": the Node's spec.podCIDR, else a /24 of pod_cidr_base
    pod_cidr_base: str = "10.244.0.0/16"
    node_netns: str | None = None  # a named netns playing the node (tests); None: ours
    cluster_dns: list[str] = field(default_factory=lambda: ["10.96.0.10"])
    cluster_domain: str = "cluster.local"
    registries_config: Path | None = None  # registries.yaml (mirrors, auth)
    kubelet_port: int = st.KUBELET_PORT
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat: float = 10.0  # Lease renewal period
    lease_duration: int = 40
    status_report_interval: float = 60.0
    sync_period: float = 10.0  # each pod is re-synced at least this often
    housekeeping_interval: float = 10.0  # orphaned sandboxes are looked for this often
    crash_backoff_base: float = 10.0
    crash_backoff_max: float = 300.0
    image_backoff_base: float = 10.0
    image_backoff_max: float = 300.0
    backoff_reset_seconds: float = 600.0
    cgroup_root: str = "/kubi"
    bridge: str = "kubi0"
    netns_prefix: str = "kubi-"
    nft_table: str = "kubi"
    oci_runtime: str = "auto"  # auto (crun when it works here, else runc), runc, crun, a path
    image_gc: ImageGCPolicy = field(default_factory=ImageGCPolicy)
    rootfs_method: str = "auto"  # prepare_rootfs: auto, overlay or copy
    runtime: RuntimeService | None = None  # injected runtime; None: runc under data_dir
    images: ImageStore | None = None  # injected image store; None: one under data_dir
    # The agent's own API (logs, exec, attach, port-forward), reached by the API server
    # with `api_token`; none is served when the token is empty.
    api_token: str = ""
    api_bind: str = "0.0.0.0"
    api_port: int = 10250  # 0: any free port (several agents on one machine)
    api_advertise: str = ""  # host the API server dials; "": node_ip


# -- facts about this machine ----------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def _memory_kib() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def detect_node_ip() -> str:
    """The first global-scope IPv4 address of this machine (127.0.0.1 when none)."""
    result = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                            capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return "127.0.0.1"


def derive_pod_cidr(name: str, base: str) -> str:
    """A /24 of `base` picked by the node's name (a lone agent without node IPAM)."""
    network = ipaddress.ip_network(base, strict=False)
    prefix = max(24, network.prefixlen)
    slots = 2 ** (prefix - network.prefixlen)
    slot = zlib.crc32(name.encode()) % slots
    size = 2 ** (network.max_prefixlen - prefix)
    return f"{ipaddress.ip_address(int(network.network_address) + slot * size)}/{prefix}"


def node_facts(config: AgentConfig, node_ip: str, runtime_version: str) -> st.NodeFacts:
    memory = _memory_kib()
    disk = shutil.disk_usage(config.data_dir).total // 1024
    machine_id = _read("/etc/machine-id") or f"{zlib.crc32(config.node_name.encode()):08x}" * 4
    return st.NodeFacts(
        name=config.node_name, internal_ip=node_ip, cpu=str(os.cpu_count() or 1),
        memory=f"{memory}Ki", pods=110, ephemeral_storage=f"{disk}Ki",
        architecture=_architecture(), operating_system="linux", os_image=_os_image(),
        kernel_version=os.uname().release, kubelet_version=KUBELET_VERSION,
        kube_proxy_version="", container_runtime_version=runtime_version,
        machine_id=machine_id, system_uuid=_read("/sys/class/dmi/id/product_uuid")
        or machine_id, boot_id=_read("/proc/sys/kernel/random/boot_id"),
        # Upstream's default hard eviction thresholds leave these allocatable.
        reserved={"memory": f"{max(memory - 100 * 1024, 0)}Ki",
                  "ephemeral-storage": str(disk * 1024 * 9 // 10)})


# -- the agent -------------------------------------------------------------------------


class Agent:
    def __init__(self, client: Client, config: AgentConfig) -> None:
        self.client = client
        self.config = config
        self.data_dir = config.data_dir.absolute()
        self.storage_dir = self.data_dir / STORAGE_DIR
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        self.node: Obj = {}
        self.lease: Obj | None = None
        self.facts: st.NodeFacts | None = None
        self.owned_images = config.images is None
        self.runtime: RuntimeService | None = config.runtime
        self.images: ImageStore | None = config.images
        self.pod_informer = Informer(client, "pods",
                                     field_selector=f"spec.nodeName={config.node_name}")
        self.service_informer = Informer(client, "services")
        self.volume_informer = Informer(client, "persistentvolumes")
        self.api: RunningServer | None = None

    # -- start-up ------------------------------------------------------------------------

    def _node_object(self, facts: st.NodeFacts, pod_cidr: str) -> Obj:
        labels = {**st.node_labels(facts), **self.config.labels}
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.config.node_name, "labels": labels,
                             "annotations": {
                                 "volumes.kubernetes.io/controller-managed-attach-detach":
                                     "true"}},
                "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
                "status": {**st.node_status(facts), **self._status_extra()}}

    def _status_extra(self) -> Obj:
        extra: Obj = {"daemonEndpoints": {"kubeletEndpoint": {
            "Port": self.config.kubelet_port}}}
        if self.images is not None:
            images = sorted(self.images.list_images(), key=lambda i: -i.size)[:50]
            if images:
                extra["images"] = [{"names": [*i.repo_digests, *i.repo_tags],
                                    "sizeBytes": i.size} for i in images]
        return extra

    def _build_runtime(self, pod_cidr: str) -> RuntimeService:
        from kubi.kubelet.runtime.network import NetworkConfig, PodNetwork
        from kubi.kubelet.runtime.oci import OciRuntime

        root = self.data_dir / "runtime"
        network = PodNetwork(NetworkConfig(
            pod_cidr=pod_cidr, bridge=self.config.bridge, node_netns=self.config.node_netns,
            netns_prefix=self.config.netns_prefix, table=self.config.nft_table),
            root / "network")
        return OciRuntime(root, network, runtime=self.config.oci_runtime,
                          cgroup_root=self.config.cgroup_root)

    async def _register(self) -> PodContext:
        config = self.config
        node_ip = config.node_ip or detect_node_ip()
        pod_cidr = config.pod_cidr or derive_pod_cidr(config.node_name, config.pod_cidr_base)
        with contextlib.suppress(Exception):
            existing = await self.client.get("nodes", config.node_name)
            pod_cidr = (existing.get("spec") or {}).get("podCIDR") or pod_cidr
        if self.runtime is None:
            self.runtime = self._build_runtime(pod_cidr)
        if self.images is None:
            registries = load_registries(config.registries_config) \
                if config.registries_config else None
            self.images = ImageStore(self.data_dir, registries)
        name, version = await self.runtime.version()
        self.facts = node_facts(config, node_ip, f"{name}://{version}")
        # The kubelet API first: a Node that says Ready can be reached for logs and exec.
        self.api, url = await self._serve_api(node_ip)
        node = self._node_object(self.facts, pod_cidr)
        if url:
            node["metadata"]["annotations"][m.KUBELET_URL_ANNOTATION] = url
        self.node, created = await register_node(self.client, node)
        if not created:
            self.node = await post_node_status(self.client, config.node_name, self.facts,
                                               self.node, extra=self._status_extra())
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        facts = self.facts
        sandbox_uids = {s.config.labels.get(LABEL_POD_UID, s.config.uid)
                        for s in await self.runtime.list_pod_sandbox()}
        netns = None
        network = getattr(self.runtime, "network", None)
        if network is not None and hasattr(network, "node_netns_path"):
            netns = network.node_netns_path()
        return PodContext(
            client=self.client, runtime=self.runtime, images=self.images,
            volumes=VolumeManager(self.client, self.data_dir / "pods",
                                  allocatable=facts.allocatable),
            recorder=EventRecorder(self.client, "kubelet", config.node_name),
            node_name=config.node_name, node_ip=node_ip,
            containers_dir=self.data_dir / "containers", logs_dir=self.data_dir / "logs",
            cluster_dns=list(config.cluster_dns), cluster_domain=config.cluster_domain,
            node_netns=netns,
            crash_backoff=Backoff(config.crash_backoff_base, config.crash_backoff_max),
            image_backoff=Backoff(config.image_backoff_base, config.image_backoff_max),
            backoff_reset_seconds=config.backoff_reset_seconds,
            sync_period=config.sync_period, services=self._services,
            allocatable=facts.allocatable, rootfs_method=config.rootfs_method,
            sandbox_uids=sandbox_uids, start_slots=StartSlots(START_SLOTS_PER_CPU
                                                              * (os.cpu_count() or 1)))

    def _services(self, namespace: str) -> list[Obj]:
        return self.service_informer.cache.list(namespace)

    # -- pods ------------------------------------------------------------------------------

    def _dispatch(self, ctx: PodContext, pod: Obj) -> None:
        uid = str(pod["metadata"].get("uid", ""))
        if uid in self.finished:
            return
        worker = self.workers.get(uid)
        if worker is None:
            worker = self.workers[uid] = PodWorker(ctx, pod)
            worker.start()
            assert worker.task is not None
            worker.task.add_done_callback(lambda _: self._worker_done(uid))
        else:
            worker.update(pod)

    def _worker_done(self, uid: str) -> None:
        worker = self.workers.get(uid)
        if worker is not None and worker.finished:
            self.workers.pop(uid, None)
            self.finished.add(uid)

    def _removed(self, pod: Obj) -> None:
        worker = self.workers.get(str(pod["metadata"].get("uid", "")))
        if worker is not None:
            worker.remove()

    async def _housekeeping(self, ctx: PodContext) -> None:
        """Remove sandboxes and containers of pods this node no longer has."""
        assert self.runtime is not None
        known = {str(p["metadata"].get("uid")) for p in self.pod_informer.cache.list()}
        known |= set(self.workers)
        orphans = set()
        for sandbox in await self.runtime.list_pod_sandbox():
            uid = sandbox.config.labels.get(LABEL_POD_UID, sandbox.config.uid)
            if uid not in known:
                orphans.add(uid)
        for container in await self.runtime.list_containers():
            uid = container.labels.get(LABEL_POD_UID, "")
            if uid and uid not in known:
                orphans.add(uid)
        for uid in orphans:
            log.info("removing the containers of pod %s, which no longer exists", uid)
            await remove_pod_resources(ctx, uid)
        pods_dir = self.data_dir / "pods"
        if pods_dir.is_dir():
            for directory in pods_dir.iterdir():
                if directory.name not in known:
                    await asyncio.to_thread(ctx.volumes.teardown, directory.name)

    # -- local-path volumes --------------------------------------------------------------

    def _local_path(self, volume: Obj) -> Path | None:
        spec = volume.get("spec") or {}
        raw = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path")
        if not raw:
            return None
        path = Path(str(raw))
        if path.parent != self.storage_dir:
            return None
        return path

    async def _reclaim_volume(self, volume: Obj, deleted: bool) -> None:
        path = self._local_path(volume)
        spec = volume.get("spec") or {}
        if path is None or spec.get("persistentVolumeReclaimPolicy") != "Delete":
            return
        phase = (volume.get("status") or {}).get("phase")
        if deleted or phase == "Released":
            log.info("removing local volume %s of %s", path, m.name_of(volume))
            await asyncio.to_thread(shutil.rmtree, path, True)

    def _volume_event(self, volume: Obj, deleted: bool) -> None:
        asyncio.get_running_loop().create_task(self._reclaim_volume(volume, deleted))

    async def _sweep_storage(self) -> None:
        referenced = {self._local_path(v) for v in self.volume_informer.cache.list()}
        for directory in self.storage_dir.iterdir():
            if directory not in referenced:
                await asyncio.to_thread(shutil.rmtree, directory, True)

    # -- loops -------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        next_status = loop.time() + self.config.status_report_interval
        uid = str(self.node.get("metadata", {}).get("uid", ""))
        while True:
            try:
                self.lease = await renew_node_lease(self.client, self.config.node_name, uid,
                                                    self.config.lease_duration, self.lease)
                if loop.time() >= next_status and self.facts is not None:
                    await post_node_status(self.client, self.config.node_name, self.facts,
                                           extra=self._status_extra())
                    next_status = loop.time() + self.config.status_report_interval
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("node %s: heartbeat failed: %s", self.config.node_name, err)
            await asyncio.sleep(self.config.heartbeat)

    async def _housekeeping_loop(self, ctx: PodContext) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_interval)
            try:
                await self._housekeeping(ctx)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("housekeeping failed: %s", err)

    async def run(self) -> None:
        ctx = await self._register()
        informers = (self.pod_informer, self.service_informer, self.volume_informer)
        self.pod_informer.add_handlers(
            on_add=lambda pod: self._dispatch(ctx, pod),
            on_update=lambda _old, pod: self._dispatch(ctx, pod),
            on_delete=self._removed)
        self.volume_informer.add_handlers(
            on_update=lambda _old, volume: self._volume_event(volume, False),
            on_delete=lambda volume: self._volume_event(volume, True))
        for informer in informers:
            informer.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            await asyncio.gather(*(i.wait_synced() for i in informers))
            await self._housekeeping(ctx)
            await self._sweep_storage()
            tasks = [asyncio.create_task(self._heartbeat(), name="kubelet-heartbeat"),
                     asyncio.create_task(self._housekeeping_loop(ctx),
                                         name="kubelet-housekeeping")]
            if self.images is not None:
                node_ref = {"kind": "Node", "apiVersion": "v1", "name": self.config.node_name,
                            "uid": self.config.node_name}

                async def record(kind: str, reason: str, message: str) -> None:
                    await ctx.recorder.event(node_ref, kind, reason, message)

                tasks.append(asyncio.create_task(
                    run_image_gc(self.images, self.config.image_gc, record),
                    name="kubelet-image-gc"))
            log.info("node agent %s running (pod CIDR %s)", self.config.node_name,
                     (self.node.get("spec") or {}).get("podCIDR"))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for worker in list(self.workers.values()):
                await worker.stop()
            for informer in informers:
                await informer.stop()
            if self.owned_images and self.images is not None:
                self.images.close()
            if self.api is not None:
                await self.api.stop()
                self.api = None

    async def _serve_api(self, node_ip: str) -> tuple[RunningServer | None, str]:
        """Serve the kubelet API; returns it and the URL the API server should dial."""
        config = self.config
        if not config.api_token or self.runtime is None:
            return None, ""
        resolve_container, resolve_sandbox = label_resolvers(self.runtime)
        host = config.api_advertise or node_ip
        cert, key = self_signed_certificate(self.data_dir / "pki", [host, config.node_name])
        configuration = kubelet_configuration(config, tls_cert=cert, tls_key=key)
        app = KubeletServer(
            self.runtime, config.api_token, resolve_container, resolve_sandbox,
            node_name=config.node_name, pods=self.pod_informer.cache.list,
            configuration=configuration, pods_cgroup=config.cgroup_root,
            root_dir=self.data_dir)
        api = await serve(app, config.api_bind, config.api_port, cert, key)
        configuration["kubeletconfig"]["port"] = api.port  # the port really bound
        url = f"https://{f'[{host}]' if ':' in host else host}:{api.port}"
        log.info("kubelet API for %s at %s", config.node_name, url)
        return api, url


async def run_agent(client: Client, config: AgentConfig) -> None:
    """Run the node agent until cancelled; containers keep running after it stops."""
    await Agent(client, config).run()


__all__ = ["Agent", "AgentConfig", "run_agent"]
