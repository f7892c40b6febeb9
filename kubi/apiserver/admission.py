"""Admission: the checks and allocations that need to read the rest of the cluster.

- NamespaceLifecycle: content goes only into namespaces that exist and are not
  terminating.
- ServiceAccount: a pod runs as an existing service account and, unless it opts
  out, gets the `kube-api-access-*` projected volume (token, cluster CA, namespace)
  mounted in every container, as upstream's plugin of that name does.
- Service IP and NodePort allocation, as the upstream API server does it in its
  service registry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Callable
from typing import Any

from kubi.api import errors
from kubi.api import meta as m
from kubi.api.errors import Cause, StatusError
from kubi.api.resources import ResourceInfo
from kubi.apiserver.store import Admission, Store, WriteOptions

Obj = dict[str, Any]

IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")
NODE_PORT_RANGE = (30000, 32767)

TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME_PREFIX = "kube-api-access-"
# Upstream's bound-token lifetime that only warns when exceeded (1 h + 7 s).
TOKEN_EXPIRATION_SECONDS = 3607
# The `default` account may still be on its way from the controller: look again a few times.
DEFAULT_ACCOUNT_ATTEMPTS = 10


class Allocator:
    """A set of free values in a range, rebuilt from the stored Services on first use."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.used: set[int] = set()
        self._next = first

    def allocate_next(self) -> int | None:
        size = self.last - self.first + 1
        for step in range(size):
            value = self.first + (self._next - self.first + step) % size
            if value not in self.used:
                self.used.add(value)
                self._next = value + 1 if value < self.last else self.first
                return value
        return None

    def claim(self, value: int) -> bool:
        if value in self.used or not self.first <= value <= self.last:
            return False
        self.used.add(value)
        return True

    def release(self, value: int) -> None:
        self.used.discard(value)


class ClusterAdmission(Admission):
    def __init__(self, stores: Callable[[str, str], Store],
                 service_cidr: str = "10.43.0.0/16", service_accounts: bool = True) -> None:
        self._stores = stores
        self.service_accounts = service_accounts
        self.network = ipaddress.ip_network(service_cidr)
        base = int(self.network.network_address)
        # .0 is the network, .1 the `kubernetes` Service (claimed at bootstrap).
        self.ips = Allocator(base + 1, int(self.network.broadcast_address) - 1)
        self.node_ports = Allocator(*NODE_PORT_RANGE)
        self._loaded = False

    # -- namespaces ---------------------------------------------------------------

    async def _check_namespace(self, info: ResourceInfo, obj: Obj) -> None:
        if not info.namespaced:
            return
        namespace = obj["metadata"].get("namespace", "")
        ns = await self._stores("", "namespaces").get("", namespace)
        if "deletionTimestamp" in ns["metadata"]:
            raise errors.forbidden_request(
                f'{info.group_resource} "{obj["metadata"].get("name", "")}" is forbidden: '
                f"unable to create new content in namespace {namespace} because it is being "
                f"terminated")

    async def admit_create(self, info: ResourceInfo, obj: Obj, opts: WriteOptions) -> None:
        await self._check_namespace(info, obj)
        if self.service_accounts and info.group == "" and info.plural == "pods":
            await self._admit_service_account(obj)
        if _is_service(info):
            await self._load()
            self._allocate(obj, None, opts.dry_run)

    async def admit_update(self, info: ResourceInfo, new: Obj, old: Obj,
                           opts: WriteOptions) -> None:
        if _is_service(info):
            await self._load()
            self._allocate(new, old, opts.dry_run)

    async def released(self, info: ResourceInfo, obj: Obj) -> None:
        if _is_service(info):
            await self._load()
            spec = obj.get("spec") or {}
            for ip in spec.get("clusterIPs") or []:
                self._release_ip(ip)
            for port in spec.get("ports") or []:
                if port.get("nodePort"):
                    self.node_ports.release(int(port["nodePort"]))

    # -- service accounts ------------------------------------------------------------

    async def _admit_service_account(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
            return
        namespace, name = meta.get("namespace", ""), str(spec.get("serviceAccountName"))
        account = await self._service_account(namespace, name)
        if account is None:
            pod_name = str(meta.get("name", ""))
            raise StatusError(403, "Forbidden",
                              f'pods "{pod_name}" is forbidden: error looking up service '
                              f'account {namespace}/{name}: serviceaccount "{name}" not found',
                              name=pod_name, kind="pods")
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = account.get("automountServiceAccountToken")
        if automount is not False:
            mount_token_volume(spec)
        if not spec.get("imagePullSecrets") and account.get("imagePullSecrets"):
            spec["imagePullSecrets"] = [{"name": s.get("name", "")}
                                        for s in account["imagePullSecrets"]]

    async def _service_account(self, namespace: str, name: str) -> Obj | None:
        store = self._stores("", "serviceaccounts")
        attempts = DEFAULT_ACCOUNT_ATTEMPTS if name == "default" else 1
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(random.uniform(0.1, 0.2))
            try:
                return await store.get(namespace, name)
            except StatusError as err:
                if err.code != 404:
                    raise
        return None

    # -- services -----------------------------------------------------------------

    async def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        listed = await self._stores("", "services").list("")
        for svc in listed.items:
            spec = svc.get("spec") or {}
            for ip in spec.get("clusterIPs") or []:
                self._claim_ip(ip)
            for port in spec.get("ports") or []:
                if port.get("nodePort"):
                    self.node_ports.claim(int(port["nodePort"]))

    def _ip_value(self, ip: str) -> int | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        return int(addr) if addr in self.network else None

    def _claim_ip(self, ip: str) -> bool:
        value = self._ip_value(ip)
        return value is not None and self.ips.claim(value)

    def _release_ip(self, ip: str) -> None:
        value = self._ip_value(ip)
        if value is not None:
            self.ips.release(value)

    def _allocate(self, obj: Obj, old: Obj | None, dry_run: bool) -> None:
        """Give the Service its cluster IP and node ports; undo on any failure."""
        spec = obj.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        svc_type = spec.get("type", "ClusterIP")
        claimed_ips: list[str] = []
        claimed_ports: list[int] = []
        try:
            self._allocate_ip(obj, spec, old_spec, svc_type, claimed_ips)
            self._allocate_ports(obj, spec, old_spec, svc_type, claimed_ports)
        except StatusError:
            for ip in claimed_ips:
                self._release_ip(ip)
            for port in claimed_ports:
                self.node_ports.release(port)
            raise
        if dry_run:
            for ip in claimed_ips:
                self._release_ip(ip)
            for port in claimed_ports:
                self.node_ports.release(port)
            return
        # Release what the update gave up.
        for ip in old_spec.get("clusterIPs") or []:
            if ip not in (spec.get("clusterIPs") or []):
                self._release_ip(ip)
        kept = {p.get("nodePort") for p in spec.get("ports") or []}
        for port in old_spec.get("ports") or []:
            if port.get("nodePort") and port["nodePort"] not in kept:
                self.node_ports.release(int(port["nodePort"]))

    def _invalid(self, obj: Obj, causes: list[Cause]) -> StatusError:
        return errors.invalid_object("", "Service", obj["metadata"].get("name", ""), causes)

    def _allocate_ip(self, obj: Obj, spec: Obj, old_spec: Obj, svc_type: str,
                     claimed: list[str]) -> None:
        if svc_type == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
            return
        old_ips = old_spec.get("clusterIPs") or []
        wanted = spec.get("clusterIP") or (spec.get("clusterIPs") or [""])[0]
        if wanted == "None":
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
            return
        if old_ips and old_ips[0] != "None" and (not wanted or wanted == old_ips[0]):
            spec["clusterIP"], spec["clusterIPs"] = old_ips[0], list(old_ips)
            return
        if wanted:
            if self._ip_value(wanted) is None:
                raise self._invalid(obj, [errors.invalid(
                    "spec.clusterIPs", [wanted],
                    f"failed to allocate IP {wanted}: the provided IP ({wanted}) is not in "
                    f"the valid range. The range of valid IPs is {self.network}")])
            if not self._claim_ip(wanted):
                raise self._invalid(obj, [errors.invalid(
                    "spec.clusterIPs", [wanted],
                    f"failed to allocate IP {wanted}: provided IP is already allocated")])
            ip = wanted
        else:
            value = self.ips.allocate_next()
            if value is None:
                raise errors.internal("failed to allocate a serviceIP: range is full")
            ip = str(ipaddress.ip_address(value))
        claimed.append(ip)
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]

    def _allocate_ports(self, obj: Obj, spec: Obj, old_spec: Obj, svc_type: str,
                        claimed: list[int]) -> None:
        ports = spec.get("ports") or []
        if svc_type not in ("NodePort", "LoadBalancer"):
            for port in ports:
                port.pop("nodePort", None)
            return
        held = {int(p["nodePort"]) for p in old_spec.get("ports") or [] if p.get("nodePort")}
        previous = {(p.get("port"), p.get("protocol", "TCP")): p["nodePort"]
                    for p in old_spec.get("ports") or [] if p.get("nodePort")}
        for i, port in enumerate(ports):
            wanted = port.get("nodePort") or previous.get(
                (port.get("port"), port.get("protocol", "TCP")))
            if wanted:
                wanted = int(wanted)
                port["nodePort"] = wanted
                if wanted in held or wanted in claimed:
                    continue
                if not self.node_ports.claim(wanted):
                    lo, hi = NODE_PORT_RANGE
                    detail = ("provided port is already allocated"
                              if lo <= wanted <= hi else
                              f"provided port is not in the valid range. The range of valid "
                              f"ports is {lo}-{hi}")
                    raise self._invalid(obj, [errors.invalid(
                        f"spec.ports[{i}].nodePort", wanted, detail)])
                claimed.append(wanted)
            else:
                value = self.node_ports.allocate_next()
                if value is None:
                    raise errors.internal("failed to allocate a nodePort: range is full")
                port["nodePort"] = value
                claimed.append(value)


def mount_token_volume(spec: Obj) -> None:
    """Mount the API access volume in every container that has nothing at its path."""
    volumes = spec.get("volumes") or []
    existing = next((v["name"] for v in volumes
                     if str(v.get("name", "")).startswith(TOKEN_VOLUME_PREFIX)), None)
    volume_name = existing or TOKEN_VOLUME_PREFIX + m.random_suffix()
    mounted = False
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            mounts = container.get("volumeMounts") or []
            if any(mount.get("mountPath") == TOKEN_MOUNT_PATH for mount in mounts):
                continue
            container["volumeMounts"] = [*mounts, {"name": volume_name, "readOnly": True,
                                                   "mountPath": TOKEN_MOUNT_PATH}]
            mounted = True
    if mounted and existing is None:
        spec["volumes"] = [*volumes, {"name": volume_name, "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                                         "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}}]


def _is_service(info: ResourceInfo) -> bool:
    return info.group == "" and info.kind == "Service"
