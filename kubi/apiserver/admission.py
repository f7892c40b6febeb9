"""Admission: the checks and allocations that need to read the rest of the cluster.

- NamespaceLifecycle: content goes only into namespaces that exist and are not
  terminating.
- Service IP and NodePort allocation, as the upstream API server does it in its
  service registry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from kubi.api import errors
from kubi.api.errors import Cause, StatusError
from kubi.api.resources import ResourceInfo
from kubi.apiserver.store import Admission, Store, WriteOptions

Obj = dict[str, Any]

IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")
NODE_PORT_RANGE = (30000, 32767)


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
                 service_cidr: str = "10.43.0.0/16") -> None:
        self._stores = stores
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


def _is_service(info: ResourceInfo) -> bool:
    return info.group == "" and info.kind == "Service"
