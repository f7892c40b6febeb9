"""The EndpointSlice controller: EndpointSlices for every Service with a selector.

As upstream's pkg/controller/endpointslice and its reconciler: the selected pods
with an IP become endpoints with ready/serving/terminating conditions (terminating
pods included), grouped by the ports they resolve to, at most 100 per slice.
Existing slices are updated in place where possible, emptied ones deleted, and a
Service with no endpoints keeps one empty placeholder slice.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.informer import key_of
from kubi.controllers.base import Controller, ControllerContext
from kubi.controllers.endpoints import (
    HEADLESS_LABEL,
    LAST_CHANGE_TRIGGER_TIME,
    StaleTracker,
    TriggerTimeTracker,
    find_port,
    format_trigger_time,
    is_service_ip_set,
    pod_ip_for_family,
    pod_is_ready,
    pod_reference,
    selector_matches,
    service_selector,
    services_for_pod,
    should_pod_be_in_endpoints,
    should_set_hostname,
)

log = logging.getLogger("kubi.controllers.endpointslice")

Obj = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
RESERVED_LABELS = (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)

PortKey = tuple[tuple[str, int, str, str], ...]
EndpointKey = tuple[tuple[str, ...], str, str, str]


def port_key(ports: list[Obj]) -> PortKey:
    return tuple(sorted((str(p.get("name") or ""), int(p.get("port") or 0),
                         str(p.get("protocol") or ""), str(p.get("appProtocol") or ""))
                        for p in ports))


def endpoint_key(endpoint: Obj) -> EndpointKey:
    """Identity of an endpoint across syncs: its addresses and the pod behind it."""
    ref = endpoint.get("targetRef") or {}
    return (tuple(endpoint.get("addresses") or []), str(endpoint.get("hostname") or ""),
            str(ref.get("namespace") or ""), str(ref.get("name") or ""))


def _comparable(endpoint: Obj) -> Obj:
    copied = m.deep_copy(endpoint)
    (copied.get("targetRef") or {}).pop("resourceVersion", None)
    return copied


def address_types(service: Obj) -> list[str]:
    families = (service.get("spec") or {}).get("ipFamilies") or ["IPv4"]
    return [str(f) for f in families]


def slice_labels(service: Obj) -> dict[str, str]:
    labels = {k: v for k, v in ((service.get("metadata") or {}).get("labels") or {}).items()
              if k not in RESERVED_LABELS}
    labels[SERVICE_NAME_LABEL] = m.name_of(service)
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    if not is_service_ip_set(service):
        labels[HEADLESS_LABEL] = ""
    return labels


def owned_by(endpoint_slice: Obj, service: Obj) -> bool:
    uid = (service.get("metadata") or {}).get("uid")
    return any(ref.get("kind") == "Service" and ref.get("uid") == uid and ref.get("controller")
               for ref in (endpoint_slice.get("metadata") or {}).get("ownerReferences") or [])


def slice_prefix(service_name: str) -> str:
    """generateName for a Service's slices; too-long names fall back as upstream's do."""
    prefix = f"{service_name}-"
    return prefix if len(prefix) <= 253 - 5 else "slice-"


def is_placeholder(endpoint_slice: Obj) -> bool:
    return not endpoint_slice.get("endpoints") and not endpoint_slice.get("ports")


class EndpointSliceController(Controller):
    name = "endpointslice"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("endpoint-slice-controller")
        self.services = ctx.informers.informer("services")
        self.pods = ctx.informers.informer("pods")
        self.nodes = ctx.informers.informer("nodes")
        self.slices = ctx.informers.informer(
            "endpointslices.discovery.k8s.io",
            label_selector=f"{MANAGED_BY_LABEL}={CONTROLLER_NAME}")
        self.slices.cache.add_indexer("service", self._slice_service_index)
        self.services.add_handlers(on_add=self.enqueue,
                                   on_update=lambda _old, new: self.enqueue(new),
                                   on_delete=self.enqueue)
        self.pods.add_handlers(on_add=self._on_pod, on_update=self._on_pod_update,
                               on_delete=self._on_pod)
        # Slices changed or removed by someone else are put back.
        self.slices.add_handlers(on_update=lambda _old, new: self._on_slice(new),
                                 on_delete=self._on_slice)
        self.trigger_times = TriggerTimeTracker()
        self.stale = StaleTracker()
        self.deleted: set[str] = set()

    @staticmethod
    def _slice_service_index(endpoint_slice: Obj) -> list[str]:
        service = ((endpoint_slice.get("metadata") or {}).get("labels") or {}).get(
            SERVICE_NAME_LABEL)
        return [f"{m.namespace_of(endpoint_slice)}/{service}"] if service else []

    def _on_slice(self, endpoint_slice: Obj) -> None:
        for key in self._slice_service_index(endpoint_slice):
            self.enqueue_key(key)

    def _on_pod(self, pod: Obj) -> None:
        for key in services_for_pod(self.services.cache.list(m.namespace_of(pod)), pod):
            self.enqueue_key(key)

    def _on_pod_update(self, old: Obj, new: Obj) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        services = self.services.cache.list(m.namespace_of(new))
        for key in services_for_pod(services, old) | services_for_pod(services, new):
            self.enqueue_key(key)

    # -- sync -------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        namespace, _ = key.split("/", 1)
        existing = self.slices.cache.by_index("service", key)
        for endpoint_slice in existing:
            if self.stale.is_stale(endpoint_slice) or key_of(endpoint_slice) in self.deleted:
                raise RuntimeError(f"EndpointSlice informer cache is out of date for service "
                                   f"{key}")
        service = self.services.cache.get(key)
        if service is None:
            # The garbage collector removes owned slices upstream; removing them here
            # too gives the same end state without depending on it.
            self.trigger_times.forget(key)
            for endpoint_slice in existing:
                await self._delete(endpoint_slice)
            return None
        if (service.get("spec") or {}).get("type") == "ExternalName":
            return None
        selector = service_selector(service)
        if selector is None:
            return None
        pods = [p for p in self.pods.cache.list(namespace)
                if selector_matches(selector, (p.get("metadata") or {}).get("labels"))]
        trigger_time = self.trigger_times.compute(service, pods)

        families = address_types(service)
        missing_nodes: list[str] = []
        for endpoint_slice in existing:
            if (not owned_by(endpoint_slice, service)
                    or endpoint_slice.get("addressType") not in families):
                await self._delete(endpoint_slice)
        existing = [s for s in existing
                    if owned_by(s, service) and s.get("addressType") in families]
        for family in families:
            desired = self.desired_endpoints(service, pods, family, missing_nodes)
            mine = [s for s in existing if s.get("addressType") == family]
            await self.reconcile_family(service, family, desired, mine, trigger_time)
        if missing_nodes:
            raise RuntimeError(f"skipping pods for service {key}: nodes not found: "
                               + ", ".join(sorted(set(missing_nodes))))
        return None

    def desired_endpoints(self, service: Obj, pods: list[Obj], family: str,
                          missing_nodes: list[str]) -> dict[PortKey, tuple[list[Obj], list[Obj]]]:
        """Port set -> (ports, endpoints) for every pod that belongs in slices."""
        spec = service.get("spec") or {}
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        grouped: dict[PortKey, tuple[list[Obj], list[Obj]]] = {}
        for pod in sorted(pods, key=m.name_of):
            if not should_pod_be_in_endpoints(pod, True):
                continue
            node_name = (pod.get("spec") or {}).get("nodeName") or ""
            node = self.nodes.cache.get(node_name) if node_name else None
            if node is None and not publish_not_ready:
                # Left out until its node shows up; the error brings the Service back.
                missing_nodes.append(node_name or f"<none for pod {m.name_of(pod)}>")
                continue
            ip = pod_ip_for_family(pod, family)
            if ip is None:
                continue
            ports = []
            for service_port in spec.get("ports") or []:
                number = find_port(pod, service_port)
                if number is None:
                    continue
                port: Obj = {"name": service_port.get("name") or "", "port": number,
                             "protocol": service_port.get("protocol") or "TCP"}
                if service_port.get("appProtocol"):
                    port["appProtocol"] = service_port["appProtocol"]
                ports.append(port)
            ready = publish_not_ready or pod_is_ready(pod)
            serving = pod_is_ready(pod)
            terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
            if terminating and not publish_not_ready:
                ready = False  # a terminating pod is never "ready" for compatibility
            endpoint: Obj = {"addresses": [ip],
                             "conditions": {"ready": ready, "serving": serving,
                                            "terminating": terminating}}
            if should_set_hostname(pod, service):
                endpoint["hostname"] = pod["spec"]["hostname"]
            endpoint["targetRef"] = pod_reference(pod)
            if node_name:
                endpoint["nodeName"] = node_name
            zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(ZONE_LABEL)
            if zone:
                endpoint["zone"] = zone
            group = grouped.setdefault(port_key(ports), (sorted(ports, key=_port_sort), []))
            group[1].append(endpoint)
        return grouped

    async def reconcile_family(self, service: Obj, family: str,
                               desired: dict[PortKey, tuple[list[Obj], list[Obj]]],
                               existing: list[Obj],
                               trigger_time: datetime.datetime | None) -> None:
        labels = slice_labels(service)
        to_create: list[Obj] = []
        to_update: list[Obj] = []
        to_delete: list[Obj] = []
        unchanged: list[Obj] = []
        by_ports: dict[PortKey, list[Obj]] = {}
        for endpoint_slice in existing:
            by_ports.setdefault(port_key(endpoint_slice.get("ports") or []),
                                []).append(endpoint_slice)

        for key, (ports, endpoints) in desired.items():
            wanted = {endpoint_key(e): e for e in endpoints}
            placed: set[EndpointKey] = set()
            updated_here: list[Obj] = []
            unchanged_here: list[Obj] = []
            for endpoint_slice in by_ports.pop(key, []):
                kept, changed = [], False
                for endpoint in endpoint_slice.get("endpoints") or []:
                    ekey = endpoint_key(endpoint)
                    if ekey in wanted and ekey not in placed:
                        placed.add(ekey)
                        if _comparable(endpoint) != wanted[ekey]:
                            changed = True
                        kept.append(wanted[ekey])
                    else:
                        changed = True
                if not kept:
                    to_delete.append(endpoint_slice)
                    continue
                if changed or _labels_of(endpoint_slice) != labels:
                    copy = m.deep_copy(endpoint_slice)
                    copy["endpoints"] = kept
                    updated_here.append(copy)
                else:
                    unchanged_here.append(endpoint_slice)
            leftover = [e for e in endpoints if endpoint_key(e) not in placed]
            # Fill slices already being written before touching others.
            for endpoint_slice in updated_here:
                room = MAX_ENDPOINTS_PER_SLICE - len(endpoint_slice["endpoints"])
                if room > 0 and leftover:
                    endpoint_slice["endpoints"].extend(leftover[:room])
                    leftover = leftover[room:]
            # Then one unchanged slice that can take all of the rest.
            if leftover:
                for endpoint_slice in sorted(unchanged_here,
                                             key=lambda s: -len(s.get("endpoints") or [])):
                    if len(endpoint_slice.get("endpoints") or []) + len(leftover) <= \
                            MAX_ENDPOINTS_PER_SLICE:
                        copy = m.deep_copy(endpoint_slice)
                        copy["endpoints"] = list(copy.get("endpoints") or []) + leftover
                        leftover = []
                        unchanged_here.remove(endpoint_slice)
                        updated_here.append(copy)
                        break
            for start in range(0, len(leftover), MAX_ENDPOINTS_PER_SLICE):
                to_create.append(self._new_slice(service, family, ports,
                                                 leftover[start:start + MAX_ENDPOINTS_PER_SLICE]))
            to_update += updated_here
            unchanged += unchanged_here
        for slices in by_ports.values():  # port sets no pod resolves to any more
            to_delete += slices

        if len(to_delete) == len(existing) and not to_create:
            # Nothing would remain: a Service always keeps one (placeholder) slice.
            placeholders = [s for s in to_delete if is_placeholder(s)]
            if placeholders and _labels_of(placeholders[0]) == labels:
                to_delete.remove(placeholders[0])
            else:
                to_create.append(self._new_slice(service, family, [], []))

        for endpoint_slice in to_update:
            endpoint_slice["metadata"]["labels"] = dict(labels)
            self._stamp(endpoint_slice, trigger_time)
            written = await self.client.update("endpointslices.discovery.k8s.io",
                                               endpoint_slice)
            self.stale.wrote(written)
        for endpoint_slice in to_create:
            self._stamp(endpoint_slice, trigger_time)
            try:
                written = await self.client.create("endpointslices.discovery.k8s.io",
                                                   endpoint_slice, m.namespace_of(service))
            except StatusError as err:
                if err.code == 403 and "being terminated" in err.message:
                    return
                raise
            self.stale.wrote(written)
        for endpoint_slice in to_delete:
            await self._delete(endpoint_slice)

    def _new_slice(self, service: Obj, family: str, ports: list[Obj],
                   endpoints: list[Obj]) -> Obj:
        meta = service.get("metadata") or {}
        return {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "generateName": slice_prefix(m.name_of(service)),
                "namespace": m.namespace_of(service),
                "labels": slice_labels(service),
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                                     "name": meta.get("name", ""), "uid": meta.get("uid", ""),
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "addressType": family,
            "endpoints": list(endpoints),
            "ports": list(ports),
        }

    @staticmethod
    def _stamp(endpoint_slice: Obj, trigger_time: datetime.datetime | None) -> None:
        annotations = dict(endpoint_slice["metadata"].get("annotations") or {})
        if trigger_time is not None:
            annotations[LAST_CHANGE_TRIGGER_TIME] = format_trigger_time(trigger_time)
        else:
            annotations.pop(LAST_CHANGE_TRIGGER_TIME, None)
        if annotations:
            endpoint_slice["metadata"]["annotations"] = annotations
        else:
            endpoint_slice["metadata"].pop("annotations", None)

    async def _delete(self, endpoint_slice: Obj) -> None:
        try:
            await self.client.delete("endpointslices.discovery.k8s.io",
                                     m.name_of(endpoint_slice), m.namespace_of(endpoint_slice))
        except StatusError as err:
            if err.code != 404:
                raise
        key = key_of(endpoint_slice)
        self.stale.forget(key)
        self.deleted.add(key)
        # The set only needs to outlive the informer's lag; prune what it has seen go.
        self.deleted = {k for k in self.deleted if self.slices.cache.get(k) is not None
                        or k == key}


def _labels_of(endpoint_slice: Obj) -> dict[str, str]:
    return dict((endpoint_slice.get("metadata") or {}).get("labels") or {})


def _port_sort(port: Obj) -> tuple[str, int, str]:
    return (str(port.get("name") or ""), int(port.get("port") or 0),
            str(port.get("protocol") or ""))
