"""The endpoints controller: an Endpoints object for every Service with a selector.

As upstream's pkg/controller/endpoint: the pods a Service selects that have an IP
become addresses (Ready ones under `addresses`, the others under
`notReadyAddresses`; terminating pods only with publishNotReadyAddresses), each
Service port resolved against the pod (named targetPorts per pod), then
repacked into the fewest subsets. Services without a selector are left to their
owners; the Endpoints go when the Service goes.

The pod helpers here are shared with the EndpointSlice controller.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.events import WARNING
from kubi.client.informer import key_of
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.endpoints")

Obj = dict[str, Any]

HEADLESS_LABEL = "service.kubernetes.io/headless"
LAST_CHANGE_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"
LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"
MAX_CAPACITY = 1000
TRUNCATED = "truncated"


# -- pod and service helpers (upstream's endpointslice util and pod util) --------------


def selector_matches(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def service_selector(service: Obj) -> dict[str, str] | None:
    """The selector, or None: a Service without one gets no managed endpoints."""
    selector = (service.get("spec") or {}).get("selector")
    return selector if selector else None


def services_for_pod(services: list[Obj], pod: Obj) -> set[str]:
    """Keys of the Services in the pod's namespace whose selector picks the pod."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    found = set()
    for service in services:
        selector = service_selector(service)
        if selector is not None and selector_matches(selector, labels):
            found.add(key_of(service))
    return found


def ready_condition(pod: Obj) -> Obj | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return dict(condition)
    return None


def pod_is_ready(pod: Obj) -> bool:
    condition = ready_condition(pod)
    return condition is not None and condition.get("status") == "True"


def pod_is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def should_pod_be_in_endpoints(pod: Obj, include_terminating: bool) -> bool:
    status = pod.get("status") or {}
    if pod_is_terminal(pod):
        return False
    if not status.get("podIP") and not status.get("podIPs"):
        return False
    return include_terminating or not (pod.get("metadata") or {}).get("deletionTimestamp")


def should_set_hostname(pod: Obj, service: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (bool(spec.get("hostname")) and spec.get("subdomain") == m.name_of(service)
            and m.namespace_of(pod) == m.namespace_of(service))


def is_service_ip_set(service: Obj) -> bool:
    cluster_ip = (service.get("spec") or {}).get("clusterIP") or ""
    return cluster_ip not in ("", "None")


def is_ipv6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 6
    except ValueError:
        return False


def service_ip_family(service: Obj, pod: Obj) -> str:
    spec = service.get("spec") or {}
    families = spec.get("ipFamilies") or []
    if families:
        return str(families[0])
    if is_service_ip_set(service):
        return "IPv6" if is_ipv6(spec.get("clusterIP", "")) else "IPv4"
    return "IPv6" if is_ipv6((pod.get("status") or {}).get("podIP") or "") else "IPv4"


def pod_ips(pod: Obj) -> list[str]:
    status = pod.get("status") or {}
    ips = [str(p.get("ip")) for p in status.get("podIPs") or [] if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return ips


def pod_ip_for_family(pod: Obj, family: str) -> str | None:
    for ip in pod_ips(pod):
        if is_ipv6(ip) == (family == "IPv6"):
            return ip
    return None


def find_port(pod: Obj, service_port: Obj) -> int | None:
    """The pod's port for a Service port: a number as is, a name looked up per pod."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    # Sidecars (restartable init containers) serve ports too.
    containers = list(spec.get("containers") or []) + [
        c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    for container in containers:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def pod_reference(pod: Obj) -> Obj:
    meta = pod.get("metadata") or {}
    return {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
            "uid": meta.get("uid", "")}


def format_trigger_time(value: datetime.datetime) -> str:
    """Go's RFC3339Nano in UTC: fractional seconds without trailing zeros."""
    value = value.astimezone(datetime.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


@dataclass
class _ServiceState:
    service_time: datetime.datetime | None = None
    pod_times: dict[str, datetime.datetime] = field(default_factory=dict)


class TriggerTimeTracker:
    """When the change that leads to an endpoints update happened (upstream's util).

    The first sync of a Service reports its creation time; later syncs report the
    earliest Ready transition (or Service change) not seen at the previous sync.
    """

    def __init__(self) -> None:
        self._states: dict[str, _ServiceState] = {}

    def compute(self, service: Obj, pods: list[Obj]) -> datetime.datetime | None:
        key = key_of(service)
        known = key in self._states
        state = self._states.get(key) or _ServiceState()
        earliest: datetime.datetime | None = None
        pod_times: dict[str, datetime.datetime] = {}
        for pod in pods:
            condition = ready_condition(pod)
            if not condition or not condition.get("lastTransitionTime"):
                continue
            when = m.parse_time(condition["lastTransitionTime"])
            pod_times[m.name_of(pod)] = when
            previous = state.pod_times.get(m.name_of(pod))
            if previous is None or when > previous:
                earliest = when if earliest is None else min(earliest, when)
        created = (service.get("metadata") or {}).get("creationTimestamp")
        service_time = m.parse_time(created) if created else None
        if service_time is not None and (state.service_time is None
                                         or service_time > state.service_time):
            earliest = service_time if earliest is None else min(earliest, service_time)
        self._states[key] = _ServiceState(service_time, pod_times)
        if not known:
            return service_time
        return earliest

    def forget(self, key: str) -> None:
        self._states.pop(key, None)


class StaleTracker:
    """Objects this controller wrote, so a cache still showing an older version is
    recognised as stale instead of being overwritten (upstream's stale trackers)."""

    def __init__(self) -> None:
        self._written: dict[str, int] = {}

    def wrote(self, obj: Obj) -> None:
        self._written[key_of(obj)] = _revision(obj)

    def is_stale(self, obj: Obj) -> bool:
        return _revision(obj) < self._written.get(key_of(obj), 0)

    def forget(self, key: str) -> None:
        self._written.pop(key, None)


def _revision(obj: Obj) -> int:
    value = (obj.get("metadata") or {}).get("resourceVersion") or "0"
    return int(value) if str(value).isdigit() else 0


# -- subsets -------------------------------------------------------------------------


def endpoint_port(service_port: Obj, number: int) -> Obj:
    port: Obj = {"port": number, "protocol": service_port.get("protocol") or "TCP"}
    if service_port.get("name"):
        port["name"] = service_port["name"]
    if service_port.get("appProtocol"):
        port["appProtocol"] = service_port["appProtocol"]
    return port


def _address_key(address: Obj) -> tuple[str, str]:
    return (str(address.get("ip", "")), str((address.get("targetRef") or {}).get("uid", "")))


def _port_key(port: Obj) -> tuple[str, int, str, str]:
    return (str(port.get("name", "")), int(port.get("port", -1)), str(port.get("protocol", "")),
            str(port.get("appProtocol", "")))


def repack_subsets(subsets: list[Obj]) -> list[Obj]:
    """Upstream's RepackSubsets: one subset per distinct set of addresses, carrying
    every port those addresses share. An address not ready on any port is not ready."""
    addresses: dict[tuple[str, str], Obj] = {}
    ports: dict[tuple[str, int, str, str], Obj] = {}
    readiness: dict[tuple[str, int, str, str], dict[tuple[str, str], bool]] = {}
    for given in subsets:
        subset_ports = given.get("ports") or [{"port": -1}]  # -1: a portless sentinel
        for port in subset_ports:
            pkey = _port_key(port)
            ports.setdefault(pkey, port)
            by_address = readiness.setdefault(pkey, {})
            for is_ready, field_name in ((True, "addresses"), (False, "notReadyAddresses")):
                for address in given.get(field_name) or []:
                    akey = _address_key(address)
                    addresses.setdefault(akey, address)
                    if by_address.get(akey, True):
                        by_address[akey] = is_ready
    groups: dict[frozenset[tuple[tuple[str, str], bool]], list[Obj]] = {}
    for pkey, by_address in readiness.items():
        group = groups.setdefault(frozenset(by_address.items()), [])
        if pkey[1] > 0:
            group.append(ports[pkey])
    packed = []
    for members, group_ports in groups.items():
        subset: Obj = {}
        ready = sorted(a for a, ok in members if ok)
        not_ready = sorted(a for a, ok in members if not ok)
        if ready:
            subset["addresses"] = [addresses[a] for a in ready]
        if not_ready:
            subset["notReadyAddresses"] = [addresses[a] for a in not_ready]
        if group_ports:
            subset["ports"] = sorted(group_ports, key=_port_key)
        packed.append(subset)
    # Upstream orders subsets by a hash; any stable order serves, this one reads well.
    packed.sort(key=lambda s: ([_address_key(a) for a in s.get("addresses") or []],
                               [_address_key(a) for a in s.get("notReadyAddresses") or []],
                               [_port_key(p) for p in s.get("ports") or []]))
    return packed


def truncate_endpoints(endpoints: Obj) -> bool:
    """Keep at most MAX_CAPACITY addresses, ready ones first, spread over the subsets."""
    subsets = endpoints.get("subsets") or []
    total_ready = sum(len(s.get("addresses") or []) for s in subsets)
    total_not_ready = sum(len(s.get("notReadyAddresses") or []) for s in subsets)
    if total_ready + total_not_ready <= MAX_CAPACITY:
        return False
    truncate_ready = total_ready > MAX_CAPACITY
    limit = MAX_CAPACITY if truncate_ready else MAX_CAPACITY - total_ready
    total = total_ready if truncate_ready else total_not_ready
    room = limit
    for subset in subsets:
        field_name = "addresses" if truncate_ready else "notReadyAddresses"
        in_subset = subset.get(field_name) or []
        share = min(math.ceil(len(in_subset) / total * limit), room)
        kept = in_subset[:share]
        if kept:
            subset[field_name] = kept
        else:
            subset.pop(field_name, None)
        if truncate_ready:
            subset.pop("notReadyAddresses", None)
        room -= len(kept)
    return True


def _without_ref_versions(subsets: list[Obj]) -> list[Obj]:
    cleaned = m.deep_copy({"s": subsets})["s"]
    for subset in cleaned:
        for field_name in ("addresses", "notReadyAddresses"):
            for address in subset.get(field_name) or []:
                (address.get("targetRef") or {}).pop("resourceVersion", None)
    return list(cleaned)


def capacity_annotation_correct(endpoints: Obj) -> bool:
    subsets = endpoints.get("subsets") or []
    count = sum(len(s.get("addresses") or []) + len(s.get("notReadyAddresses") or [])
                for s in subsets)
    if count > MAX_CAPACITY:
        return False
    return OVER_CAPACITY not in ((endpoints.get("metadata") or {}).get("annotations") or {})


# -- the controller --------------------------------------------------------------------


class EndpointsController(Controller):
    name = "endpoints"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("endpoint-controller")
        self.services = ctx.informers.informer("services")
        self.pods = ctx.informers.informer("pods")
        self.endpoints = ctx.informers.informer("endpoints")
        self.services.add_handlers(on_add=self.enqueue,
                                   on_update=lambda _old, new: self.enqueue(new),
                                   on_delete=self.enqueue)
        self.pods.add_handlers(on_add=self._on_pod, on_update=self._on_pod_update,
                               on_delete=self._on_pod)
        self.endpoints.add_handlers(on_delete=self.enqueue)
        self.trigger_times = TriggerTimeTracker()
        self.stale = StaleTracker()

    def _on_pod(self, pod: Obj) -> None:
        for key in services_for_pod(self.services.cache.list(m.namespace_of(pod)), pod):
            self.enqueue_key(key)

    def _on_pod_update(self, old: Obj, new: Obj) -> None:
        if old["metadata"].get("resourceVersion") == new["metadata"].get("resourceVersion"):
            return
        services = self.services.cache.list(m.namespace_of(new))
        for key in services_for_pod(services, old) | services_for_pod(services, new):
            self.enqueue_key(key)

    async def run(self) -> None:
        # Endpoints left from Services deleted while no controller ran get cleaned up.
        await self.ctx.informers.wait_synced()
        for endpoints in self.endpoints.cache.list():
            annotations = (endpoints.get("metadata") or {}).get("annotations") or {}
            if LEADER_ANNOTATION not in annotations:
                self.enqueue(endpoints)
        await super().run()

    async def reconcile(self, key: str) -> float | None:
        namespace, name = key.split("/", 1)
        service = self.services.cache.get(key)
        if service is None:
            try:
                await self.client.delete("endpoints", name, namespace)
            except StatusError as err:
                if err.code != 404:
                    raise
            self.trigger_times.forget(key)
            self.stale.forget(key)
            return None
        spec = service.get("spec") or {}
        selector = service_selector(service)
        if spec.get("type") == "ExternalName" or selector is None:
            return None
        pods = [p for p in self.pods.cache.list(namespace)
                if selector_matches(selector, (p.get("metadata") or {}).get("labels"))]
        trigger_time = self.trigger_times.compute(service, pods)
        subsets = repack_subsets(self.desired_subsets(service, pods))

        current = self.endpoints.cache.get(key)
        if current is not None and self.stale.is_stale(current):
            raise RuntimeError(f"endpoints informer cache is out of date, resource version "
                               f"{current['metadata'].get('resourceVersion')} already "
                               f"processed for endpoints {key}")
        service_labels = dict((service.get("metadata") or {}).get("labels") or {})
        if current is not None:
            labels = dict((current.get("metadata") or {}).get("labels") or {})
            labels.pop(HEADLESS_LABEL, None)
            if (_without_ref_versions(current.get("subsets") or []) == subsets
                    and labels == service_labels and capacity_annotation_correct(current)):
                return None
        wanted = self._endpoints_object(service, current, subsets, service_labels, trigger_time)
        try:
            if current is None:
                written = await self.client.create("endpoints", wanted, namespace)
            else:
                written = await self.client.update("endpoints", wanted)
        except StatusError as err:
            if current is None and err.code == 403 and "being terminated" in err.message:
                return None  # creates keep failing in a terminating namespace
            if current is None:
                await self.recorder.event(wanted, WARNING, "FailedToCreateEndpoint",
                                          f"Failed to create endpoint for service "
                                          f"{namespace}/{name}: {err}")
            else:
                await self.recorder.event(wanted, WARNING, "FailedToUpdateEndpoint",
                                          f"Failed to update endpoint {namespace}/{name}: {err}")
            raise
        self.stale.wrote(written)
        return None

    def desired_subsets(self, service: Obj, pods: list[Obj]) -> list[Obj]:
        spec = service.get("spec") or {}
        publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
        subsets: list[Obj] = []
        for pod in pods:
            if not should_pod_be_in_endpoints(pod, publish_not_ready):
                continue
            ip = pod_ip_for_family(pod, service_ip_family(service, pod))
            if ip is None:
                continue
            address: Obj = {"ip": ip}
            if should_set_hostname(pod, service):
                address["hostname"] = pod["spec"]["hostname"]
            if (pod.get("spec") or {}).get("nodeName"):
                address["nodeName"] = pod["spec"]["nodeName"]
            address["targetRef"] = pod_reference(pod)
            ready_field = ("addresses" if publish_not_ready or pod_is_ready(pod)
                           else "notReadyAddresses")
            service_ports = spec.get("ports") or []
            if not service_ports:
                # Headless services may go without ports.
                if spec.get("clusterIP") == "None":
                    subsets.append({ready_field: [address]})
                continue
            for service_port in service_ports:
                number = find_port(pod, service_port)
                if number is None:
                    continue
                subsets.append({ready_field: [address],
                                "ports": [endpoint_port(service_port, number)]})
        return subsets

    @staticmethod
    def _endpoints_object(service: Obj, current: Obj | None, subsets: list[Obj],
                          service_labels: dict[str, str],
                          trigger_time: datetime.datetime | None) -> Obj:
        if current is None:
            wanted: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                           "metadata": {"name": m.name_of(service),
                                        "namespace": m.namespace_of(service)}}
        else:
            wanted = m.deep_copy(current)
            wanted.setdefault("apiVersion", "v1")
            wanted.setdefault("kind", "Endpoints")
        meta = wanted["metadata"]
        if subsets:
            wanted["subsets"] = subsets
        else:
            wanted.pop("subsets", None)
        labels = dict(service_labels)
        if is_service_ip_set(service):
            labels.pop(HEADLESS_LABEL, None)
        else:
            labels[HEADLESS_LABEL] = ""
        meta["labels"] = labels
        annotations = dict(meta.get("annotations") or {})
        if trigger_time is not None:
            annotations[LAST_CHANGE_TRIGGER_TIME] = format_trigger_time(trigger_time)
        else:
            annotations.pop(LAST_CHANGE_TRIGGER_TIME, None)
        if truncate_endpoints(wanted):
            annotations[OVER_CAPACITY] = TRUNCATED
        else:
            annotations.pop(OVER_CAPACITY, None)
        meta["annotations"] = annotations
        if not labels:
            meta.pop("labels")
        if not annotations:
            meta.pop("annotations")
        return wanted
