"""Strategies for the core/v1 kinds that are not workloads (upstream pkg/registry/core/*).

Defaults follow pkg/apis/core/v1/defaults.go (plus what the REST storage fills in
before validation, e.g. Service IP families); validation follows
pkg/apis/core/validation, with upstream's field paths and wording. Metadata is
validated by the store (registry.meta), so these only look at the rest.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from kubi.api.errors import (
    DUPLICATE,
    Cause,
    duplicate,
    forbidden,
    invalid,
    not_supported,
    required,
    too_long,
)
from kubi.apiserver.registry import names
from kubi.apiserver.registry.meta import (
    as_dict,
    as_list,
    dig,
    go_value,
    immutable,
    invalid_go,
    validate_labels,
)
from kubi.apiserver.registry.podspec import parse_quantity
from kubi.apiserver.registry.strategy import Obj, Strategy, register

MAX_SECRET_SIZE = 1024 * 1024
NODE_PORT_RANGE = (30000, 32767)
PORT_PROTOCOLS = ["SCTP", "TCP", "UDP"]
# Endpoint addresses may not be loopback/link-local upstream; a node-local Kubi may
# want to relax this, so it is one switch.
ENDPOINTS_REJECT_SPECIAL_IPS = True


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    return spec


def _dicts(value: Any) -> list[Obj]:
    return [item for item in as_list(value) if isinstance(item, dict)]


def _key_path(path: str, key: str) -> str:
    """Upstream's Path.Key: `data[key]`."""
    return f"{path}[{key}]"


def _is_ip(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_ipv6(value: str) -> bool:
    return _is_ip(value) and ":" in value


def validate_ip(path: str, value: Any) -> list[Cause]:
    if _is_ip(value):
        return []
    return [invalid(path, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]


def validate_non_special_ip(path: str, value: str) -> list[Cause]:
    """Upstream ValidateNonSpecialIP: addresses that can never be endpoints."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return [invalid(path, value, "must be a valid IP address")]
    if ip.is_unspecified:
        return [invalid(path, value, f"may not be unspecified ({value})")]
    if ip.is_loopback:
        return [invalid(path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)")]
    if ip.is_link_local:
        return [invalid(path, value,
                        "may not be in the link-local range (169.254.0.0/16, fe80::/10)")]
    link_local_multicast = (ipaddress.ip_network("224.0.0.0/24")
                            if ip.version == 4 else ipaddress.ip_network("ff02::/16"))
    if ip in link_local_multicast:
        return [invalid(path, value, "may not be in the link-local multicast range "
                                     "(224.0.0.0/24, ff02::/10)")]
    return []


def validate_cidr(path: str, value: Any) -> list[Cause]:
    try:
        ipaddress.ip_network(str(value), strict=False)
        if "/" not in str(value):
            raise ValueError
    except ValueError:
        return [invalid(path, value, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or "
                                     "2001:db8::/64)")]
    return []


def _messages_as_causes(path: str, value: str, messages: list[str]) -> list[Cause]:
    return [invalid(path, value, message) for message in messages]


def quantity(value: Any) -> Fraction | None:
    """A resource quantity, or None when it does not parse (decoding rejects those)."""
    try:
        return parse_quantity(value)
    except (ValueError, ZeroDivisionError):
        return None


def validate_nonnegative_quantities(resources: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for name in sorted(as_dict(resources)):
        amount = quantity(resources[name])
        if amount is not None and amount < 0:
            causes.append(invalid(_key_path(path, name), str(resources[name]),
                                  "must be greater than or equal to 0"))
    return causes


def validate_port_num_or_name(port: Any, path: str) -> list[Cause]:
    if isinstance(port, str):
        return _messages_as_causes(path, port, names.iana_svc_name(port))
    if isinstance(port, int) and not isinstance(port, bool):
        return [invalid(path, port, m) for m in names.port_number(port)]
    return []


# ---------------------------------------------------------------------------
# Namespace


STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")


def validate_finalizer_name(value: str, path: str) -> list[Cause]:
    """Core's finalizer rule: a qualified name; unprefixed names must be standard ones."""
    causes = _messages_as_causes(path, value, names.qualified_name(value))
    if causes:
        return causes
    if "/" not in value and value not in STANDARD_FINALIZERS:
        return [invalid(path, value,
                        "name is neither a standard finalizer name nor is it fully qualified")]
    return []


@register("", "Namespace")
class NamespaceStrategy(Strategy):
    has_status = True

    def default(self, obj: Obj) -> None:
        meta = obj["metadata"]
        if meta.get("name"):
            labels = meta.get("labels")
            if not isinstance(labels, dict):
                labels = meta["labels"] = {}
            labels["kubernetes.io/metadata.name"] = meta["name"]

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"phase": "Active"}
        spec = _spec(obj)
        finalizers = [str(f) for f in as_list(spec.get("finalizers"))]
        if "kubernetes" not in finalizers:
            finalizers.append("kubernetes")
        spec["finalizers"] = finalizers

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        # spec.finalizers only changes through the finalize subresource.
        if "spec" in old:
            new["spec"] = copy.deepcopy(old["spec"])
        else:
            new.pop("spec", None)

    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        for finalizer in as_list(dig(obj, "spec", "finalizers")):
            causes += validate_finalizer_name(str(finalizer), "spec.finalizers")
        return causes

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        phase = dig(new, "status", "phase")
        if phase and phase not in ("Active", "Terminating"):
            return [not_supported("status.phase", phase, ["Active", "Terminating"])]
        return []


# ---------------------------------------------------------------------------
# Node


TAINT_EFFECTS = ["NoExecute", "NoSchedule", "PreferNoSchedule"]


def validate_taints(taints: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(_dicts(taints)):
        here = f"{path}[{i}]"
        key = str(taint.get("key") or "")
        if not key:
            causes.append(required(f"{here}.key", ""))
        causes += _messages_as_causes(f"{here}.key", key, names.qualified_name(key)) if key else []
        value = str(taint.get("value") or "")
        causes += _messages_as_causes(f"{here}.value", value, names.label_value(value))
        effect = taint.get("effect") or ""
        if not effect:
            causes.append(required(f"{here}.effect", ""))
        elif effect not in TAINT_EFFECTS:
            causes.append(not_supported(f"{here}.effect", effect, TAINT_EFFECTS))
        if (key, effect) in seen:
            causes.append(duplicate(here, taint))
        seen.add((key, effect))
    return causes


@register("", "Node")
class NodeStrategy(Strategy):
    has_status = True

    def default(self, obj: Obj) -> None:
        status = obj.get("status")
        if isinstance(status, dict) and "capacity" in status and "allocatable" not in status:
            status["allocatable"] = copy.deepcopy(status["capacity"])

    def prepare_for_create(self, obj: Obj) -> None:
        # Kubelets register their node with its status filled in: keep it.
        if self.tracks_generation:
            obj["metadata"]["generation"] = 1

    def validate(self, obj: Obj) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        causes: list[Cause] = []
        cidrs = [str(c) for c in as_list(spec.get("podCIDRs"))]
        for i, cidr in enumerate(cidrs):
            causes += validate_cidr(f"spec.podCIDRs[{i}]", cidr)
        if len(cidrs) > 2:
            causes.append(invalid_go("spec.podCIDRs", cidrs,
                                     "may specify no more than one CIDR for each IP family"))
        pod_cidr = spec.get("podCIDR")
        if pod_cidr and cidrs and pod_cidr != cidrs[0]:
            causes.append(invalid("spec.podCIDRs", pod_cidr,
                                  "first value must match `podCIDR`"))
        causes += validate_taints(spec.get("taints"), "spec.taints")
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes = self.validate(new)
        old_spec, new_spec = as_dict(old.get("spec")), as_dict(new.get("spec"))
        if old_spec.get("podCIDRs") and new_spec.get("podCIDRs") != old_spec.get("podCIDRs"):
            causes.append(forbidden("spec.podCIDRs",
                                    "node updates may not change podCIDR except from \"\" to "
                                    "valid"))
        if old_spec.get("providerID") and new_spec.get("providerID") != old_spec.get("providerID"):
            causes.append(forbidden("spec.providerID",
                                    "node updates may not change providerID except from \"\" to "
                                    "valid"))
        return causes


# ---------------------------------------------------------------------------
# Service


SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
IP_FAMILIES = ["IPv4", "IPv6"]
IP_FAMILY_POLICIES = ["PreferDualStack", "RequireDualStack", "SingleStack"]
TRAFFIC_POLICIES = ["Cluster", "Local"]
KUBELET_PORT = 10250


def _externally_accessible(spec: Obj) -> bool:
    service_type = spec.get("type")
    return service_type in ("LoadBalancer", "NodePort") or (
        service_type == "ClusterIP" and bool(spec.get("externalIPs")))


def _needs_node_ports(spec: Obj) -> bool:
    service_type = spec.get("type")
    if service_type == "NodePort":
        return True
    return service_type == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False


def _is_headless(spec: Obj) -> bool:
    return spec.get("clusterIP") == "None"


def _service_port_text(port: Obj) -> str:
    """A ServicePort as Go's %#v prints it (duplicate-port causes show the key struct)."""
    return (f'core.ServicePort{{Name:"", Protocol:"{port.get("protocol", "")}", '
            f'AppProtocol:(*string)(nil), Port:{port.get("port", 0)}, '
            'TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}')


def _go_families(families: list[str]) -> str:
    return "[]core.IPFamily{" + ", ".join(f'"{f}"' for f in families) + "}"


@register("", "Service")
class ServiceStrategy(Strategy):
    has_status = True

    def default(self, obj: Obj) -> None:
        spec = _spec(obj)
        service_type = spec.setdefault("type", "ClusterIP")
        affinity = spec.setdefault("sessionAffinity", "None")
        if affinity == "ClientIP":
            config = spec.setdefault("sessionAffinityConfig", {})
            if isinstance(config, dict):
                client_ip = config.setdefault("clientIP", {})
                if isinstance(client_ip, dict):
                    client_ip.setdefault("timeoutSeconds", 10800)
        for port in _dicts(spec.get("ports")):
            port.setdefault("protocol", "TCP")
            if port.get("targetPort") in (None, 0, ""):
                port["targetPort"] = port.get("port")
        if service_type != "ExternalName":
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if _externally_accessible(spec):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if service_type == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)

    @staticmethod
    def _normalize_cluster_ips(spec: Obj) -> None:
        """clusterIP and clusterIPs[0] are one value: whichever is set fills the other."""
        if spec.get("type") == "ExternalName":
            return
        cluster_ip = spec.get("clusterIP")
        cluster_ips = as_list(spec.get("clusterIPs"))
        if cluster_ip and not cluster_ips:
            spec["clusterIPs"] = [cluster_ip]
        elif cluster_ips and not cluster_ip and isinstance(cluster_ips[0], str):
            spec["clusterIP"] = cluster_ips[0]

    @staticmethod
    def _init_ip_families(spec: Obj) -> None:
        """The REST storage's family defaults for a single-stack IPv4 cluster."""
        if spec.get("type") == "ExternalName":
            return
        if "ipFamilyPolicy" not in spec:
            headless_without_selector = _is_headless(spec) and not spec.get("selector")
            spec["ipFamilyPolicy"] = ("RequireDualStack" if headless_without_selector
                                      else "SingleStack")
        if not spec.get("ipFamilies"):
            ips = [ip for ip in as_list(spec.get("clusterIPs")) if _is_ip(ip)]
            spec["ipFamilies"] = ["IPv6" if ips and _is_ipv6(ips[0]) else "IPv4"]

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"loadBalancer": {}}
        spec = _spec(obj)
        self._normalize_cluster_ips(spec)
        self._init_ip_families(spec)

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        spec, old_spec = _spec(new), as_dict(old.get("spec"))
        self._drop_type_dependent_fields(spec, old_spec)
        self._patch_allocated_values(spec, old_spec)
        self._normalize_cluster_ips(spec)
        self._init_ip_families(spec)

    @staticmethod
    def _drop_type_dependent_fields(spec: Obj, old_spec: Obj) -> None:
        """Fields the old type needed and the new one forbids go, unless the user changed them."""
        if spec.get("type") == "ExternalName" and old_spec.get("type") != "ExternalName":
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if key in spec and spec[key] == old_spec.get(key):
                    del spec[key]
        if not _needs_node_ports(spec) and _needs_node_ports(old_spec):
            old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort")
                         for p in _dicts(old_spec.get("ports"))}
            for port in _dicts(spec.get("ports")):
                port_key = (port.get("port"), port.get("protocol"))
                if "nodePort" in port and old_ports.get(port_key) == port["nodePort"]:
                    del port["nodePort"]
        if not _externally_accessible(spec) and _externally_accessible(old_spec) and \
                spec.get("externalTrafficPolicy") == old_spec.get("externalTrafficPolicy"):
            spec.pop("externalTrafficPolicy", None)

    @staticmethod
    def _patch_allocated_values(spec: Obj, old_spec: Obj) -> None:
        """A client that omits allocated values (kubectl apply) keeps the old ones."""
        if spec.get("type") != "ExternalName" and old_spec.get("type") != "ExternalName":
            if not spec.get("clusterIP") and old_spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]
            if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
                spec["clusterIPs"] = copy.deepcopy(old_spec["clusterIPs"])
            for key in ("ipFamilies", "ipFamilyPolicy"):
                if key not in spec and key in old_spec:
                    spec[key] = copy.deepcopy(old_spec[key])
        if _needs_node_ports(spec) and _needs_node_ports(old_spec):
            used = {p.get("nodePort") for p in _dicts(spec.get("ports")) if p.get("nodePort")}
            by_name = {p.get("name", ""): p.get("nodePort") for p in _dicts(old_spec.get("ports"))}
            for port in _dicts(spec.get("ports")):
                old_value = by_name.get(port.get("name", ""))
                if not port.get("nodePort") and old_value and old_value not in used:
                    port["nodePort"] = old_value

    def validate(self, obj: Obj) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        service_type = spec.get("type") or ""
        headless = _is_headless(spec)
        ports = _dicts(spec.get("ports"))
        cluster_ips = as_list(spec.get("clusterIPs"))
        causes: list[Cause] = []
        if not ports and not headless and service_type != "ExternalName":
            causes.append(required("spec.ports"))
        if service_type in ("LoadBalancer", "NodePort") and headless:
            first = cluster_ips[0] if cluster_ips else "None"
            causes.append(invalid("spec.clusterIPs[0]", first,
                                  f"may not be set to 'None' for {service_type} services"))
        elif service_type == "ExternalName":
            if cluster_ips:
                causes.append(forbidden("spec.clusterIPs",
                                        "may not be set for ExternalName services"))
            if spec.get("ipFamilies"):
                causes.append(forbidden("spec.ipFamilies",
                                        "may not be set for ExternalName services"))
            if spec.get("ipFamilyPolicy") is not None:
                causes.append(forbidden("spec.ipFamilyPolicy",
                                        "may not be set for ExternalName services"))
            # A CNAME may end in '.' to mark it fully qualified.
            cname = str(spec.get("externalName") or "").removesuffix(".")
            if cname:
                causes += _messages_as_causes("spec.externalName", cname,
                                              names.dns1123_subdomain(cname))
            else:
                causes.append(required("spec.externalName"))

        causes += self._validate_ports(ports, headless)
        if spec.get("selector") is not None:
            causes += validate_labels(spec.get("selector"), "spec.selector")
        causes += self._validate_affinity(spec)
        causes += self._validate_cluster_ips(spec)
        for i, ip in enumerate(as_list(spec.get("externalIPs"))):
            bad = validate_ip(f"spec.externalIPs[{i}]", ip)
            causes += bad or validate_non_special_ip(f"spec.externalIPs[{i}]", ip)
        if not service_type:
            causes.append(required("spec.type"))
        elif service_type not in SERVICE_TYPES:
            causes.append(not_supported("spec.type", service_type, SERVICE_TYPES))
        causes += self._validate_node_ports(spec, ports)
        causes += self._validate_traffic_policies(spec)
        return causes

    @staticmethod
    def _validate_ports(ports: list[Obj], headless: bool) -> list[Cause]:
        causes: list[Cause] = []
        seen_names: set[str] = set()
        seen_keys: set[tuple[Any, Any]] = set()
        for i, port in enumerate(ports):
            here = f"spec.ports[{i}]"
            name = str(port.get("name") or "")
            if len(ports) > 1 and not name:
                causes.append(required(f"{here}.name"))
            elif name:
                causes += _messages_as_causes(f"{here}.name", name, names.dns1123_label(name))
                if name in seen_names:
                    causes.append(duplicate(f"{here}.name", name))
                seen_names.add(name)
            number = port.get("port")
            if isinstance(number, int):
                causes += [invalid(f"{here}.port", number, m) for m in names.port_number(number)]
            else:
                causes.append(invalid(f"{here}.port", 0, names.inclusive_range_error(1, 65535)))
            protocol = port.get("protocol") or ""
            if not protocol:
                causes.append(required(f"{here}.protocol"))
            elif protocol not in PORT_PROTOCOLS:
                causes.append(not_supported(f"{here}.protocol", protocol, PORT_PROTOCOLS))
            causes += validate_port_num_or_name(port.get("targetPort"), f"{here}.targetPort")
            app_protocol = port.get("appProtocol")
            if isinstance(app_protocol, str):
                causes += _messages_as_causes(f"{here}.appProtocol", app_protocol,
                                              names.qualified_name(app_protocol))
            key = (protocol, number)
            if key in seen_keys:
                causes.append(Cause(DUPLICATE, f"Duplicate value: {_service_port_text(port)}",
                                    here))
            seen_keys.add(key)
        return causes

    @staticmethod
    def _validate_affinity(spec: Obj) -> list[Cause]:
        affinity = spec.get("sessionAffinity") or ""
        if not affinity:
            return [required("spec.sessionAffinity")]
        if affinity not in ("ClientIP", "None"):
            return [not_supported("spec.sessionAffinity", affinity, ["ClientIP", "None"])]
        config = spec.get("sessionAffinityConfig")
        if affinity == "None":
            if config is not None:
                return [forbidden("spec.sessionAffinityConfig",
                                  "must not be set when session affinity is None")]
            return []
        when = "when session affinity type is ClientIP"
        if not isinstance(config, dict):
            return [required("spec.sessionAffinityConfig", when)]
        client_ip = config.get("clientIP")
        if not isinstance(client_ip, dict):
            return [required("spec.sessionAffinityConfig.clientIP", when)]
        timeout = client_ip.get("timeoutSeconds")
        if isinstance(timeout, int) and not 0 < timeout <= 86400:
            return [invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", timeout,
                            "must be greater than 0 and less than 86400")]
        return []

    @staticmethod
    def _validate_cluster_ips(spec: Obj) -> list[Cause]:
        if spec.get("type") == "ExternalName":
            return []
        causes: list[Cause] = []
        cluster_ip = spec.get("clusterIP") or ""
        cluster_ips = [str(ip) for ip in as_list(spec.get("clusterIPs"))]
        if cluster_ip:
            if not cluster_ips:
                causes.append(required("spec.clusterIPs"))
            elif cluster_ips[0] != cluster_ip:
                causes.append(invalid_go("spec.clusterIPs", cluster_ips,
                                         "first value must match `clusterIP`"))
        elif cluster_ips:
            causes.append(invalid_go("spec.clusterIPs", cluster_ips,
                                     "must be empty when `clusterIP` is not specified"))
        families = [str(f) for f in as_list(spec.get("ipFamilies"))]
        for i, family in enumerate(families):
            if family not in IP_FAMILIES:
                causes.append(not_supported(f"spec.ipFamilies[{i}]", family, IP_FAMILIES))
            if family in families[:i]:
                causes.append(duplicate(f"spec.ipFamilies[{i}]", family))
        policy = spec.get("ipFamilyPolicy")
        if policy is not None and policy not in IP_FAMILY_POLICIES:
            causes.append(not_supported("spec.ipFamilyPolicy", policy, IP_FAMILY_POLICIES))
        bad_ips = False
        for i, ip in enumerate(cluster_ips):
            if i == 0 and ip == "None":
                if len(cluster_ips) > 1:
                    bad_ips = True
                    causes.append(invalid_go("spec.clusterIPs", cluster_ips,
                                             "'None' must be the first and only value"))
                continue
            problems = validate_ip(f"spec.clusterIPs[{i}]", ip)
            bad_ips = bad_ips or bool(problems)
            causes += problems
        if len(cluster_ips) > 2:
            causes.append(invalid_go("spec.clusterIPs", cluster_ips,
                                     "may only hold up to 2 values"))
        if bad_ips:
            return causes
        if len(cluster_ips) == 2 and _is_ipv6(cluster_ips[0]) == _is_ipv6(cluster_ips[1]):
            causes.append(invalid_go("spec.clusterIPs", cluster_ips,
                                     "may specify no more than one IP for each IP family"))
        if not _is_headless(spec):
            for i, (ip, family) in enumerate(zip(cluster_ips, families, strict=False)):
                if family == "IPv4" and _is_ipv6(ip):
                    causes.append(invalid(f"spec.clusterIPs[{i}]", ip, "expected an IPv4 value "
                                          f"as indicated by `ipFamilies[{i}]`"))
                if family == "IPv6" and not _is_ipv6(ip):
                    causes.append(invalid(f"spec.clusterIPs[{i}]", ip, "expected an IPv6 value "
                                          f"as indicated by `ipFamilies[{i}]`"))
        return causes

    @staticmethod
    def _validate_node_ports(spec: Obj, ports: list[Obj]) -> list[Cause]:
        causes: list[Cause] = []
        service_type = spec.get("type")
        seen: set[tuple[Any, Any]] = set()
        low, high = NODE_PORT_RANGE
        for i, port in enumerate(ports):
            node_port = port.get("nodePort")
            if not node_port:
                continue
            path = f"spec.ports[{i}].nodePort"
            if service_type == "ClusterIP":
                causes.append(forbidden(path, "may not be used when `type` is 'ClusterIP'"))
            elif service_type in ("NodePort", "LoadBalancer") and isinstance(node_port, int) \
                    and not low <= node_port <= high:
                causes.append(invalid(path, node_port,
                                      "provided port is not in the valid range. The range of "
                                      f"valid ports is {low}-{high}"))
            key = (port.get("protocol"), node_port)
            if key in seen:
                causes.append(duplicate(path, node_port))
            seen.add(key)
        if service_type == "LoadBalancer":
            for i, port in enumerate(ports):
                if port.get("port") == KUBELET_PORT:
                    causes.append(invalid(f"spec.ports[{i}]", KUBELET_PORT,
                                          f"may not expose port {KUBELET_PORT} externally since "
                                          "it is used by kubelet"))
        return causes

    @staticmethod
    def _validate_traffic_policies(spec: Obj) -> list[Cause]:
        causes: list[Cause] = []
        external = spec.get("externalTrafficPolicy") or ""
        if not _externally_accessible(spec):
            if external:
                causes.append(invalid("spec.externalTrafficPolicy", external,
                                      "may only be set for externally-accessible services"))
        elif not external:
            causes.append(required("spec.externalTrafficPolicy"))
        elif external not in TRAFFIC_POLICIES:
            causes.append(not_supported("spec.externalTrafficPolicy", external, TRAFFIC_POLICIES))
        health_port = spec.get("healthCheckNodePort") or 0
        needs_health = spec.get("type") == "LoadBalancer" and external == "Local"
        if health_port and not needs_health:
            causes.append(invalid("spec.healthCheckNodePort", health_port,
                                  "may only be set when `type` is 'LoadBalancer' and "
                                  "`externalTrafficPolicy` is 'Local'"))
        internal = spec.get("internalTrafficPolicy")
        if internal is None:
            if spec.get("type") in ("ClusterIP", "NodePort", "LoadBalancer"):
                causes.append(required("spec.internalTrafficPolicy", "must be specified"))
        elif internal not in TRAFFIC_POLICIES:
            causes.append(not_supported("spec.internalTrafficPolicy", internal,
                                        TRAFFIC_POLICIES))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        spec, old_spec = as_dict(new.get("spec")), as_dict(old.get("spec"))
        causes = self._validate_ip_changes(spec, old_spec)
        return causes + self.validate(new)

    @staticmethod
    def _validate_ip_changes(spec: Obj, old_spec: Obj) -> list[Cause]:
        """Allocated cluster IPs and families stay; only a secondary may come or go."""
        if "ExternalName" in (spec.get("type"), old_spec.get("type")):
            return []
        causes: list[Cause] = []
        new_ips = [str(ip) for ip in as_list(spec.get("clusterIPs"))]
        old_ips = [str(ip) for ip in as_list(old_spec.get("clusterIPs"))]
        if not (_is_headless(spec) and _is_headless(old_spec)):
            if len(new_ips) == len(old_ips):
                for i, ip in enumerate(old_ips):
                    if ip != new_ips[i]:
                        causes.append(invalid_go(f"spec.clusterIPs[{i}]", new_ips,
                                                 "may not change once set"))
            elif len(new_ips) < len(old_ips):
                if not new_ips:
                    causes.append(invalid_go("spec.clusterIPs[0]", new_ips,
                                             "primary clusterIP can not be unset"))
                elif new_ips[0] != old_ips[0]:
                    causes.append(invalid_go("spec.clusterIPs[0]", new_ips,
                                             "may not change once set"))
                if len(new_ips) == 1 and spec.get("ipFamilyPolicy") != "SingleStack":
                    causes.append(invalid_go("spec.clusterIPs[0]", new_ips,
                                             "`ipFamilyPolicy` must be set to 'SingleStack' "
                                             "when releasing the secondary clusterIP"))
            elif old_ips and new_ips[0] != old_ips[0]:
                causes.append(invalid_go("spec.clusterIPs[0]", new_ips, "may not change once set"))
        new_families = [str(f) for f in as_list(spec.get("ipFamilies"))]
        old_families = [str(f) for f in as_list(old_spec.get("ipFamilies"))]
        for i, family in enumerate(old_families[:len(new_families)]):
            if family != new_families[i]:
                causes.append(Cause("FieldValueInvalid",
                                    f"Invalid value: {_go_families(new_families)}: "
                                    "may not change once set", f"spec.ipFamilies[{i}]"))
                break
        return causes


# ---------------------------------------------------------------------------
# Endpoints


def _validate_endpoint_ports(ports: list[Obj], path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, port in enumerate(ports):
        here = f"{path}[{i}]"
        name = str(port.get("name") or "")
        if len(ports) > 1 and not name:
            causes.append(required(f"{here}.name"))
        elif name:
            causes += _messages_as_causes(f"{here}.name", name, names.dns1123_label(name))
        number = port.get("port")
        number = number if isinstance(number, int) else 0
        causes += [invalid(f"{here}.port", number, m) for m in names.port_number(number)]
        protocol = port.get("protocol") or ""
        if not protocol:
            causes.append(required(f"{here}.protocol"))
        elif protocol not in PORT_PROTOCOLS:
            causes.append(not_supported(f"{here}.protocol", protocol, PORT_PROTOCOLS))
        app_protocol = port.get("appProtocol")
        if isinstance(app_protocol, str):
            causes += _messages_as_causes(f"{here}.appProtocol", app_protocol,
                                          names.qualified_name(app_protocol))
    return causes


def _validate_endpoint_address(address: Obj, path: str) -> list[Cause]:
    ip = address.get("ip")
    causes = validate_ip(f"{path}.ip", ip)
    hostname = address.get("hostname")
    if hostname:
        causes += _messages_as_causes(f"{path}.hostname", hostname, names.dns1123_label(hostname))
    node_name = address.get("nodeName")
    if isinstance(node_name, str):
        causes += _messages_as_causes(f"{path}.nodeName", node_name,
                                      names.dns1123_subdomain(node_name))
    if ENDPOINTS_REJECT_SPECIAL_IPS and isinstance(ip, str) and _is_ip(ip):
        causes += validate_non_special_ip(f"{path}.ip", ip)
    return causes


@register("", "Endpoints")
class EndpointsStrategy(Strategy):
    def default(self, obj: Obj) -> None:
        for subset in _dicts(obj.get("subsets")):
            for port in _dicts(subset.get("ports")):
                port.setdefault("protocol", "TCP")

    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        for i, subset in enumerate(_dicts(obj.get("subsets"))):
            here = f"subsets[{i}]"
            if not subset.get("addresses") and not subset.get("notReadyAddresses"):
                causes.append(required(here, "must specify `addresses` or `notReadyAddresses`"))
            for key in ("addresses", "notReadyAddresses"):
                for j, address in enumerate(_dicts(subset.get(key))):
                    causes += _validate_endpoint_address(address, f"{here}.{key}[{j}]")
            causes += _validate_endpoint_ports(_dicts(subset.get("ports")), f"{here}.ports")
        return causes


# ---------------------------------------------------------------------------
# ConfigMap and Secret


def _decoded_size(value: Any) -> int:
    """The byte size of a base64 wire value (undecodable values count as their text)."""
    text = str(value)
    try:
        return len(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return len(text.encode())


def _validate_immutable_data(new: Obj, old: Obj, keys: tuple[str, ...]) -> list[Cause]:
    if old.get("immutable") is not True:
        return []
    detail = "field is immutable when `immutable` is set"
    causes: list[Cause] = []
    if new.get("immutable") is not True:
        causes.append(forbidden("immutable", detail))
    for key in keys:
        if (new.get(key) or {}) != (old.get(key) or {}):
            causes.append(forbidden(key, detail))
    return causes


@register("", "ConfigMap")
class ConfigMapStrategy(Strategy):
    def validate(self, obj: Obj) -> list[Cause]:
        data, binary = as_dict(obj.get("data")), as_dict(obj.get("binaryData"))
        causes: list[Cause] = []
        total = 0
        for bag, other, other_name, path in ((data, binary, "binaryData", "data"),
                                             (binary, data, "data", "binaryData")):
            for key in sorted(bag):
                here = _key_path(path, key)
                causes += _messages_as_causes(here, key, names.config_map_key(key))
                if key in other:
                    causes.append(invalid(here, key, f"duplicate of key present in {other_name}"))
                if path == "data":
                    total += len(str(bag[key]).encode())
                else:
                    total += _decoded_size(bag[key])
        if total > MAX_SECRET_SIZE:
            causes.append(too_long("", MAX_SECRET_SIZE))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return _validate_immutable_data(new, old, ("data", "binaryData")) + self.validate(new)


SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"


def _secret_json_problem(data: Obj, key: str) -> str | None:
    try:
        parsed = json.loads(base64.b64decode(str(data[key])))
    except (ValueError, binascii.Error) as error:
        return str(error)
    if not isinstance(parsed, dict):
        return "json: cannot unmarshal into Go value of type map[string]interface {}"
    return None


@register("", "Secret")
class SecretStrategy(Strategy):
    def default(self, obj: Obj) -> None:
        obj.setdefault("type", "Opaque")
        # stringData is write-only: it merges into data (winning over it) and is not stored.
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict) and string_data:
            data = obj.get("data")
            if not isinstance(data, dict):
                data = obj["data"] = {}
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()

    def validate(self, obj: Obj) -> list[Cause]:
        data = as_dict(obj.get("data"))
        causes: list[Cause] = []
        total = 0
        for key in sorted(data):
            causes += _messages_as_causes(_key_path("data", key), key, names.config_map_key(key))
            total += _decoded_size(data[key])
        if total > MAX_SECRET_SIZE:
            causes.append(too_long("data", MAX_SECRET_SIZE))
        causes += self._validate_type(obj, data)
        return causes

    @staticmethod
    def _validate_type(obj: Obj, data: Obj) -> list[Cause]:
        secret_type = obj.get("type") or ""
        redacted = "<secret contents redacted>"
        if secret_type == "kubernetes.io/service-account-token":
            annotations = as_dict(dig(obj, "metadata", "annotations"))
            if not annotations.get(SERVICE_ACCOUNT_NAME_ANNOTATION):
                return [required(_key_path("metadata.annotations",
                                           SERVICE_ACCOUNT_NAME_ANNOTATION))]
        elif secret_type in ("kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson"):
            key = ".dockercfg" if secret_type == "kubernetes.io/dockercfg" else ".dockerconfigjson"
            if key not in data:
                return [required(_key_path("data", key))]
            problem = _secret_json_problem(data, key)
            if problem:
                return [invalid(_key_path("data", key), redacted, problem)]
        elif secret_type == "kubernetes.io/basic-auth":
            if "username" not in data and "password" not in data:
                return [required("data[username]"), required("data[password]")]
        elif secret_type == "kubernetes.io/ssh-auth":
            if not data.get("ssh-privatekey"):
                return [required("data[ssh-privatekey]")]
        elif secret_type == "kubernetes.io/tls":
            return [required(_key_path("data", key)) for key in ("tls.crt", "tls.key")
                    if key not in data]
        return []

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes = immutable("type", new.get("type"), old.get("type"))
        causes += _validate_immutable_data(new, old, ("data",))
        return causes + self.validate(new)


@register("", "ServiceAccount")
class ServiceAccountStrategy(Strategy):
    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        for i, ref in enumerate(_dicts(obj.get("imagePullSecrets"))):
            if not ref.get("name"):
                causes.append(required(f"imagePullSecrets[{i}].name"))
        return causes


# ---------------------------------------------------------------------------
# PersistentVolume and PersistentVolumeClaim


ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]
VOLUME_MODES = ["Block", "Filesystem"]
RECLAIM_POLICIES = ["Delete", "Recycle", "Retain"]
HOST_PATH_TYPES = ["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                   "FileOrCreate", "Socket"]
PV_SOURCES = (
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "fc",
    "flexVolume", "flocker", "gcePersistentDisk", "glusterfs", "hostPath", "iscsi", "local",
    "nfs", "photonPersistentDisk", "portworxVolume", "quobyte", "rbd", "scaleIO", "storageos",
    "vsphereVolume",
)


def _validate_access_modes(spec: Obj, path: str, required_detail: str) -> list[Cause]:
    modes = [str(m) for m in as_list(spec.get("accessModes"))]
    if not modes:
        return [required(path, required_detail)]
    causes = [not_supported(path, mode, ACCESS_MODES) for mode in modes
              if mode not in ACCESS_MODES]
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        causes.append(forbidden(path, "may not use ReadWriteOncePod with other access modes"))
    return causes


def _validate_volume_mode(spec: Obj, path: str) -> list[Cause]:
    mode = spec.get("volumeMode")
    if mode is not None and mode not in VOLUME_MODES:
        return [not_supported(path, mode, VOLUME_MODES)]
    return []


def _validate_class_name(spec: Obj, path: str) -> list[Cause]:
    name = spec.get("storageClassName")
    if isinstance(name, str) and name:
        return _messages_as_causes(path, name, names.dns1123_subdomain(name))
    return []


@register("", "PersistentVolume")
class PersistentVolumeStrategy(Strategy):
    has_status = True

    def default(self, obj: Obj) -> None:
        spec = _spec(obj)
        spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
        spec.setdefault("volumeMode", "Filesystem")
        if isinstance(spec.get("hostPath"), dict):
            spec["hostPath"].setdefault("type", "")

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"phase": "Pending", "lastPhaseTransitionTime": now_rfc3339()}

    def validate(self, obj: Obj) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        causes = _validate_access_modes(spec, "spec.accessModes", "")
        capacity = as_dict(spec.get("capacity"))
        if not capacity:
            causes.append(required("spec.capacity"))
        elif "storage" not in capacity or len(capacity) > 1:
            for key in sorted(capacity):
                if key != "storage":
                    causes.append(not_supported("spec.capacity", key, ["storage"]))
            if "storage" not in capacity:
                causes.append(not_supported("spec.capacity", "", ["storage"]))
        causes += validate_nonnegative_quantities(capacity, "spec.capacity")
        policy = spec.get("persistentVolumeReclaimPolicy")
        if policy and policy not in RECLAIM_POLICIES:
            causes.append(not_supported("spec.persistentVolumeReclaimPolicy", policy,
                                        RECLAIM_POLICIES))
        causes += _validate_class_name(spec, "spec.storageClassName")
        causes += _validate_volume_mode(spec, "spec.volumeMode")
        causes += self._validate_source(spec)
        return causes

    @staticmethod
    def _validate_source(spec: Obj) -> list[Cause]:
        sources = [s for s in PV_SOURCES if spec.get(s) is not None]
        if not sources:
            return [required("spec", "must specify a volume type")]
        causes = [forbidden(f"spec.{extra}", "may not specify more than 1 volume type")
                  for extra in sources[1:]]
        source = sources[0]
        body = as_dict(spec.get(source))
        if source == "hostPath":
            if not body.get("path"):
                causes.append(required("spec.hostPath.path"))
            host_type = body.get("type", "")
            if host_type not in HOST_PATH_TYPES:
                causes.append(not_supported("spec.hostPath.type", host_type, HOST_PATH_TYPES))
        elif source == "local":
            if not body.get("path"):
                causes.append(required("spec.local.path"))
            if not spec.get("nodeAffinity"):
                causes.append(required("spec.nodeAffinity", "Local volume requires node affinity"))
        elif source == "nfs":
            if not body.get("server"):
                causes.append(required("spec.nfs.server"))
            if not body.get("path"):
                causes.append(required("spec.nfs.path"))
            elif not str(body["path"]).startswith("/"):
                causes.append(invalid("spec.nfs.path", body["path"], "must be an absolute path"))
        elif source == "csi":
            if not body.get("driver"):
                causes.append(required("spec.csi.driver"))
            if not body.get("volumeHandle"):
                causes.append(required("spec.csi.volumeHandle"))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        spec, old_spec = as_dict(new.get("spec")), as_dict(old.get("spec"))
        causes = self.validate(new)
        if {k: spec.get(k) for k in PV_SOURCES} != {k: old_spec.get(k) for k in PV_SOURCES}:
            causes.append(forbidden("spec.persistentvolumesource",
                                    "spec.persistentvolumesource is immutable after creation"))
        causes += immutable("spec.volumeMode", spec.get("volumeMode"), old_spec.get("volumeMode"))
        if old_spec.get("nodeAffinity") is not None:
            causes += immutable("spec.nodeAffinity", spec.get("nodeAffinity"),
                                old_spec.get("nodeAffinity"))
        return causes

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        phase = dig(new, "status", "phase")
        phases = ["Available", "Bound", "Failed", "Pending", "Released"]
        if phase and phase not in phases:
            return [not_supported("status.phase", phase, phases)]
        return []


@register("", "PersistentVolumeClaim")
class PersistentVolumeClaimStrategy(Strategy):
    has_status = True

    def default(self, obj: Obj) -> None:
        _spec(obj).setdefault("volumeMode", "Filesystem")

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {"phase": "Pending"}

    def validate(self, obj: Obj) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        causes = _validate_access_modes(spec, "spec.accessModes",
                                        "at least 1 access mode is required")
        requests = as_dict(dig(spec, "resources", "requests"))
        if "storage" not in requests:
            causes.append(required("spec.resources[storage]"))
        else:
            amount = quantity(requests["storage"])
            path = "spec.resources.requests[storage]"
            if amount is not None and amount < 0:
                causes.append(invalid(path, str(requests["storage"]),
                                      "must be greater than or equal to 0"))
            elif amount is not None and amount == 0:
                causes.append(invalid(path, str(requests["storage"]),
                                      "must be greater than zero"))
        causes += validate_nonnegative_quantities(dig(spec, "resources", "limits"),
                                                  "spec.resources.limits")
        causes += _validate_class_name(spec, "spec.storageClassName")
        causes += _validate_volume_mode(spec, "spec.volumeMode")
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes = self.validate(new)
        new_spec = copy.deepcopy(as_dict(new.get("spec")))
        old_spec = copy.deepcopy(as_dict(old.get("spec")))
        if not old_spec.get("volumeName"):
            # volumeName may be set once (binding).
            old_spec["volumeName"] = new_spec.get("volumeName")
            if old_spec["volumeName"] is None:
                del old_spec["volumeName"]
                new_spec.pop("volumeName", None)
        if (old_spec.get("storageClassName") is None and new_spec.get("storageClassName")
                and "volume.beta.kubernetes.io/storage-class"
                not in as_dict(dig(old, "metadata", "annotations"))):
            # RetroactiveDefaultStorageClass (GA 1.28): a class may be set once, from nil.
            old_spec["storageClassName"] = new_spec["storageClassName"]
        bound = dig(new, "status", "phase") == "Bound"
        new_storage = dig(new_spec, "resources", "requests", "storage")
        old_storage = dig(old_spec, "resources", "requests", "storage")
        if bound:
            for spec in (new_spec, old_spec):
                requests = dig(spec, "resources", "requests")
                if isinstance(requests, dict):
                    requests.pop("storage", None)
        if new_spec != old_spec:
            causes.append(forbidden("spec", "spec is immutable after creation except "
                                            "resources.requests for bound claims"))
        new_size, old_size = quantity(new_storage), quantity(old_storage)
        if new_size is not None and old_size is not None and new_size < old_size:
            causes.append(forbidden("spec.resources.requests.storage",
                                    "field can not be less than previous value"))
        return causes


# ---------------------------------------------------------------------------
# Events (core/v1 and events.k8s.io/v1 share upstream's one internal type)


REPORTING_INSTANCE_LIMIT = 128
ACTION_LIMIT = 128
REASON_LIMIT = 128
NOTE_LIMIT = 1024


def _legacy_event_causes(obj: Obj, fields: dict[str, str], reporting_field: str) -> list[Cause]:
    """Upstream legacyValidateEvent; `fields` maps internal names to this version's keys."""
    def get(name: str) -> Any:
        return obj.get(fields.get(name, name))

    causes: list[Cause] = []
    namespace = dig(obj, "metadata", "namespace") or ""
    involved_ns = as_dict(get("involvedObject")).get("namespace") or ""
    mismatch = invalid("involvedObject.namespace", involved_ns, "does not match event.namespace")
    if not get("eventTime"):
        if (not involved_ns and namespace not in ("", "default")) or \
                (involved_ns and namespace != involved_ns):
            causes.append(mismatch)
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            causes.append(mismatch)
        controller = str(get("reportingController") or "")
        if not controller:
            causes.append(required(reporting_field))
        causes += _messages_as_causes(reporting_field, controller,
                                      names.qualified_name(controller))
        for name, limit in (("reportingInstance", REPORTING_INSTANCE_LIMIT),
                            ("action", ACTION_LIMIT), ("reason", REASON_LIMIT)):
            value = str(get(name) or "")
            if not value:
                causes.append(required(name))
            if len(value) > limit:
                causes.append(invalid(name, "", f"can have at most {limit} characters"))
        if len(str(get("message") or "")) > NOTE_LIMIT:
            causes.append(invalid("message", "", f"can have at most {NOTE_LIMIT} characters"))
    causes += _messages_as_causes("namespace", namespace, names.dns1123_subdomain(namespace))
    return causes


CORE_EVENT_FIELDS: dict[str, str] = {"reportingController": "reportingComponent"}
EVENTS_V1_FIELDS: dict[str, str] = {
    "involvedObject": "regarding", "message": "note", "count": "deprecatedCount",
    "firstTimestamp": "deprecatedFirstTimestamp", "lastTimestamp": "deprecatedLastTimestamp",
    "source": "deprecatedSource",
}
EVENT_IMMUTABLE_FIELDS = (
    "involvedObject", "reason", "message", "source", "count", "firstTimestamp",
    "lastTimestamp", "type", "action", "related", "eventTime", "reportingController",
    "reportingInstance",
)


@register("", "Event")
class CoreEventStrategy(Strategy):
    """core/v1 events: only the lenient legacy rules, for old clients' sake."""

    validates_meta = False

    def validate(self, obj: Obj) -> list[Cause]:
        return _legacy_event_causes(obj, CORE_EVENT_FIELDS, "reportingComponent")


@register("events.k8s.io", "Event")
class EventsV1EventStrategy(Strategy):
    """events.k8s.io/v1: the legacy rules plus the strict ones for new-style events."""

    def validate(self, obj: Obj) -> list[Cause]:
        causes = _legacy_event_causes(obj, EVENTS_V1_FIELDS, "reportingController")
        causes += self._validate_series(obj)
        if not obj.get("eventTime"):
            causes.append(required("eventTime"))
        event_type = obj.get("type") or ""
        if event_type not in ("Normal", "Warning"):
            causes.append(invalid("type", "", f"has invalid value: {event_type}"))
        for name in ("firstTimestamp", "lastTimestamp", "count"):
            if obj.get(EVENTS_V1_FIELDS[name]):
                causes.append(invalid(name, "", "needs to be unset"))
        source = as_dict(obj.get("deprecatedSource"))
        if source.get("component") or source.get("host"):
            causes.append(invalid("source", "", "needs to be unset"))
        return causes

    @staticmethod
    def _validate_series(obj: Obj) -> list[Cause]:
        series = obj.get("series")
        if not isinstance(series, dict):
            return []
        causes: list[Cause] = []
        count = series.get("count")
        if not isinstance(count, int) or count < 2:
            causes.append(invalid("series.count", "", "should be at least 2"))
        if not series.get("lastObservedTime"):
            causes.append(required("series.lastObservedTime"))
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes = _legacy_event_causes(new, EVENTS_V1_FIELDS, "reportingController")
        if new.get("series") != old.get("series"):
            causes += self._validate_series(new)
        for name in EVENT_IMMUTABLE_FIELDS:
            key = EVENTS_V1_FIELDS.get(name, name)
            causes += immutable(name, new.get(key), old.get(key))
        return causes


# ---------------------------------------------------------------------------
# LimitRange and ResourceQuota


@register("", "LimitRange")
class LimitRangeStrategy(Strategy):
    def default(self, obj: Obj) -> None:
        for item in _dicts(dig(obj, "spec", "limits")):
            if item.get("type") != "Container":
                continue
            default = dict(as_dict(item.get("default")))
            request = dict(as_dict(item.get("defaultRequest")))
            for name, value in as_dict(item.get("max")).items():
                default.setdefault(name, value)
            for name, value in default.items():
                request.setdefault(name, value)
            for name, value in as_dict(item.get("min")).items():
                request.setdefault(name, value)
            if default:
                item["default"] = default
            if request:
                item["defaultRequest"] = request

    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        seen: set[str] = set()
        for i, item in enumerate(_dicts(dig(obj, "spec", "limits"))):
            here = f"spec.limits[{i}]"
            limit_type = str(item.get("type") or "")
            if limit_type in seen:
                causes.append(duplicate(f"{here}.type", limit_type))
            seen.add(limit_type)
            for bag in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
                causes += validate_nonnegative_quantities(item.get(bag), f"{here}.{bag}")
            minimum, maximum = as_dict(item.get("min")), as_dict(item.get("max"))
            for name in sorted(set(minimum) & set(maximum)):
                low, high = quantity(minimum[name]), quantity(maximum[name])
                if low is not None and high is not None and low > high:
                    causes.append(invalid(_key_path(f"{here}.min", name), str(minimum[name]),
                                          f"min value {minimum[name]} is greater than max "
                                          f"value {maximum[name]}"))
        return causes


QUOTA_SCOPES = ["BestEffort", "CrossNamespacePodAffinity", "NotBestEffort", "NotTerminating",
                "PriorityClass", "Terminating"]


@register("", "ResourceQuota")
class ResourceQuotaStrategy(Strategy):
    has_status = True

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        obj["status"] = {}

    def validate(self, obj: Obj) -> list[Cause]:
        spec = as_dict(obj.get("spec"))
        causes = validate_nonnegative_quantities(spec.get("hard"), "spec.hard")
        for i, scope in enumerate(as_list(spec.get("scopes"))):
            if scope not in QUOTA_SCOPES:
                causes.append(not_supported(f"spec.scopes[{i}]", scope, QUOTA_SCOPES))
        return causes

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        status = as_dict(new.get("status"))
        return (validate_nonnegative_quantities(status.get("hard"), "status.hard")
                + validate_nonnegative_quantities(status.get("used"), "status.used"))


__all__ = [
    "ConfigMapStrategy", "CoreEventStrategy", "EndpointsStrategy", "EventsV1EventStrategy",
    "LimitRangeStrategy", "NamespaceStrategy", "NodeStrategy", "PersistentVolumeClaimStrategy",
    "PersistentVolumeStrategy", "ResourceQuotaStrategy", "SecretStrategy",
    "ServiceAccountStrategy", "ServiceStrategy", "go_value", "validate_port_num_or_name",
]
